// Image builds: the build queue, each build's tries (one ephemeral worker each), its log, uploaded contexts, the
// image-pushed events, and the leases that let one server replica at a time run the build scheduler. Written once
// over `Sql` for SQLite and PostgreSQL, as accounts.ts is. Policy (what a try's end means for its build) is the build
// service's; each method here is one guarded, atomic step, so that workers calling any replica and the one scheduler
// never overwrite each other.
import { ARCHIVED_PHASES, type BuildPhase, type TryOutcome } from '../core/builds.js';
import type { Sql } from './sql.js';

export interface BuildSpecRecord {
  context: { git: { url: string; commit: string } } | { upload: string };
  dockerfile: string;
  tags: string[];
  buildArgs?: Record<string, string>;
  secrets?: string[];
  commit?: string;
}

export interface BuildRecord {
  id: number;
  namespace: string;
  /** REGISTRY/PATH of the tags; at most one build of a repository has an unended try. */
  repository: string;
  phase: BuildPhase;
  final: boolean;
  spec: BuildSpecRecord;
  commit: string | null;
  triesRemaining: number;
  /** Tries claimed so far (the number of the current or last try). */
  tries: number;
  plane: string | null;
  digest: string | null;
  message: string | null;
  submittedBy: string;
  cancelRequested: boolean;
  /** Not claimed before this (retry pause). */
  availableAt: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** Planes whose worker never registered for this build, skipped by its later tries while others remain. */
  failedPlanes: string[];
}

export interface BuildTryRecord {
  buildId: number;
  number: number;
  /** Empty until the scheduler has started a worker for it. */
  plane: string;
  executionId: string | null;
  /** The registration token's id; it may be exchanged once. */
  registrationJti: string | null;
  setupDeadline: number | null;
  startedAt: number;
  registeredAt: number | null;
  lastHeartbeatAt: number | null;
  endedAt: number | null;
  outcome: TryOutcome | null;
  message: string | null;
  /** The plane has been told to stop the worker (after the try ended). */
  workerStopped: boolean;
}

export interface BuildLogRecord {
  seq: number;
  at: number;
  try: number;
  kind: 'phase' | 'log' | 'system';
  text: string;
  phase?: BuildPhase;
}

export interface NewBuild {
  namespace: string;
  repository: string;
  spec: BuildSpecRecord;
  commit: string | null;
  triesRemaining: number;
  submittedBy: string;
  /** An uploaded context of the same namespace, not yet used by a build; it is bound to the new build. */
  contextId?: string;
}

export interface ImagePushRecord {
  id: number;
  image: string;
  tag: string;
  digest: string;
  repository: string;
  commit: string | null;
  buildId: number | null;
  at: number;
}

/** What ending a try does to its build, decided by the build service. */
export interface TryEnd {
  outcome: TryOutcome;
  message: string | null;
  /** The build's new phase; a final one also sets finished_at. */
  phase: BuildPhase;
  final: boolean;
  /** When the build may be claimed again (not final). */
  availableAt?: number;
  /** Give the try back (an internal error, Quay's restore_retry). */
  restoreTry?: boolean;
  digest?: string;
  /** Record this plane in the build's failedPlanes (its worker never registered). */
  failedPlane?: string;
  /** Pushed images to record, in the same transaction (a complete build). */
  pushes?: Omit<ImagePushRecord, 'id'>[];
}

export interface BuildListFilter {
  /** Only these namespaces; undefined: all. */
  namespaces?: string[];
  /** Only builds that are not final. */
  active?: boolean;
  beforeId?: number;
  limit: number;
}

/** One build's claim by the scheduler: the build as updated and the number of its new try. */
export interface BuildClaim {
  build: BuildRecord;
  tryNumber: number;
}

export type CancelResult =
  | { ok: true; build: BuildRecord; endedTry?: BuildTryRecord }
  | { ok: false; reason: 'missing' | 'final' | 'pushing'; build?: BuildRecord };

type Row = Record<string, unknown>;

const optionalNumber = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const optionalString = (v: unknown): string | null => (v === null || v === undefined ? null : (v as string));

const toBuild = (r: Row): BuildRecord => ({
  id: Number(r.id),
  namespace: r.namespace as string,
  repository: r.repository as string,
  phase: r.phase as BuildPhase,
  final: Boolean(r.final),
  spec: JSON.parse(r.spec as string) as BuildSpecRecord,
  commit: optionalString(r.commit_sha),
  triesRemaining: Number(r.tries_remaining),
  tries: Number(r.tries),
  plane: optionalString(r.plane),
  digest: optionalString(r.digest),
  message: optionalString(r.message),
  submittedBy: r.submitted_by as string,
  cancelRequested: Boolean(r.cancel_requested),
  availableAt: Number(r.available_at),
  createdAt: Number(r.created_at),
  startedAt: optionalNumber(r.started_at),
  finishedAt: optionalNumber(r.finished_at),
  failedPlanes: JSON.parse(r.failed_planes as string) as string[],
});

const toTry = (r: Row): BuildTryRecord => ({
  buildId: Number(r.build_id),
  number: Number(r.number),
  plane: r.plane as string,
  executionId: optionalString(r.execution_id),
  registrationJti: optionalString(r.registration_jti),
  setupDeadline: optionalNumber(r.setup_deadline),
  startedAt: Number(r.started_at),
  registeredAt: optionalNumber(r.registered_at),
  lastHeartbeatAt: optionalNumber(r.last_heartbeat_at),
  endedAt: optionalNumber(r.ended_at),
  outcome: optionalString(r.outcome) as TryOutcome | null,
  message: optionalString(r.message),
  workerStopped: Boolean(r.worker_stopped),
});

const toLog = (r: Row): BuildLogRecord => ({
  seq: Number(r.seq),
  at: Number(r.at),
  try: Number(r.try_number),
  kind: r.kind as BuildLogRecord['kind'],
  text: r.text as string,
  ...(r.phase === null || r.phase === undefined ? {} : { phase: r.phase as BuildPhase }),
});

const toPush = (r: Row): ImagePushRecord => ({
  id: Number(r.id),
  image: r.image as string,
  tag: r.tag as string,
  digest: r.digest as string,
  repository: r.repository as string,
  commit: optionalString(r.commit_sha),
  buildId: optionalNumber(r.build_id),
  at: Number(r.at),
});

const phaseEntry = (phase: BuildPhase, tryNumber: number, at: number): Omit<BuildLogRecord, 'seq'> => ({
  at,
  try: tryNumber,
  kind: 'phase',
  text: `phase ${phase}`,
  phase,
});

/** A build whose phase can no longer change (final, or archived whatever its flag says). */
const settled = (b: BuildRecord): boolean => b.final || ARCHIVED_PHASES.has(b.phase);

/**
 * The row every claim and every create updates first. On PostgreSQL that row lock serialises them across replicas
 * (under READ COMMITTED a count followed by an insert would otherwise race: two claims could both see a repository
 * free, or the worker cap not reached); each statement after it reads what the previous holder committed. SQLite's
 * transactions are serialised already (BEGIN IMMEDIATE), where it is a harmless write. Portable, unlike SELECT … FOR
 * UPDATE (which SQLite lacks) or advisory locks (PostgreSQL only). It is a row of `leases` (holder empty) so that no
 * table exists for it alone: no lease may be named 'build-queue'; the update leaves the row's values as they are.
 */
const QUEUE_LOCK = 'build-queue';
const lockQueue = (sql: Sql): Promise<number> =>
  sql.run(
    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, '', 0) ON CONFLICT (name) DO UPDATE SET expires_at = leases.expires_at",
    [QUEUE_LOCK],
  );

/**
 * Takes the build's row lock until the transaction ends; false when there is no such build. Every transaction that
 * changes a build or its tries and log takes it first, for two reasons. On PostgreSQL a guarded UPDATE re-checks only
 * its own row once another transaction's change to it commits, not what its subqueries read, so a check on the try
 * and a write to the build must come after a lock both wait for. And with one order (the build, then its tries), two
 * transactions never hold each other's next row. Single-row updates of a try (register, heartbeat) need no lock: they
 * are guarded on that row alone.
 */
const lockBuild = async (sql: Sql, buildId: number): Promise<boolean> =>
  (await sql.run('UPDATE builds SET tries = tries WHERE id = $1', [buildId])) > 0;

/** Rows per INSERT of log entries (7 parameters each). */
const LOG_BATCH = 100;

/** Appends after the build's last entry; the caller holds the build's row (lockBuild), so no two appends collide. */
async function insertLogs(
  sql: Sql,
  buildId: number,
  entries: Omit<BuildLogRecord, 'seq'>[],
): Promise<BuildLogRecord[]> {
  const last = await sql.get<{ seq: unknown }>('SELECT max(seq) AS seq FROM build_logs WHERE build_id = $1', [buildId]);
  let seq = Number(last?.seq ?? 0);
  const stored = entries.map((e) => ({
    seq: ++seq,
    at: e.at,
    try: e.try,
    kind: e.kind,
    text: e.text,
    ...(e.phase === undefined ? {} : { phase: e.phase }),
  }));
  for (let i = 0; i < stored.length; i += LOG_BATCH) {
    const params: unknown[] = [];
    const tuples = stored
      .slice(i, i + LOG_BATCH)
      .map(
        (e) =>
          `(${[buildId, e.seq, e.try, e.at, e.kind, e.text, e.phase ?? null].map((v) => `$${params.push(v)}`).join(', ')})`,
      );
    await sql.run(
      `INSERT INTO build_logs (build_id, seq, try_number, at, kind, text, phase) VALUES ${tuples.join(', ')}`,
      params,
    );
  }
  return stored;
}

/**
 * The builds a claim may take, oldest first: see claimNext. Repositories with an unended try are skipped, and so is
 * a build with an older build of its repository not yet final (waiting out a retry pause, say): a repository's
 * builds run in the order they were submitted, so an older build never pushes over a newer one.
 */
const CLAIMABLE_SQL = `
SELECT id, tries FROM builds b
WHERE final = 0 AND cancel_requested = 0 AND phase IN ('waiting', 'internalerror') AND available_at <= $1
  AND tries_remaining > 0
  AND repository NOT IN (
    SELECT o.repository FROM build_tries t JOIN builds o ON o.id = t.build_id WHERE t.ended_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM builds older WHERE older.repository = b.repository AND older.final = 0 AND older.id < b.id)
ORDER BY id LIMIT 1`;

/** The claim itself, guarded on everything CLAIMABLE_SQL read from the row (tries: no other claim came first). */
const CLAIM_SQL = `
UPDATE builds SET tries_remaining = tries_remaining - 1, tries = tries + 1, phase = 'build-scheduled',
  started_at = COALESCE(started_at, $3)
WHERE id = $1 AND tries = $2 AND final = 0 AND cancel_requested = 0 AND phase IN ('waiting', 'internalerror')
  AND available_at <= $3 AND tries_remaining > 0
RETURNING *`;

/** How many candidates a claim looks at before it gives up this round (each one lost was changed meanwhile). */
const CLAIM_ROUNDS = 10;

/** Thrown inside create's transaction to roll it back: the context was taken or deleted meanwhile. */
class ContextGone extends Error {}

export class Builds {
  constructor(private readonly sql: Sql) {}

  /**
   * A new build in phase "waiting" (with a "phase" log entry), or 'over_cap' when its namespace already has
   * `maxQueued` builds that are not final, or 'no_context' when contextId is not an unbound upload of its namespace.
   */
  async create(build: NewBuild, now: number, maxQueued: number): Promise<BuildRecord | 'over_cap' | 'no_context'> {
    try {
      return await this.sql.tx(async (sql) => {
        // Serialised with other creates, so that two at once cannot both pass the cap.
        await lockQueue(sql);
        const queued = await sql.get<{ n: unknown }>(
          'SELECT count(*) AS n FROM builds WHERE namespace = $1 AND final = 0',
          [build.namespace],
        );
        if (Number(queued!.n) >= maxQueued) return 'over_cap' as const;
        if (
          build.contextId !== undefined &&
          !(await sql.get(
            'SELECT 1 AS found FROM build_contexts WHERE id = $1 AND namespace = $2 AND build_id IS NULL',
            [build.contextId, build.namespace],
          ))
        )
          return 'no_context' as const;
        const row = (await sql.get(
          `INSERT INTO builds (namespace, repository, phase, spec, commit_sha, tries_remaining, submitted_by, available_at, created_at)
           VALUES ($1, $2, 'waiting', $3, $4, $5, $6, $7, $7) RETURNING *`,
          [
            build.namespace,
            build.repository,
            JSON.stringify(build.spec),
            build.commit,
            build.triesRemaining,
            build.submittedBy,
            now,
          ],
        ))!;
        const created = toBuild(row);
        if (
          build.contextId !== undefined &&
          !(await sql.run(
            'UPDATE build_contexts SET build_id = $1 WHERE id = $2 AND namespace = $3 AND build_id IS NULL',
            [created.id, build.contextId, build.namespace],
          ))
        )
          throw new ContextGone();
        await insertLogs(sql, created.id, [phaseEntry('waiting', 0, now)]);
        return created;
      });
    } catch (err) {
      if (err instanceof ContextGone) return 'no_context';
      throw err;
    }
  }

  async get(id: number): Promise<BuildRecord | undefined> {
    const row = await this.sql.get('SELECT * FROM builds WHERE id = $1', [id]);
    return row && toBuild(row);
  }

  /** Newest first. */
  async list(filter: BuildListFilter): Promise<BuildRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.namespaces) {
      if (!filter.namespaces.length) return [];
      where.push(`namespace IN (${filter.namespaces.map((n) => `$${params.push(n)}`).join(', ')})`);
    }
    if (filter.active) where.push('final = 0');
    if (filter.beforeId !== undefined) where.push(`id < $${params.push(filter.beforeId)}`);
    const rows = await this.sql.all(
      `SELECT * FROM builds ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.push(filter.limit)}`,
      params,
    );
    return rows.map(toBuild);
  }

  async listTries(buildId: number): Promise<BuildTryRecord[]> {
    const rows = await this.sql.all('SELECT * FROM build_tries WHERE build_id = $1 ORDER BY number', [buildId]);
    return rows.map(toTry);
  }

  /**
   * Claims the oldest build that may run now, if fewer than `allowedWorkers` builds have an unended try: not final,
   * not cancel-requested, phase waiting or internalerror, availableAt <= now, triesRemaining > 0, and no other build
   * of its repository has an unended try. Spends one try (triesRemaining - 1, tries + 1), sets the phase to
   * build-scheduled (with its log entry, try = the new number) and startedAt if unset, and inserts the try row.
   */
  claimNext(now: number, allowedWorkers: number): Promise<BuildClaim | undefined> {
    return this.sql.tx(async (sql) => {
      // Only claims make unended tries, and they run one at a time (lockQueue): the worker cap and the repository
      // check below cannot be passed by two claims at once. A try that ends meanwhile only makes this one cautious.
      await lockQueue(sql);
      for (let round = 0; round < CLAIM_ROUNDS; round++) {
        const active = await sql.get<{ n: unknown }>(
          'SELECT count(DISTINCT build_id) AS n FROM build_tries WHERE ended_at IS NULL',
        );
        if (Number(active!.n) >= allowedWorkers) return undefined;
        const candidate = await sql.get<{ id: unknown; tries: unknown }>(CLAIMABLE_SQL, [now]);
        if (!candidate) return undefined;
        // Guarded: a cancel (which does not take the queue lock) may have made it final since it was read.
        const row = await sql.get(CLAIM_SQL, [Number(candidate.id), Number(candidate.tries), now]);
        if (!row) continue;
        const build = toBuild(row);
        await sql.run('INSERT INTO build_tries (build_id, number, started_at) VALUES ($1, $2, $3)', [
          build.id,
          build.tries,
          now,
        ]);
        await insertLogs(sql, build.id, [phaseEntry('build-scheduled', build.tries, now)]);
        return { build, tryNumber: build.tries };
      }
      return undefined;
    });
  }

  /** Records the worker the scheduler started for a try (only while the try has not ended); false otherwise. */
  setTryWorker(
    buildId: number,
    tryNumber: number,
    worker: { plane: string; executionId: string; registrationJti: string; setupDeadline: number },
  ): Promise<boolean> {
    return this.sql.tx(async (sql) => {
      if (!(await lockBuild(sql, buildId))) return false;
      const changed = await sql.run(
        `UPDATE build_tries SET plane = $3, execution_id = $4, registration_jti = $5, setup_deadline = $6
         WHERE build_id = $1 AND number = $2 AND ended_at IS NULL`,
        [buildId, tryNumber, worker.plane, worker.executionId, worker.registrationJti, worker.setupDeadline],
      );
      if (!changed) return false;
      await sql.run('UPDATE builds SET plane = $2 WHERE id = $1', [buildId, worker.plane]);
      return true;
    });
  }

  /** Appends entries after the build's last; returns them with their seq. Nothing is stored for a missing build. */
  async appendLog(buildId: number, entries: Omit<BuildLogRecord, 'seq'>[]): Promise<BuildLogRecord[]> {
    if (!entries.length) return [];
    return this.sql.tx(async (sql) => ((await lockBuild(sql, buildId)) ? insertLogs(sql, buildId, entries) : []));
  }

  /** Entries with seq > afterSeq, in order, at most `limit`. */
  async readLog(buildId: number, afterSeq: number, limit: number): Promise<BuildLogRecord[]> {
    const rows = await this.sql.all('SELECT * FROM build_logs WHERE build_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
      buildId,
      afterSeq,
      limit,
    ]);
    return rows.map(toLog);
  }

  /** Each build's phase changes, in order, by build id (the phase log entries alone). */
  async phaseHistory(buildIds: number[]): Promise<Map<number, { phase: BuildPhase; at: number }[]>> {
    const out = new Map<number, { phase: BuildPhase; at: number }[]>(buildIds.map((id) => [id, []]));
    if (!buildIds.length) return out;
    const placeholders = buildIds.map((_, i) => `$${i + 1}`).join(', ');
    const rows = await this.sql.all(
      `SELECT build_id, phase, at FROM build_logs WHERE kind = 'phase' AND build_id IN (${placeholders}) ORDER BY build_id, seq`,
      buildIds,
    );
    for (const r of rows) out.get(Number(r.build_id))?.push({ phase: r.phase as BuildPhase, at: Number(r.at) });
    return out;
  }

  /**
   * A worker's phase change: only while try `tryNumber` is the build's current, unended try and the build is not
   * final. Setting the phase it already has is a no-op that answers true (no log entry). Writes a "phase" log entry.
   */
  setPhase(buildId: number, tryNumber: number, phase: BuildPhase, now: number): Promise<boolean> {
    return this.sql.tx(async (sql) => {
      if (!(await lockBuild(sql, buildId))) return false;
      const row = await sql.get(
        `SELECT b.*, t.ended_at AS try_ended_at FROM builds b
         JOIN build_tries t ON t.build_id = b.id AND t.number = $2 WHERE b.id = $1`,
        [buildId, tryNumber],
      );
      if (!row || row.try_ended_at !== null) return false;
      const build = toBuild(row);
      if (build.tries !== tryNumber || settled(build)) return false;
      if (build.phase === phase) return true;
      await sql.run('UPDATE builds SET phase = $2 WHERE id = $1', [buildId, phase]);
      await insertLogs(sql, buildId, [phaseEntry(phase, tryNumber, now)]);
      return true;
    });
  }

  /**
   * Exchanges a registration: only once (registeredAt unset), for the try's recorded jti, while the try has not ended
   * and the build is not final. Stores the job token's hash and sets registeredAt and lastHeartbeatAt to now.
   */
  async register(buildId: number, tryNumber: number, jti: string, jobTokenHash: string, now: number): Promise<boolean> {
    // One statement guarded on the try's own row: of two at once, the second finds registered_at set.
    const changed = await this.sql.run(
      `UPDATE build_tries SET job_token_hash = $4, registered_at = $5, last_heartbeat_at = $5
       WHERE build_id = $1 AND number = $2 AND registration_jti = $3 AND registered_at IS NULL AND ended_at IS NULL
         AND EXISTS (SELECT 1 FROM builds b WHERE b.id = build_tries.build_id AND b.final = 0)`,
      [buildId, tryNumber, jti, jobTokenHash, now],
    );
    return changed > 0;
  }

  /** The try a job token belongs to (its hash), with its build. */
  async findTryByToken(jobTokenHash: string): Promise<{ build: BuildRecord; try: BuildTryRecord } | undefined> {
    const tryRow = await this.sql.get('SELECT * FROM build_tries WHERE job_token_hash = $1', [jobTokenHash]);
    if (!tryRow) return undefined;
    const found = toTry(tryRow);
    const build = await this.get(found.buildId);
    return build && { build, try: found };
  }

  /** Sets lastHeartbeatAt while the try has not ended; false when it has (the worker must stop). */
  async heartbeat(buildId: number, tryNumber: number, now: number): Promise<boolean> {
    const changed = await this.sql.run(
      'UPDATE build_tries SET last_heartbeat_at = $3 WHERE build_id = $1 AND number = $2 AND ended_at IS NULL',
      [buildId, tryNumber, now],
    );
    return changed > 0;
  }

  /**
   * Ends a try and applies `end` to its build, in one transaction, only if the try has not ended yet (false
   * otherwise: a late or repeated call). Writes a "phase" log entry when the phase changes. triesRemaining grows by
   * one with restoreTry. Image pushes are inserted with it.
   */
  endTry(buildId: number, tryNumber: number, end: TryEnd, now: number): Promise<boolean> {
    return this.sql.tx(async (sql) => {
      if (!(await lockBuild(sql, buildId))) return false;
      const ended = await sql.run(
        'UPDATE build_tries SET ended_at = $3, outcome = $4, message = $5 WHERE build_id = $1 AND number = $2 AND ended_at IS NULL',
        [buildId, tryNumber, now, end.outcome, end.message],
      );
      if (!ended) return false;
      const build = toBuild((await sql.get('SELECT * FROM builds WHERE id = $1', [buildId]))!);
      // A settled build has no unended try (its end ended it); should one be found, the try ends and the build stays.
      if (settled(build)) return true;
      const failedPlanes =
        end.failedPlane === undefined || build.failedPlanes.includes(end.failedPlane)
          ? build.failedPlanes
          : [...build.failedPlanes, end.failedPlane];
      await sql.run(
        `UPDATE builds SET phase = $2, final = $3, finished_at = $4, available_at = $5, tries_remaining = $6, digest = $7,
           message = $8, failed_planes = $9
         WHERE id = $1`,
        [
          buildId,
          end.phase,
          end.final,
          end.final ? now : build.finishedAt,
          end.availableAt ?? build.availableAt,
          build.triesRemaining + (end.restoreTry ? 1 : 0),
          end.digest ?? build.digest,
          end.message,
          JSON.stringify(failedPlanes),
        ],
      );
      if (end.phase !== build.phase) await insertLogs(sql, buildId, [phaseEntry(end.phase, tryNumber, now)]);
      for (const p of end.pushes ?? []) {
        await sql.run(
          'INSERT INTO image_pushes (image, tag, digest, repository, commit_sha, build_id, at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
          [p.image, p.tag, p.digest, p.repository, p.commit, p.buildId, p.at],
        );
      }
      return true;
    });
  }

  /**
   * Cancels a build that is not final and not pushing: phase cancelled, final, cancelRequested, finishedAt, a phase
   * log entry, and its unended try (if any) ended with outcome cancelled (returned, so its worker can be stopped).
   */
  cancel(buildId: number, now: number): Promise<CancelResult> {
    return this.sql.tx(async (sql): Promise<CancelResult> => {
      if (!(await lockBuild(sql, buildId))) return { ok: false, reason: 'missing' };
      const build = toBuild((await sql.get('SELECT * FROM builds WHERE id = $1', [buildId]))!);
      if (settled(build)) return { ok: false, reason: 'final', build };
      if (build.phase === 'pushing') return { ok: false, reason: 'pushing', build };
      const tryRow = await sql.get(
        "UPDATE build_tries SET ended_at = $2, outcome = 'cancelled' WHERE build_id = $1 AND ended_at IS NULL RETURNING *",
        [buildId, now],
      );
      const row = (await sql.get(
        "UPDATE builds SET phase = 'cancelled', final = 1, cancel_requested = 1, finished_at = $2 WHERE id = $1 RETURNING *",
        [buildId, now],
      ))!;
      // Logged against the try it stopped; a build cancelled between tries gets it outside any try (0).
      await insertLogs(sql, buildId, [phaseEntry('cancelled', tryRow ? Number(tryRow.number) : 0, now)]);
      return { ok: true, build: toBuild(row), ...(tryRow ? { endedTry: toTry(tryRow) } : {}) };
    });
  }

  /**
   * Unended tries that have expired: a worker that did not register by setupDeadline, a registered one whose last
   * heartbeat is older than now - heartbeatTimeoutMs, or a try started more than maxBuildMs ago; and a
   * try claimed more than launchTimeoutMs ago that never got a worker (its scheduler stopped in between).
   */
  async expiredTries(
    now: number,
    heartbeatTimeoutMs: number,
    maxBuildMs: number,
    launchTimeoutMs = 60_000,
  ): Promise<BuildTryRecord[]> {
    // maxBuildMs bounds each try (Quay's max_expiration is per job), so a retry gets the whole time again.
    const rows = await this.sql.all(
      `SELECT t.* FROM build_tries t JOIN builds b ON b.id = t.build_id
       WHERE t.ended_at IS NULL AND (
         (t.registered_at IS NULL AND t.setup_deadline < $1)
         OR (t.registered_at IS NOT NULL AND t.last_heartbeat_at < $2)
         OR t.started_at < $3
         OR (t.setup_deadline IS NULL AND t.started_at < $4))
       ORDER BY t.build_id, t.number`,
      [now, now - heartbeatTimeoutMs, now - maxBuildMs, now - launchTimeoutMs],
    );
    return rows.map(toTry);
  }

  /** Ended tries whose worker (executionId set) has not been stopped yet. */
  async unstoppedTries(limit: number): Promise<BuildTryRecord[]> {
    const rows = await this.sql.all(
      `SELECT * FROM build_tries WHERE worker_stopped = 0 AND execution_id IS NOT NULL AND ended_at IS NOT NULL
       ORDER BY ended_at, build_id, number LIMIT $1`,
      [limit],
    );
    return rows.map(toTry);
  }

  async markWorkerStopped(buildId: number, tryNumber: number): Promise<void> {
    await this.sql.run('UPDATE build_tries SET worker_stopped = 1 WHERE build_id = $1 AND number = $2', [
      buildId,
      tryNumber,
    ]);
  }

  /** Builds with an unended try (what ALLOWED_WORKER_COUNT bounds). */
  async activeCount(): Promise<number> {
    const row = await this.sql.get<{ n: unknown }>(
      'SELECT count(DISTINCT build_id) AS n FROM build_tries WHERE ended_at IS NULL',
    );
    return Number(row!.n);
  }

  /** Stores an uploaded context (a tar.gz) for `namespace`, unbound until a build names it. */
  async putContext(ctx: { id: string; namespace: string; sha256: string; data: Buffer }, now: number): Promise<void> {
    await this.sql.run(
      'INSERT INTO build_contexts (id, namespace, bytes, sha256, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [ctx.id, ctx.namespace, ctx.data.length, ctx.sha256, ctx.data, now],
    );
  }

  async getContextOfBuild(buildId: number): Promise<{ data: Buffer; sha256: string } | undefined> {
    const row = await this.sql.get<{ data: Buffer; sha256: string }>(
      'SELECT data, sha256 FROM build_contexts WHERE build_id = $1',
      [buildId],
    );
    return row && { data: row.data, sha256: row.sha256 };
  }

  /** Deletes contexts of final builds, and unbound ones created before `unboundBefore`; returns how many. */
  pruneContexts(unboundBefore: number): Promise<number> {
    return this.sql.run(
      `DELETE FROM build_contexts WHERE (build_id IS NULL AND created_at < $1)
         OR (build_id IS NOT NULL AND EXISTS (SELECT 1 FROM builds b WHERE b.id = build_contexts.build_id AND b.final = 1))`,
      [unboundBefore],
    );
  }

  /** The newest image pushed to `image` (REGISTRY/PATH) by a complete build, as IMAGE:TAG, for layer reuse. */
  async latestPushed(image: string): Promise<ImagePushRecord | undefined> {
    const row = await this.sql.get(
      `SELECT p.* FROM image_pushes p JOIN builds b ON b.id = p.build_id
       WHERE p.image = $1 AND b.phase = 'complete' ORDER BY p.id DESC LIMIT 1`,
      [image],
    );
    return row && toPush(row);
  }

  /** Image-pushed events with id > afterId, oldest first. */
  async listImagePushes(filter: {
    afterId?: number;
    image?: string;
    buildId?: number;
    limit: number;
  }): Promise<ImagePushRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.afterId !== undefined) where.push(`id > $${params.push(filter.afterId)}`);
    if (filter.image !== undefined) where.push(`image = $${params.push(filter.image)}`);
    if (filter.buildId !== undefined) where.push(`build_id = $${params.push(filter.buildId)}`);
    const rows = await this.sql.all(
      `SELECT * FROM image_pushes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT $${params.push(filter.limit)}`,
      params,
    );
    return rows.map(toPush);
  }

  /**
   * Takes or renews lease `name` for `holder` until now + ttlMs: true when the holder has it (it was free, expired,
   * or already its own). Several replicas racing: exactly one wins.
   */
  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    // Of several inserts one succeeds; of several updates of an expired lease the first wins, and the others (on
    // PostgreSQL, re-checked against its committed row) find it held.
    if (
      await this.sql.run(
        'INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING',
        [name, holder, now + ttlMs],
      )
    )
      return true;
    const taken = await this.sql.run(
      'UPDATE leases SET holder = $2, expires_at = $3 WHERE name = $1 AND (holder = $2 OR expires_at <= $4)',
      [name, holder, now + ttlMs, now],
    );
    return taken > 0;
  }

  /** Lets go of a lease the holder has (a stopping server), so another replica need not wait for it to expire. */
  async releaseLease(name: string, holder: string): Promise<void> {
    await this.sql.run('DELETE FROM leases WHERE name = $1 AND holder = $2', [name, holder]);
  }
}
