// The PostgreSQL store, for several server replicas on one database. Every method is one transaction; rows a
// method changes are locked first (FOR UPDATE), and dequeue and the reaper skip rows another replica holds
// (SKIP LOCKED), so no job is handed out twice and no stalled job is reset twice.
import pg from 'pg';
import type { JobSpec } from '../../core/jobSpec.js';
import { decideFinish, decideStalled, type FinishDecision } from '../../core/jobState.js';
import type { JobRef, LogEntryUpdate } from '../../core/protocol.js';
import { mayUseName, type ExecutorInstance } from '../../core/executorNames.js';
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
import { pgTransaction, postgresSql } from './sql.js';
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
import { postgresFault } from './faults.js';
import { MIGRATIONS } from './migrations.js';

const INT8_OID = 20;
/** Epoch-millisecond times and ids are BIGINT; as JavaScript numbers they are exact up to 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

const PING_TIMEOUT_MS = 2_000;

/** The NOTIFY channel that carries wake-ups between replicas. */
const EVENTS_CHANNEL = 'dockhand_events';
/** NOTIFY payloads must stay under 8000 bytes. */
const MAX_PAYLOAD = 7_900;

/** Any number for the advisory lock that serializes migrations across replicas, as long as it is always the same. */
const MIGRATION_LOCK = 7_070_2024;

/**
 * Up to $3 of the oldest available jobs of each namespace with queued jobs in queue $1, locked, with the namespace's
 * turn. The namespaces are found by a skip scan over jobs_dequeue_namespace (one index probe per namespace, however
 * many jobs each holds). Jobs another replica has locked are skipped, so concurrent dequeues never wait on each other.
 */
const CANDIDATES_SQL = `
WITH RECURSIVE ns(namespace) AS (
  SELECT min(namespace) FROM jobs WHERE state = 'queued' AND queue = $1
  UNION ALL
  SELECT (SELECT min(namespace) FROM jobs WHERE state = 'queued' AND queue = $1 AND namespace > ns.namespace)
  FROM ns WHERE ns.namespace IS NOT NULL
)
SELECT ns.namespace, t.served_seq, j.id AS job_id, j.available_at
FROM ns
LEFT JOIN namespace_turns t ON t.queue = $1 AND t.namespace = ns.namespace
JOIN LATERAL (
  SELECT id, available_at FROM jobs WHERE state = 'queued' AND queue = $1 AND namespace = ns.namespace AND available_at <= $2
  ORDER BY available_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) j ON true
WHERE ns.namespace IS NOT NULL
ORDER BY ns.namespace, j.available_at, j.id`;

type Query = <R extends pg.QueryResultRow = any>(sql: string, params?: unknown[]) => Promise<R[]>;

export class PostgresStore implements Store, JobStoreCore, LogStoreCore, ExecutorStore {
  readonly kind = 'postgres';
  readonly accounts: Accounts;
  readonly builds: Builds;
  readonly jobs: JobStore = jobStoreOf(this);
  readonly logs: LogStore = logStoreOf(this);
  readonly executors: ExecutorStore = this;
  private readonly pool: pg.Pool;

  constructor(
    private readonly connectionString: string,
    opts: { maxConnections?: number } = {},
  ) {
    this.pool = new pg.Pool({
      connectionString,
      types,
      max: opts.maxConnections ?? 10,
      connectionTimeoutMillis: 5_000,
      // Idle connections are kept: while the database's disk is full, a new one cannot be had (see faults.ts), and
      // those already open still serve reads.
      idleTimeoutMillis: 0,
    });
    // An idle connection the server dropped (restart, network) must not crash the process; the pool replaces it.
    this.pool.on('error', () => undefined);
    this.accounts = new Accounts(postgresSql(this.pool));
    this.builds = new Builds(postgresSql(this.pool));
  }

  private async query<R extends pg.QueryResultRow = any>(sql: string, params: unknown[] = []): Promise<R[]> {
    return (await this.pool.query<R>(sql, params)).rows;
  }

  /** Runs `fn` in one transaction on one connection, rolling back when it throws. */
  private tx<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    return pgTransaction(this.pool, (client) => fn(async (sql, params = []) => (await client.query(sql, params)).rows));
  }

  async migrate(): Promise<void> {
    await this.tx(async (q) => {
      await q('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await q('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const applied = new Set(
        (await q<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version),
      );
      for (const migration of MIGRATIONS) {
        if (applied.has(migration.version)) continue;
        await q(migration.sql);
        await q('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [migration.version, Date.now()]);
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async notify(payload: string): Promise<void> {
    if (Buffer.byteLength(payload) > MAX_PAYLOAD) throw new Error('notification payload too large');
    await this.query('SELECT pg_notify($1, $2)', [EVENTS_CHANNEL, payload]);
  }

  /** A dedicated connection LISTENs; when it is lost it is made again (1 s, doubling to 10 s) and `onResumed` runs. */
  async listen(onMessage: (payload: string) => void, onResumed: () => void): Promise<{ close(): Promise<void> }> {
    let closed = false;
    let client: pg.Client | undefined;
    let retry: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      const c = new pg.Client({ connectionString: this.connectionString, types, connectionTimeoutMillis: 5_000 });
      c.on('notification', (msg) => msg.payload !== undefined && onMessage(msg.payload));
      // Listening before connecting: a drop at any moment must reach us, never go unheard.
      let ready = false;
      c.on('error', () => ready && reconnect(1_000));
      c.on('end', () => ready && reconnect(1_000));
      try {
        await c.connect();
        await c.query(`LISTEN ${EVENTS_CHANNEL}`);
      } catch (err) {
        await c.end().catch(() => undefined);
        throw err;
      }
      client = c;
      ready = true;
    };
    const reconnect = (delayMs: number): void => {
      if (closed || retry) return;
      const old = client;
      client = undefined;
      void old?.end().catch(() => undefined);
      retry = setTimeout(() => {
        retry = undefined;
        connect().then(onResumed, () => reconnect(Math.min(delayMs * 2, 10_000)));
      }, delayMs);
    };
    await connect();
    return {
      async close() {
        closed = true;
        clearTimeout(retry);
        await client?.end().catch(() => undefined);
      },
    };
  }

  /** Answers within 2 s either way, so a health check never hangs on a database that does not answer. */
  async ping(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('PostgreSQL did not answer within 2s')), PING_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async probeWrite(now: number): Promise<void> {
    await this.query(
      'INSERT INTO storage_probe (id, written_at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at',
      [now],
    );
  }

  storageFault(err: unknown): StorageFault | undefined {
    return postgresFault(err);
  }

  async enqueueMany(jobs: NewJob[], now: number): Promise<JobRecord[]> {
    return this.insertJobs(jobs, now);
  }

  /** One INSERT for all of `jobs` (unnest of arrays keeps it one statement, so all or none), in order. */
  private async insertJobs(jobs: NewJob[], now: number): Promise<JobRecord[]> {
    const rows = await this.query<JobRow>(
      `INSERT INTO jobs (queue, namespace, spec, state, max_attempts, created_at, queued_at, available_at, docker_auth_config, submitted_by)
       SELECT queue, namespace, spec::json, 'queued', max_attempts, $1, $1, $1, docker_auth_config, submitted_by
       FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[])
         WITH ORDINALITY AS j(queue, namespace, spec, max_attempts, docker_auth_config, submitted_by, n)
       ORDER BY n
       RETURNING *`,
      [
        now,
        jobs.map((j) => j.spec.queue),
        jobs.map((j) => namespaceOf(j.spec)),
        jobs.map((j) => JSON.stringify(j.spec)),
        jobs.map((j) => j.spec.maxAttempts),
        jobs.map((j) => j.dockerAuthConfig ?? null),
        jobs.map((j) => j.submittedBy ?? null),
      ],
    );
    // RETURNING follows the insert order in practice but not by contract: order by id, which follows ORDER BY n.
    return rows.map(toJob).sort((a, b) => a.id - b.id);
  }

  async getDockerAuthConfig(jobId: number): Promise<string | undefined> {
    const [row] = await this.query<{ docker_auth_config: string | null }>(
      'SELECT docker_auth_config FROM jobs WHERE id = $1',
      [jobId],
    );
    return row?.docker_auth_config ?? undefined;
  }

  async getJob(id: number): Promise<JobRecord | undefined> {
    const [row] = await this.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
    return row && toJob(row);
  }

  async listJobs(filter: JobFilter): Promise<JobRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (clause: string, value: unknown): void => {
      args.push(value);
      where.push(clause.replace('?', `$${args.length}`));
    };
    if (filter.queue) add('queue = ?', filter.queue);
    if (filter.state) add('state = ?', filter.state);
    if (filter.namespace) add('namespace = ?', filter.namespace);
    if (filter.namespaces) add('namespace = ANY(?)', filter.namespaces);
    if (filter.beforeId) add('id < ?', filter.beforeId);
    args.push(filter.limit);
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${args.length}`;
    return (await this.query<JobRow>(sql, args)).map(toJob);
  }

  async listAttempts(jobId: number): Promise<AttemptRecord[]> {
    return (await this.query<AttemptRow>('SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY attempt', [jobId])).map(
      toAttempt,
    );
  }

  async dequeueMany(args: DequeueManyArgs): Promise<ClaimedJob[]> {
    const n = args.tokenHashes.length;
    const orders = args.tokenHashes.map(() => args.order?.(args.queues) ?? args.queues);
    return this.tx(async (q) => {
      // Every claim of the batch is worked out from one look at each queue, then written in three statements: the
      // same jobs, in the same order, as n dequeues one after another would take.
      const candidates = new Map<string, CandidateRow[]>();
      for (const queue of args.queues)
        candidates.set(queue, await q<CandidateRow>(CANDIDATES_SQL, [queue, args.now, n]));
      const seqs = (
        await q<{ v: number }>("SELECT nextval('namespace_turn_seq') AS v FROM generate_series(1, $1)", [n])
      ).map((r) => r.v);
      const { claims, turns } = planClaims(candidates, orders, () => seqs.shift()!);
      if (claims.length === 0) return [];
      const rows = await q<JobRow>(
        `UPDATE jobs SET state = 'processing', attempt = attempt + 1, executor_name = $1, started_at = $2,
           last_heartbeat_at = $2, finished_at = NULL
         WHERE id = ANY($3::bigint[]) RETURNING *`,
        [args.executorName, args.now, claims.map((c) => c.jobId)],
      );
      const byId = new Map(rows.map((r) => [r.id, r]));
      const claimed = claims.map((c) => byId.get(c.jobId)!);
      await q(
        `INSERT INTO job_attempts (job_id, attempt, executor_name, token_hash, started_at)
         SELECT job_id, attempt, $1, token_hash, $2 FROM unnest($3::bigint[], $4::int[], $5::text[]) AS a(job_id, attempt, token_hash)`,
        [
          args.executorName,
          args.now,
          claimed.map((r) => r.id),
          claimed.map((r) => r.attempt),
          args.tokenHashes.slice(0, claimed.length),
        ],
      );
      // Turn rows are written in (queue, namespace) order, so two batches lock them in the same order and never deadlock.
      const served = [...turns].flatMap(([queue, ns]) =>
        [...ns].map(([namespace, seq]) => ({ queue, namespace, seq })),
      );
      served.sort((a, b) =>
        a.queue < b.queue
          ? -1
          : a.queue > b.queue
            ? 1
            : a.namespace < b.namespace
              ? -1
              : a.namespace > b.namespace
                ? 1
                : 0,
      );
      await q(
        `INSERT INTO namespace_turns (queue, namespace, served_seq)
         SELECT queue, namespace, seq FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS t(queue, namespace, seq, n) ORDER BY n
         ON CONFLICT (queue, namespace) DO UPDATE SET served_seq = excluded.served_seq`,
        [served.map((t) => t.queue), served.map((t) => t.namespace), served.map((t) => t.seq)],
      );
      return claimed.map(claimedJob);
    });
  }

  async nextAvailableAt(queues: string[]): Promise<number | undefined> {
    const [row] = await this.query<{ at: number | null }>(
      `SELECT min(available_at) AS at FROM jobs WHERE state = 'queued' AND queue = ANY($1)`,
      [queues],
    );
    return row.at ?? undefined;
  }

  async heartbeat(args: {
    executorName: string;
    jobs: JobRef[];
    now: number;
  }): Promise<{ knownIds: number[]; cancelIds: number[] }> {
    if (args.jobs.length === 0) return { knownIds: [], cancelIds: [] };
    const rows = await this.query<{ id: number; attempt: number; cancel_requested: boolean }>(
      // Rows are locked in id order: two overlapping heartbeats of one executor would otherwise deadlock.
      `WITH target AS (
         SELECT jobs.id FROM jobs JOIN unnest($2::bigint[], $3::int[]) AS ref(id, attempt) ON jobs.id = ref.id AND jobs.attempt = ref.attempt
         WHERE jobs.state = 'processing' AND jobs.executor_name = $4
         ORDER BY jobs.id FOR NO KEY UPDATE OF jobs)
       UPDATE jobs SET last_heartbeat_at = $1 FROM target WHERE jobs.id = target.id
       RETURNING jobs.id, jobs.attempt, jobs.cancel_requested`,
      [args.now, args.jobs.map((j) => j.id), args.jobs.map((j) => j.attempt), args.executorName],
    );
    const found = new Map(rows.map((r) => [`${r.id}.${r.attempt}`, r.cancel_requested]));
    // In the order the executor named them; only the attempt that is current counts.
    const known = args.jobs.filter((j) => found.has(`${j.id}.${j.attempt}`));
    return {
      knownIds: known.map((j) => j.id),
      cancelIds: known.filter((j) => found.get(`${j.id}.${j.attempt}`)).map((j) => j.id),
    };
  }

  async findAttemptsByTokens(tokenHashes: string[]): Promise<(AttemptRecord | undefined)[]> {
    const rows = await this.query<AttemptRow & { token_hash: string }>(
      'SELECT * FROM job_attempts WHERE token_hash = ANY($1::text[])',
      [tokenHashes],
    );
    const byHash = new Map(rows.map((r) => [r.token_hash, toAttempt(r)]));
    return tokenHashes.map((h) => byHash.get(h));
  }

  async finishMany(requests: FinishRequest[]): Promise<FinishResult[]> {
    if (requests.length === 0) return [];
    const ids = [...new Set(requests.map((r) => r.jobId))];
    // Two reports for one job in a batch: each must see what the one before did, so they go one at a time.
    if (ids.length < requests.length) {
      return this.tx(async (q) => {
        // Locked in id order first, as below: finishIn's own FOR UPDATE then finds each row held already.
        await q('SELECT id FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [ids]);
        const results: FinishResult[] = [];
        for (const r of requests) results.push(await this.finishIn(q, r));
        return results;
      });
    }
    // Set-based: four statements however many reports. Rows are locked in id order, as heartbeats lock them, so
    // that two batches never wait on each other in a cycle.
    return this.tx(async (q) => {
      const jobs = new Map(
        (await q<JobRow>('SELECT * FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [ids])).map((r) => [
          r.id,
          toJob(r),
        ]),
      );
      const attempts = new Map(
        (
          await q<AttemptRow>(
            'SELECT a.* FROM job_attempts a JOIN unnest($1::bigint[], $2::int[]) AS r(job_id, attempt) ON a.job_id = r.job_id AND a.attempt = r.attempt',
            [requests.map((r) => r.jobId), requests.map((r) => r.attempt)],
          )
        ).map((a) => [`${a.job_id}.${a.attempt}`, a]),
      );
      const results: FinishResult[] = [];
      const applied: { i: number; request: FinishRequest; decision: Extract<FinishDecision, { kind: 'apply' }> }[] = [];
      for (const [i, request] of requests.entries()) {
        const job = jobs.get(request.jobId);
        const attempt = attempts.get(`${request.jobId}.${request.attempt}`);
        if (!job || !attempt) {
          results.push({ ok: false, reason: 'unknown_job' });
          continue;
        }
        const decision = decideFinish(job, attempt, request);
        if (decision.kind === 'repeat') results.push({ ok: true, job, changed: false });
        else if (decision.kind === 'stale') results.push({ ok: false, reason: 'stale_attempt', job });
        else {
          results.push({ ok: true, job, changed: true });
          applied.push({ i, request, decision });
        }
      }
      if (applied.length === 0) return results;
      const updated = await q<JobRow>(
        `UPDATE jobs SET state = u.state, num_failures = u.num_failures, failure_message = u.failure_message,
           failure_reason = u.failure_reason, available_at = u.available_at,
           queued_at = CASE WHEN u.terminal THEN jobs.queued_at ELSE u.now END, finished_at = CASE WHEN u.terminal THEN u.now END
         FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::boolean[], $8::bigint[])
           AS u(id, state, num_failures, failure_message, failure_reason, available_at, terminal, now)
         WHERE jobs.id = u.id RETURNING jobs.*`,
        [
          applied.map((a) => a.request.jobId),
          applied.map((a) => a.decision.state),
          applied.map((a) => a.decision.numFailures),
          applied.map((a) => a.decision.failureMessage),
          applied.map((a) => a.decision.failureReason),
          applied.map((a) => a.decision.availableAt),
          applied.map((a) => a.decision.terminal),
          applied.map((a) => a.request.now),
        ],
      );
      await q(
        `UPDATE job_attempts SET outcome = u.outcome, message = u.message, failure_reason = u.failure_reason, finished_at = u.now
         FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[])
           AS u(job_id, attempt, outcome, message, failure_reason, now)
         WHERE job_attempts.job_id = u.job_id AND job_attempts.attempt = u.attempt`,
        [
          applied.map((a) => a.request.jobId),
          applied.map((a) => a.request.attempt),
          applied.map((a) => a.decision.attemptOutcome),
          applied.map((a) => a.request.message ?? null),
          applied.map((a) => a.decision.failureReason),
          applied.map((a) => a.request.now),
        ],
      );
      const byId = new Map(updated.map((r) => [r.id, toJob(r)]));
      for (const { i, request } of applied) results[i] = { ok: true, job: byId.get(request.jobId)!, changed: true };
      return results;
    });
  }

  async appendLogsMany(items: LogAppend[]): Promise<LogAppendResult[]> {
    if (items.length === 0) return [];
    return this.tx(async (q) => {
      // The fence is read with the job rows locked (FOR SHARE, in id order as every batch locks them) and holds
      // until the appends commit: a reset or finish of the attempt waits for them, or comes first and is seen here.
      const ids = [...new Set(items.map((i) => i.jobId))];
      const rows = new Map(
        (await q<JobRow>('SELECT * FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE', [ids])).map((r) => [
          r.id,
          r,
        ]),
      );
      const current = (item: LogAppend): boolean => {
        const row = rows.get(item.jobId);
        return !!row && row.state === 'processing' && row.attempt === item.attempt;
      };
      await this.lockAttempts(q, items.filter(current));
      const results: LogAppendResult[] = [];
      for (const item of items) {
        const row = rows.get(item.jobId);
        if (!current(item)) results.push({ ok: false, job: row && toJob(row) });
        else results.push({ ok: true, entries: await this.appendIn(q, item.jobId, item.attempt, item.entries) });
      }
      return results;
    });
  }

  /**
   * One append per attempt at a time, so chunk sequence numbers follow the order of the output: each attempt's
   * advisory lock, taken in one order (job, attempt) so that two batches never wait on each other in a cycle.
   */
  private async lockAttempts(q: Query, items: { jobId: number; attempt: number }[]): Promise<void> {
    const keys = [...new Map(items.map((i) => [`${i.jobId}.${i.attempt}`, i])).values()].sort(
      (a, b) => a.jobId - b.jobId || a.attempt - b.attempt,
    );
    for (const { jobId, attempt } of keys)
      await q('SELECT pg_advisory_xact_lock($1, $2)', [Number(BigInt.asIntN(32, BigInt(jobId))), attempt]);
  }

  /** Inside a transaction: records an attempt's final report, as the state machine decides. */
  private async finishIn(q: Query, request: FinishRequest): Promise<FinishResult> {
    const [row] = await q<JobRow>('SELECT * FROM jobs WHERE id = $1 FOR UPDATE', [request.jobId]);
    if (!row) return { ok: false, reason: 'unknown_job' };
    const [attempt] = await q<AttemptRow>('SELECT * FROM job_attempts WHERE job_id = $1 AND attempt = $2', [
      request.jobId,
      request.attempt,
    ]);
    if (!attempt) return { ok: false, reason: 'unknown_job' };
    const job = toJob(row);
    const decision = decideFinish(job, attempt, request);
    if (decision.kind === 'repeat') return { ok: true, job, changed: false };
    if (decision.kind === 'stale') return { ok: false, reason: 'stale_attempt', job };
    const [updated] = await q<JobRow>(
      `UPDATE jobs SET state = $1, num_failures = $2, failure_message = $3, failure_reason = $4, available_at = $5,
         queued_at = CASE WHEN $6 THEN queued_at ELSE $7 END, finished_at = $8
       WHERE id = $9 RETURNING *`,
      [
        decision.state,
        decision.numFailures,
        decision.failureMessage,
        decision.failureReason,
        decision.availableAt,
        decision.terminal,
        request.now,
        decision.terminal ? request.now : null,
        job.id,
      ],
    );
    await q(
      'UPDATE job_attempts SET outcome = $1, message = $2, failure_reason = $3, finished_at = $4 WHERE job_id = $5 AND attempt = $6',
      [decision.attemptOutcome, request.message ?? null, decision.failureReason, request.now, job.id, request.attempt],
    );
    return { ok: true, job: toJob(updated), changed: true };
  }

  async requestCancel(id: number, now: number): Promise<JobRecord | undefined> {
    return this.tx(async (q) => {
      const [row] = await q<JobRow>('SELECT * FROM jobs WHERE id = $1 FOR UPDATE', [id]);
      if (!row) return undefined;
      if (row.state === 'queued') {
        const [updated] = await q<JobRow>(
          `UPDATE jobs SET state = 'canceled', cancel_requested = true, failure_message = 'canceled by a user', failure_reason = 'canceled',
             finished_at = $1
           WHERE id = $2 RETURNING *`,
          [now, id],
        );
        return toJob(updated);
      }
      if (row.state === 'processing')
        return toJob((await q<JobRow>('UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING *', [id]))[0]);
      return toJob(row);
    });
  }

  async retry(id: number, now: number): Promise<JobRecord | undefined> {
    return this.tx(async (q) => {
      const [row] = await q<JobRow>('SELECT * FROM jobs WHERE id = $1 FOR UPDATE', [id]);
      if (!row || row.state === 'queued' || row.state === 'processing') return row && toJob(row);
      const [updated] = await q<JobRow>(
        `UPDATE jobs SET state = 'queued', num_failures = 0, num_resets = 0, cancel_requested = false, failure_message = NULL,
           failure_reason = NULL, queued_at = $1, available_at = $1, finished_at = NULL
         WHERE id = $2 RETURNING *`,
        [now, id],
      );
      return toJob(updated);
    });
  }

  async resetStalled(sweep: StallSweep): Promise<StallResult> {
    const cutoff = sweep.now - sweep.timeoutMs;
    if (sweep.notBefore > cutoff) return { reset: [], failed: [] };
    return this.tx(async (q): Promise<StallResult> => {
      // Another replica's reaper may be sweeping at the same moment: each stalled job goes to one of them.
      const stalled = await q<JobRow>(
        `SELECT * FROM jobs WHERE state = 'processing' AND last_heartbeat_at < $1 ORDER BY id FOR UPDATE SKIP LOCKED`,
        [cutoff],
      );
      const result: StallResult = { reset: [], failed: [] };
      for (const row of stalled) {
        const outcome = decideStalled(toJob(row), sweep);
        await q(
          `UPDATE job_attempts SET outcome = 'reset', message = $1, failure_reason = $2, finished_at = $3
           WHERE job_id = $4 AND attempt = $5 AND outcome IS NULL`,
          [outcome.attemptMessage, outcome.attemptReason, sweep.now, row.id, row.attempt],
        );
        if (outcome.next === 'queued') {
          const [updated] = await q<JobRow>(
            `UPDATE jobs SET state = 'queued', num_resets = num_resets + 1, queued_at = $1, available_at = $1, started_at = NULL
             WHERE id = $2 RETURNING *`,
            [sweep.now, row.id],
          );
          result.reset.push(toJob(updated));
        } else {
          const [updated] = await q<JobRow>(
            'UPDATE jobs SET state = $1, failure_message = $2, failure_reason = $3, finished_at = $4 WHERE id = $5 RETURNING *',
            [outcome.next, outcome.failureMessage, outcome.failureReason, sweep.now, row.id],
          );
          result.failed.push(toJob(updated));
        }
      }
      return result;
    });
  }

  /** Inside a transaction holding the attempt's advisory lock: stores the entries' new output. */
  private async appendIn(
    q: Query,
    jobId: number,
    attempt: number,
    entries: LogEntryUpdate[],
  ): Promise<{ index: number; length: number }[]> {
    const out: { index: number; length: number }[] = [];
    for (const entry of entries) {
      const [existing] = await q<{ length: number }>(
        'SELECT length FROM log_entries WHERE job_id = $1 AND attempt = $2 AND idx = $3',
        [jobId, attempt, entry.index],
      );
      let length = existing?.length;
      if (length === undefined) {
        await q(
          'INSERT INTO log_entries (job_id, attempt, idx, key, command, start_time) VALUES ($1, $2, $3, $4, $5, $6)',
          [jobId, attempt, entry.index, entry.key, JSON.stringify(entry.command), entry.startTime],
        );
        length = 0;
      }
      // Offsets make appends idempotent: a retried request overlaps what is stored, and only the new tail is kept.
      const fresh = entry.offset >= length ? entry.out : entry.out.slice(length - entry.offset);
      if (fresh.length > 0) {
        await q('INSERT INTO log_chunks (job_id, attempt, idx, "offset", data) VALUES ($1, $2, $3, $4, $5)', [
          jobId,
          attempt,
          entry.index,
          length,
          fresh,
        ]);
      }
      length += fresh.length;
      await q(
        `UPDATE log_entries SET exit_code = coalesce($1, exit_code), duration_ms = coalesce($2, duration_ms), length = $3
         WHERE job_id = $4 AND attempt = $5 AND idx = $6`,
        [entry.exitCode ?? null, entry.durationMs ?? null, length, jobId, attempt, entry.index],
      );
      out.push({ index: entry.index, length });
    }
    return out;
  }

  async listLogEntries(jobId: number, attempt: number): Promise<LogEntryRecord[]> {
    const rows = await this.query<{
      idx: number;
      key: string;
      command: string[];
      start_time: number;
      exit_code: number | null;
      duration_ms: number | null;
      length: number;
    }>('SELECT * FROM log_entries WHERE job_id = $1 AND attempt = $2 ORDER BY idx', [jobId, attempt]);
    return rows.map((r) => ({
      index: r.idx,
      key: r.key,
      command: r.command,
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
    const rows = await this.query<{ seq: number; idx: number; offset: number; data: string }>(
      `SELECT seq, idx, "offset", data FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND seq > $3
       AND ($5::int IS NULL OR idx = $5) ORDER BY seq LIMIT $4`,
      [jobId, attempt, afterSeq, limit, index ?? null],
    );
    return rows.map((r) => ({ seq: r.seq, index: r.idx, offset: r.offset, data: r.data }));
  }

  async upsertExecutor(info: ExecutorInfo, now: number, instance?: InstanceClaim): Promise<ExecutorClaim> {
    // The upsert's WHERE decides in one statement: ON CONFLICT locks the row and reads its latest version, so two
    // replicas answering two processes under one name at once cannot both accept.
    for (let tries = 1; ; tries++) {
      const rows = await this.query(
        `INSERT INTO executors (name, hostname, os, arch, version, runtime, runtime_version, queues, max_jobs, running_jobs,
           job_cpus, job_memory_bytes, job_disk_bytes, pid, first_seen_at, last_seen_at, instance_id, instance_seen_at,
           instance_window_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $18, $14, $14, $15, $16, $17)
         ON CONFLICT (name) DO UPDATE SET ${EXECUTOR_UPDATE_SQL}${instance ? `, ${INSTANCE_UPDATE_SQL}` : ''}
         WHERE ${instance ? MAY_USE_NAME_SQL : NO_LIVE_HOLDER_SQL}
         RETURNING name`,
        [
          info.name,
          info.hostname,
          info.os,
          info.arch,
          info.version,
          info.runtime,
          info.runtimeVersion,
          info.queues,
          info.maxJobs,
          info.runningJobs,
          info.jobCpus,
          info.jobMemoryBytes,
          info.jobDiskBytes,
          now,
          instance?.id ?? null,
          instance ? now : null,
          instance?.windowMs ?? null,
          info.pid,
        ],
      );
      if (rows.length || !instance) return { ok: true };
      // Read after the refusal, for its message. The holder may have let go in between (it stopped): then try again
      // rather than name a holder that is gone.
      const holder = await this.executorInstance(info.name);
      if (holder && !mayUseName(holder, instance.id, now)) return { ok: false, holder };
      if (tries === 3)
        return { ok: false, holder: holder ?? { id: '', hostname: 'unknown', seenAt: now, windowMs: 0 } };
    }
  }

  async executorInstance(name: string): Promise<ExecutorInstance | undefined> {
    const [row] = await this.query<InstanceRow>(
      'SELECT instance_id, hostname, instance_seen_at, instance_window_ms FROM executors WHERE name = $1',
      [name],
    );
    return toInstance(row);
  }

  async releaseExecutorName(name: string, instanceId: string): Promise<void> {
    await this.query('UPDATE executors SET instance_id = NULL WHERE name = $1 AND instance_id = $2', [
      name,
      instanceId,
    ]);
  }

  async listExecutors(): Promise<ExecutorRecord[]> {
    const rows = await this.query<Record<string, unknown>>('SELECT * FROM executors ORDER BY last_seen_at DESC');
    return rows.map((r) => toExecutor(r, r.queues as string[]));
  }

  async queueStats(now: number): Promise<QueueStats[]> {
    // Two parts, each read through its own index: the live jobs, and the jobs finished in the window (jobs_finished,
    // migration 5, so the cost follows the last hour's jobs, not every job ever finished). 'canceled' is not a
    // failure: canceled jobs count in neither column. Sums are cast back to bigint (sum(bigint) is numeric).
    return this.query<QueueStats>(
      `SELECT queue, sum(queued)::bigint AS queued, sum(processing)::bigint AS processing, min(oldest) AS "oldestQueuedAt",
         sum(completed)::bigint AS "completedLastHour", sum(failed)::bigint AS "failedLastHour"
       FROM (
         SELECT queue, count(*) FILTER (WHERE state = 'queued') AS queued, count(*) FILTER (WHERE state = 'processing') AS processing,
           min(queued_at) FILTER (WHERE state = 'queued') AS oldest, 0::bigint AS completed, 0::bigint AS failed
         FROM jobs WHERE state IN ('queued', 'processing') GROUP BY queue
         UNION ALL
         SELECT queue, 0, 0, NULL, count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'failed')
         FROM jobs WHERE state IN ('completed', 'failed') AND finished_at > $1 GROUP BY queue
       ) AS parts
       GROUP BY queue ORDER BY queue`,
      [now - QUEUE_STATS_WINDOW_MS],
    );
  }
}
