// Row shapes both SQL stores share (same column names in SQLite and PostgreSQL), and their records.
import type { ExecutorInstance } from '../core/executorNames.js';
import type { FailureReason } from '../core/failureReasons.js';
import type { JobSpec } from '../core/jobSpec.js';
import type { AttemptOutcome, JobState } from '../core/jobState.js';
import type { AttemptRecord, ClaimedJob, ExecutorRecord, JobRecord } from './store.js';

export interface AttemptRow {
  job_id: number;
  attempt: number;
  executor_name: string;
  started_at: number;
  finished_at: number | null;
  outcome: AttemptOutcome | null;
  message: string | null;
  failure_reason: FailureReason | null;
}

export function toAttempt(row: AttemptRow): AttemptRecord {
  return {
    jobId: row.job_id,
    attempt: row.attempt,
    executorName: row.executor_name,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    outcome: row.outcome,
    message: row.message,
    failureReason: row.failure_reason,
  };
}

/** An executors row; `queues` comes decoded, as each database stores the list its own way. */
export function toExecutor(r: Record<string, unknown>, queues: string[]): ExecutorRecord {
  return {
    name: r.name as string,
    hostname: r.hostname as string,
    os: r.os as string,
    arch: r.arch as string,
    version: r.version as string,
    runtime: r.runtime as string,
    runtimeVersion: r.runtime_version as string | null,
    queues,
    maxJobs: r.max_jobs as number | null,
    runningJobs: r.running_jobs as number,
    jobCpus: r.job_cpus as number | null,
    jobMemoryBytes: r.job_memory_bytes as number | null,
    jobDiskBytes: r.job_disk_bytes as number | null,
    pid: r.pid as number | null,
    firstSeenAt: r.first_seen_at as number,
    lastSeenAt: r.last_seen_at as number,
  };
}

/** The columns of an executors row that say which process holds the name. */
export interface InstanceRow {
  instance_id: string | null;
  hostname: string;
  instance_seen_at: number | null;
  instance_window_ms: number | null;
}

/** The process that holds (or last held) the name; undefined when none has, or the holder let go. */
export function toInstance(row: InstanceRow | undefined): ExecutorInstance | undefined {
  if (!row?.instance_id) return undefined;
  return {
    id: row.instance_id,
    hostname: row.hostname,
    seenAt: row.instance_seen_at ?? 0,
    windowMs: row.instance_window_ms ?? 0,
  };
}

/**
 * core/executorNames.ts mayUseName in SQL, for an upsert of executors: the excluded row's instance may use the
 * name. Both databases read it alike.
 */
export const MAY_USE_NAME_SQL = `executors.instance_id IS NULL OR executors.instance_id = excluded.instance_id
  OR executors.instance_seen_at + executors.instance_window_ms <= excluded.instance_seen_at`;

/** An upsert of executors takes the call's description of the executor (the same in both databases). */
export const EXECUTOR_UPDATE_SQL = `hostname = excluded.hostname, os = excluded.os, arch = excluded.arch,
  version = excluded.version, runtime = excluded.runtime, runtime_version = excluded.runtime_version,
  queues = excluded.queues, max_jobs = excluded.max_jobs, running_jobs = excluded.running_jobs,
  job_cpus = excluded.job_cpus, job_memory_bytes = excluded.job_memory_bytes,
  job_disk_bytes = excluded.job_disk_bytes, pid = excluded.pid, last_seen_at = excluded.last_seen_at`;

/** ... and, from a call with an instance id, makes that process the holder. */
export const INSTANCE_UPDATE_SQL = `instance_id = excluded.instance_id, instance_seen_at = excluded.instance_seen_at,
  instance_window_ms = excluded.instance_window_ms`;

/** For a call without an instance id: no process holds the name, or the holder went silent. */
export const NO_LIVE_HOLDER_SQL = `executors.instance_id IS NULL
  OR executors.instance_seen_at + executors.instance_window_ms <= excluded.last_seen_at`;

/** A jobs row; `spec` and `cancel_requested` come as each database stores them (JSON text or object, 0/1 or boolean). */
export interface JobRow {
  id: number;
  queue: string;
  namespace: string;
  spec: string | JobSpec;
  state: JobState;
  attempt: number;
  max_attempts: number;
  num_failures: number;
  num_resets: number;
  cancel_requested: number | boolean;
  failure_message: string | null;
  failure_reason: FailureReason | null;
  executor_name: string | null;
  created_at: number;
  queued_at: number;
  available_at: number;
  started_at: number | null;
  finished_at: number | null;
  last_heartbeat_at: number | null;
  submitted_by?: string | null;
  docker_auth_config?: string | null;
}

export function toJob(row: JobRow): JobRecord {
  return {
    id: row.id,
    queue: row.queue,
    namespace: row.namespace,
    spec: typeof row.spec === 'string' ? (JSON.parse(row.spec) as JobSpec) : row.spec,
    submittedBy: row.submitted_by ?? null,
    state: row.state,
    attempt: row.attempt,
    maxAttempts: row.max_attempts,
    numFailures: row.num_failures,
    numResets: row.num_resets,
    cancelRequested: Boolean(row.cancel_requested),
    failureMessage: row.failure_message,
    failureReason: row.failure_reason,
    executorName: row.executor_name,
    createdAt: row.created_at,
    queuedAt: row.queued_at,
    availableAt: row.available_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    lastHeartbeatAt: row.last_heartbeat_at,
  };
}

export function claimedJob(row: JobRow): ClaimedJob {
  return { job: toJob(row), ...(row.docker_auth_config ? { dockerAuthConfig: row.docker_auth_config } : {}) };
}

/** A namespace with queued jobs in a queue: its oldest available job, if any, and when it was last served. */
export interface NamespaceHead {
  namespace: string;
  job_id: number | null;
  available_at: number | null;
  served_seq: number | null;
}

/**
 * Round robin across namespaces: the namespace served longest ago (never served counts as longest) goes next;
 * between equals, the one whose oldest available job is oldest. So a namespace with one queued job waits behind at
 * most one job of every other namespace in the queue, however many those have queued.
 */
export function nextInTurn(heads: NamespaceHead[]): NamespaceHead | undefined {
  let best: NamespaceHead | undefined;
  for (const head of heads) {
    if (head.job_id === null) continue;
    if (!best) {
      best = head;
      continue;
    }
    const turn = (head.served_seq ?? 0) - (best.served_seq ?? 0);
    const age = head.available_at! - best.available_at! || head.job_id - best.job_id!;
    if (turn < 0 || (turn === 0 && age < 0)) best = head;
  }
  return best;
}

/** The namespace a job is stored under; the server always sets it, and specs from before default to global. */
export function namespaceOf(spec: JobSpec): string {
  return spec.namespace ?? 'global';
}

/** A row of a batch claim's candidates: one of the first available jobs of a namespace in a queue, with its turn. */
export interface CandidateRow {
  namespace: string;
  served_seq: number | null;
  job_id: number;
  available_at: number;
}

export interface PlannedClaim {
  queue: string;
  namespace: string;
  jobId: number;
}

/**
 * The jobs that claims one after another would take, worked out from each queue's candidates at once: claim i
 * tries the queues in `orders[i]` and takes the next job of the namespace whose turn it is (nextInTurn), whose turn
 * then moves to the back. `turns` has each namespace's new turn (queue → namespace → number from `nextTurn`).
 */
export function planClaims(
  candidates: Map<string, CandidateRow[]>,
  orders: string[][],
  nextTurn: () => number,
): { claims: PlannedClaim[]; turns: Map<string, Map<string, number>> } {
  // Per queue: each namespace's turn and its jobs still untaken, oldest first (as the rows come).
  const byQueue = new Map<string, Map<string, { served: number | null; jobs: CandidateRow[] }>>();
  for (const [queue, rows] of candidates) {
    const namespaces = new Map<string, { served: number | null; jobs: CandidateRow[] }>();
    for (const row of rows) {
      const ns = namespaces.get(row.namespace);
      if (ns) ns.jobs.push(row);
      else namespaces.set(row.namespace, { served: row.served_seq, jobs: [row] });
    }
    byQueue.set(queue, namespaces);
  }
  const claims: PlannedClaim[] = [];
  const turns = new Map<string, Map<string, number>>();
  for (const order of orders) {
    let claimed = false;
    for (const queue of order) {
      const namespaces = byQueue.get(queue);
      if (!namespaces) continue;
      const heads: NamespaceHead[] = [];
      for (const [namespace, { served, jobs }] of namespaces) {
        if (jobs.length)
          heads.push({ namespace, job_id: jobs[0].job_id, available_at: jobs[0].available_at, served_seq: served });
      }
      const pick = nextInTurn(heads);
      if (!pick) continue;
      const ns = namespaces.get(pick.namespace)!;
      ns.jobs.shift();
      ns.served = nextTurn();
      if (!turns.has(queue)) turns.set(queue, new Map());
      turns.get(queue)!.set(pick.namespace, ns.served);
      claims.push({ queue, namespace: pick.namespace, jobId: pick.job_id! });
      claimed = true;
      break;
    }
    if (!claimed) break;
  }
  return { claims, turns };
}
