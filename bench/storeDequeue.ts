// The stores under load, on SQLite and on PostgreSQL, in two parts.
//
//   depth   Dequeue latency with 10,000 and with 1,000,000 queued jobs in one queue, through the Store API
//           (store.jobs.dequeue, as the server calls it), in-process. The queue has the shape fair scheduling cares
//           about: 90% of the jobs in one namespace, the rest spread evenly over 20 others, interleaved in time.
//           The first 10,000 jobs are submitted with store.jobs.enqueue (the same in both databases); the rest of the
//           1,000,000 are bulk-inserted with SQL that writes exactly what enqueue() writes, which the benchmark
//           checks row by row. The two depths are measured alternately in blocks of BLOCK dequeues; after each
//           block, the jobs it took are replaced by store.jobs.enqueue (untimed), so the depth stays where it was.
//           PostgreSQL gets VACUUM (ANALYZE) after the fill; SQLite gets nothing (the store never runs ANALYZE).
//   e2e     No-op jobs per second end to end: a real `dockhand server` on each store, 4 real shell-runtime
//           executors with 4 slots each, 1,000 jobs with one step `true` submitted 16 at a time, timed from the
//           first submit to the last job's finishedAt; twice per store, the stores alternating. The peer, measured
//           just before and just after each run: the same 1,000 `/bin/sh -c true` processes spawned by 16
//           concurrent workers in Node, the processes alone. Each run's CPU is read per process from /proc; on
//           PostgreSQL the backends' states are sampled from pg_stat_activity, and deadlocks are counted.
//
// Every measurement notes how much CPU other processes took meanwhile, and is taken again when that was over 10%.
//
// Environment: BENCH_PARTS (default depth,e2e), BENCH_STORES (default sqlite,postgres), BENCH_DEPTHS (default
// 10000,1000000), BENCH_DEQUEUES (default 2000 per depth), BENCH_E2E_JOBS (default 1000), BENCH_E2E_RUNS (default
// 2 per store, the stores alternating), BENCH_MAX_TRIES (default 3: a measurement during which other processes used
// over 10% of the CPU is taken again, up to this many times in all), BENCH_WRITE=0 to
// leave BENCHMARKS.md alone, BENCH_RAW=FILE to save every sample as JSON. PostgreSQL: a throwaway cluster from
// test/support/postgres.ts, or DOCKHAND_TEST_POSTGRES_URL (a user allowed to create databases).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { parseJobSpec, type JobSpec } from '../src/core/jobSpec.js';
import { PostgresStore } from '../src/store/postgres/postgresStore.js';
import { SqliteStore } from '../src/store/sqlite/sqliteStore.js';
import type { Store } from '../src/store/store.js';
import { startPostgres, type PostgresHandle } from '../test/support/postgres.js';
import {
  ADMIN_TOKEN,
  EXECUTORS_TOKEN,
  Proc,
  ROOT,
  api,
  fmtRatio,
  quantile,
  sleep,
  startExecutor,
  tempDir,
  writeSection,
  type ApiJob,
} from './lib.js';

const PARTS = list(process.env.BENCH_PARTS ?? 'depth,e2e');
const STORES = list(process.env.BENCH_STORES ?? 'sqlite,postgres') as StoreKind[];
const DEPTHS = list(process.env.BENCH_DEPTHS ?? '10000,1000000').map(Number);
const DEQUEUES = Number(process.env.BENCH_DEQUEUES ?? 2000);
const E2E_JOBS = Number(process.env.BENCH_E2E_JOBS ?? 1000);
const E2E_RUNS = Number(process.env.BENCH_E2E_RUNS ?? 2);
const WRITE = process.env.BENCH_WRITE !== '0';
/** A measurement during which other processes used more than this share of the CPU is taken again, up to MAX_TRIES times. */
const DISTURBED = 0.1;
const MAX_TRIES = Number(process.env.BENCH_MAX_TRIES ?? 3);
const SECTION = 'store';
const GOAL = 1.3;

const QUEUE = 'bench';
/** 90% of the jobs; the other 10% go round the SMALL namespaces, one job in ten. */
const BIG_NAMESPACE = 'org:acme';
const SMALL_NAMESPACES = Array.from({ length: 20 }, (_, i) => `user:u${String(i + 1).padStart(2, '0')}`);
const NAMESPACES = [BIG_NAMESPACE, ...SMALL_NAMESPACES];
/** Jobs submitted through store.jobs.enqueue in every database; the rest of a deeper queue is bulk-inserted. */
const API_FILL = 10_000;
const BULK_CHUNK = 100_000;
const BLOCK = 100;
const WARMUP = 50;

const E2E_EXECUTORS = 4;
const E2E_SLOTS = 4;
const E2E_SUBMITTERS = 16;
const E2E_WARMUP = 32;

type StoreKind = 'sqlite' | 'postgres';
const STORE_NAME: Record<StoreKind, string> = { sqlite: 'SQLite', postgres: 'PostgreSQL' };

function list(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/** Job i of a fill: its namespace (an index into NAMESPACES) follows a pattern of period 200. */
const namespaceIndex = (i: number): number => (i % 10 === 9 ? 1 + (Math.floor(i / 10) % 20) : 0);

function specFor(namespace: string, run = 'true'): JobSpec {
  const parsed = parseJobSpec({ queue: QUEUE, namespace, steps: [{ run }] });
  if (!parsed.ok) throw new Error(`bench job spec: ${JSON.stringify(parsed.issues)}`);
  return parsed.value;
}
const SPECS = NAMESPACES.map((ns) => specFor(ns));
/** Exactly what enqueue() stores in jobs.spec. */
const SPEC_JSON = SPECS.map((s) => JSON.stringify(s));

// ---- databases ----

interface Pg {
  handle: PostgresHandle;
  /** The server is our own throwaway cluster (not DOCKHAND_TEST_POSTGRES_URL). */
  owned: boolean;
  databases: string[];
}

let pgServer: Pg | undefined;

async function postgres(): Promise<Pg> {
  if (!pgServer) {
    const owned = !process.env.DOCKHAND_TEST_POSTGRES_URL;
    pgServer = { handle: await startPostgres(), owned, databases: [] };
  }
  return pgServer;
}

async function withPg<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function createDatabase(label: string): Promise<string> {
  const server = await postgres();
  const name = `dockhand_bench_${label}_${process.pid}_${randomBytes(3).toString('hex')}`;
  await withPg(server.handle.url, (c) => c.query(`CREATE DATABASE "${name}"`));
  server.databases.push(name);
  const url = new URL(server.handle.url);
  url.pathname = `/${name}`;
  return url.toString();
}

async function dropDatabases(): Promise<void> {
  if (!pgServer) return;
  const { handle, databases } = pgServer;
  await withPg(handle.url, async (c) => {
    for (const name of databases) {
      await c.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
        [name],
      );
      await c.query(`DROP DATABASE IF EXISTS "${name}"`);
    }
  }).catch((err: Error) => console.error(`dropping the benchmark databases failed: ${err.message}`));
  pgServer.databases = [];
}

// ---- part 1: dequeue latency at depth ----

interface DepthDb {
  depth: number;
  store: Store;
  /** Bulk SQL from outside the store. */
  raw: RawDb;
  fillMs: { api: number; bulk: number; maintenance: number };
  samples: number[];
  /** The namespaces of the jobs taken in the block that just ran, to put back. */
  taken: string[];
  plan?: string;
  indexes?: string[];
  explainMs?: number;
  /** SQLite: the recorded dequeues whose commit ran a WAL checkpoint (seen as the WAL starting over right after). */
  checkpointed: number[];
  wal?: WalWatch;
}

/**
 * SQLite starts its WAL over (new salt values in the WAL header) at the first write after a checkpoint copied the
 * whole log back, and SQLite's autocheckpoint runs in the commit of whatever transaction pushed the log past 1,000
 * pages. So when the salt changes after an operation, the operation before it ran a checkpoint.
 */
class WalWatch {
  private salt = '';
  private last: number | undefined;
  constructor(private readonly file: string) {}

  reset(): void {
    this.last = undefined;
  }

  /** Call after every write; `sample` is the recorded dequeue's index, or undefined for anything else. */
  after(sample: number | undefined, onCheckpoint: (sample: number) => void): void {
    let salt = '';
    try {
      const fd = openSync(this.file, 'r');
      const buf = Buffer.alloc(8);
      readSync(fd, buf, 0, 8, 16);
      closeSync(fd);
      salt = buf.toString('hex');
    } catch {
      salt = 'none';
    }
    if (this.salt && salt !== this.salt && this.last !== undefined) onCheckpoint(this.last);
    this.salt = salt;
    this.last = sample;
  }
}

interface RawDb {
  bulkInsert(base: number, from: number, to: number): Promise<void>;
  /** Every column of the jobs whose created_at is in [lo, hi], by created_at, id left out. */
  rows(lo: number, hi: number): Promise<Record<string, unknown>[]>;
  maintenance(): Promise<void>;
  explain(now: number): Promise<{ plan: string; indexes: string[]; ms?: number }>;
  close(): Promise<void>;
}

interface DepthResult {
  store: StoreKind;
  version: string;
  settings: string;
  dbs: {
    depth: number;
    samples: number[];
    fillMs: DepthDb['fillMs'];
    plan?: string;
    indexes?: string[];
    explainMs?: number;
    checkpointed: number[];
  }[];
  /** Share of the machine's CPU that processes other than this one and PostgreSQL used while the dequeues ran. */
  otherLoad: number;
  /** Times the dequeues were measured (more than once when other processes disturbed them). */
  tries: number;
}

/** The store's candidate query, read from its source so the EXPLAIN is of the SQL the store runs today. */
function candidatesSql(kind: StoreKind): string {
  const file = path.join(ROOT, 'src/store', kind, `${kind}Store.ts`);
  const m = /const CANDIDATES_SQL = `([^`]*)`/.exec(readFileSync(file, 'utf8'));
  if (!m) throw new Error(`CANDIDATES_SQL not found in ${file}`);
  return m[1];
}

interface MadeDb {
  store: Store;
  raw: RawDb;
  version: string;
  settings: string;
  walFile?: string;
}

async function sqliteDb(dir: string, depth: number): Promise<MadeDb> {
  const file = path.join(dir, `depth-${depth}.db`);
  const store = new SqliteStore(file);
  await store.migrate();
  // The store commits with synchronous=FULL (each commit waits for the disk); what is measured here is the work that
  // could grow with depth, so its connection commits without waiting, as before that change.
  (store as unknown as { db: Database.Database }).db.pragma('synchronous = NORMAL');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  const insert = db.prepare(
    `INSERT INTO jobs (queue, namespace, spec, state, max_attempts, created_at, queued_at, available_at, docker_auth_config)
     VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, NULL)`,
  );
  const raw: RawDb = {
    async bulkInsert(base, from, to) {
      db.transaction(() => {
        for (let i = from; i <= to; i++) {
          const k = namespaceIndex(i);
          const t = base + i;
          insert.run(QUEUE, NAMESPACES[k], SPEC_JSON[k], SPECS[k].maxAttempts, t, t, t);
        }
      })();
    },
    async rows(lo, hi) {
      return (
        db.prepare('SELECT * FROM jobs WHERE created_at BETWEEN ? AND ? ORDER BY created_at').all(lo, hi) as Record<
          string,
          unknown
        >[]
      ).map(({ id: _id, ...rest }) => rest);
    },
    async maintenance() {
      // Only the WAL is folded back into the database, as a checkpoint would; no ANALYZE, as the store runs none.
      db.pragma('wal_checkpoint(TRUNCATE)');
    },
    async explain(now) {
      const rows = db.prepare(`EXPLAIN QUERY PLAN ${candidatesSql('sqlite')}`).all({ queue: QUEUE, now, n: 1 }) as {
        detail: string;
      }[];
      const plan = rows.map((r) => r.detail).join('\n');
      return { plan, indexes: [...new Set([...plan.matchAll(/INDEX (\w+)/g)].map((m) => m[1]))] };
    },
    async close() {
      db.close();
    },
  };
  const version = db.prepare('SELECT sqlite_version()').pluck().get() as string;
  return {
    store,
    raw,
    version: `SQLite ${version}`,
    settings:
      "WAL, synchronous=NORMAL (set on the store's connection too: the store itself commits with FULL), default page cache",
    walFile: `${file}-wal`,
  };
}

async function postgresDb(depth: number): Promise<MadeDb> {
  const url = await createDatabase(`d${depth}`);
  const store = new PostgresStore(url);
  await store.migrate();
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined); // dropping the database at the end ends it
  await client.connect();
  const raw: RawDb = {
    async bulkInsert(base, from, to) {
      // Namespace and spec by the same pattern as namespaceIndex (1-based arrays), ids in the order of i.
      await client.query(
        `INSERT INTO jobs (queue, namespace, spec, state, max_attempts, created_at, queued_at, available_at, docker_auth_config)
         SELECT $1, ($2::text[])[k], ($3::text[])[k]::json, 'queued', ($4::int[])[k], $5::bigint + i, $5::bigint + i, $5::bigint + i, NULL
         FROM (SELECT i, CASE WHEN i % 10 = 9 THEN 2 + (i / 10) % 20 ELSE 1 END AS k FROM generate_series($6::int, $7::int) AS i) s
         ORDER BY i`,
        [QUEUE, NAMESPACES, SPEC_JSON, SPECS.map((s) => s.maxAttempts), base, from, to],
      );
    },
    async rows(lo, hi) {
      const r = await client.query(
        'SELECT *, spec::text AS spec FROM jobs WHERE created_at BETWEEN $1 AND $2 ORDER BY created_at',
        [lo, hi],
      );
      return r.rows.map(({ id: _id, ...rest }) => rest as Record<string, unknown>);
    },
    async maintenance() {
      // Autovacuum may not have got to the new rows yet: statistics for the planner, and the visibility map.
      await client.query('VACUUM (ANALYZE) jobs');
    },
    async explain(now) {
      // Five times, keeping the run with the median execution time: one EXPLAIN ANALYZE is a single noisy sample.
      const plans: { plan: string; ms: number }[] = [];
      for (let i = 0; i < 5; i++) {
        await client.query('BEGIN');
        try {
          const r = await client.query<{ 'QUERY PLAN': string }>(
            `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${candidatesSql('postgres')}`,
            [QUEUE, now, 1],
          );
          const plan = r.rows.map((x) => x['QUERY PLAN']).join('\n');
          plans.push({ plan, ms: Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1]) });
        } finally {
          await client.query('ROLLBACK'); // FOR UPDATE took locks
        }
      }
      const { plan, ms } = plans.sort((a, b) => a.ms - b.ms)[2];
      return {
        plan,
        indexes: [...new Set([...plan.matchAll(/Index (?:Only )?Scan (?:Backward )?using (\w+)/g)].map((m) => m[1]))],
        ms,
      };
    },
    async close() {
      await client.end();
    },
  };
  const show = async (name: string): Promise<string> => (await client.query(`SHOW ${name}`)).rows[0][name] as string;
  const version = (await show('server_version')).split(' ')[0];
  const settings =
    `shared_buffers=${await show('shared_buffers')}, fsync=${await show('fsync')}, synchronous_commit=${await show('synchronous_commit')}, ` +
    `full_page_writes=${await show('full_page_writes')}, autovacuum=${await show('autovacuum')}`;
  return { store, raw, version: `PostgreSQL ${version}`, settings };
}

/** Columns the fill compares between a job from store.jobs.enqueue and one from the bulk insert with the same pattern. */
function sameRow(a: Record<string, unknown>, b: Record<string, unknown>, dt: number): string | undefined {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    const x = a[key];
    const y = b[key];
    if (key === 'created_at' || key === 'queued_at' || key === 'available_at') {
      if (Number(y) - Number(x) !== dt) return `${key}: ${String(x)} and ${String(y)}`;
    } else if (JSON.stringify(x) !== JSON.stringify(y)) {
      return `${key}: ${JSON.stringify(x)} and ${JSON.stringify(y)}`;
    }
  }
  return undefined;
}

async function fill(db: DepthDb, base: number): Promise<void> {
  const apiCount = Math.min(db.depth, API_FILL);
  let t = performance.now();
  for (let i = 0; i < apiCount; i++) await db.store.jobs.enqueue(SPECS[namespaceIndex(i)], base + i);
  db.fillMs.api = performance.now() - t;
  t = performance.now();
  for (let from = apiCount; from < db.depth; from += BULK_CHUNK) {
    await db.raw.bulkInsert(base, from, Math.min(from + BULK_CHUNK, db.depth) - 1);
    process.stderr.write('.');
  }
  db.fillMs.bulk = performance.now() - t;
  if (db.depth > apiCount) {
    // The last 200 jobs from enqueue() and the next 200 from the bulk insert: the same pattern, 200 ms apart.
    const period = 200;
    const fromApi = await db.raw.rows(base + apiCount - period, base + apiCount - 1);
    const fromBulk = await db.raw.rows(base + apiCount, base + apiCount + period - 1);
    if (fromApi.length !== period || fromBulk.length !== period)
      throw new Error(`fill check: expected ${period} rows each, got ${fromApi.length} and ${fromBulk.length}`);
    for (let j = 0; j < period; j++) {
      const diff = sameRow(fromApi[j], fromBulk[j], period);
      if (diff) throw new Error(`bulk-inserted job ${apiCount + j} differs from what enqueue() writes: ${diff}`);
    }
  }
  t = performance.now();
  await db.raw.maintenance();
  db.fillMs.maintenance = performance.now() - t;
}

let tokenCounter = 0;

/** BLOCK dequeues back to back, each timed alone; then the jobs taken are put back, untimed. */
async function dequeueBlock(db: DepthDb, count: number, record: boolean): Promise<void> {
  db.taken = [];
  for (let i = 0; i < count; i++) {
    const now = Date.now();
    const t = process.hrtime.bigint();
    const job = await db.store.jobs.dequeue({
      executorName: 'bench-dequeue',
      queues: [QUEUE],
      tokenHash: `bench-token-${process.pid}-${++tokenCounter}`,
      now,
    });
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (!job) throw new Error(`depth ${db.depth}: dequeue found no job`);
    if (record) db.samples.push(ms);
    db.wal?.after(record ? db.samples.length - 1 : undefined, (k) => db.checkpointed.push(k));
    db.taken.push(job.namespace);
  }
  const now = Date.now();
  for (const ns of db.taken) {
    await db.store.jobs.enqueue(SPECS[NAMESPACES.indexOf(ns)], now);
    db.wal?.after(undefined, (k) => db.checkpointed.push(k));
  }
}

async function benchDepth(kind: StoreKind): Promise<DepthResult> {
  const dir = await tempDir(`store-${kind}`);
  const dbs: DepthDb[] = [];
  let version = '';
  let settings = '';
  try {
    const maxDepth = Math.max(...DEPTHS);
    // Every fill's times end well before the first dequeue, whatever the depth.
    const base = Date.now() - maxDepth - 60_000;
    for (const depth of DEPTHS) {
      const made = kind === 'sqlite' ? await sqliteDb(dir, depth) : await postgresDb(depth);
      version = made.version;
      settings = made.settings;
      const db: DepthDb = {
        depth,
        store: made.store,
        raw: made.raw,
        fillMs: { api: 0, bulk: 0, maintenance: 0 },
        samples: [],
        taken: [],
        checkpointed: [],
        wal: made.walFile ? new WalWatch(made.walFile) : undefined,
      };
      dbs.push(db);
      process.stderr.write(`[${kind}] filling ${depth.toLocaleString('en-US')} queued jobs `);
      await fill(db, base);
      console.error(
        ` enqueue ${(db.fillMs.api / 1000).toFixed(1)} s, bulk ${(db.fillMs.bulk / 1000).toFixed(1)} s, ` +
          `${kind === 'postgres' ? 'VACUUM (ANALYZE)' : 'checkpoint'} ${(db.fillMs.maintenance / 1000).toFixed(1)} s`,
      );
    }
    let otherLoad = 0;
    let tries = 0;
    while (tries < MAX_TRIES) {
      tries++;
      for (const db of dbs) {
        db.samples = [];
        db.checkpointed = [];
        db.wal?.reset();
      }
      for (const db of dbs) await dequeueBlock(db, WARMUP, false);
      const meter = await loadMeter();
      for (let block = 0; block * BLOCK < DEQUEUES; block++) {
        // Alternate which depth goes first.
        const order = block % 2 === 0 ? dbs : [...dbs].reverse();
        for (const db of order) await dequeueBlock(db, Math.min(BLOCK, DEQUEUES - block * BLOCK), true);
      }
      otherLoad = await meter();
      if (otherLoad <= DISTURBED) break;
      console.error(
        `[${kind}] other processes used ${Math.round(100 * otherLoad)}% of the CPU meanwhile${tries < MAX_TRIES ? ': measuring again' : ''}`,
      );
    }
    for (const db of dbs) {
      const e = await db.raw.explain(Date.now());
      db.plan = e.plan;
      db.indexes = e.indexes;
      db.explainMs = e.ms;
      const s = db.samples;
      console.error(
        `[${kind}] ${db.depth}: median ${quantile(s, 0.5).toFixed(3)} ms, p99 ${quantile(s, 0.99).toFixed(3)} ms; indexes ${e.indexes.join(', ')}`,
      );
    }
    return {
      store: kind,
      version,
      settings,
      otherLoad,
      tries,
      dbs: dbs.map(({ depth, samples, fillMs, plan, indexes, explainMs, checkpointed }) => ({
        depth,
        samples,
        fillMs,
        plan,
        indexes,
        explainMs,
        checkpointed,
      })),
    };
  } finally {
    for (const db of dbs) {
      await db.raw.close().catch(() => undefined);
      await db.store.close().catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
    if (kind === 'postgres') await dropDatabases();
  }
}

// ---- part 2: no-op jobs end to end ----

interface CpuSample {
  /** CPU seconds used in the timed window. */
  server: number;
  executors: number;
  /** Step processes, counted when their executor reaped them. */
  steps: number;
  postgres?: number;
  /** This process: the submitting clients and the polling. */
  client: number;
  machine: number;
  machineCapacity: number;
}

interface E2eResult {
  store: StoreKind;
  run: number;
  /** Times this run was taken (more than once when other processes disturbed it). */
  tries?: number;
  jobs: number;
  ms: number;
  submitMs: number;
  /** The bare spawns, just before and just after the Dockhand run. */
  peerMs: number[];
  queueWait: number[];
  runTime: number[];
  cpu: CpuSample;
  /** PostgreSQL only: what its busy backends were doing, and how much each job cost it. */
  pgActivity?: PgActivity;
}

interface PgActivity {
  /** Samples of backends of the database in a transaction, by what they were doing (see classify). */
  waits: Record<string, number>;
  samples: number;
  /** Over the whole run (warm-up included), per job: transactions committed, jobs rows updated. */
  perJob: { commits: number; jobUpdates: number };
  /** Deadlocks PostgreSQL detected in the run's database (each one aborted a statement after deadlock_timeout). */
  deadlocks: number;
  deadlockTimeout: string;
  /** The deadlock cycles in PostgreSQL's log, by the statements taking part (our own cluster only). */
  cycles?: Record<string, number>;
}

const TICK = 100; // USER_HZ on Linux

function procTimes(pid: number): { self: number; children: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { self: (Number(f[11]) + Number(f[12])) / TICK, children: (Number(f[13]) + Number(f[14])) / TICK };
  } catch {
    return undefined;
  }
}

function machineTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: (total - f[3] - f[4]) / TICK, total: total / TICK };
}

let postmasterPid: number | undefined;

/**
 * CPU seconds used so far by our PostgreSQL cluster: the postmaster, every live child of it (backends, background
 * processes), and, through the postmaster's reaped-children times, every child that has exited. Undefined when the
 * server is not our own local cluster.
 */
async function postgresCpu(): Promise<number | undefined> {
  if (!pgServer?.owned) return undefined;
  if (postmasterPid === undefined) {
    const pid = await withPg(
      pgServer.handle.url,
      async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid,
    );
    postmasterPid = parentOf(pid);
  }
  if (postmasterPid === undefined) return undefined;
  const pm = procTimes(postmasterPid);
  if (!pm) return undefined;
  let total = pm.self + pm.children;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || parentOf(Number(entry)) !== postmasterPid) continue;
    total += procTimes(Number(entry))?.self ?? 0;
  }
  return total;
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * Starts measuring; the function it returns gives the share of the machine's CPU used meanwhile by processes other
 * than this one and our PostgreSQL cluster's backends (other people's work on a shared machine disturbs the numbers).
 */
async function loadMeter(): Promise<() => Promise<number>> {
  const pg0 = (await postgresCpu()) ?? 0;
  const own0 = process.cpuUsage();
  const m0 = machineTimes();
  return async () => {
    const m1 = machineTimes();
    const own = process.cpuUsage(own0);
    const pg = ((await postgresCpu()) ?? 0) - pg0;
    const other = m1.busy - m0.busy - (own.user + own.system) / 1e6 - pg;
    return Math.max(0, other) / (m1.total - m0.total);
  };
}

/** What statement a backend is on, in words. */
function classify(query: string): string {
  if (/^UPDATE jobs SET last_heartbeat_at/.test(query)) return 'heartbeat UPDATE';
  if (/^SELECT \* FROM jobs WHERE id = \$1 FOR UPDATE/.test(query)) return 'finish: SELECT … FOR UPDATE';
  if (/^INSERT INTO namespace_turns/.test(query)) return 'dequeue: namespace turn upsert';
  if (/pg_notify/.test(query)) return 'pg_notify';
  if (/^\s*WITH RECURSIVE ns/.test(query)) return 'dequeue: candidate query';
  return 'other';
}

/** Samples pg_stat_activity for the database at `url` every 50 ms until stopped, from the maintenance database. */
function sampleActivity(url: string): { stop(): Promise<{ waits: Record<string, number>; samples: number }> } {
  const waits: Record<string, number> = {};
  let samples = 0;
  let stopped = false;
  const database = new URL(url).pathname.slice(1);
  const loop = withPg(pgServer!.handle.url, async (c) => {
    while (!stopped) {
      const r = await c.query<{ state: string; wtype: string | null; wevent: string | null; query: string }>(
        `SELECT state, wait_event_type AS wtype, wait_event AS wevent, query FROM pg_stat_activity
         WHERE datname = $1 AND state IN ('active', 'idle in transaction')`,
        [database],
      );
      samples++;
      for (const row of r.rows) {
        const what =
          row.state === 'idle in transaction'
            ? "in a transaction, waiting for the server's next statement"
            : row.wtype === 'Lock'
              ? `waiting for a lock (${row.wevent}): ${classify(row.query)}`
              : row.wtype
                ? `${row.wtype}:${row.wevent}`
                : 'running';
        waits[what] = (waits[what] ?? 0) + 1;
      }
      await sleep(50);
    }
  });
  return {
    async stop() {
      stopped = true;
      await loop;
      return { waits, samples };
    },
  };
}

/** Where test/support/postgres.ts has the cluster log (next to its compiled self: dist-bench/test-output/). */
const PG_LOG = path.join(ROOT, 'dist-bench/test-output/postgres.log');

function logSize(): number {
  try {
    return statSync(PG_LOG).size;
  } catch {
    return 0;
  }
}

/** The deadlocks PostgreSQL logged after byte `from`, by the kinds of statement in each cycle. */
function deadlockCycles(from: number): Record<string, number> {
  let text = '';
  try {
    text = readFileSync(PG_LOG).subarray(from).toString('utf8');
  } catch {
    return {};
  }
  const cycles: Record<string, number> = {};
  for (const report of text.split(/ERROR: {2}deadlock detected/).slice(1)) {
    const detail = report.split(/\bHINT:/)[0];
    const kinds = [...detail.matchAll(/^\s+Process \d+: (.*)$/gm)].map((m) => classify(m[1].trim()));
    const key = [...new Set(kinds)].sort().join(' + ');
    cycles[key] = (cycles[key] ?? 0) + 1;
  }
  return cycles;
}

async function pgCounters(
  url: string,
): Promise<{ commits: number; jobUpdates: number; deadlocks: number; deadlockTimeout: string }> {
  return withPg(url, async (c) => {
    const db = (await c.query('SELECT xact_commit, deadlocks FROM pg_stat_database WHERE datname = current_database()'))
      .rows[0];
    const deadlockTimeout = (await c.query('SHOW deadlock_timeout')).rows[0].deadlock_timeout as string;
    const t = (
      await c.query<{ relname: string; ins: string; upd: string }>(
        `SELECT relname, n_tup_ins AS ins, n_tup_upd AS upd FROM pg_stat_user_tables WHERE relname IN ('jobs', 'log_chunks')`,
      )
    ).rows;
    const get = (rel: string, k: 'ins' | 'upd'): number => Number(t.find((x) => x.relname === rel)?.[k] ?? 0);
    return {
      commits: Number(db.xact_commit),
      jobUpdates: get('jobs', 'upd'),
      deadlocks: Number(db.deadlocks),
      deadlockTimeout,
    };
  });
}

/**
 * `count` processes of /bin/sh -c true, `concurrency` at a time, spawned by a fresh Node process (the time is taken
 * inside it, so its own start does not count): fork() costs grow with the size of the process that forks, and this
 * one is large after the depth part.
 */
const PEER_CODE = `
import { spawn } from 'node:child_process';
const [count, concurrency] = process.argv.slice(1).map(Number);
let next = 0;
const worker = async () => {
  while (next < count) {
    next++;
    await new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', 'true'], { stdio: 'ignore' });
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error('sh -c true exited with ' + code))));
    });
  }
};
const t = performance.now();
await Promise.all(Array.from({ length: concurrency }, worker));
console.log(performance.now() - t);
`;

async function spawnPeer(count: number, concurrency: number): Promise<number> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', PEER_CODE, String(count), String(concurrency)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`the spawn peer exited with ${code}`)),
    );
  });
  const ms = Number(out.trim());
  if (!Number.isFinite(ms)) throw new Error(`the spawn peer printed ${JSON.stringify(out)}`);
  return ms;
}

async function submitAll(url: string, count: number): Promise<number[]> {
  const ids: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const { job } = await api<{ job: ApiJob }>(url, 'POST', '/jobs', { queue: QUEUE, steps: [{ run: 'true' }] });
      ids.push(job.id);
    }
  };
  await Promise.all(Array.from({ length: E2E_SUBMITTERS }, worker));
  return ids;
}

async function waitForIdle(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { queues } = await api<{ queues: { queue: string; queued: number; processing: number }[] }>(
      url,
      'GET',
      '/queues',
    );
    const q = queues.find((x) => x.queue === QUEUE);
    if (!q || Number(q.queued) + Number(q.processing) === 0) return;
    if (Date.now() > deadline)
      throw new Error(`jobs still queued (${q.queued}) or running (${q.processing}) after ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

async function listJobs(url: string, minId: number): Promise<ApiJob[]> {
  const out: ApiJob[] = [];
  let before: number | undefined;
  for (;;) {
    const { jobs } = await api<{ jobs: ApiJob[] }>(
      url,
      'GET',
      `/jobs?queue=${QUEUE}&limit=500${before ? `&before=${before}` : ''}`,
    );
    out.push(...jobs.filter((j) => j.id >= minId));
    if (jobs.length < 500 || jobs[jobs.length - 1].id <= minId) return out;
    before = jobs[jobs.length - 1].id;
  }
}

async function benchE2e(kind: StoreKind, run: number): Promise<E2eResult> {
  const dataDir = await tempDir(`e2e-${kind}-server`);
  const workDir = await tempDir(`e2e-${kind}-work`);
  const procs: Proc[] = [];
  try {
    await spawnPeer(E2E_WARMUP, E2E_SUBMITTERS);
    const peerMs = [await spawnPeer(E2E_JOBS, E2E_SUBMITTERS)];
    console.error(`[${kind} ${run}] bare spawns: ${E2E_JOBS} in ${(peerMs[0] / 1000).toFixed(2)} s`);

    const env: NodeJS.ProcessEnv = {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
      DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
    };
    if (kind === 'postgres') env.DOCKHAND_DATABASE_URL = await createDatabase('e2e');
    const server = new Proc('server', ['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir], env);
    procs.push(server);
    const url = (await server.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/))[1];
    const executors = await Promise.all(
      Array.from({ length: E2E_EXECUTORS }, (_, i) =>
        startExecutor(url, {
          EXECUTOR_NAME: `bench-e2e-${kind}-${i + 1}`,
          EXECUTOR_QUEUE_NAME: QUEUE,
          EXECUTOR_RUNTIME: 'shell',
          EXECUTOR_MAXIMUM_NUM_JOBS: String(E2E_SLOTS),
          EXECUTOR_WORKSPACE_ROOT: workDir,
        }),
      ),
    );
    procs.push(...executors);

    await submitAll(url, E2E_WARMUP);
    await waitForIdle(url, 60_000);

    const pgBefore = await postgresCpu();
    const logFrom = logSize();
    const sampler = env.DOCKHAND_DATABASE_URL ? sampleActivity(env.DOCKHAND_DATABASE_URL) : undefined;
    const client0 = process.cpuUsage();
    const cpu0 = {
      server: procTimes(server.child.pid!)!,
      executors: executors.map((e) => procTimes(e.child.pid!)!),
      machine: machineTimes(),
    };
    const t0 = Date.now();
    const ids = await submitAll(url, E2E_JOBS);
    const submitMs = Date.now() - t0;
    await waitForIdle(url, 300_000);
    const client1 = process.cpuUsage(client0);
    const cpu1 = {
      server: procTimes(server.child.pid!)!,
      executors: executors.map((e) => procTimes(e.child.pid!)!),
      machine: machineTimes(),
    };
    const pgAfter = await postgresCpu();
    // The cluster also exists during the SQLite runs (from the depth part); it then counts as the rest of the machine.
    const pgUsed =
      kind === 'postgres' && pgBefore !== undefined && pgAfter !== undefined ? pgAfter - pgBefore : undefined;
    const activity = await sampler?.stop();

    const minId = Math.min(...ids);
    const jobs = (await listJobs(url, minId)).filter((j) => ids.includes(j.id));
    if (jobs.length !== E2E_JOBS) throw new Error(`found ${jobs.length} of the ${E2E_JOBS} jobs`);
    const bad = jobs.find((j) => j.state !== 'completed');
    if (bad) throw new Error(`job ${bad.id} ended ${bad.state}: ${bad.failureMessage}`);
    const end = Math.max(...jobs.map((j) => j.finishedAt!));
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    const result: E2eResult = {
      store: kind,
      run,
      jobs: E2E_JOBS,
      ms: end - t0,
      submitMs,
      peerMs,
      queueWait: jobs.map((j) => j.startedAt! - j.createdAt),
      runTime: jobs.map((j) => j.finishedAt! - j.startedAt!),
      cpu: {
        server: cpu1.server.self - cpu0.server.self,
        executors: sum(cpu1.executors.map((c) => c.self)) - sum(cpu0.executors.map((c) => c.self)),
        steps: sum(cpu1.executors.map((c) => c.children)) - sum(cpu0.executors.map((c) => c.children)),
        postgres: pgUsed,
        client: (client1.user + client1.system) / 1e6,
        machine: cpu1.machine.busy - cpu0.machine.busy,
        machineCapacity: cpu1.machine.total - cpu0.machine.total,
      },
    };
    if (activity && env.DOCKHAND_DATABASE_URL) {
      // Backends flush their statistics when they exit: stop the server (and executors) first.
      for (const p of [...procs].reverse()) await p.stop();
      const c = await pgCounters(env.DOCKHAND_DATABASE_URL);
      const total = E2E_WARMUP + E2E_JOBS;
      result.pgActivity = {
        ...activity,
        perJob: { commits: c.commits / total, jobUpdates: c.jobUpdates / total },
        deadlocks: c.deadlocks,
        deadlockTimeout: c.deadlockTimeout,
        cycles: pgServer?.owned ? deadlockCycles(logFrom) : undefined,
      };
    }
    console.error(
      `[${kind} ${run}] Dockhand: ${E2E_JOBS} jobs in ${(result.ms / 1000).toFixed(2)} s (${(E2E_JOBS / (result.ms / 1000)).toFixed(0)} jobs/s)`,
    );
    for (const p of [...procs].reverse()) await p.stop();
    peerMs.push(await spawnPeer(E2E_JOBS, E2E_SUBMITTERS));
    console.error(`[${kind} ${run}] bare spawns: ${E2E_JOBS} in ${(peerMs[1] / 1000).toFixed(2)} s`);
    return result;
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(workDir, { recursive: true, force: true });
    if (kind === 'postgres') await dropDatabases();
  }
}

// ---- the report ----

const ms3 = (ms: number): string => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const n = (x: number): string => x.toLocaleString('en-US');
const perSec = (count: number, ms: number): number => count / (ms / 1000);

async function describeMachine(): Promise<string> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const tmp = os.tmpdir();
  let fs = 'unknown';
  let best = -1;
  for (const line of mounts.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (mnt && (tmp === mnt || tmp.startsWith(mnt.endsWith('/') ? mnt : `${mnt}/`)) && mnt.length > best) {
      best = mnt.length;
      fs = type;
    }
  }
  return (
    `${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? 'unknown'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, ` +
    `${os.type()} ${os.release()}; Node ${process.version}; databases and workspaces in ${tmp} (${fs})`
  );
}

function depthReport(results: DepthResult[]): string[] {
  const lines: string[] = [];
  lines.push('| store | queued jobs | dequeues | median | p90 | p99 | mean | filled in |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const r of results) {
    for (const d of r.dbs) {
      const s = d.samples;
      const mean = s.reduce((a, b) => a + b, 0) / s.length;
      const filled = [
        `${n(Math.min(d.depth, API_FILL))} by enqueue() ${secs(d.fillMs.api)}`,
        ...(d.depth > API_FILL ? [`${n(d.depth - API_FILL)} by bulk SQL ${secs(d.fillMs.bulk)}`] : []),
        r.store === 'postgres'
          ? `VACUUM (ANALYZE) ${secs(d.fillMs.maintenance)}`
          : `checkpoint ${secs(d.fillMs.maintenance)}`,
      ].join(', ');
      lines.push(
        `| ${STORE_NAME[r.store]} | ${n(d.depth)} | ${n(s.length)} | ${ms3(quantile(s, 0.5))} | ${ms3(quantile(s, 0.9))} | ${ms3(quantile(s, 0.99))} | ${ms3(mean)} | ${filled} |`,
      );
    }
  }
  lines.push('');
  const [lo, hi] = [Math.min(...DEPTHS), Math.max(...DEPTHS)];
  lines.push(
    `| store | median ${n(hi)} ÷ ${n(lo)} | p99 ${n(hi)} ÷ ${n(lo)} | goal ≤ ${GOAL.toFixed(2)}× (medians) | indexes the candidate query uses (${n(hi)}) |`,
  );
  lines.push('|---|---:|---:|---|---|');
  for (const r of results) {
    const a = r.dbs.find((d) => d.depth === lo)!;
    const b = r.dbs.find((d) => d.depth === hi)!;
    const ratio = quantile(b.samples, 0.5) / quantile(a.samples, 0.5);
    lines.push(
      `| ${STORE_NAME[r.store]} | **${fmtRatio(ratio)}** | ${fmtRatio(quantile(b.samples, 0.99) / quantile(a.samples, 0.99))} | ` +
        `${ratio <= GOAL ? 'met' : 'missed'} | ${(b.indexes ?? []).map((i) => `\`${i}\``).join(', ')} |`,
    );
  }
  return lines;
}

function e2eReport(results: E2eResult[]): string[] {
  const lines: string[] = [];
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const stores = STORES.filter((k) => results.some((r) => r.store === k));
  const rates = (k: StoreKind): number[] => results.filter((r) => r.store === k).map((r) => perSec(r.jobs, r.ms));
  const peers = (k: StoreKind): number[] =>
    results.filter((r) => r.store === k).flatMap((r) => r.peerMs.map((ms) => perSec(r.jobs, ms)));
  lines.push(
    '| store | Dockhand jobs/s, each run | **mean jobs/s** | bare `sh -c true` spawns/s, before and after each run | mean spawns/s | ' +
      '**Dockhand ÷ bare spawns** (means) |',
  );
  lines.push('|---|---:|---:|---:|---:|---:|');
  for (const k of stores) {
    lines.push(
      `| ${STORE_NAME[k]} | ${rates(k)
        .map((x) => x.toFixed(0))
        .join(', ')} | **${mean(rates(k)).toFixed(0)}** | ` +
        `${peers(k)
          .map((x) => x.toFixed(0))
          .join(', ')} | ${mean(peers(k)).toFixed(0)} | **${(mean(rates(k)) / mean(peers(k))).toFixed(3)}** |`,
    );
  }
  if (stores.includes('sqlite') && stores.includes('postgres')) {
    lines.push(
      '',
      `PostgreSQL ÷ SQLite, mean jobs/s: **${fmtRatio(mean(rates('postgres')) / mean(rates('sqlite')))}**.`,
    );
  }
  lines.push('');
  lines.push(
    '| run | store | first submit → last `finishedAt` | jobs/s | submitting took | run time (`startedAt` → `finishedAt`) median / p99 | ' +
      'CPU ms per job: server | executors | their step processes | PostgreSQL | benchmark client | rest of the machine | machine busy |',
  );
  lines.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    const c = r.cpu;
    const per = (sec: number): string => ((1000 * sec) / r.jobs).toFixed(1);
    const rest = c.machine - c.server - c.executors - c.steps - (c.postgres ?? 0) - c.client;
    lines.push(
      `| ${r.run} | ${STORE_NAME[r.store]} | ${secs(r.ms)} | ${perSec(r.jobs, r.ms).toFixed(0)} | ${secs(r.submitMs)} | ` +
        `${Math.round(quantile(r.runTime, 0.5))} / ${Math.round(quantile(r.runTime, 0.99))} ms | ${per(c.server)} | ${per(c.executors)} | ` +
        `${per(c.steps)} | ${c.postgres === undefined ? '–' : per(c.postgres)} | ${per(c.client)} | ${per(rest)} | ` +
        `${Math.round((100 * c.machine) / c.machineCapacity)}% |`,
    );
  }
  const pgRuns = results.filter((r) => r.pgActivity);
  if (pgRuns.length) {
    const waits: Record<string, number> = {};
    let samples = 0;
    for (const r of pgRuns) {
      samples += r.pgActivity!.samples;
      for (const [what, count] of Object.entries(r.pgActivity!.waits)) waits[what] = (waits[what] ?? 0) + count;
    }
    const total = Object.values(waits).reduce((x, y) => x + y, 0);
    const avg = (f: (a: PgActivity) => number): string =>
      (pgRuns.reduce((x, r) => x + f(r.pgActivity!), 0) / pgRuns.length).toFixed(1);
    lines.push('');
    lines.push(
      `PostgreSQL, per job (whole runs, warm-up included; mean of ${pgRuns.length}): ${avg((a) => a.perJob.commits)} transactions ` +
        `committed (the benchmark's submit and polls included) and ${avg((a) => a.perJob.jobUpdates)} updates of \`jobs\` rows; ` +
        `deadlocks detected in the run's database: ${pgRuns.map((r) => r.pgActivity!.deadlocks).join(', ')} ` +
        `(\`deadlock_timeout\` = ${pgRuns[0].pgActivity!.deadlockTimeout}). ` +
        `What its backends were doing while inside a transaction, sampled every 50 ms during the timed windows (${n(samples)} ` +
        `samples, ${(total / samples).toFixed(1)} such backends at a time on average):`,
    );
    lines.push('', '| backend state | share of samples |', '|---|---:|');
    let small = 0;
    for (const [what, count] of Object.entries(waits).sort((x, y) => y[1] - x[1])) {
      if (count / total < 0.01) small += count;
      else lines.push(`| ${what} | ${Math.round((100 * count) / total)}% |`);
    }
    if (small) lines.push(`| anything else (under 1% each) | ${Math.round((100 * small) / total)}% |`);
  }
  return lines;
}

function planFigures(plan: string | undefined): { planning: number; execution: number; buffers: number } | undefined {
  if (!plan) return undefined;
  const num = (re: RegExp): number => Number(re.exec(plan)?.[1]);
  const r = {
    planning: num(/Planning Time: ([\d.]+) ms/),
    execution: num(/Execution Time: ([\d.]+) ms/),
    buffers: num(/Buffers: shared hit=(\d+)/),
  };
  return Number.isFinite(r.execution) ? r : undefined;
}

/** Where a dequeue's time goes, from what this run measured. */
function depthNotes(results: DepthResult[]): string[] {
  const notes: string[] = [];
  for (const r of results) {
    if (r.store === 'sqlite') {
      const parts = r.dbs.map((d) => {
        const cp = new Set(d.checkpointed);
        const withCp = d.samples.filter((_, i) => cp.has(i));
        const rest = d.samples.filter((_, i) => !cp.has(i));
        return (
          `at ${n(d.depth)}, ${withCp.length} of the ${n(d.samples.length)} dequeues ran a checkpoint (median ` +
          `${withCp.length ? ms3(quantile(withCp, 0.5)) : '–'}), and the p99 of the others is ${ms3(quantile(rest, 0.99))}`
        );
      });
      notes.push(
        '**SQLite**: a dequeue is the candidate query, the claim, the turn and the attempt in one in-process transaction; the ' +
          "candidate query walks `jobs_dequeue_namespace` (a skip scan with one probe per namespace, then each namespace's head), " +
          "so depth adds only B-tree levels to each probe. The tail is not depth either: it is SQLite's WAL autocheckpoint " +
          '(every 1,000 pages), which runs inside the commit of whichever write crosses the mark and copies the log back into ' +
          `the database — ${parts.join('; ')}.`,
      );
    } else {
      const figs = r.dbs.map((d) => ({ d, f: planFigures(d.plan) })).filter((x) => x.f);
      const parts = figs.map(
        ({ d, f }) =>
          `at ${n(d.depth)}, ${f!.buffers} buffers, planned in ${f!.planning.toFixed(2)} ms and run in ${f!.execution.toFixed(2)} ms`,
      );
      notes.push(
        '**PostgreSQL**: the candidate query uses only the partial index `jobs_dequeue_namespace` at both depths (one index probe ' +
          "per namespace, then each namespace's head, locked with `SKIP LOCKED`); depth adds a B-tree level to each probe. " +
          `Its \`EXPLAIN (ANALYZE, BUFFERS)\` after the run (median of 5): ${parts.join('; ')}. The rest of a dequeue is the other round trips of ` +
          'its transaction (`BEGIN`, the claim, the turn, the attempt, `COMMIT`), each statement parsed and planned anew, none of ' +
          'which depends on depth.',
      );
    }
  }
  return notes;
}

/** Share of the machine's CPU used during a run by processes other than the run's own. */
function restShare(r: E2eResult): number {
  const c = r.cpu;
  return Math.max(0, c.machine - c.server - c.executors - c.steps - (c.postgres ?? 0) - c.client) / c.machineCapacity;
}

/** What the deadlock cycles in PostgreSQL's log were made of. */
function cycleText(pgRuns: E2eResult[]): string {
  const cycles: Record<string, number> = {};
  for (const r of pgRuns)
    for (const [k, c] of Object.entries(r.pgActivity!.cycles ?? {})) cycles[k] = (cycles[k] ?? 0) + c;
  const entries = Object.entries(cycles).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return '';
  const name = (k: string): string =>
    k === 'heartbeat UPDATE'
      ? 'heartbeat `UPDATE … FROM unnest(…)` statements only'
      : `${k
          .split(' + ')
          .map((x) => `\`${x}\``)
          .join(' and ')} statements`;
  return (
    `PostgreSQL's log (\`${path.relative(ROOT, PG_LOG)}\`) names the statements in each cycle: ` +
    `${entries.map(([k, c]) => `${c} between ${name(k)}`).join('; ')}.`
  );
}

/** What dominates the end-to-end runs, from their CPU accounting. */
function e2eNotes(results: E2eResult[]): string[] {
  const stores = STORES.filter((k) => results.some((r) => r.store === k));
  const cpus = os.cpus().length;
  const pct = (x: number): string => `${Math.round(100 * x)}%`;
  const parts = stores.map((k) => {
    const rs = results.filter((r) => r.store === k);
    const avg = (f: (r: E2eResult) => number): number => rs.reduce((a, r) => a + f(r), 0) / rs.length;
    const perJob = (f: (c: CpuSample) => number): number => avg((r) => (1000 * f(r.cpu)) / r.jobs);
    const own = (c: CpuSample): number => c.server + c.executors + c.steps + (c.postgres ?? 0) + c.client;
    const ours = perJob(own);
    const ceiling = (cpus * 1000) / ours;
    const rate = avg((r) => perSec(r.jobs, r.ms));
    // How busy the run's processes kept the CPU that other processes left them.
    const used = avg((r) => own(r.cpu) / (r.cpu.machineCapacity * (1 - restShare(r))));
    const pgCpu = rs.some((r) => r.cpu.postgres !== undefined)
      ? `, PostgreSQL ${perJob((c) => c.postgres ?? 0).toFixed(1)}`
      : '';
    return (
      `**${STORE_NAME[k]}**: ${ours.toFixed(0)} ms of CPU per job in the run's own processes (executors ` +
      `${perJob((c) => c.executors).toFixed(1)}, server ${perJob((c) => c.server).toFixed(1)}${pgCpu}, step processes ` +
      `${perJob((c) => c.steps).toFixed(1)}, benchmark client ${perJob((c) => c.client).toFixed(1)}): a ceiling of ` +
      `${cpus} CPUs ÷ ${ours.toFixed(0)} ms = ${ceiling.toFixed(0)} jobs/s with the machine to themselves, and ${rate.toFixed(0)} ` +
      `measured (${pct(rate / ceiling)} of it); they kept ${pct(used)} of the CPU left to them busy` +
      (used >= 0.9 ? ': CPU-bound.' : ': CPU-bound only in part; the rest is waiting.')
    );
  });
  const notes = [
    "**What dominates**: the CPU that each job costs the run's own processes, on a machine they share. The step processes " +
      "are a small part of it; most is the executors' and the server's own work per job (HTTP calls for dequeue, heartbeats, " +
      'log and result; the job directory and script; spawning the step)' +
      (stores.includes('postgres') ? ", and on PostgreSQL the database's on top." : '.'),
    ...parts.map((p) => `- ${p}`),
  ];
  const worst = Math.max(...results.map(restShare));
  if (worst > DISTURBED) {
    notes.push(
      `Other processes used up to ${pct(worst)} of the machine's CPU during a run ("rest of the machine") even after ` +
        `${MAX_TRIES} tries: the jobs/s of such runs are lower than this machine can do, and the ratios less certain.`,
    );
  }
  const pgRuns = results.filter((r) => r.pgActivity);
  if (pgRuns.length) {
    const waits: Record<string, number> = {};
    for (const r of pgRuns) for (const [w, c] of Object.entries(r.pgActivity!.waits)) waits[w] = (waits[w] ?? 0) + c;
    const total = Object.values(waits).reduce((a, b) => a + b, 0);
    const share = (f: (w: string) => boolean): number =>
      Object.entries(waits)
        .filter(([w]) => f(w))
        .reduce((a, [, c]) => a + c, 0) / total;
    const deadlocks = pgRuns.map((r) => r.pgActivity!.deadlocks);
    const p99Run = (k: StoreKind): string => {
      const xs = results.filter((r) => r.store === k).flatMap((r) => r.runTime);
      return xs.length ? `${Math.round(quantile(xs, 0.99))} ms` : '–';
    };
    notes.push(
      `On PostgreSQL the waiting is on row locks of \`jobs\`: of the backends inside a transaction at any moment, ` +
        `${pct(share((w) => w.startsWith('waiting for a lock')))} were waiting for a lock (heartbeat updates ` +
        `${pct(share((w) => w.startsWith('waiting for a lock') && w.endsWith('heartbeat UPDATE')))}, \`finish\` ` +
        `${pct(share((w) => w.startsWith('waiting for a lock') && w.includes('finish')))}) and ` +
        `${pct(share((w) => w.startsWith('in a transaction')))} sat idle between two statements of their transaction, waiting ` +
        'for the busy server process to send the next one while holding their locks. ' +
        (Math.max(...deadlocks) > 0
          ? `PostgreSQL also detected ${deadlocks.join(' and ')} deadlocks in the runs' databases; each is resolved only after ` +
            `\`deadlock_timeout\` (${pgRuns[0].pgActivity!.deadlockTimeout}) by failing one statement, whose request the executor then ` +
            `retries later (the p99 run time of a job is ${p99Run('postgres')} on PostgreSQL against ${p99Run('sqlite')} on SQLite). ` +
            cycleText(pgRuns)
          : 'No deadlocks were detected.'),
    );
  }
  return notes;
}

function report(machine: string, depth: DepthResult[], e2e: E2eResult[]): string {
  const lines: string[] = [];
  const maxDepth = Math.max(...DEPTHS);
  lines.push('## Stores: dequeue latency at depth, and no-op jobs end to end', '');
  lines.push(`Machine: ${machine}.`);
  for (const r of depth) lines.push('', `${STORE_NAME[r.store]}: ${r.version}; ${r.settings}.`);
  if (depth.length) {
    lines.push('', `### Dequeue latency with ${DEPTHS.map(n).join(' and ')} queued jobs`, '');
    lines.push(
      `One queue, ${DEPTHS.map(n).join(' or ')} queued jobs: 90% in one namespace (\`${BIG_NAMESPACE}\`), the other 10% spread ` +
        'evenly over 20 more (`user:u01`…`user:u20`), interleaved in time, so every dequeue runs the fair-scheduling skip scan ' +
        `over 21 namespaces. The first ${n(API_FILL)} jobs go in through \`store.jobs.enqueue()\` (the same in every database); the rest ` +
        `of the ${n(maxDepth)} by bulk SQL that writes the same columns (PostgreSQL: \`INSERT … SELECT … generate_series\`; SQLite: a ` +
        'prepared `INSERT` in a transaction), which the benchmark checks column by column against jobs from `enqueue()`. ' +
        'Then PostgreSQL gets `VACUUM (ANALYZE) jobs`, as autovacuum may not have run yet after the bulk insert; SQLite gets a ' +
        'WAL checkpoint and no `ANALYZE` (the store never runs one). Each dequeue is one `store.jobs.dequeue()` call in-process ' +
        '(the candidate query, the claim, the turn and the attempt, in one transaction), timed alone; ' +
        `${n(DEQUEUES)} per depth after ${WARMUP} warm-up ones, both depths alternating in blocks of ${BLOCK}; after each ` +
        `block the jobs it took are put back with \`enqueue()\` (untimed), so the depth stays within ${BLOCK} of its nominal value. ` +
        'Commits do not wait for the disk on either store (SQLite: WAL with `synchronous=NORMAL`; PostgreSQL: the throwaway ' +
        'test cluster, settings above), so the time measured is the work that could grow with depth. Source: ' +
        `\`bench/storeDequeue.ts\`. Goal: the ${n(maxDepth)}-job median within ${GOAL.toFixed(2)}× of the ${n(Math.min(...DEPTHS))}-job median.`,
    );
    lines.push('', ...depthReport(depth));
    const repeated = depth.filter((r) => r.tries > 1).map((r) => `${STORE_NAME[r.store]} ${r.tries - 1}×`);
    lines.push(
      '',
      'Other processes on the machine used ' +
        depth
          .map((r) => `${(100 * r.otherLoad).toFixed(0)}% of its CPU while the ${STORE_NAME[r.store]} dequeues ran`)
          .join(' and ') +
        (depth.some((r) => r.otherLoad > DISTURBED) ? ': enough to disturb these numbers' : '') +
        ` (the dequeues are measured again, up to ${MAX_TRIES} times in all, while that is over ${Math.round(100 * DISTURBED)}%; ` +
        `${repeated.length ? `repeated here: ${repeated.join(', ')}` : 'none was repeated here'}).`,
    );
    for (const note of depthNotes(depth)) lines.push('', `- ${note}`);
  }
  if (e2e.length) {
    lines.push('', '### No-op jobs per second, end to end', '');
    lines.push(
      `A real \`dockhand server\` on each store, ${E2E_EXECUTORS} real \`dockhand executor\` processes on the shell runtime with ` +
        `\`EXECUTOR_MAXIMUM_NUM_JOBS=${E2E_SLOTS}\` each (${E2E_EXECUTORS * E2E_SLOTS} slots; other settings at their defaults, so logs ` +
        `are flushed every 200 ms), all on this machine. ${n(E2E_JOBS)} jobs with one step \`true\`, submitted through the API by ` +
        `${E2E_SUBMITTERS} concurrent clients after ${E2E_WARMUP} warm-up jobs; timed from the first submit to the last job's ` +
        `\`finishedAt\` as the server recorded it. ${E2E_RUNS} runs per store, the stores alternating. The peer, measured just ` +
        `before and just after each run: the same number of \`/bin/sh -c true\` processes spawned by ${E2E_SUBMITTERS} concurrent ` +
        "workers in a fresh Node process, i.e. what the steps' processes cost alone (a shell-runtime step is `/bin/sh -e script`). CPU is " +
        "read from `/proc` for each process over the timed window (step processes as their executor's reaped children; " +
        'PostgreSQL as all of the cluster\'s processes, exited ones included); "rest of the machine" is everything else that ran ' +
        'meanwhile.',
    );
    lines.push('', ...e2eReport(e2e));
    const repeats = e2e.reduce((a, r) => a + (r.tries ?? 1) - 1, 0);
    lines.push(
      '',
      `A run during which other processes used more than ${Math.round(100 * DISTURBED)}% of the machine's CPU is taken again, up to ` +
        `${MAX_TRIES} times in all; ${repeats ? `${repeats} run${repeats > 1 ? 's were' : ' was'} repeated here` : 'none was repeated here'}.`,
    );
    for (const note of e2eNotes(e2e)) lines.push('', note);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const machine = await describeMachine();
  const before = machineTimes();
  await sleep(2_000);
  const after = machineTimes();
  const idleLoad = (after.busy - before.busy) / (after.total - before.total);
  if (idleLoad > 0.1)
    console.error(
      `warning: the machine is ${Math.round(100 * idleLoad)}% busy before the benchmark starts; results will be disturbed`,
    );
  const depth: DepthResult[] = [];
  const e2e: E2eResult[] = [];
  try {
    if (PARTS.includes('depth')) for (const kind of STORES) depth.push(await benchDepth(kind));
    if (PARTS.includes('e2e')) {
      for (let run = 1; run <= E2E_RUNS; run++) {
        for (const kind of run % 2 ? STORES : [...STORES].reverse()) {
          for (let tries = 1; ; tries++) {
            const r = await benchE2e(kind, run);
            r.tries = tries;
            const rest = restShare(r);
            if (rest <= DISTURBED || tries >= MAX_TRIES) {
              e2e.push(r);
              break;
            }
            console.error(
              `[${kind} ${run}] other processes used ${Math.round(100 * rest)}% of the CPU meanwhile: running again`,
            );
          }
        }
      }
    }
  } finally {
    await dropDatabases();
    await pgServer?.handle.stop().catch((err: Error) => console.error(`stopping PostgreSQL: ${err.message}`));
  }
  if (process.env.BENCH_RAW) await writeFile(process.env.BENCH_RAW, JSON.stringify({ machine, depth, e2e }, null, 1));
  for (const r of depth)
    for (const d of r.dbs)
      if (d.plan) console.error(`\n${STORE_NAME[r.store]} ${n(d.depth)}: candidate query plan\n${d.plan}`);
  const body = report(machine, depth, e2e);
  console.log(`\n${body}\n`);
  if (WRITE) {
    await writeSection(SECTION, body);
    console.error('wrote BENCHMARKS.md');
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
