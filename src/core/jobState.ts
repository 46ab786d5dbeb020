// The job state machine (docs/protocol.md draws it). Pure functions, so every store applies the same rules.

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
export function decideAfterError(job: { numFailures: number; maxAttempts: number; cancelRequested: boolean }, baseBackoffMs: number): ErrorDecision {
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
