// Why an attempt or a job did not complete, as a type (GitLab's `failure_reason` is the model). The executor says
// which reason ended an attempt; this table alone decides whether that reason is worth another attempt. The server
// stores the reason with the attempt and the job, and the API, the CLI and the web UI show it. No imports: the web UI
// bundles this table for its labels (the protocol's zod schema of a reason lives in protocol.ts).

export const FAILURE_REASONS = {
  script_failure: { retry: false, summary: 'a step exited with a non-zero code' },
  step_timeout: { retry: false, summary: 'a step ran past its timeout' },
  job_timeout: { retry: false, summary: 'the job ran past its maximum runtime' },
  canceled: { retry: false, summary: 'a user canceled the job' },
  out_of_memory: { retry: false, summary: 'a step was killed for using more memory than the job may' },
  out_of_disk: {
    retry: false,
    summary: "the job filled its disk (resources.disk, at most the executor's EXECUTOR_JOB_DISK)",
  },
  image_not_found: { retry: false, summary: "a step's image does not exist" },
  image_pull_denied: { retry: false, summary: "the registry refused access to a step's image" },
  image_pull_failure: { retry: true, summary: "a step's image could not be pulled (registry unreachable or failing)" },
  invalid_step: {
    retry: false,
    summary: 'a step could not start for a reason of its own (a user missing from its image, say)',
  },
  invalid_workspace: { retry: false, summary: "a step's dir or a file led outside the workspace through a symlink" },
  repository_refused: { retry: false, summary: 'the executor does not fetch repositories from this kind of URL' },
  checkout_failure: { retry: true, summary: 'the repository could not be fetched or checked out' },
  resources_exceeded: { retry: false, summary: 'the job asks for more CPU, memory or disk than its executor allows' },
  secret_unavailable: { retry: false, summary: 'a secret the job names could not be resolved' },
  unschedulable: {
    retry: true,
    summary: "the cluster placed the job's pod on no node in time (EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT)",
  },
  runtime_unavailable: {
    retry: true,
    summary: "the executor's runtime could not run the job (engine unreachable or failing)",
  },
  executor_shutdown: { retry: true, summary: 'the executor was shut down while the job ran' },
  executor_lost: { retry: true, summary: 'the executor stopped sending heartbeats' },
  system_failure: { retry: true, summary: 'the executor failed for a reason of its own' },
} as const satisfies Record<string, { retry: boolean; summary: string }>;

export type FailureReason = keyof typeof FAILURE_REASONS;

export const FAILURE_REASON_NAMES = Object.keys(FAILURE_REASONS) as [FailureReason, ...FailureReason[]];

/** Whether another attempt could help: the one place that decides between a retried and a failed job. */
export function isRetryable(reason: FailureReason): boolean {
  return FAILURE_REASONS[reason].retry;
}

/** How an attempt ended, as the executor reports it (`/complete`, `/error` or `/fail`, with the reason). */
export type AttemptReport =
  { kind: 'complete' } | { kind: 'error' | 'fail'; reason: FailureReason; message: string; canceled?: boolean };

/** The report for an attempt that ended for `reason`: an error (retried while attempts remain) or a failure. */
export function failure(reason: FailureReason, message: string): AttemptReport {
  if (reason === 'canceled') return { kind: 'fail', reason, message, canceled: true };
  return { kind: isRetryable(reason) ? 'error' : 'fail', reason, message };
}

/** What an older executor's report without a reason most likely meant. */
export function reasonOfUntypedReport(kind: 'error' | 'fail', canceled: boolean): FailureReason {
  if (canceled) return 'canceled';
  return kind === 'error' ? 'system_failure' : 'script_failure';
}

/** How the server applies a failed attempt's report: retried (`error`) or final (`fail`), for which reason. */
export interface SettledReport {
  kind: 'error' | 'fail';
  reason: FailureReason;
  canceled: boolean;
}

/**
 * A report of an `error` or `fail` as the server applies it. A typed report's reason decides retry or fail, so the
 * table above wins over the route the report came by; a report without one (an older executor) keeps its kind and
 * gets the reason it most likely meant. A cancel, by flag or by reason, is always a final `canceled`.
 */
export function settleReport(
  kind: 'error' | 'fail',
  reason: FailureReason | undefined,
  canceled: boolean,
): SettledReport {
  if (reason === undefined) return { kind, reason: reasonOfUntypedReport(kind, canceled), canceled };
  if (canceled || reason === 'canceled') return { kind: 'fail', reason: 'canceled', canceled: true };
  return { kind: isRetryable(reason) ? 'error' : 'fail', reason, canceled: false };
}

/** Whether `name` is a reason this version knows (a newer server may store others). */
export function isFailureReason(name: string): name is FailureReason {
  return Object.hasOwn(FAILURE_REASONS, name);
}

/** A reason for people: "out of memory (out_of_memory)", the raw name kept so that it can be searched for. */
export function reasonLabel(reason: string): string {
  return `${reason.replaceAll('_', ' ')} (${reason})`;
}

/** What a reason means, in a sentence; undefined for a reason this version does not know. */
export function reasonSummary(reason: string): string | undefined {
  return isFailureReason(reason) ? FAILURE_REASONS[reason].summary : undefined;
}
