// The client API's answers (/api/v1), as zod schemas next to the request schemas (jobSpec, protocol.ts): the server
// serializes every JSON answer through its route's schema (only the fields named here leave it), the OpenAPI
// document is generated from them, and the CLI and the web UI type their calls from them. Nothing outside the
// server knows the store's records.
import { z } from 'zod';
import { FAILURE_REASON_NAMES } from './failureReasons.js';
import type { JobSpec } from './jobSpec.js';
import { JOB_STATES } from './jobState.js';

const id = z.number().int().positive();
/** Milliseconds since the epoch. */
const time = z.number().int().describe('milliseconds since the epoch');

/** A reason this server knows, or (from an executor a version ahead) another name. */
export const failureReasonView = z.union([z.enum(FAILURE_REASON_NAMES), z.string()]);

/**
 * A job's spec as stored: the submitted one, parsed (durations in milliseconds, sizes in bytes, the namespace set),
 * without its registry credentials. Passed through as is: it was validated when it was submitted.
 */
export const storedJobSpec = z
  .custom<JobSpec>((value) => typeof value === 'object' && value !== null && !Array.isArray(value))
  .meta({
    type: 'object',
    description:
      'The job spec as stored (docs/job-spec.md): durations in milliseconds, sizes in bytes, namespace set; no registry credentials',
  });

export const jobView = z.object({
  id,
  queue: z.string(),
  namespace: z.string(),
  spec: storedJobSpec,
  submittedBy: z.string().nullable().describe('the user whose token submitted it; null for jobs from before users'),
  state: z.enum(JOB_STATES),
  attempt: z.number().int().nonnegative().describe('the current (or last) attempt; 0 before the first dequeue'),
  maxAttempts: z.number().int().positive(),
  numFailures: z.number().int().nonnegative(),
  numResets: z.number().int().nonnegative(),
  cancelRequested: z.boolean(),
  failureMessage: z.string().nullable(),
  failureReason: failureReasonView.nullable().describe('why it did not complete, or was queued again; docs/api.md'),
  executorName: z.string().nullable(),
  createdAt: time,
  queuedAt: time,
  availableAt: time.describe('a queued job is not handed out before this (retry backoff)'),
  startedAt: time.nullable(),
  finishedAt: time.nullable(),
  lastHeartbeatAt: time.nullable(),
});
export type JobView = z.infer<typeof jobView>;

export const attemptView = z.object({
  jobId: id,
  attempt: id,
  executorName: z.string(),
  startedAt: time,
  finishedAt: time.nullable(),
  outcome: z.enum(['completed', 'errored', 'failed', 'reset', 'canceled']).nullable(),
  message: z.string().nullable(),
  failureReason: failureReasonView.nullable(),
});
export type AttemptView = z.infer<typeof attemptView>;

export const logEntryView = z.object({
  index: z.number().int().nonnegative(),
  key: z.string(),
  command: z.array(z.string()),
  startTime: time,
  exitCode: z.number().int().nullable(),
  durationMs: z.number().int().nullable(),
});
export type LogEntryView = z.infer<typeof logEntryView>;

export const executorView = z.object({
  name: z.string(),
  hostname: z.string(),
  os: z.string(),
  arch: z.string(),
  version: z.string(),
  runtime: z.string(),
  runtimeVersion: z.string().nullable(),
  queues: z.array(z.string()),
  maxJobs: z.number().int().nullable(),
  runningJobs: z.number().int(),
  jobCpus: z.number().nullable().describe('CPUs each job may use; 0 unbounded; null: the runtime enforces none'),
  jobMemoryBytes: z.number().nullable(),
  jobDiskBytes: z.number().nullable(),
  pid: z.number().int().nullable().describe('the process id on its host of the executor last heard; null: not sent'),
  firstSeenAt: time,
  lastSeenAt: time,
  active: z.boolean().describe('heard from in the last 15 s'),
  compatibility: z
    .enum(['up_to_date', 'outdated', 'version_ahead'])
    .nullable()
    .describe("its version against the server's; null when either does not parse, or it is not active"),
});
export type ExecutorView = z.infer<typeof executorView>;

export const queueStatsView = z.object({
  queue: z.string(),
  queued: z.number().int(),
  processing: z.number().int(),
  oldestQueuedAt: time.nullable(),
  completedLastHour: z.number().int(),
  failedLastHour: z.number().int(),
});
export type QueueStatsView = z.infer<typeof queueStatsView>;

export const userView = z.object({ name: z.string(), siteAdmin: z.boolean(), createdAt: time });
export const orgView = z.object({ name: z.string(), createdAt: time, members: z.number().int() });
export const tokenView = z.object({
  id,
  name: z.string(),
  user: z.string(),
  createdAt: time,
  lastUsedAt: time.nullable(),
});
export const secretView = z.object({
  name: z.string(),
  namespace: z.string(),
  updatedBy: z.string(),
  createdAt: time,
  updatedAt: time,
});
export const secretAccessView = z.object({
  name: z.string(),
  namespace: z.string(),
  jobId: id,
  attempt: id,
  executorName: z.string(),
  accessedAt: time,
});
export type UserView = z.infer<typeof userView>;
export type OrgView = z.infer<typeof orgView>;
export type TokenView = z.infer<typeof tokenView>;
export type SecretView = z.infer<typeof secretView>;
export type SecretAccessView = z.infer<typeof secretAccessView>;

/** Every refusal and failure: a message that says what to do; 400s name each bad field. */
export const errorResponse = z.object({
  error: z.string(),
  issues: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  code: z.string().optional().describe('a machine-readable cause, where one is documented (stale_attempt, …)'),
});

/** The answers, by route. */
export const responses = {
  job: z.object({ job: jobView }),
  jobs: z.object({ jobs: z.array(jobView) }),
  jobPage: z.object({
    jobs: z.array(jobView),
    nextBefore: id.nullable().describe('pass as `before` for the next page; null on the last'),
  }),
  jobWithAttempts: z.object({ job: jobView, attempts: z.array(attemptView) }),
  jobLogs: z.object({
    attempt: z.number().int().nonnegative(),
    entries: z.array(
      logEntryView.extend({
        length: z.number().int().nonnegative().describe('characters of output stored'),
        out: z.string().describe('the output, each line prefixed "stdout: " or "stderr: "'),
      }),
    ),
  }),
  executors: z.object({ executors: z.array(executorView), serverVersion: z.string() }),
  queues: z.object({ queues: z.array(queueStatsView) }),
  me: z.object({ user: userView, orgs: z.array(z.string()), namespaces: z.array(z.string()) }),
  user: z.object({ user: userView }),
  users: z.object({ users: z.array(userView.extend({ orgs: z.array(z.string()) })) }),
  org: z.object({ org: orgView }),
  orgs: z.object({ orgs: z.array(orgView) }),
  members: z.object({ members: z.array(z.object({ name: z.string(), siteAdmin: z.boolean() })) }),
  membership: z.object({ org: z.string(), user: z.string() }),
  deletedName: z.object({ deleted: z.string() }),
  deletedId: z.object({ deleted: id }),
  createdToken: z.object({ token: tokenView, secret: z.string().describe('the token itself, shown this once') }),
  tokens: z.object({ tokens: z.array(tokenView) }),
  secret: z.object({ secret: secretView }),
  secrets: z.object({ secrets: z.array(secretView) }),
  deletedSecret: z.object({ deleted: z.object({ name: z.string(), namespace: z.string() }) }),
  secretAccess: z.object({ entries: z.array(secretAccessView) }),
  health: z.object({
    status: z.enum(['ok', 'unhealthy']),
    version: z.string().optional(),
    store: z.string().optional(),
    reason: z.string().optional(),
    storage: z.string().optional(),
    since: z.string().optional(),
  }),
} as const;

export type JobResponse = z.infer<typeof responses.job>;
export type JobPageResponse = z.infer<typeof responses.jobPage>;
export type JobWithAttemptsResponse = z.infer<typeof responses.jobWithAttempts>;
export type JobLogsResponse = z.infer<typeof responses.jobLogs>;
export type ExecutorsResponse = z.infer<typeof responses.executors>;
export type QueuesResponse = z.infer<typeof responses.queues>;

/** The events of `GET /jobs/:id/logs/stream`, by name (the SSE `event:` field; `data:` is the JSON). */
export const jobStreamEvents = {
  attempt: z.object({ attempt: id }),
  entry: logEntryView,
  output: z.object({
    index: z.number().int().nonnegative(),
    offset: z.number().int().nonnegative().describe("where `data` starts in the entry's output"),
    data: z.string(),
  }),
  state: z.object({
    state: z.enum(JOB_STATES),
    queue: z.string(),
    attempt: z.number().int().nonnegative(),
    executorName: z.string().nullable(),
    failureMessage: z.string().nullable(),
    failureReason: failureReasonView.nullable(),
    cancelRequested: z.boolean(),
  }),
  end: z.object({ state: z.enum(JOB_STATES) }),
} as const;

export type JobStreamEvent = {
  [K in keyof typeof jobStreamEvents]: { event: K; data: z.infer<(typeof jobStreamEvents)[K]> };
}[keyof typeof jobStreamEvents];
