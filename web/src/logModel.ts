// One attempt's log as the SSE stream delivers it: entries (steps) with their output parsed into styled lines. A
// build's log uses it too: one entry per try, whole lines appended (line), some of them notes rather than output.
import type { LogEntryView } from '../../src/core/api';
import { PLAIN, parseAnsiLine, type AnsiState, type StyledLine } from './ansi';

export interface LogLine {
  /** 'o' stdout, 'e' stderr, '' a line without a known prefix. */
  stream: 'o' | 'e' | '';
  line: StyledLine;
  /** Not the program's output: a phase change, or a note of the server's (a build's log). */
  kind?: 'phase' | 'system';
}

/** What an entry's header says instead of its exit code (a build's try: running, complete, expired…). */
export interface EntryStatus {
  text: string;
  tone: 'running' | 'ok' | 'bad' | 'neutral';
}

/** A step's log entry as the stream announces it. */
export type EntryEvent = LogEntryView;

export interface LogEntry extends EntryEvent {
  lines: LogLine[];
  /** Output received so far, in UTF-16 code units: output the stream sends again is skipped by offset. */
  received: number;
  partial: string;
  ansi: { o: AnsiState; e: AnsiState; '': AnsiState };
  status?: EntryStatus;
}

export class LogModel {
  entries: LogEntry[] = [];
  private byIndex = new Map<number, LogEntry>();
  /** Bumped on every change; the view reads it to know when to render again. */
  version = 0;
  lineCount = 0;

  reset(): void {
    this.entries = [];
    this.byIndex.clear();
    this.lineCount = 0;
    this.version++;
  }

  entry(e: EntryEvent): void {
    let entry = this.byIndex.get(e.index);
    if (!entry) {
      entry = { ...e, lines: [], received: 0, partial: '', ansi: { o: PLAIN, e: PLAIN, '': PLAIN } };
      this.byIndex.set(e.index, entry);
      this.entries.push(entry);
      this.entries.sort((a, b) => a.index - b.index);
    } else {
      Object.assign(entry, {
        key: e.key,
        command: e.command,
        startTime: e.startTime,
        exitCode: e.exitCode,
        durationMs: e.durationMs,
      });
      // A finished entry's unterminated last line will not be completed any more.
      if (e.exitCode !== null && entry.partial) {
        this.addLine(entry, entry.partial);
        entry.partial = '';
      }
    }
    this.version++;
  }

  output(index: number, offset: number, data: string): void {
    const entry = this.ensure(index);
    if (offset + data.length <= entry.received) return; // already have it (a reconnect sends everything again)
    if (offset < entry.received) data = data.slice(entry.received - offset);
    entry.received = Math.max(entry.received, offset) + data.length;
    const text = entry.partial + data;
    const parts = text.split('\n');
    entry.partial = parts.pop() ?? '';
    for (const raw of parts) this.addLine(entry, raw);
    this.version++;
  }

  /** Appends one whole line to entry `index` (made if missing), as is: no stdout/stderr prefix is looked for. */
  line(index: number, text: string, kind?: LogLine['kind']): void {
    const entry = this.ensure(index);
    const parsed = parseAnsiLine(text, kind ? PLAIN : entry.ansi['']);
    if (!kind) entry.ansi[''] = parsed.state;
    entry.lines.push(kind ? { stream: '', line: parsed.line, kind } : { stream: '', line: parsed.line });
    this.lineCount++;
    this.version++;
  }

  /** Names entry `index` (made if missing) and sets what its header says. */
  describe(index: number, fields: { key?: string; command?: string[]; status?: EntryStatus }): void {
    const entry = this.ensure(index);
    const status = fields.status ?? entry.status;
    if (
      (fields.key ?? entry.key) === entry.key &&
      (fields.command ?? entry.command).join('\0') === entry.command.join('\0') &&
      status?.text === entry.status?.text &&
      status?.tone === entry.status?.tone
    )
      return;
    Object.assign(entry, { key: fields.key ?? entry.key, command: fields.command ?? entry.command, status });
    this.version++;
  }

  private ensure(index: number): LogEntry {
    return (
      this.byIndex.get(index) ??
      (this.entry({ index, key: `entry ${index}`, command: [], startTime: 0, exitCode: null, durationMs: null }),
      this.byIndex.get(index)!)
    );
  }

  private addLine(entry: LogEntry, raw: string): void {
    let stream: LogLine['stream'] = '';
    let text = raw;
    if (raw.startsWith('stdout: ')) {
      stream = 'o';
      text = raw.slice(8);
    } else if (raw.startsWith('stderr: ')) {
      stream = 'e';
      text = raw.slice(8);
    }
    const parsed = parseAnsiLine(text, entry.ansi[stream]);
    entry.ansi[stream] = parsed.state;
    entry.lines.push({ stream, line: parsed.line });
    this.lineCount++;
  }

  /** The plain text of the whole log, for copying or downloading. */
  text(): string {
    return this.entries
      .map((e) =>
        e.lines.map((l) => (typeof l.line === 'string' ? l.line : l.line.map((s) => s.text).join(''))).join('\n'),
      )
      .join('\n');
  }
}
