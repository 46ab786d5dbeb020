import { useCallback, useEffect, useRef, useState } from 'react';
import { stringify } from 'yaml';
import { reasonLabel, reasonSummary } from '../../../src/core/failureReasons';
import { ApiError, api, authHeaders, type Attempt, type Job, type JobState } from '../api';
import { Ago, ErrorBox, PageHeader, StateBadge } from '../components';
import { usePolled, useNow } from '../hooks';
import type { JobStreamEvent } from '../../../src/core/api';
import { LogModel } from '../logModel';
import { LogView } from '../LogView';
import { Link, navigate, useLocation } from '../router';
import { jobStreamEvent } from '../../../src/core/sse';
import { followSse, type StreamStatus } from '../sse';
import { absoluteTime, duration } from '../time';

/** The stream's state event (core/api.ts). */
type LiveState = Extract<JobStreamEvent, { event: 'state' }>['data'];

const FINISHED: JobState[] = ['completed', 'failed', 'canceled'];

/** Follows the job's log over SSE into `model`, reconnecting after a dropped connection. */
function useLogStream(id: number, attempt: number | undefined, restartKey: number, onState: (s: LiveState) => void) {
  const model = useRef(new LogModel()).current;
  const [version, setVersion] = useState(0);
  const [status, setStatus] = useState<StreamStatus>('connecting');
  const [shownAttempt, setShownAttempt] = useState<number>();
  const [error, setError] = useState<Error>();
  const onStateRef = useRef(onState);
  onStateRef.current = onState;

  useEffect(() => {
    const ctl = new AbortController();
    let frame = 0;
    let current: number | undefined;
    // Many events can arrive in one read: render at most once per frame.
    const changed = (): void => {
      if (!frame)
        frame = requestAnimationFrame(() => {
          frame = 0;
          setVersion(model.version);
        });
    };
    model.reset();
    setShownAttempt(undefined);
    setError(undefined);
    changed();
    const url = `/api/v1/jobs/${id}/logs/stream${attempt ? `?attempt=${attempt}` : ''}`;
    const onStatus = (next: StreamStatus, err?: Error): void => {
      if (err) setError(err);
      setStatus(next);
    };
    void followSse(
      () => url,
      authHeaders,
      ctl.signal,
      (e) => {
        let end: 'end' | undefined;
        const message = jobStreamEvent(e);
        if (message?.event === 'attempt') {
          if (message.data.attempt !== current) {
            current = message.data.attempt;
            model.reset();
            setShownAttempt(message.data.attempt);
          }
        } else if (message?.event === 'entry') model.entry(message.data);
        else if (message?.event === 'output') model.output(message.data.index, message.data.offset, message.data.data);
        else if (message?.event === 'state') onStateRef.current(message.data);
        else if (message?.event === 'end') end = 'end';
        changed();
        return end;
      },
      onStatus,
    );
    return () => {
      ctl.abort();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [id, attempt, restartKey, model]);

  return { model, version, status, shownAttempt, error };
}

function SpecView({ spec }: { spec: unknown }) {
  const [format, setFormat] = useState<'yaml' | 'json'>('yaml');
  const text = format === 'yaml' ? stringify(spec, { lineWidth: 0 }) : JSON.stringify(spec, null, 2);
  return (
    <section className="card">
      <div className="card-title">
        <h2>Spec</h2>
        <div className="spacer" />
        <div className="segmented">
          <button type="button" className={format === 'yaml' ? 'on' : ''} onClick={() => setFormat('yaml')}>
            YAML
          </button>
          <button type="button" className={format === 'json' ? 'on' : ''} onClick={() => setFormat('json')}>
            JSON
          </button>
        </div>
      </div>
      <pre className="spec" data-testid="spec">
        {text}
      </pre>
    </section>
  );
}

/** Why a job or attempt did not complete: "out of memory (out_of_memory)", its meaning on hover. */
function Reason({ reason, testId }: { reason: string; testId: string }) {
  return (
    <span className="reason" data-testid={testId} title={reasonSummary(reason)}>
      {reasonLabel(reason)}
    </span>
  );
}

function Attempts({
  attempts,
  shown,
  onShow,
  now,
}: {
  attempts: Attempt[];
  shown: number | undefined;
  onShow: (a: number) => void;
  now: number;
}) {
  if (!attempts.length) return null;
  return (
    <section className="card">
      <div className="card-title">
        <h2>Attempts</h2>
      </div>
      <table className="table compact" data-testid="attempts">
        <thead>
          <tr>
            <th>#</th>
            <th>Outcome</th>
            <th>Reason</th>
            <th>Executor</th>
            <th>Started</th>
            <th className="num">Duration</th>
            <th>Message</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {attempts.map((a) => (
            <tr key={a.attempt} className={a.attempt === shown ? 'selected' : ''}>
              <td>{a.attempt}</td>
              <td>
                {a.outcome ? (
                  <span
                    className={`state state-${a.outcome === 'errored' || a.outcome === 'reset' ? 'failed' : a.outcome}`}
                  >
                    {a.outcome}
                  </span>
                ) : (
                  <span className="state state-processing">running</span>
                )}
              </td>
              <td>{a.failureReason ? <Reason reason={a.failureReason} testId="attempt-reason" /> : ''}</td>
              <td>{a.executorName ?? '–'}</td>
              <td>
                <Ago ms={a.startedAt} now={now} />
              </td>
              <td className="num">{duration((a.finishedAt ?? now) - a.startedAt)}</td>
              <td className="message">{a.message ?? ''}</td>
              <td>
                {a.attempt === shown ? (
                  <span className="muted small">shown</span>
                ) : (
                  <button type="button" className="link" onClick={() => onShow(a.attempt)}>
                    show log
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function JobPage({ id }: { id: number }) {
  const { search } = useLocation();
  const attemptParam = search.get('attempt');
  const fixedAttempt = attemptParam ? Number(attemptParam) : undefined;
  const { data, error, reload } = usePolled<{ job: Job; attempts: Attempt[] }>(`/jobs/${id}`, 5000);
  const [live, setLive] = useState<LiveState>();
  const [restartKey, setRestartKey] = useState(0);
  const [actionError, setActionError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const now = useNow(1000);

  const lastState = useRef('');
  const onState = useCallback(
    (s: LiveState) => {
      setLive(s);
      const key = `${s.state}/${s.attempt}/${s.cancelRequested}`;
      if (key !== lastState.current) {
        lastState.current = key;
        reload();
      }
    },
    [reload],
  );
  const stream = useLogStream(id, fixedAttempt, restartKey, onState);

  const job = data?.job;
  const state = live?.state ?? job?.state;
  const cancelRequested = live?.cancelRequested ?? job?.cancelRequested ?? false;
  const finished = state !== undefined && FINISHED.includes(state);

  const act = async (action: 'cancel' | 'retry'): Promise<void> => {
    setBusy(true);
    setActionError(undefined);
    try {
      const answer = await api<{ job: Job }>(`/jobs/${id}/${action}`, { method: 'POST' });
      // The live stream reports the new state itself; an answer applied here could land after a newer event.
      if (stream.status !== 'live')
        setLive({
          state: answer.job.state,
          queue: answer.job.queue,
          attempt: answer.job.attempt,
          executorName: answer.job.executorName,
          failureMessage: answer.job.failureMessage,
          failureReason: answer.job.failureReason,
          cancelRequested: answer.job.cancelRequested,
        });
      if (action === 'retry') {
        if (fixedAttempt) navigate(`/jobs/${id}`);
        setRestartKey((k) => k + 1);
      }
      reload();
    } catch (e) {
      setActionError(e as Error);
    } finally {
      setBusy(false);
    }
  };

  if (error && !data) {
    return (
      <>
        <PageHeader title={`Job #${id}`} />
        <ErrorBox
          error={
            error instanceof ApiError && error.status === 404
              ? new Error(`There is no job ${id}, or it is in a namespace you cannot see.`)
              : error
          }
        />
        <p>
          <Link to="/jobs">Back to the jobs</Link>
        </p>
      </>
    );
  }
  if (!job || !state) return <PageHeader title={`Job #${id}`} loading />;

  const failureMessage = live ? live.failureMessage : job.failureMessage;
  const failureReason = (live ? live.failureReason : job.failureReason) ?? null;
  const summary = failureReason ? reasonSummary(failureReason) : undefined;
  const executorName = live?.executorName ?? job.executorName;
  const attemptNo = live?.attempt ?? job.attempt;
  const startedAt = job.startedAt;
  const endedAt = finished ? job.finishedAt : null;

  return (
    <>
      <PageHeader
        title={
          <>
            <Link to="/jobs" className="crumb">
              Jobs
            </Link>{' '}
            / Job #{job.id}
          </>
        }
      >
        <StateBadge state={state} cancelRequested={cancelRequested} />
        <button
          type="button"
          className="danger"
          data-testid="cancel"
          disabled={busy || finished || cancelRequested}
          onClick={() => void act('cancel')}
        >
          {cancelRequested && !finished ? 'Canceling…' : 'Cancel'}
        </button>
        <button type="button" data-testid="retry" disabled={busy || !finished} onClick={() => void act('retry')}>
          Retry
        </button>
      </PageHeader>
      <ErrorBox error={actionError} />
      {(failureMessage || failureReason) && (
        <div className={state === 'canceled' ? 'notice' : 'error-box'} data-testid="failure">
          {failureReason && (
            <div className="failure-reason">
              <Reason reason={failureReason} testId="failure-reason" />
              {summary && <span className="reason-summary"> · {summary}</span>}
            </div>
          )}
          {failureMessage && <div data-testid="failure-message">{failureMessage}</div>}
        </div>
      )}
      <section className="card facts">
        <dl>
          <div>
            <dt>Queue</dt>
            <dd>
              <Link to={`/jobs?queue=${encodeURIComponent(job.queue)}`}>{job.queue}</Link>
            </dd>
          </div>
          <div>
            <dt>Namespace</dt>
            <dd>{job.namespace}</dd>
          </div>
          <div>
            <dt>Submitted</dt>
            <dd>
              <Ago ms={job.createdAt} now={now} />
              {job.submittedBy ? ` by ${job.submittedBy}` : ''}
            </dd>
          </div>
          <div>
            <dt>Executor</dt>
            <dd>{executorName ?? '–'}</dd>
          </div>
          <div>
            <dt>Attempt</dt>
            <dd>
              {attemptNo}{' '}
              <span className="muted">
                ({job.numFailures} error{job.numFailures === 1 ? '' : 's'} of {job.maxAttempts} allowed
                {job.numResets ? `, ${job.numResets} reset${job.numResets === 1 ? '' : 's'}` : ''})
              </span>
            </dd>
          </div>
          <div>
            <dt>Started</dt>
            <dd>{startedAt ? <Ago ms={startedAt} now={now} /> : '–'}</dd>
          </div>
          <div>
            <dt>Duration</dt>
            <dd title={endedAt ? absoluteTime(endedAt) : undefined}>
              {startedAt ? duration((endedAt ?? (state === 'processing' ? now : startedAt)) - startedAt) : '–'}
            </dd>
          </div>
        </dl>
      </section>
      <section className="card log-card">
        <div className="card-title">
          <h2>Log{stream.shownAttempt ? ` · attempt ${stream.shownAttempt}` : ''}</h2>
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
          {fixedAttempt !== undefined && <Link to={`/jobs/${id}`}>Follow the latest attempt</Link>}
        </div>
        <ErrorBox error={stream.error} />
        {attemptNo === 0 && !fixedAttempt ? (
          <div className="log-empty">
            {state === 'queued' ? 'Queued: waiting for an executor to take it…' : 'This job never ran.'}
          </div>
        ) : (
          <LogView model={stream.model} version={stream.version} running={stream.status === 'live'} />
        )}
      </section>
      <Attempts
        attempts={data.attempts}
        shown={fixedAttempt ?? stream.shownAttempt}
        now={now}
        onShow={(a) => navigate(a === job.attempt ? `/jobs/${id}` : `/jobs/${id}?attempt=${a}`)}
      />
      <SpecView spec={job.spec} />
    </>
  );
}
