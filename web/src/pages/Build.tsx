import { useEffect, useRef, useState } from 'react';
import {
  ApiError,
  BUILD_PHASES,
  api,
  authHeaders,
  cancellable,
  type Build,
  type BuildDetail,
  type BuildLog,
  type BuildPhase,
  type BuildStreamState,
  type BuildTry,
} from '../api';
import { Ago, ErrorBox, PageHeader, PhaseBadge } from '../components';
import { usePolled, useNow } from '../hooks';
import { LogModel, type EntryStatus } from '../logModel';
import { LogView } from '../LogView';
import { Link } from '../router';
import { followSse, type StreamStatus } from '../sse';
import { absoluteTime, duration } from '../time';
import { shortCommit } from './Builds';

interface PhaseChange {
  phase: BuildPhase;
  at: number;
}

/** The phases of a build that goes well, in order; the others (error, internalerror, cancelled) end or interrupt it. */
const HAPPY_PATH: readonly BuildPhase[] = BUILD_PHASES.slice(0, BUILD_PHASES.indexOf('complete') + 1);

/** HH:MM:SS of the viewer's clock. */
function clock(ms: number): string {
  return new Date(ms).toTimeString().slice(0, 8);
}

function entryLine(e: BuildLog): string {
  if (e.kind === 'phase') return `${clock(e.at)}  phase ${e.phase ?? e.text.replace(/^phase /, '')}`;
  if (e.kind === 'system') return `${clock(e.at)}  ${e.text}`;
  return e.text;
}

function parse(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    return undefined;
  }
}

/**
 * Follows the build's log over SSE into `model`: every entry from the first on, then live until the build is final.
 * A dropped connection resumes after the last entry seen. Phase entries also make the timeline.
 */
function useBuildLog(id: number, onState: (s: BuildStreamState) => void, onNote: () => void) {
  const model = useRef(new LogModel()).current;
  const [version, setVersion] = useState(0);
  const [status, setStatus] = useState<StreamStatus>('connecting');
  const [phases, setPhases] = useState<PhaseChange[]>([]);
  const [error, setError] = useState<Error>();
  const callbacks = useRef({ onState, onNote });
  callbacks.current = { onState, onNote };

  useEffect(() => {
    const ctl = new AbortController();
    let frame = 0;
    let after = 0;
    const seen: PhaseChange[] = [];
    let phasesChanged = false;
    // Many events can arrive in one read: render at most once per frame.
    const changed = (): void => {
      if (!frame)
        frame = requestAnimationFrame(() => {
          frame = 0;
          setVersion(model.version);
          if (phasesChanged) {
            phasesChanged = false;
            setPhases([...seen]);
          }
        });
    };
    model.reset();
    setPhases([]);
    setError(undefined);
    changed();
    const onStatus = (next: StreamStatus, err?: Error): void => {
      if (err) setError(err);
      setStatus(next);
    };
    void followSse(
      () => `/api/v1/builds/${id}/logs?follow=true&after=${after}`,
      authHeaders,
      ctl.signal,
      (e) => {
        const data = parse(e.data);
        if (!data) return;
        let end: 'end' | undefined;
        if (e.event === 'entry') {
          const entry = data as BuildLog;
          if (entry.seq <= after) return;
          after = entry.seq;
          model.line(entry.try, entryLine(entry), entry.kind === 'log' ? undefined : entry.kind);
          if (entry.kind === 'phase' && entry.phase) {
            seen.push({ phase: entry.phase, at: entry.at });
            phasesChanged = true;
          }
          if (entry.kind !== 'log') callbacks.current.onNote();
        } else if (e.event === 'build') callbacks.current.onState(data as BuildStreamState);
        else if (e.event === 'end') end = 'end';
        changed();
        return end;
      },
      onStatus,
    );
    return () => {
      ctl.abort();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [id, model]);

  return { model, version, status, phases, error };
}

function tryStatus(t: BuildTry): EntryStatus {
  if (t.endedAt === null) return { text: t.registeredAt === null ? 'starting' : 'running', tone: 'running' };
  const outcome = t.outcome ?? 'ended';
  if (outcome === 'complete') return { text: outcome, tone: 'ok' };
  if (outcome === 'incomplete' || outcome === 'cancelled') return { text: outcome, tone: 'neutral' };
  return { text: outcome, tone: 'bad' };
}

/** A try's outcome as a badge, in the job states' colours. */
function TryOutcome({ t }: { t: BuildTry }) {
  const { text, tone } = tryStatus(t);
  const cls = { running: 'processing', ok: 'completed', bad: 'failed', neutral: 'canceled' }[tone];
  return (
    <span className={`state state-${cls}`} data-testid="try-outcome">
      {text}
    </span>
  );
}

/** Names the log's sections: one per try (its plane and worker), and the queue before the first. */
function describeSections(model: LogModel, build: Build, tries: BuildTry[]): void {
  if (model.entries.some((e) => e.index === 0))
    model.describe(0, {
      key: 'queue',
      command: [`submitted by ${build.submittedBy}`],
      status:
        build.phase === 'waiting' && !build.final
          ? { text: 'waiting', tone: 'running' }
          : { text: build.tries ? 'scheduled' : build.phase, tone: 'neutral' },
    });
  for (const t of tries)
    model.describe(t.number, {
      key: `try ${t.number}`,
      command: [t.plane ? `plane ${t.plane}` : 'no plane yet', ...(t.executionId ? [`· ${t.executionId}`] : [])],
      status: tryStatus(t),
    });
}

function Timeline({ phases, final, now }: { phases: PhaseChange[]; final: boolean; now: number }) {
  const last = phases[phases.length - 1];
  const ahead =
    last && !final && HAPPY_PATH.includes(last.phase) ? HAPPY_PATH.slice(HAPPY_PATH.indexOf(last.phase) + 1) : [];
  return (
    <section className="card">
      <div className="card-title">
        <h2>Phases</h2>
      </div>
      <ol className="timeline" data-testid="timeline">
        {phases.map((p, i) => {
          const next = phases[i + 1];
          const current = i === phases.length - 1;
          const spent = next ? next.at - p.at : final ? null : now - p.at;
          return (
            <li
              key={`${i}-${p.phase}`}
              className={`timeline-step phase-${p.phase}${current ? ' current' : ''}`}
              data-phase={p.phase}
              data-current={current ? 'true' : undefined}
            >
              <span className="timeline-phase">{p.phase}</span>
              <time className="timeline-at" dateTime={new Date(p.at).toISOString()} title={absoluteTime(p.at)}>
                {clock(p.at)}
              </time>
              <span className="timeline-spent" data-testid="phase-spent">
                {spent === null ? (final && current ? 'final' : '') : duration(spent)}
              </span>
            </li>
          );
        })}
        {ahead.map((phase) => (
          <li key={`ahead-${phase}`} className="timeline-step pending" data-phase={phase} data-pending="true">
            <span className="timeline-phase">{phase}</span>
            <span className="timeline-at">–</span>
            <span className="timeline-spent" />
          </li>
        ))}
      </ol>
    </section>
  );
}

function Tries({ tries, now }: { tries: BuildTry[]; now: number }) {
  return (
    <section className="card">
      <div className="card-title">
        <h2>Tries</h2>
        <span className="muted small">each try is one ephemeral worker</span>
      </div>
      {tries.length === 0 ? (
        <div className="card-empty muted">No worker has been started for this build.</div>
      ) : (
        <table className="table compact" data-testid="tries">
          <thead>
            <tr>
              <th>#</th>
              <th>Plane</th>
              <th>Execution</th>
              <th>Started</th>
              <th>Registered</th>
              <th>Last heartbeat</th>
              <th>Outcome</th>
              <th>Message</th>
            </tr>
          </thead>
          <tbody>
            {tries.map((t) => (
              <tr key={t.number} data-try={t.number}>
                <td>{t.number}</td>
                <td>{t.plane || <span className="muted">–</span>}</td>
                <td className="mono">{t.executionId ?? <span className="muted">–</span>}</td>
                <td>
                  <Ago ms={t.startedAt} now={now} />
                </td>
                <td title={absoluteTime(t.registeredAt)}>
                  {t.registeredAt === null ? (
                    <span className="muted">{t.endedAt === null ? 'not yet' : 'never'}</span>
                  ) : (
                    `after ${duration(t.registeredAt - t.startedAt)}`
                  )}
                </td>
                <td>
                  {t.lastHeartbeatAt === null ? (
                    <span className="muted">–</span>
                  ) : (
                    <Ago ms={t.lastHeartbeatAt} now={now} />
                  )}
                </td>
                <td>
                  <TryOutcome t={t} />
                </td>
                <td className="message">{t.message ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Context({ build }: { build: Build }) {
  const ctx = build.spec.context;
  if ('git' in ctx)
    return (
      <span className="mono" title={`${ctx.git.url}@${ctx.git.commit}`} data-testid="build-context">
        {ctx.git.url}@{shortCommit(ctx.git.commit)}
      </span>
    );
  return <span data-testid="build-context">uploaded context</span>;
}

export function BuildPage({ id }: { id: number }) {
  const { data, error, reload } = usePolled<BuildDetail>(`/builds/${id}`, 5000);
  const [live, setLive] = useState<BuildStreamState>();
  const [actionError, setActionError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const now = useNow(1000);

  const lastState = useRef('');
  const onState = (s: BuildStreamState): void => {
    setLive(s);
    const key = `${s.phase}/${s.final}`;
    if (key !== lastState.current) {
      lastState.current = key;
      reload();
    }
  };
  const stream = useBuildLog(id, onState, reload);

  const build = data?.build;
  if (error && !build) {
    return (
      <>
        <PageHeader title={`Build #${id}`} />
        <ErrorBox
          error={
            error instanceof ApiError && error.status === 404
              ? new Error(`There is no build ${id}, or it is in a namespace you cannot see.`)
              : error
          }
        />
        <p>
          <Link to="/builds">Back to the builds</Link>
        </p>
      </>
    );
  }
  if (!build) return <PageHeader title={`Build #${id}`} loading />;

  const phase = live?.phase ?? build.phase;
  const final = live?.final ?? build.final;
  const digest = live ? live.digest : build.digest;
  const message = live ? live.message : build.message;
  const canCancel = cancellable({ phase, final });
  const phases = stream.phases.length ? stream.phases : build.phases;
  describeSections(stream.model, { ...build, phase, final }, data.tries);

  const cancel = async (): Promise<void> => {
    setBusy(true);
    setActionError(undefined);
    try {
      const answer = await api<{ build: Build }>(`/builds/${id}/cancel`, { method: 'POST' });
      // The live stream reports the change itself; an answer applied here could land after a newer event.
      if (stream.status !== 'live') setLive(answer.build);
      reload();
    } catch (e) {
      setActionError(e as Error);
    } finally {
      setBusy(false);
    }
  };

  const failed = phase === 'error' || phase === 'internalerror';
  const endedAt = final ? build.finishedAt : null;
  return (
    <>
      <PageHeader
        title={
          <>
            <Link to="/builds" className="crumb">
              Builds
            </Link>{' '}
            / Build #{build.id}
          </>
        }
      >
        <PhaseBadge phase={phase} final={final} />
        <button
          type="button"
          className="danger"
          data-testid="cancel"
          disabled={busy || !canCancel}
          title={
            canCancel
              ? undefined
              : phase === 'pushing'
                ? 'A build that is pushing its image can no longer be cancelled'
                : 'The build has ended'
          }
          onClick={() => void cancel()}
        >
          Cancel
        </button>
      </PageHeader>
      <ErrorBox error={actionError} />
      {message && phase !== 'complete' && (
        <div className={failed ? 'error-box' : 'notice'} data-testid="build-message">
          {phase === 'internalerror' && !final ? <strong>Will be tried again: </strong> : null}
          {message}
        </div>
      )}
      <section className="card facts">
        <dl>
          <div className="wide">
            <dt>Tags</dt>
            <dd className="mono" data-testid="build-tags">
              {build.spec.tags.map((t) => (
                <div key={t}>{t}</div>
              ))}
            </dd>
          </div>
          <div className="wide">
            <dt>Context</dt>
            <dd>
              <Context build={build} />
            </dd>
          </div>
          <div>
            <dt>Dockerfile</dt>
            <dd className="mono" data-testid="build-dockerfile">
              {build.spec.dockerfile}
            </dd>
          </div>
          {build.commit && (
            <div>
              <dt>Commit</dt>
              <dd className="mono" title={build.commit}>
                {shortCommit(build.commit)}
              </dd>
            </div>
          )}
          <div>
            <dt>Namespace</dt>
            <dd>{build.namespace}</dd>
          </div>
          <div>
            <dt>Submitted</dt>
            <dd>
              <Ago ms={build.createdAt} now={now} /> by {build.submittedBy}
            </dd>
          </div>
          <div>
            <dt>Plane</dt>
            <dd>{build.plane ?? '–'}</dd>
          </div>
          <div>
            <dt>Tries</dt>
            <dd data-testid="tries-left">
              {build.tries} started{' '}
              <span className="muted">
                ({build.triesRemaining} {build.triesRemaining === 1 ? 'try' : 'tries'} left)
              </span>
            </dd>
          </div>
          <div>
            <dt>Duration</dt>
            <dd title={endedAt ? absoluteTime(endedAt) : undefined}>
              {build.startedAt ? duration((endedAt ?? (final ? build.startedAt : now)) - build.startedAt) : '–'}
            </dd>
          </div>
          {build.spec.buildArgs && Object.keys(build.spec.buildArgs).length > 0 && (
            <div className="wide">
              <dt>Build arguments</dt>
              <dd className="mono">
                {Object.entries(build.spec.buildArgs).map(([k, v]) => (
                  <div key={k}>
                    {k}={v}
                  </div>
                ))}
              </dd>
            </div>
          )}
          {build.spec.secrets && build.spec.secrets.length > 0 && (
            <div>
              <dt>Secrets</dt>
              <dd>
                {build.spec.secrets.map((s) => (
                  <span key={s} className="chip">
                    {s}
                  </span>
                ))}
              </dd>
            </div>
          )}
          {phase === 'complete' && digest && (
            <div className="full">
              <dt>Digest</dt>
              <dd className="mono" data-testid="digest">
                {digest}
              </dd>
            </div>
          )}
        </dl>
      </section>
      <Timeline phases={phases} final={final} now={now} />
      <section className="card log-card">
        <div className="card-title">
          <h2>Log</h2>
          <span className={`stream stream-${stream.status}`} data-testid="stream-status">
            {
              {
                connecting: 'connecting…',
                live: 'live',
                ended: 'complete',
                reconnecting: 'reconnecting…',
                failed: 'unavailable',
              }[stream.status]
            }
          </span>
          <div className="spacer" />
          <span className="legend small">
            <span className="legend-phase">phase</span> <span className="legend-system">server note</span> worker output
          </span>
        </div>
        <ErrorBox error={stream.error} />
        <LogView model={stream.model} version={stream.model.version} running={stream.status === 'live'} />
      </section>
      <Tries tries={data.tries} now={now} />
    </>
  );
}
