// Executor protocol bodies (docs/protocol.md). Shared by the server, which validates them, and the executor's
// API client, which builds them, so both ends agree by construction. Unknown fields are ignored (not refused)
// so that an executor one version ahead of its server keeps working.
import { z } from 'zod';
import { storedJobSpec } from './api.js';
import { dockerAuthConfig } from './dockerAuthConfig.js';
import { FAILURE_REASON_NAMES, isFailureReason } from './failureReasons.js';
import { queueName } from './jobSpec.js';

export const EXECUTOR_API_PREFIX = '/api/executor/v1';
export const CLIENT_API_PREFIX = '/api/v1';

/** Longest a dequeue or heartbeat request is held open by the server. */
export const MAX_WAIT_MS = 30_000;

/** Most jobs one dequeue hands out (`maxJobs`). */
export const MAX_DEQUEUE_BATCH = 100;

/** Most items in one `/jobs/batch` request. */
export const MAX_BATCH_ITEMS = 500;

/** Longest heartbeat interval an executor may declare (`heartbeatIntervalMs`). */
export const MAX_HEARTBEAT_INTERVAL_MS = 600_000;

const executorName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, ".", "_" or "-"');

/**
 * Which executor process is calling: a random id it makes at start. Optional, so executors from before it keep
 * working unchecked; with it, the server refuses a second live process under one executor name (409
 * executor_name_in_use), which would otherwise share the first one's identity and jobs.
 */
const instanceId = z
  .string()
  .regex(
    /^[A-Za-z0-9._-]{8,64}$/,
    'must be 8-64 letters, digits, ".", "_" or "-" (a random id the executor process makes at start)',
  )
  .optional()
  .describe('A random id this executor process made at start; another live process under the same name is refused');
const heartbeatIntervalMs = z
  .number()
  .int()
  .min(1)
  .max(MAX_HEARTBEAT_INTERVAL_MS)
  .optional()
  .describe(
    "How often this process sends heartbeats; it holds its name until silent for 3 times this (default 5000, at most the server's stall timeout)",
  );

/** The most one job may use on an executor (EXECUTOR_JOB_NUM_CPUS, EXECUTOR_JOB_MEMORY); 0 = unbounded. */
export const executorResources = z.object({
  cpus: z.number().nonnegative().optional(),
  memoryBytes: z.number().int().nonnegative().optional(),
  diskBytes: z.number().int().nonnegative().optional(),
});
export type ExecutorResources = z.infer<typeof executorResources>;

export const dequeueRequest = z.object({
  executorName,
  version: z.string().max(64),
  queues: z.array(queueName).min(1, 'name at least one queue').max(64),
  resources: executorResources.optional(),
  weights: z
    .record(queueName, z.number().positive('must be a positive number').max(1_000_000))
    .optional()
    .describe('Relative share per queue when several have jobs (default 1 each)'),
  waitMs: z
    .number()
    .int()
    .min(0)
    .max(MAX_WAIT_MS)
    .default(25_000)
    .describe('How long to hold the request when no job is ready'),
  maxJobs: z
    .number()
    .int()
    .min(1)
    .max(MAX_DEQUEUE_BATCH)
    .optional()
    .describe(
      'Take up to this many ready jobs at once; the answer is then { jobs: [...] } (without it: one job, as it is)',
    ),
  instanceId,
  heartbeatIntervalMs,
  hostname: z
    .string()
    .max(255)
    .optional()
    .describe("This process's host, named in the refusal when another process holds the name"),
});
export type DequeueRequest = z.input<typeof dequeueRequest>;

/** What an executor receives for a job. `token` authorizes this attempt's calls and nothing else. */
export const dequeuedJob = z.object({
  id: z.number().int().positive(),
  attempt: z.number().int().positive(),
  token: z.string(),
  queue: z.string(),
  namespace: z.string(),
  /** Without `dockerAuthConfig`, which travels apart. */
  spec: storedJobSpec,
  /**
   * The values of the secrets the job names, by name, resolved in its namespace. The executor sets each in every
   * step's env and redacts every form of each value from anything it sends or logs.
   */
  secrets: z.record(z.string(), z.string()).optional(),
  /** Registry credentials given with the job or in its DOCKER_AUTH_CONFIG secret; the first source for its pulls. */
  dockerAuthConfig: dockerAuthConfig.optional(),
});
export type DequeuedJob = z.infer<typeof dequeuedJob>;

export const jobRef = z.object({ id: z.number().int().positive(), attempt: z.number().int().positive() });
export type JobRef = z.infer<typeof jobRef>;

export const heartbeatRequest = z.object({
  executorName,
  hostname: z.string().max(255),
  pid: z.number().int().positive().optional().describe("The executor process's id on its host, shown to admins"),
  os: z.string().max(64),
  arch: z.string().max(64),
  version: z.string().max(64),
  runtime: z.string().max(64),
  runtimeVersion: z.string().max(128).optional(),
  queues: z.array(queueName).max(64),
  maxJobs: z.number().int().min(0).max(10_000).optional(),
  resources: executorResources
    .optional()
    .describe('Per-job limits this executor enforces; absent when its runtime enforces none'),
  jobs: z.array(jobRef).max(10_000),
  waitMs: z
    .number()
    .int()
    .min(0)
    .max(MAX_WAIT_MS)
    .default(0)
    .describe('Hold the response up to this long, returning early when one of the jobs is canceled or reset'),
  instanceId,
  heartbeatIntervalMs,
});
export type HeartbeatRequest = z.input<typeof heartbeatRequest>;

/** A stopping executor process lets go of its name (`/release`), so that its successor need not wait out its window. */
export const releaseRequest = z.object({
  executorName,
  instanceId: instanceId.unwrap(),
});
export type ReleaseRequest = z.input<typeof releaseRequest>;

export const heartbeatResponse = z.object({
  /** Jobs (by id) whose attempt named in the request is still this executor's to run. */
  knownIds: z.array(z.number().int()),
  /** Known jobs a user asked to cancel: stop them and report them with `fail` and `canceled: true`. */
  cancelIds: z.array(z.number().int()),
});
export type HeartbeatResponse = z.infer<typeof heartbeatResponse>;

export const logEntryUpdate = z.object({
  index: z.number().int().min(0).max(10_000),
  key: z.string().min(1).max(200),
  command: z.array(z.string().max(64 * 1024)).max(256),
  startTime: z.number().int().nonnegative(),
  /** Where `out` starts, counted in characters (UTF-16 code units) of this entry's output. */
  offset: z.number().int().nonnegative(),
  out: z.string(),
  exitCode: z.number().int().optional(),
  durationMs: z.number().int().nonnegative().optional(),
});
export type LogEntryUpdate = z.infer<typeof logEntryUpdate>;

export const appendLogsRequest = z.object({ entries: z.array(logEntryUpdate).min(1).max(1000) });
export const appendLogsResponse = z.object({
  /** The stored length of each entry's output after the append; the next append starts there. */
  entries: z.array(z.object({ index: z.number().int(), length: z.number().int() })),
});
export type AppendLogsResponse = z.infer<typeof appendLogsResponse>;

/** The answer to a final report: the job's state after it. */
export const reportResponse = z.object({ state: z.string() });

export const completeRequest = z.object({});
/** One of the reasons in core/failureReasons.ts. */
export const failureReason = z.enum(FAILURE_REASON_NAMES);
/**
 * An executor a version ahead may know reasons this server does not: such a report is taken as one without a
 * reason (its route decides), never refused, since a refused report would be dropped and its job run again.
 */
const reasonField = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,63}$/, 'must be a failure reason name such as script_failure')
  .optional()
  .transform((r) => (r !== undefined && isFailureReason(r) ? r : undefined))
  .describe(
    `Why the attempt ended: one of ${FAILURE_REASON_NAMES.join(', ')} (an unknown name counts as none); absent from executors before 0.3`,
  );
export const errorRequest = z.object({ message: z.string().max(64 * 1024), reason: reasonField });
export const failRequest = z.object({
  message: z.string().max(64 * 1024),
  reason: reasonField,
  canceled: z.boolean().default(false).describe('The executor stopped the job because it was asked to cancel it'),
});

/** The answer to a dequeue that names `maxJobs`: one or more jobs, each a new attempt with its own token. */
export const dequeueBatchResponse = z.object({ jobs: z.array(dequeuedJob) });
export type DequeueBatchResponse = z.infer<typeof dequeueBatchResponse>;

/** A final report, as `/jobs/batch` carries it: the body of `/complete`, `/error` or `/fail` with its kind. */
export const jobReport = z.discriminatedUnion('kind', [
  completeRequest.extend({ kind: z.literal('complete') }),
  errorRequest.extend({ kind: z.literal('error') }),
  failRequest.extend({ kind: z.literal('fail') }),
]);
export type JobReport = z.input<typeof jobReport>;

/**
 * Several jobs' log appends and final reports in one request: each item is what `/jobs/{id}/logs` and then
 * `/jobs/{id}/{kind}` would do, authorized by its own job token, and answered on its own.
 */
export const batchRequest = z.object({
  items: z
    .array(
      z.object({
        id: z.number().int().positive(),
        token: z.string().min(1).max(256).describe("The attempt's job token, as received from dequeue"),
        logs: appendLogsRequest.shape.entries.optional().describe('Appended first, as /jobs/{id}/logs does'),
        report: jobReport.optional().describe('Then the final report, as /jobs/{id}/{kind} does'),
      }),
    )
    .min(1)
    .max(MAX_BATCH_ITEMS),
});
export type BatchRequest = z.input<typeof batchRequest>;

/** One item's answer: what the single-job routes would have answered, status and all. */
export const batchItemResult = z.union([
  z.object({
    id: z.number().int(),
    status: z.literal(200),
    entries: appendLogsResponse.shape.entries.optional(),
    state: z.string().optional(),
  }),
  z.object({ id: z.number().int(), status: z.number().int(), error: z.string(), code: z.string().optional() }),
]);
export type BatchItemResult = z.infer<typeof batchItemResult>;

export const batchResponse = z.object({ items: z.array(batchItemResult) });
export type BatchResponse = z.infer<typeof batchResponse>;

/** Error codes in 409 answers to job-token calls. */
export const STALE_ATTEMPT = 'stale_attempt';

/** Error code of the 409 that refuses a dequeue or heartbeat: another live executor process holds this name. */
export const EXECUTOR_NAME_IN_USE = 'executor_name_in_use';

/** The body of that 409, besides `error` (the message to show, naming the name, both hosts and the fix). */
export interface NameInUseAnswer {
  code: typeof EXECUTOR_NAME_IN_USE;
  /** How long the holder keeps the name after its last call: a process refused for longer than this knows it is alive. */
  windowMs: number;
  /** When the name frees if the holder stays silent from now on. */
  retryAfterMs: number;
}
