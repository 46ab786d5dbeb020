// The Store: everything the coordinator keeps. One interface, one implementation per database (sqlite/ now,
// postgres/ next), one contract test suite (test/store) that runs against each.
import type { JobSpec } from '../core/jobSpec.js';
import type { AttemptOutcome, JobState } from '../core/jobState.js';
import type { JobRef, LogEntryUpdate } from '../core/protocol.js';
import type { Accounts } from './accounts.js';

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
  executorName: string | null;
  createdAt: number;
  queuedAt: number;
  /** A queued job is not handed out before this time (retry backoff). */
  availableAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  lastHeartbeatAt: number | null;
}

export interface AttemptRecord {
  jobId: number;
  attempt: number;
  executorName: string;
  startedAt: number;
  finishedAt: number | null;
  outcome: AttemptOutcome | null;
  message: string | null;
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
  firstSeenAt: number;
  lastSeenAt: number;
}

export type ExecutorInfo = Omit<ExecutorRecord, 'firstSeenAt' | 'lastSeenAt'>;

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
  canceledByExecutor?: boolean;
  now: number;
  retryBackoffMs: number;
}

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

export interface Store {
  readonly kind: string;
  migrate(): Promise<void>;
  close(): Promise<void>;
  /** Throws when the database cannot be reached or written. */
  ping(): Promise<void>;

  /** Users, organizations, API tokens and executor secrets. */
  readonly accounts: Accounts;

  /**
   * `spec.namespace` must be set. `dockerAuthConfig` (encrypted by the server) is stored apart from the spec and
   * only ever handed to the job's executor.
   */
  enqueue(spec: JobSpec, now: number, extra?: { dockerAuthConfig?: string; submittedBy?: string }): Promise<JobRecord>;
  getDockerAuthConfig(jobId: number): Promise<string | undefined>;
  getJob(id: number): Promise<JobRecord | undefined>;
  listJobs(filter: JobFilter): Promise<JobRecord[]>;
  listAttempts(jobId: number): Promise<AttemptRecord[]>;
  /** Claims the oldest available job in any of `queues` for an executor, recording a new attempt. */
  dequeue(args: { executorName: string; queues: string[]; tokenHash: string; now: number }): Promise<JobRecord | undefined>;
  /** The earliest time a queued job in `queues` becomes available, if any is waiting out a backoff. */
  nextAvailableAt(queues: string[]): Promise<number | undefined>;
  heartbeat(args: { executorName: string; jobs: JobRef[]; now: number }): Promise<{ knownIds: number[]; cancelIds: number[] }>;
  findAttemptByToken(tokenHash: string): Promise<AttemptRecord | undefined>;
  finish(request: FinishRequest): Promise<FinishResult>;
  requestCancel(id: number, now: number): Promise<JobRecord | undefined>;
  retry(id: number, now: number): Promise<JobRecord | undefined>;
  resetStalled(sweep: StallSweep): Promise<StallResult>;

  appendLogs(jobId: number, attempt: number, entries: LogEntryUpdate[]): Promise<{ index: number; length: number }[]>;
  listLogEntries(jobId: number, attempt: number): Promise<LogEntryRecord[]>;
  readLogChunks(jobId: number, attempt: number, afterSeq: number, limit: number): Promise<LogChunk[]>;

  upsertExecutor(info: ExecutorInfo, now: number): Promise<void>;
  listExecutors(): Promise<ExecutorRecord[]>;
  /**
   * One row per queue that has queued or processing jobs, or jobs that completed or failed in the
   * QUEUE_STATS_WINDOW_MS before `now` (finishedAt > now - window); ordered by queue name.
   */
  queueStats(now: number): Promise<QueueStats[]>;

  /**
   * Stores that several server replicas share (PostgreSQL) carry their wake-ups: `notify` sends a message to every
   * replica's `listen`; `onResumed` is called after the listening connection was lost and is back (messages may
   * have been missed meanwhile).
   */
  listen?(onMessage: (payload: string) => void, onResumed: () => void): Promise<{ close(): Promise<void> }>;
  notify?(payload: string): Promise<void>;
}
