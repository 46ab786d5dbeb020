// The job state machine (docs/protocol.md draws it). Pure functions, so every store applies the same rules.
import { settleReport, type FailureReason } from './failureReasons.js';

export const JOB_STATES = ['queued', 'processing', 'completed', 'failed', 'canceled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['completed', 'failed', 'canceled']);

const ALLOWED: Record<JobState, readonly JobState[]> = {
  queued: ['processing', 'canceled'],
  processing: ['completed', 'queued', 'failed', 'canceled'],
  completed: ['queued'], // a user's retry
  failed: ['queued'],
  canceled: ['queued'],
};

export function canTransition(from: JobState, to: JobState): boolean {
  return ALLOWED[from].includes(to);
}

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

/** How an attempt ended, as recorded in the attempts history. */
export type AttemptOutcome = 'completed' | 'errored' | 'failed' | 'canceled' | 'reset';

export interface ErrorDecision {
  state: 'queued' | 'failed' | 'canceled';
  numFailures: number;
  /** When state is queued: how long to wait before the job may be dequeued again. */
  backoffMs: number;
}

/**
 * An attempt reported a retryable error. A cancel request wins; otherwise the job is queued again after an
 * exponential backoff while attempts remain, and fails when they are used up.
 */
export function decideAfterError(
  job: { numFailures: number; maxAttempts: number; cancelRequested: boolean },
  baseBackoffMs: number,
): ErrorDecision {
  if (job.cancelRequested) return { state: 'canceled', numFailures: job.numFailures, backoffMs: 0 };
  const numFailures = job.numFailures + 1;
  if (numFailures >= job.maxAttempts) return { state: 'failed', numFailures, backoffMs: 0 };
  return { state: 'queued', numFailures, backoffMs: retryBackoffMs(numFailures, baseBackoffMs) };
}

/** base, 2×base, 4×base … capped at 60×base (5 min for the default 5 s base). */
export function retryBackoffMs(numFailures: number, baseMs: number): number {
  return Math.min(baseMs * 2 ** Math.max(0, numFailures - 1), baseMs * 60);
}

export function decideAfterFail(job: { cancelRequested: boolean }, canceledByExecutor: boolean): 'failed' | 'canceled' {
  return job.cancelRequested || canceledByExecutor ? 'canceled' : 'failed';
}

/** The executor stopped heartbeating: queue the job again unless it has been reset too often. */
export function decideAfterStall(job: { numResets: number }, maxResets: number): 'queued' | 'failed' {
  return job.numResets < maxResets ? 'queued' : 'failed';
}

export function stallFailureMessage(maxResets: number, executorName: string | null, timeoutMs: number): string {
  return (
    `job was reset ${maxResets} time${maxResets === 1 ? '' : 's'} because its executor stopped sending heartbeats ` +
    `(last executor: ${executorName ?? 'unknown'}, silent for more than ${Math.round(timeoutMs / 1000)}s); giving up. ` +
    'Check that executors are not crashing or being killed (e.g. out of memory) while running this job.'
  );
}

export interface FinishInput {
  kind: 'complete' | 'error' | 'fail';
  message?: string;
  /** Why the attempt ended (error and fail); absent from older executors, then guessed from the kind. */
  reason?: FailureReason;
  canceledByExecutor?: boolean;
  now: number;
  retryBackoffMs: number;
}

const OUTCOME_OF_FINISH = { complete: 'completed', error: 'errored', fail: 'failed' } as const;

export type FinishDecision =
  /** The executor retried a call whose answer it did not get: repeat the answer, change nothing. */
  | { kind: 'repeat' }
  | { kind: 'stale' }
  | {
      kind: 'apply';
      state: JobState;
      attemptOutcome: AttemptOutcome;
      numFailures: number;
      availableAt: number;
      failureMessage: string | null;
      /** Recorded on the attempt and on the job, as the message is: null when it completed. */
      failureReason: FailureReason | null;
      /** The job is over (not queued again): it gets a finishedAt and keeps its queuedAt. */
      terminal: boolean;
    };

/** What an executor's report of an attempt does to its job. Every store applies exactly this. */
export function decideFinish(
  job: {
    state: JobState;
    attempt: number;
    numFailures: number;
    maxAttempts: number;
    cancelRequested: boolean;
    availableAt: number;
  },
  attempt: { attempt: number; outcome: AttemptOutcome | null },
  report: FinishInput,
): FinishDecision {
  // The reason, not the route, decides retry or fail (core/failureReasons.ts).
  const settled =
    report.kind === 'complete'
      ? undefined
      : settleReport(report.kind, report.reason, report.canceledByExecutor ?? false);
  const kind = settled?.kind ?? 'complete';
  const outcome = OUTCOME_OF_FINISH[kind];
  if (attempt.outcome !== null) {
    // Any report of an attempt that ended canceled is answered the same way: it is over, as asked.
    return attempt.outcome === outcome || attempt.outcome === 'canceled' ? { kind: 'repeat' } : { kind: 'stale' };
  }
  if (job.state !== 'processing' || job.attempt !== attempt.attempt) return { kind: 'stale' };
  let state: JobState;
  let numFailures = job.numFailures;
  let availableAt = job.availableAt;
  let failureMessage: string | null = report.message ?? null;
  if (kind === 'complete') {
    state = job.cancelRequested ? 'canceled' : 'completed';
    failureMessage = null;
  } else if (kind === 'error') {
    const decision = decideAfterError(job, report.retryBackoffMs);
    state = decision.state;
    numFailures = decision.numFailures;
    availableAt = report.now + decision.backoffMs;
  } else {
    state = decideAfterFail(job, settled?.canceled ?? false);
  }
  const canceled = state === 'canceled';
  return {
    kind: 'apply',
    state,
    numFailures,
    availableAt,
    attemptOutcome: canceled ? 'canceled' : outcome,
    failureMessage: canceled ? 'canceled by a user' : failureMessage,
    failureReason: canceled ? 'canceled' : (settled?.reason ?? null),
    terminal: state !== 'queued',
  };
}

export interface StallOutcome {
  /** Recorded on the silent attempt, which ends as 'reset'. */
  attemptMessage: string;
  attemptReason: 'executor_lost';
  next: 'queued' | 'failed' | 'canceled';
  /** For failed and canceled jobs (a queued job keeps the message and reason it had). */
  failureMessage: string | null;
  failureReason: FailureReason | null;
}

/** A processing job whose executor went silent: what becomes of its attempt and of the job. */
export function decideStalled(
  job: { numResets: number; cancelRequested: boolean; executorName: string | null; lastHeartbeatAt: number | null },
  sweep: { now: number; timeoutMs: number; maxResets: number },
): StallOutcome {
  const silentFor = Math.round((sweep.now - (job.lastHeartbeatAt ?? sweep.now)) / 1000);
  const attempt = {
    attemptMessage: `no heartbeat from executor ${job.executorName} for ${silentFor}s`,
    attemptReason: 'executor_lost',
  } as const;
  if (job.cancelRequested)
    return { ...attempt, next: 'canceled', failureMessage: 'canceled by a user', failureReason: 'canceled' };
  if (decideAfterStall(job, sweep.maxResets) === 'queued')
    return { ...attempt, next: 'queued', failureMessage: null, failureReason: null };
  return {
    ...attempt,
    next: 'failed',
    failureMessage: stallFailureMessage(sweep.maxResets, job.executorName, sweep.timeoutMs),
    failureReason: 'executor_lost',
  };
}
