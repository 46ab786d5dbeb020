// The Store: everything the coordinator keeps, by area (jobs, logs, executors, accounts, builds). One interface, one
// implementation per database (sqlite/, postgres/), one contract test suite (test/store) that runs against each.
import type { ExecutorInstance } from '../core/executorNames.js';
import type { FailureReason } from '../core/failureReasons.js';
import type { JobSpec } from '../core/jobSpec.js';
import type { AttemptOutcome, JobState } from '../core/jobState.js';
import type { JobRef, LogEntryUpdate } from '../core/protocol.js';
import type { Accounts } from './accounts.js';
import type { Builds } from './builds.js';

export interface JobRecord {
  id: number;
  queue: string;
  namespace: string;
  spec: JobSpec;
  /** The user whose token submitted the job (null for jobs from before users existed). */
  submittedBy: string | null;
  state: JobState;
  /** Number of the current (or last) attempt; 0 before the first dequeue. */
  attempt: number;
  maxAttempts: number;
  numFailures: number;
  numResets: number;
  cancelRequested: boolean;
  failureMessage: string | null;
  /**
   * Why the job failed, was canceled or was queued again after an error, set with failureMessage; null while there
   * is none, after a completion or a user's retry, and for jobs that ended before reasons were recorded.
   */
  failureReason: FailureReason | null;
  executorName: string | null;
  createdAt: number;
  queuedAt: number;
  /** A queued job is not handed out before this time (retry backoff). */
  availableAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  lastHeartbeatAt: number | null;
}

/** A job to store: its spec (namespace set), with its sealed registry credentials and submitter, as enqueue takes them. */
export interface NewJob {
  spec: JobSpec;
  dockerAuthConfig?: string;
  submittedBy?: string;
}

export interface AttemptRecord {
  jobId: number;
  attempt: number;
  executorName: string;
  startedAt: number;
  finishedAt: number | null;
  outcome: AttemptOutcome | null;
  message: string | null;
  /** Why the attempt ended, when it did not complete (null while it runs, and for attempts from before reasons). */
  failureReason: FailureReason | null;
}

export interface LogEntryRecord {
  index: number;
  key: string;
  command: string[];
  startTime: number;
  exitCode: number | null;
  durationMs: number | null;
  /** Characters of output stored. */
  length: number;
}

export interface LogChunk {
  /** Increases with every stored chunk; a follower resumes after the last one it saw. */
  seq: number;
  index: number;
  offset: number;
  data: string;
}

export interface ExecutorRecord {
  name: string;
  hostname: string;
  os: string;
  arch: string;
  version: string;
  runtime: string;
  runtimeVersion: string | null;
  queues: string[];
  maxJobs: number | null;
  runningJobs: number;
  /** CPUs each job may use on this executor; 0 = unbounded; null = the runtime enforces no limits. */
  jobCpus: number | null;
  /** Memory each job may use on this executor; 0 = unbounded; null = the runtime enforces no limits. */
  jobMemoryBytes: number | null;
  /**
   * Disk each job's workspace may fill on this executor; 0 = unbounded; null = the runtime enforces no limits, or
   * the executor is from before it reported one.
   */
  jobDiskBytes: number | null;
  /** The process id of the executor last heard under the name, on its host; null for executors from before it was sent. */
  pid: number | null;
  firstSeenAt: number;
  lastSeenAt: number;
}

export type ExecutorInfo = Omit<ExecutorRecord, 'firstSeenAt' | 'lastSeenAt'>;

/** The executor process a call comes from: its random id, and how long it keeps its name after the call. */
export interface InstanceClaim {
  id: string;
  windowMs: number;
}

/** Whether an executor's call was recorded; refused when another live process holds its name. */
export type ExecutorClaim = { ok: true } | { ok: false; holder: ExecutorInstance };

export interface QueueStats {
  queue: string;
  queued: number;
  processing: number;
  oldestQueuedAt: number | null;
  /** Jobs that reached 'completed' in the hour before `now` (QUEUE_STATS_WINDOW_MS). */
  completedLastHour: number;
  /** Jobs that reached 'failed' in the hour before `now`. Canceled jobs are not failures and are not counted. */
  failedLastHour: number;
}

/** The window of QueueStats' completedLastHour and failedLastHour: jobs finished after `now` minus this. */
export const QUEUE_STATS_WINDOW_MS = 60 * 60 * 1000;

export interface JobFilter {
  queue?: string;
  state?: JobState;
  namespace?: string;
  /** Only jobs in one of these namespaces (what a user may see). */
  namespaces?: string[];
  /** Only jobs with an id below this one (paging, newest first). */
  beforeId?: number;
  limit: number;
}

export type FinishKind = 'complete' | 'error' | 'fail';

export interface FinishRequest {
  jobId: number;
  attempt: number;
  kind: FinishKind;
  message?: string;
  /** The report's reason; without one (an older executor) the store records reasonOfUntypedReport's guess. */
  reason?: FailureReason;
  canceledByExecutor?: boolean;
  now: number;
  retryBackoffMs: number;
}

export interface DequeueManyArgs {
  executorName: string;
  queues: string[];
  /** One per job to claim: the hash of that attempt's token. */
  tokenHashes: string[];
  now: number;
  /** The order to try the queues in, drawn again for each claim (weighted fairness); default as given. */
  order?: (queues: string[]) => string[];
}

/** A job just claimed, with its sealed registry credentials (what getDockerAuthConfig would return). */
export interface ClaimedJob {
  job: JobRecord;
  dockerAuthConfig?: string;
}

export interface LogAppend {
  jobId: number;
  attempt: number;
  entries: LogEntryUpdate[];
}

export type LogAppendResult =
  | { ok: true; entries: { index: number; length: number }[] }
  /** The attempt is not current (or the job is gone): nothing was stored. */
  | { ok: false; job?: JobRecord };

export type FinishResult =
  | { ok: true; job: JobRecord; /** false when this call repeated an already recorded result */ changed: boolean }
  | { ok: false; reason: 'unknown_job' | 'stale_attempt'; job?: JobRecord };

export interface StallSweep {
  now: number;
  timeoutMs: number;
  maxResets: number;
  /** Heartbeats are not expected from before this time (the server was down), so silence counts from here. */
  notBefore: number;
}

export interface StallResult {
  reset: JobRecord[];
  failed: JobRecord[];
}

/** A database that cannot take writes; `detail` is the driver's message, for operators. */
export interface StorageFault {
  kind: 'disk-full' | 'read-only' | 'io-error' | 'unreachable';
  detail: string;
}

/**
 * Jobs and their attempts. Batch-first: a database implements the many forms (JobStoreCore), each one transaction;
 * the single forms are written once over them (`withSingleForms`).
 */
export interface JobStoreCore {
  /** Several jobs in one transaction: all are stored, in order, or none. `spec.namespace` must be set;
   * `dockerAuthConfig` (encrypted by the server) is stored apart from the spec and only handed to the job's executor. */
  enqueueMany(jobs: NewJob[], now: number): Promise<JobRecord[]>;
  getDockerAuthConfig(jobId: number): Promise<string | undefined>;
  getJob(id: number): Promise<JobRecord | undefined>;
  listJobs(filter: JobFilter): Promise<JobRecord[]>;
  listAttempts(jobId: number): Promise<AttemptRecord[]>;
  /**
   * Claims up to one job per token hash (the oldest available in any of `queues`, in the order given), each as a
   * new attempt, in one transaction.
   */
  dequeueMany(args: DequeueManyArgs): Promise<ClaimedJob[]>;
  /** The earliest time a queued job in `queues` becomes available, if any is waiting out a backoff. */
  nextAvailableAt(queues: string[]): Promise<number | undefined>;
  /** An executor's running jobs kept alive: which it still holds (known), and which to cancel. */
  heartbeat(args: {
    executorName: string;
    jobs: JobRef[];
    now: number;
  }): Promise<{ knownIds: number[]; cancelIds: number[] }>;
  /** The attempt each token hash belongs to, one answer per hash, in order. */
  findAttemptsByTokens(tokenHashes: string[]): Promise<(AttemptRecord | undefined)[]>;
  /** Several final reports in one transaction; one result per request, in order. */
  finishMany(requests: FinishRequest[]): Promise<FinishResult[]>;
  requestCancel(id: number, now: number): Promise<JobRecord | undefined>;
  retry(id: number, now: number): Promise<JobRecord | undefined>;
  resetStalled(sweep: StallSweep): Promise<StallResult>;
  /**
   * One row per queue that has queued or processing jobs, or jobs that completed or failed in the
   * QUEUE_STATS_WINDOW_MS before `now` (finishedAt > now - window); ordered by queue name.
   */
  queueStats(now: number): Promise<QueueStats[]>;
}

/** The single forms, each the many form with one item. */
export interface JobStore extends JobStoreCore {
  enqueue(spec: JobSpec, now: number, extra?: { dockerAuthConfig?: string; submittedBy?: string }): Promise<JobRecord>;
  dequeue(args: {
    executorName: string;
    queues: string[];
    tokenHash: string;
    now: number;
  }): Promise<JobRecord | undefined>;
  findAttemptByToken(tokenHash: string): Promise<AttemptRecord | undefined>;
  finish(request: FinishRequest): Promise<FinishResult>;
}

/** Jobs' output: log entries and their chunks. */
export interface LogStoreCore {
  /**
   * Several attempts' appends, each stored only while its attempt is current (the job processing it); one result
   * per item, in order. One transaction, the fence checked with the jobs locked against a reset or finish until
   * the appends are stored. Appends are idempotent by offset.
   */
  appendLogsMany(items: LogAppend[]): Promise<LogAppendResult[]>;
  listLogEntries(jobId: number, attempt: number): Promise<LogEntryRecord[]>;
  /** Up to `limit` chunks after `afterSeq`, in order; only entry `index`'s when given. */
  readLogChunks(jobId: number, attempt: number, afterSeq: number, limit: number, index?: number): Promise<LogChunk[]>;
}

export interface LogStore extends LogStoreCore {
  /** One attempt's append; throws StaleAttemptError when the attempt is not current. */
  appendLogs(jobId: number, attempt: number, entries: LogEntryUpdate[]): Promise<{ index: number; length: number }[]>;
}

/** Executors as their heartbeats register them, and which process holds each name. */
export interface ExecutorStore {
  /**
   * Records an executor's heartbeat. With `instance`, only if that process may use the name (core/executorNames.ts
   * mayUseName: it holds the name, nobody does, or the holder has been silent for its window, and then it takes the
   * name over), decided in one statement so that two replicas answering two processes at once cannot both accept;
   * a refusal names the holder and changes nothing. Without `instance` (an executor from before instance ids) it is
   * never refused, but leaves the row alone while a live process holds the name, so the list shows the holder.
   */
  upsertExecutor(info: ExecutorInfo, now: number, instance?: InstanceClaim): Promise<ExecutorClaim>;
  /** The process that holds (or last held) an executor name; undefined when none has. */
  executorInstance(name: string): Promise<ExecutorInstance | undefined>;
  /** A stopping process lets go of its name, so that its successor need not wait out its window; others are ignored. */
  releaseExecutorName(name: string, instanceId: string): Promise<void>;
  listExecutors(): Promise<ExecutorRecord[]>;
}

/**
 * Everything the coordinator keeps, by area. Each database implements it in its folder (sqlite/, postgres/), and
 * one contract suite (test/store/contract.ts) runs against each. Areas whose queries read the same on both
 * databases are written once over the shared SQL runner (accounts.ts over sql.ts), as new areas should be.
 */
export interface Store {
  readonly kind: string;
  migrate(): Promise<void>;
  close(): Promise<void>;
  /** Throws when the database cannot be reached or written. */
  ping(): Promise<void>;
  /** Writes one small row, so a database that can be read but not written (disk full, read-only) shows itself. */
  probeWrite(now: number): Promise<void>;
  /** What an error from this store says about its storage, when it is a storage fault rather than a bug or bad input. */
  storageFault(err: unknown): StorageFault | undefined;

  readonly jobs: JobStore;
  readonly logs: LogStore;
  readonly executors: ExecutorStore;
  /** Users, organizations, API tokens and executor secrets. */
  readonly accounts: Accounts;
  /** Image builds: the build queue, tries, logs, uploaded contexts, image-pushed events and scheduler leases. */
  readonly builds: Builds;

  /**
   * Stores that several server replicas share (PostgreSQL) carry their events: `notify` sends a message to every
   * replica's `listen`; `onResumed` is called after the listening connection was lost and is back (messages may
   * have been missed meanwhile).
   */
  listen?(onMessage: (payload: string) => void, onResumed: () => void): Promise<{ close(): Promise<void> }>;
  notify?(payload: string): Promise<void>;
}

/** A single-item append to an attempt that is no longer current (the many form answers `ok: false` instead). */
export class StaleAttemptError extends Error {}

/** The job area with its single forms, over a database's many forms. */
export function jobStoreOf(core: JobStoreCore): JobStore {
  return {
    enqueueMany: (jobs, now) => core.enqueueMany(jobs, now),
    getDockerAuthConfig: (jobId) => core.getDockerAuthConfig(jobId),
    getJob: (id) => core.getJob(id),
    listJobs: (filter) => core.listJobs(filter),
    listAttempts: (jobId) => core.listAttempts(jobId),
    dequeueMany: (args) => core.dequeueMany(args),
    nextAvailableAt: (queues) => core.nextAvailableAt(queues),
    heartbeat: (args) => core.heartbeat(args),
    findAttemptsByTokens: (hashes) => core.findAttemptsByTokens(hashes),
    finishMany: (requests) => core.finishMany(requests),
    requestCancel: (id, now) => core.requestCancel(id, now),
    retry: (id, now) => core.retry(id, now),
    resetStalled: (sweep) => core.resetStalled(sweep),
    queueStats: (now) => core.queueStats(now),
    enqueue: async (spec, now, extra = {}) => (await core.enqueueMany([{ spec, ...extra }], now))[0],
    dequeue: async (args) => (await core.dequeueMany({ ...args, tokenHashes: [args.tokenHash] }))[0]?.job,
    findAttemptByToken: async (hash) => (await core.findAttemptsByTokens([hash]))[0],
    finish: async (request) => (await core.finishMany([request]))[0],
  };
}

/** The log area with its single form, over a database's many forms. */
export function logStoreOf(core: LogStoreCore): LogStore {
  return {
    appendLogsMany: (items) => core.appendLogsMany(items),
    listLogEntries: (jobId, attempt) => core.listLogEntries(jobId, attempt),
    readLogChunks: (jobId, attempt, afterSeq, limit, index) =>
      core.readLogChunks(jobId, attempt, afterSeq, limit, index),
    appendLogs: async (jobId, attempt, entries) => {
      const [result] = await core.appendLogsMany([{ jobId, attempt, entries }]);
      if (!result.ok) throw new StaleAttemptError(`attempt ${attempt} of job ${jobId} is not current`);
      return result.entries;
    },
  };
}
