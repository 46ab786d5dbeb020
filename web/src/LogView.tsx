// A job log (or a build's), virtualised: only the rows in view (and a few around them) are in the DOM, so 100k lines scroll
// smoothly. Rows have fixed heights; long lines scroll sideways instead of wrapping.
import { useVirtualizer } from '@tanstack/react-virtual';
import { memo, useCallback, useLayoutEffect, useRef, useState } from 'react';
import type { StyledLine } from './ansi';
import type { LogEntry, LogModel } from './logModel';
import { duration } from './time';

const LINE_HEIGHT = 20;
const HEADER_HEIGHT = 32;

interface Props {
  model: LogModel;
  /** Changes whenever the model does. */
  version: number;
  running: boolean;
}

type Row = { kind: 'header'; entry: LogEntry } | { kind: 'line'; entry: LogEntry; n: number };

function Styled({ line }: { line: StyledLine }) {
  if (typeof line === 'string') return <>{line}</>;
  return (
    <>
      {line.map((s, i) =>
        s.className || s.color || s.background ? (
          <span
            key={i}
            className={s.className || undefined}
            style={s.color || s.background ? { color: s.color, backgroundColor: s.background } : undefined}
          >
            {s.text}
          </span>
        ) : (
          <span key={i}>{s.text}</span>
        ),
      )}
    </>
  );
}

function EntryHeader({ entry, collapsed, onToggle }: { entry: LogEntry; collapsed: boolean; onToggle: () => void }) {
  const { status } = entry;
  const running = status ? status.tone === 'running' : entry.exitCode === null;
  const ok = entry.exitCode === 0;
  return (
    <button
      type="button"
      className={`log-header ${status ? status.tone : running ? 'running' : ok ? 'ok' : 'bad'}`}
      onClick={onToggle}
      aria-expanded={!collapsed}
      data-testid="log-step"
      data-step={entry.key}
    >
      <span className="chevron">{collapsed ? '▸' : '▾'}</span>
      <span className="step-key">{entry.key}</span>
      <span className="step-command" title={entry.command.join(' ')}>
        {entry.command.join(' ')}
      </span>
      <span className="step-lines">
        {entry.lines.length} line{entry.lines.length === 1 ? '' : 's'}
      </span>
      <span className="step-result" data-testid="step-result">
        {running ? (
          <>
            <span className="spinner small" /> {status?.text ?? 'running'}
          </>
        ) : status ? (
          status.text
        ) : (
          <>
            exit {entry.exitCode} · {duration(entry.durationMs)}
          </>
        )}
      </span>
    </button>
  );
}

const LineRow = memo(function LineRow({ entry, n }: { entry: LogEntry; n: number }) {
  const line = entry.lines[n];
  return (
    <div
      className={`log-line${line.stream === 'e' ? ' stderr' : ''}${line.kind ? ` note ${line.kind}` : ''}`}
      data-line={n + 1}
      data-kind={line.kind}
    >
      <span className="gutter">{n + 1}</span>
      <span className="text">
        <Styled line={line.line} />
      </span>
    </div>
  );
});

export function LogView({ model, version, running }: Props) {
  const scroller = useRef<HTMLDivElement>(null);
  const [collapsed, setCollapsed] = useState<Set<number>>(new Set());
  const [follow, setFollow] = useState(true);

  // Where each entry starts in the flat row list: entries are few, lines many.
  const starts: number[] = [];
  let count = 0;
  for (const e of model.entries) {
    starts.push(count);
    count += 1 + (collapsed.has(e.index) ? 0 : e.lines.length);
  }
  const rowAt = (i: number): Row => {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    const entry = model.entries[lo];
    const offset = i - starts[lo];
    return offset === 0 ? { kind: 'header', entry } : { kind: 'line', entry, n: offset - 1 };
  };

  const virtualizer = useVirtualizer({
    count,
    getScrollElement: () => scroller.current,
    estimateSize: (i) => (rowAt(i).kind === 'header' ? HEADER_HEIGHT : LINE_HEIGHT),
    overscan: 20,
  });
  // Sizes depend on which rows are headers, which moves as lines arrive: recompute them on every change.
  useLayoutEffect(() => {
    virtualizer.measure();
  }, [version, collapsed, virtualizer]);

  const scrollToEnd = useCallback(() => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, []);

  useLayoutEffect(() => {
    if (follow) scrollToEnd();
  }, [version, follow, scrollToEnd, count]);

  const onScroll = (): void => {
    const el = scroller.current;
    if (!el) return;
    const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < LINE_HEIGHT * 2;
    if (atEnd !== follow) setFollow(atEnd);
  };

  const toggle = (index: number): void => {
    setCollapsed((c) => {
      const next = new Set(c);
      if (next.has(index)) next.delete(index);
      else next.add(index);
      return next;
    });
  };

  return (
    <div className="log">
      <div className="log-toolbar">
        <span className="muted" data-testid="line-count">
          {model.lineCount.toLocaleString()} lines
        </span>
        <div className="spacer" />
        {running && <span className={`follow ${follow ? 'on' : ''}`}>{follow ? '● following' : 'paused'}</span>}
        <button
          type="button"
          onClick={() => {
            virtualizer.scrollToOffset(0);
            setFollow(false);
          }}
        >
          Top
        </button>
        <button
          type="button"
          data-testid="log-end"
          onClick={() => {
            setFollow(true);
            scrollToEnd();
          }}
        >
          End ↓
        </button>
      </div>
      <div
        className="log-scroll"
        ref={scroller}
        onScroll={onScroll}
        data-testid="log"
        style={{
          ['--gutter' as string]: `${String(Math.max(...model.entries.map((e) => e.lines.length), 1)).length + 3}ch`,
        }}
      >
        {count === 0 ? (
          <div className="log-empty">{running ? 'Waiting for output…' : 'No output.'}</div>
        ) : (
          <div className="log-inner" style={{ height: virtualizer.getTotalSize() }}>
            {virtualizer.getVirtualItems().map((v) => {
              const row = rowAt(v.index);
              return (
                <div key={v.key} className="log-row" style={{ transform: `translateY(${v.start}px)`, height: v.size }}>
                  {row.kind === 'header' ? (
                    <EntryHeader
                      entry={row.entry}
                      collapsed={collapsed.has(row.entry.index)}
                      onToggle={() => toggle(row.entry.index)}
                    />
                  ) : (
                    <LineRow entry={row.entry} n={row.n} />
                  )}
                </div>
              );
            })}
          </div>
        )}
      </div>
    </div>
  );
}
