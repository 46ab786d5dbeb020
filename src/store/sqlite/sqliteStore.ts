import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { JobSpec } from '../../core/jobSpec.js';
import { decideFinish, decideStalled } from '../../core/jobState.js';
import type { JobRef, LogEntryUpdate } from '../../core/protocol.js';
import type { ExecutorInstance } from '../../core/executorNames.js';
import type {
  AttemptRecord,
  ClaimedJob,
  ExecutorClaim,
  ExecutorInfo,
  ExecutorRecord,
  InstanceClaim,
  FinishRequest,
  FinishResult,
  JobFilter,
  JobRecord,
  LogChunk,
  DequeueManyArgs,
  LogAppend,
  LogAppendResult,
  LogEntryRecord,
  NewJob,
  QueueStats,
  StallResult,
  StallSweep,
  Store,
} from '../store.js';
import {
  QUEUE_STATS_WINDOW_MS,
  jobStoreOf,
  logStoreOf,
  type ExecutorStore,
  type JobStore,
  type JobStoreCore,
  type LogStore,
  type LogStoreCore,
  type StorageFault,
} from '../store.js';
import { Accounts } from '../accounts.js';
import { Builds } from '../builds.js';
import { sqliteSql } from './sql.js';
import {
  EXECUTOR_UPDATE_SQL,
  INSTANCE_UPDATE_SQL,
  MAY_USE_NAME_SQL,
  NO_LIVE_HOLDER_SQL,
  claimedJob,
  namespaceOf,
  planClaims,
  toAttempt,
  toExecutor,
  toInstance,
  toJob,
  type AttemptRow,
  type CandidateRow,
  type InstanceRow,
  type JobRow,
} from '../rows.js';
import { MIGRATIONS } from './migrations.js';

/**
 * Up to :n of the oldest available jobs of each namespace with queued jobs in `:queue`, with the namespace's turn.
 * The namespaces are found by a skip scan over jobs_dequeue_namespace (one index probe per namespace, however many
 * jobs each holds), their jobs through the same index.
 */
const CANDIDATES_SQL = `
WITH RECURSIVE ns(namespace) AS (
  SELECT min(namespace) FROM jobs WHERE state = 'queued' AND queue = :queue
  UNION ALL
  SELECT (SELECT min(namespace) FROM jobs WHERE state = 'queued' AND queue = :queue AND namespace > ns.namespace)
  FROM ns WHERE ns.namespace IS NOT NULL
)
SELECT ns.namespace, t.served_seq, j.id AS job_id, j.available_at
FROM ns
LEFT JOIN namespace_turns t ON t.queue = :queue AND t.namespace = ns.namespace
JOIN jobs j ON j.id IN (
  SELECT id FROM jobs WHERE state = 'queued' AND queue = :queue AND namespace = ns.namespace AND available_at <= :now
  ORDER BY available_at, id LIMIT :n)
WHERE ns.namespace IS NOT NULL
ORDER BY ns.namespace, j.available_at, j.id`;

/** SQLite's result codes for a database that cannot take writes (extended codes start with the primary one). */
export function sqliteFault(err: unknown): StorageFault | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return undefined;
  const detail = `${code}: ${(err as Error).message}`;
  if (code === 'SQLITE_FULL') return { kind: 'disk-full', detail };
  if (code.startsWith('SQLITE_READONLY')) return { kind: 'read-only', detail };
  if (code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_CORRUPT')
    return { kind: 'io-error', detail };
  return undefined;
}

/**
 * The embedded default store: one SQLite file in WAL mode. better-sqlite3 is synchronous, and one server process
 * owns the file, so each method's transaction runs without interleaving: a dequeue can never hand a job out twice.
 */
export class SqliteStore implements Store, JobStoreCore, LogStoreCore, ExecutorStore {
  readonly kind = 'sqlite';
  readonly accounts: Accounts;
  readonly builds: Builds;
  readonly jobs: JobStore = jobStoreOf(this);
  readonly logs: LogStore = logStoreOf(this);
  readonly executors: ExecutorStore = this;
  private readonly db: Database.Database;

  /** Prepared once per SQL text: preparing costs more than running most of these statements. */
  private readonly statements = new Map<string, Database.Statement>();

  private stmt(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL: each commit reaches the disk before it is answered. NORMAL would lose the last commits (a job whose
    // submit was answered 201) when the machine or its disk fails, as the fault suite's read-only disk test shows.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.accounts = new Accounts(sqliteSql(this.db));
    this.builds = new Builds(sqliteSql(this.db));
  }

  async migrate(): Promise<void> {
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)',
    );
    const applied = new Set(this.stmt('SELECT version FROM schema_migrations').pluck().all() as number[]);
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      this.db
        .transaction(() => {
          this.db.exec(migration.sql);
          this.stmt('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(
            migration.version,
            Date.now(),
          );
        })
        .immediate();
    }
  }

  async close(): Promise<void> {
    this.db.close();
  }

  async ping(): Promise<void> {
    this.stmt('SELECT 1').get();
  }

  async probeWrite(now: number): Promise<void> {
    this.stmt(
      'INSERT INTO storage_probe (id, written_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at',
    ).run(now);
  }

  storageFault(err: unknown): StorageFault | undefined {
    return sqliteFault(err);
  }

  private insertJob({ spec, dockerAuthConfig, submittedBy }: NewJob, now: number): JobRecord {
    const row = this.stmt(
      `INSERT INTO jobs (queue, namespace, spec, state, max_attempts, created_at, queued_at, available_at, docker_auth_config, submitted_by)
       VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?) RETURNING *`,
    ).get(
      spec.queue,
      namespaceOf(spec),
      JSON.stringify(spec),
      spec.maxAttempts,
      now,
      now,
      now,
      dockerAuthConfig ?? null,
      submittedBy ?? null,
    ) as JobRow;
    return toJob(row);
  }

  async enqueueMany(jobs: NewJob[], now: number): Promise<JobRecord[]> {
    return this.db.transaction(() => jobs.map((j) => this.insertJob(j, now)))();
  }

  async getDockerAuthConfig(jobId: number): Promise<string | undefined> {
    const value = this.stmt('SELECT docker_auth_config FROM jobs WHERE id = ?').pluck().get(jobId) as
      string | null | undefined;
    return value ?? undefined;
  }

  private jobRow(id: number): JobRow | undefined {
    return this.stmt('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  async getJob(id: number): Promise<JobRecord | undefined> {
    const row = this.jobRow(id);
    return row && toJob(row);
  }

  async listJobs(filter: JobFilter): Promise<JobRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.queue) {
      where.push('queue = ?');
      args.push(filter.queue);
    }
    if (filter.state) {
      where.push('state = ?');
      args.push(filter.state);
    }
    if (filter.namespace) {
      where.push('namespace = ?');
      args.push(filter.namespace);
    }
    if (filter.namespaces) {
      where.push(`namespace IN (${filter.namespaces.map(() => '?').join(', ') || 'NULL'})`);
      args.push(...filter.namespaces);
    }
    if (filter.beforeId) {
      where.push('id < ?');
      args.push(filter.beforeId);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    // Not cached: the text varies with the filter (and a user's number of namespaces).
    return (this.db.prepare(sql).all(...args, filter.limit) as JobRow[]).map(toJob);
  }

  async listAttempts(jobId: number): Promise<AttemptRecord[]> {
    return (this.stmt('SELECT * FROM job_attempts WHERE job_id = ? ORDER BY attempt').all(jobId) as AttemptRow[]).map(
      toAttempt,
    );
  }

  async dequeueMany(args: DequeueManyArgs): Promise<ClaimedJob[]> {
    const n = args.tokenHashes.length;
    const orders = args.tokenHashes.map(() => args.order?.(args.queues) ?? args.queues);
    return this.db
      .transaction(() => {
        // Every claim of the batch is worked out from one look at each queue, then written: the same jobs, in the same
        // order, as n dequeues one after another would take.
        const candidates = new Map<string, CandidateRow[]>();
        for (const queue of args.queues)
          candidates.set(queue, this.stmt(CANDIDATES_SQL).all({ queue, now: args.now, n }) as CandidateRow[]);
        let turn = this.stmt('SELECT coalesce(max(served_seq), 0) FROM namespace_turns').pluck().get() as number;
        const { claims, turns } = planClaims(candidates, orders, () => ++turn);
        const jobs = claims.map(({ jobId }, i) => {
          const row = this.stmt(
            `UPDATE jobs SET state = 'processing', attempt = attempt + 1, executor_name = ?, started_at = ?,
               last_heartbeat_at = ?, finished_at = NULL
             WHERE id = ? RETURNING *`,
          ).get(args.executorName, args.now, args.now, jobId) as JobRow;
          this.stmt(
            'INSERT INTO job_attempts (job_id, attempt, executor_name, token_hash, started_at) VALUES (?, ?, ?, ?, ?)',
          ).run(row.id, row.attempt, args.executorName, args.tokenHashes[i], args.now);
          return claimedJob(row);
        });
        for (const [queue, served] of turns) {
          for (const [namespace, seq] of served) {
            this.stmt(
              `INSERT INTO namespace_turns (queue, namespace, served_seq) VALUES (?, ?, ?)
               ON CONFLICT (queue, namespace) DO UPDATE SET served_seq = excluded.served_seq`,
            ).run(queue, namespace, seq);
          }
        }
        return jobs;
      })
      .immediate();
  }

  async nextAvailableAt(queues: string[]): Promise<number | undefined> {
    const at = this.stmt(
      `SELECT min(available_at) FROM jobs WHERE state = 'queued' AND queue IN (SELECT value FROM json_each(?))`,
    )
      .pluck()
      .get(JSON.stringify(queues)) as number | null;
    return at ?? undefined;
  }

  async heartbeat(args: {
    executorName: string;
    jobs: JobRef[];
    now: number;
  }): Promise<{ knownIds: number[]; cancelIds: number[] }> {
    const knownIds: number[] = [];
    const cancelIds: number[] = [];
    const touch = this.stmt(
      `UPDATE jobs SET last_heartbeat_at = ?
       WHERE id = ? AND attempt = ? AND state = 'processing' AND executor_name = ? RETURNING cancel_requested`,
    );
    this.db.transaction(() => {
      for (const ref of args.jobs) {
        const row = touch.get(args.now, ref.id, ref.attempt, args.executorName) as
          { cancel_requested: number } | undefined;
        if (!row) continue;
        knownIds.push(ref.id);
        if (row.cancel_requested) cancelIds.push(ref.id);
      }
    })();
    return { knownIds, cancelIds };
  }

  async findAttemptsByTokens(tokenHashes: string[]): Promise<(AttemptRecord | undefined)[]> {
    return tokenHashes.map((hash) => this.attemptByToken(hash));
  }

  private attemptByToken(tokenHash: string): AttemptRecord | undefined {
    const row = this.stmt('SELECT * FROM job_attempts WHERE token_hash = ?').get(tokenHash) as AttemptRow | undefined;
    return row && toAttempt(row);
  }

  async finishMany(requests: FinishRequest[]): Promise<FinishResult[]> {
    return this.db.transaction(() => requests.map((r) => this.finishNow(r))).immediate();
  }

  async appendLogsMany(items: LogAppend[]): Promise<LogAppendResult[]> {
    // One transaction for all; its statements run synchronously inside, so every promise is settled by the time
    // the transaction commits.
    const results = this.db
      .transaction(() =>
        items.map((item): Promise<LogAppendResult> => {
          const row = this.jobRow(item.jobId);
          if (!row || row.state !== 'processing' || row.attempt !== item.attempt)
            return Promise.resolve({ ok: false, job: row && toJob(row) });
          return Promise.resolve({ ok: true, entries: this.appendNow(item.jobId, item.attempt, item.entries) });
        }),
      )
      .immediate();
    return Promise.all(results);
  }

  /** Inside a transaction: records an attempt's final report, as the state machine decides. */
  private finishNow(request: FinishRequest): FinishResult {
    const row = this.jobRow(request.jobId);
    if (!row) return { ok: false, reason: 'unknown_job' };
    const attempt = this.stmt('SELECT * FROM job_attempts WHERE job_id = ? AND attempt = ?').get(
      request.jobId,
      request.attempt,
    ) as AttemptRow | undefined;
    if (!attempt) return { ok: false, reason: 'unknown_job' };
    const job = toJob(row);
    const decision = decideFinish(job, attempt, request);
    if (decision.kind === 'repeat') return { ok: true, job, changed: false };
    if (decision.kind === 'stale') return { ok: false, reason: 'stale_attempt', job };
    const { state, numFailures, failureMessage, failureReason, availableAt, terminal, attemptOutcome } = decision;
    const updated = this.stmt(
      `UPDATE jobs SET state = ?, num_failures = ?, failure_message = ?, failure_reason = ?, available_at = ?,
           queued_at = CASE WHEN ? THEN queued_at ELSE ? END, finished_at = ?
         WHERE id = ? RETURNING *`,
    ).get(
      state,
      numFailures,
      failureMessage,
      failureReason,
      availableAt,
      terminal ? 1 : 0,
      request.now,
      terminal ? request.now : null,
      job.id,
    ) as JobRow;
    this.stmt(
      'UPDATE job_attempts SET outcome = ?, message = ?, failure_reason = ?, finished_at = ? WHERE job_id = ? AND attempt = ?',
    ).run(attemptOutcome, request.message ?? null, failureReason, request.now, job.id, request.attempt);
    return { ok: true, job: toJob(updated), changed: true };
  }

  async requestCancel(id: number, now: number): Promise<JobRecord | undefined> {
    return this.db
      .transaction(() => {
        const row = this.jobRow(id);
        if (!row) return undefined;
        if (row.state === 'queued') {
          return toJob(
            this.stmt(
              `UPDATE jobs SET state = 'canceled', cancel_requested = 1, failure_message = 'canceled by a user', failure_reason = 'canceled',
                 finished_at = ? WHERE id = ? RETURNING *`,
            ).get(now, id) as JobRow,
          );
        }
        if (row.state === 'processing') {
          return toJob(this.stmt('UPDATE jobs SET cancel_requested = 1 WHERE id = ? RETURNING *').get(id) as JobRow);
        }
        return toJob(row);
      })
      .immediate();
  }

  async retry(id: number, now: number): Promise<JobRecord | undefined> {
    return this.db
      .transaction(() => {
        const row = this.jobRow(id);
        if (!row || row.state === 'queued' || row.state === 'processing') return row && toJob(row);
        return toJob(
          this.stmt(
            `UPDATE jobs SET state = 'queued', num_failures = 0, num_resets = 0, cancel_requested = 0, failure_message = NULL,
               failure_reason = NULL, queued_at = ?, available_at = ?, finished_at = NULL
             WHERE id = ? RETURNING *`,
          ).get(now, now, id) as JobRow,
        );
      })
      .immediate();
  }

  async resetStalled(sweep: StallSweep): Promise<StallResult> {
    const cutoff = sweep.now - sweep.timeoutMs;
    if (sweep.notBefore > cutoff) return { reset: [], failed: [] };
    return this.db
      .transaction((): StallResult => {
        const stalled = this.stmt(`SELECT * FROM jobs WHERE state = 'processing' AND last_heartbeat_at < ?`).all(
          cutoff,
        ) as JobRow[];
        const result: StallResult = { reset: [], failed: [] };
        const markAttempt = this.stmt(
          `UPDATE job_attempts SET outcome = 'reset', message = ?, failure_reason = ?, finished_at = ?
         WHERE job_id = ? AND attempt = ? AND outcome IS NULL`,
        );
        for (const row of stalled) {
          const outcome = decideStalled(toJob(row), sweep);
          markAttempt.run(outcome.attemptMessage, outcome.attemptReason, sweep.now, row.id, row.attempt);
          if (outcome.next === 'queued') {
            result.reset.push(
              toJob(
                this.stmt(
                  `UPDATE jobs SET state = 'queued', num_resets = num_resets + 1, queued_at = ?, available_at = ?, started_at = NULL
             WHERE id = ? RETURNING *`,
                ).get(sweep.now, sweep.now, row.id) as JobRow,
              ),
            );
          } else {
            result.failed.push(
              toJob(
                this.stmt(
                  'UPDATE jobs SET state = ?, failure_message = ?, failure_reason = ?, finished_at = ? WHERE id = ? RETURNING *',
                ).get(outcome.next, outcome.failureMessage, outcome.failureReason, sweep.now, row.id) as JobRow,
              ),
            );
          }
        }
        return result;
      })
      .immediate();
  }

  /** Inside a transaction: stores the entries' new output. */
  private appendNow(jobId: number, attempt: number, entries: LogEntryUpdate[]): { index: number; length: number }[] {
    const find = this.stmt('SELECT length FROM log_entries WHERE job_id = ? AND attempt = ? AND idx = ?').pluck();
    const create = this.stmt(
      'INSERT INTO log_entries (job_id, attempt, idx, key, command, start_time) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const finalize = this.stmt(
      `UPDATE log_entries SET exit_code = coalesce(?, exit_code), duration_ms = coalesce(?, duration_ms), length = ?
       WHERE job_id = ? AND attempt = ? AND idx = ?`,
    );
    const insertChunk = this.stmt('INSERT INTO log_chunks (job_id, attempt, idx, offset, data) VALUES (?, ?, ?, ?, ?)');
    return entries.map((entry) => {
      let length = find.get(jobId, attempt, entry.index) as number | undefined;
      if (length === undefined) {
        create.run(jobId, attempt, entry.index, entry.key, JSON.stringify(entry.command), entry.startTime);
        length = 0;
      }
      // Offsets make appends idempotent: a retried request overlaps what is stored, and only the new tail is kept.
      const fresh = entry.offset >= length ? entry.out : entry.out.slice(length - entry.offset);
      if (fresh.length > 0) insertChunk.run(jobId, attempt, entry.index, length, fresh);
      length += fresh.length;
      finalize.run(entry.exitCode ?? null, entry.durationMs ?? null, length, jobId, attempt, entry.index);
      return { index: entry.index, length };
    });
  }

  async listLogEntries(jobId: number, attempt: number): Promise<LogEntryRecord[]> {
    const rows = this.stmt('SELECT * FROM log_entries WHERE job_id = ? AND attempt = ? ORDER BY idx').all(
      jobId,
      attempt,
    ) as {
      idx: number;
      key: string;
      command: string;
      start_time: number;
      exit_code: number | null;
      duration_ms: number | null;
      length: number;
    }[];
    return rows.map((r) => ({
      index: r.idx,
      key: r.key,
      command: JSON.parse(r.command) as string[],
      startTime: r.start_time,
      exitCode: r.exit_code,
      durationMs: r.duration_ms,
      length: r.length,
    }));
  }

  async readLogChunks(
    jobId: number,
    attempt: number,
    afterSeq: number,
    limit: number,
    index?: number,
  ): Promise<LogChunk[]> {
    const rows = (
      index === undefined
        ? this.stmt(
            'SELECT seq, idx, offset, data FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?',
          ).all(jobId, attempt, afterSeq, limit)
        : this.stmt(
            'SELECT seq, idx, offset, data FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq > ? AND idx = ? ORDER BY seq LIMIT ?',
          ).all(jobId, attempt, afterSeq, index, limit)
    ) as { seq: number; idx: number; offset: number; data: string }[];
    return rows.map((r) => ({ seq: r.seq, index: r.idx, offset: r.offset, data: r.data }));
  }

  async upsertExecutor(info: ExecutorInfo, now: number, instance?: InstanceClaim): Promise<ExecutorClaim> {
    // One statement decides (the upsert's WHERE); better-sqlite3 runs it and the holder's read without interleaving.
    const row = this.stmt(
      `INSERT INTO executors (name, hostname, os, arch, version, runtime, runtime_version, queues, max_jobs, running_jobs,
           job_cpus, job_memory_bytes, job_disk_bytes, pid, first_seen_at, last_seen_at, instance_id, instance_seen_at,
           instance_window_ms)
         VALUES (@name, @hostname, @os, @arch, @version, @runtime, @runtimeVersion, @queues, @maxJobs, @runningJobs,
           @jobCpus, @jobMemoryBytes, @jobDiskBytes, @pid, @now, @now, @instanceId, @instanceSeenAt, @instanceWindowMs)
         ON CONFLICT (name) DO UPDATE SET ${EXECUTOR_UPDATE_SQL}${instance ? `, ${INSTANCE_UPDATE_SQL}` : ''}
         WHERE ${instance ? MAY_USE_NAME_SQL : NO_LIVE_HOLDER_SQL}
         RETURNING name`,
    ).get({
      ...info,
      queues: JSON.stringify(info.queues),
      now,
      instanceId: instance?.id ?? null,
      instanceSeenAt: instance ? now : null,
      instanceWindowMs: instance?.windowMs ?? null,
    });
    if (row || !instance) return { ok: true };
    return { ok: false, holder: (await this.executorInstance(info.name))! };
  }

  async executorInstance(name: string): Promise<ExecutorInstance | undefined> {
    return toInstance(
      this.stmt('SELECT instance_id, hostname, instance_seen_at, instance_window_ms FROM executors WHERE name = ?').get(
        name,
      ) as InstanceRow | undefined,
    );
  }

  async releaseExecutorName(name: string, instanceId: string): Promise<void> {
    this.stmt('UPDATE executors SET instance_id = NULL WHERE name = ? AND instance_id = ?').run(name, instanceId);
  }

  async listExecutors(): Promise<ExecutorRecord[]> {
    const rows = this.stmt('SELECT * FROM executors ORDER BY last_seen_at DESC').all() as Record<string, unknown>[];
    return rows.map((r) => toExecutor(r, JSON.parse(r.queues as string) as string[]));
  }

  async queueStats(now: number): Promise<QueueStats[]> {
    // Two parts, each read through its own index: the live jobs (jobs_state), and the jobs finished in the window
    // (jobs_finished, migration 5, so the cost follows the last hour's jobs, not every job ever finished). Without
    // ANALYZE statistics SQLite would rather walk jobs_state through every finished job, hence INDEXED BY.
    // 'canceled' is not a failure: canceled jobs count in neither column.
    return this.stmt(
      `SELECT queue, sum(queued) AS queued, sum(processing) AS processing, min(oldestQueuedAt) AS oldestQueuedAt,
           sum(completedLastHour) AS completedLastHour, sum(failedLastHour) AS failedLastHour
         FROM (
           SELECT queue, sum(state = 'queued') AS queued, sum(state = 'processing') AS processing,
             min(CASE WHEN state = 'queued' THEN queued_at END) AS oldestQueuedAt, 0 AS completedLastHour, 0 AS failedLastHour
           FROM jobs WHERE state IN ('queued', 'processing') GROUP BY queue
           UNION ALL
           SELECT queue, 0, 0, NULL, sum(state = 'completed'), sum(state = 'failed')
           FROM jobs INDEXED BY jobs_finished
           WHERE state IN ('completed', 'failed') AND finished_at > ? GROUP BY queue
         )
         GROUP BY queue ORDER BY queue`,
    ).all(now - QUEUE_STATS_WINDOW_MS) as QueueStats[];
  }
}
