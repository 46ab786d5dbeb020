// The peers Dockhand's throughput is compared with, measured on this machine: graphile-worker (PostgreSQL) and
// BullMQ (Redis), each with its own worker processes (bench/peerWorker.ts, child processes, so they share the
// machine's CPUs as Dockhand's executors would) running no-op jobs.
//
//   run…Throughput({ jobs })  Workers started and idle; then `jobs` jobs are enqueued in bulk (graphile-worker:
//                             its add_jobs() SQL function, BULK jobs per statement; BullMQ: Queue.addBulk, BULK
//                             per call) and the clock runs from the first enqueue until every job has run and the
//                             queue is empty again (graphile-worker: no row left in its jobs table; BullMQ: no
//                             job waiting, active, delayed or prioritized). Jobs per second = jobs / that time.
//   run…Latency({ jobs })     Workers started and idle; jobs are submitted one at a time (graphile-worker:
//                             WorkerUtils.addJob; BullMQ: Queue.add), each after the previous one's handler ran and
//                             a pause of 5–15 ms; a sample is the time from just before the add call to the
//                             moment the handler's IPC message arrives, on the parent's monotonic clock.
//
// Configurations are in GRAPHILE_CONFIG and BULLMQ_CONFIG (environment PEERS_WORKERS, GRAPHILE_CONCURRENCY,
// GRAPHILE_POLL_MS, BULLMQ_CONCURRENCY override them).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Queue } from 'bullmq';
import { makeWorkerUtils, runMigrations, Logger } from 'graphile-worker';
import { Redis } from 'ioredis';
import pg from 'pg';
import { freePort } from '../test/support/ports.js';
import { ROOT, sleep, tempDir } from './lib.js';
import type { FromWorker, PeerName, ToWorker, WorkerMode } from './peerWorker.js';

const WORKER_JS = path.join(ROOT, 'dist-bench/bench/peerWorker.js');
/** Jobs per bulk enqueue call. */
export const BULK = 1_000;
const BULL_QUEUE = 'bench-peers';
const quiet = new Logger(() => (level, message) => {
  if (level === 'error') console.error(`graphile-worker: ${message}`);
});

const intEnv = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};

export interface GraphileConfig {
  workers: number;
  concurrency: number;
  maxPoolSize: number;
  pollInterval: number;
}
export interface BullmqConfig {
  workers: number;
  concurrency: number;
}

export const GRAPHILE_CONFIG: GraphileConfig = (() => {
  const concurrency = intEnv('GRAPHILE_CONCURRENCY', 10);
  return {
    workers: intEnv('PEERS_WORKERS', 2),
    concurrency,
    // One connection per concurrent job plus the LISTEN connection and room for completions.
    maxPoolSize: concurrency + 2,
    // LISTEN/NOTIFY wakes workers at once; the poll is only a fallback (and runs while jobs remain anyway).
    pollInterval: intEnv('GRAPHILE_POLL_MS', 2_000),
  };
})();

export const BULLMQ_CONFIG: BullmqConfig = {
  workers: intEnv('PEERS_WORKERS', 2),
  concurrency: intEnv('BULLMQ_CONCURRENCY', 50),
};

export function describeGraphile(c: GraphileConfig = GRAPHILE_CONFIG): string {
  return (
    `${c.workers} worker processes × concurrency ${c.concurrency} (maxPoolSize ${c.maxPoolSize}), LISTEN/NOTIFY on ` +
    `(always, in 0.16), pollInterval ${c.pollInterval} ms, jobs enqueued with graphile_worker.add_jobs() ${BULK} per statement ` +
    '(throughput) or WorkerUtils.addJob (latency), task list given in code, logging errors only'
  );
}

export function describeBullmq(c: BullmqConfig = BULLMQ_CONFIG): string {
  return (
    `${c.workers} worker processes × concurrency ${c.concurrency}, jobs enqueued with Queue.addBulk ${BULK} per call ` +
    '(throughput) or Queue.add (latency), removeOnComplete and removeOnFail, ioredis with maxRetriesPerRequest null'
  );
}

// ---- Redis ----

export interface RedisHandle {
  port: number;
  version: string;
  stop(): Promise<void>;
}

/** A throwaway `redis-server` (Debian's) on a free 127.0.0.1 port in a temp dir, without persistence. */
export async function startRedis(): Promise<RedisHandle> {
  const dir = await tempDir('redis');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-16_000)));
    child.stderr.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-16_000)));
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    let failed: Error | undefined;
    child.once('error', (err) => (failed = err));
    const deadline = Date.now() + 15_000;
    while (!/Ready to accept connections/.test(output)) {
      if (failed)
        throw new Error(`redis-server could not be started (${failed.message}): apt-get install -y redis-server`);
      if (child.exitCode !== null) break;
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`redis-server did not get ready:\n${output}`);
      }
      await sleep(20);
    }
    if (child.exitCode !== null) {
      if (attempt < 3 && /in use/i.test(output)) continue;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`redis-server exited (${child.exitCode}):\n${output}`);
    }
    const version = /Redis version=([\d.]+)/.exec(output)?.[1] ?? /v=([\d.]+)/.exec(output)?.[1] ?? '?';
    const onExit = (): void => void child.kill('SIGKILL');
    process.on('exit', onExit);
    return {
      port,
      version,
      async stop() {
        process.off('exit', onExit);
        if (child.exitCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

// ---- worker processes ----

class WorkerProc {
  readonly child: ChildProcess;
  count = 0;
  private output = '';
  private readonly exited: Promise<void>;
  readonly ready: Promise<void>;
  onHit?: () => void;

  constructor(peer: PeerName, mode: WorkerMode, env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [WORKER_JS, peer, mode], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const keep = (d: Buffer): void => {
      this.output = (this.output + d.toString()).slice(-16_000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    this.ready = new Promise((resolve, reject) => {
      this.child.on('message', (m: FromWorker) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'ran') this.count = m.count;
        else if (m.type === 'hit') this.onHit?.();
      });
      void this.exited.then(() => reject(new Error(`${peer} worker exited before it was ready:\n${this.output}`)));
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(): string {
    return this.output.slice(-4000);
  }

  send(m: ToWorker): void {
    if (this.running && this.child.connected) this.child.send(m);
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.send({ type: 'stop' });
    const term = setTimeout(() => this.child.kill('SIGTERM'), 15_000);
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 25_000);
    await this.exited;
    clearTimeout(term);
    clearTimeout(kill);
  }
}

class WorkerPool {
  constructor(readonly procs: WorkerProc[]) {}

  static async start(peer: PeerName, mode: WorkerMode, n: number, env: NodeJS.ProcessEnv): Promise<WorkerPool> {
    const pool = new WorkerPool(Array.from({ length: n }, () => new WorkerProc(peer, mode, env)));
    try {
      await Promise.all(pool.procs.map((p) => p.ready));
    } catch (err) {
      await pool.stop();
      throw err;
    }
    return pool;
  }

  get count(): number {
    return this.procs.reduce((a, p) => a + p.count, 0);
  }

  set onHit(fn: () => void) {
    for (const p of this.procs) p.onHit = fn;
  }

  /** Waits until the workers together have run `n` jobs. */
  async waitForCount(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.count < n) {
      const dead = this.procs.find((p) => !p.running);
      if (dead) throw new Error(`a worker exited:\n${dead.tail()}`);
      if (Date.now() > deadline)
        throw new Error(`workers ran ${this.count} of ${n} jobs in ${timeoutMs} ms:\n${this.procs[0].tail()}`);
      await sleep(2);
    }
  }

  stop(): Promise<void[]> {
    return Promise.all(this.procs.map((p) => p.stop()));
  }
}

const hr = (): number => Number(process.hrtime.bigint()) / 1e6;

export interface ThroughputResult {
  jobs: number;
  /** First enqueue → every job run and the queue empty. */
  ms: number;
  jobsPerSec: number;
  /** First enqueue → last enqueue call returned. */
  enqueueMs: number;
}

function chunks(n: number, size: number): number[] {
  const out: number[] = [];
  for (let left = n; left > 0; left -= size) out.push(Math.min(size, left));
  return out;
}

/** Waits until `empty()` says yes, polling every 5 ms; throws after `timeoutMs`. */
async function waitEmpty(empty: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await empty())) {
    if (Date.now() > deadline) throw new Error('the queue did not empty');
    await sleep(5);
  }
}

// ---- graphile-worker ----

export interface GraphileOptions {
  /** A database graphile-worker may install its schema in (and whose jobs the benchmark deletes). */
  connectionString: string;
  jobs: number;
  config?: GraphileConfig;
  timeoutMs?: number;
}

function graphileEnv(url: string, c: GraphileConfig): NodeJS.ProcessEnv {
  return {
    PEER_PG_URL: url,
    PEER_CONCURRENCY: String(c.concurrency),
    PEER_POOL: String(c.maxPoolSize),
    PEER_POLL_MS: String(c.pollInterval),
  };
}

async function graphileReset(client: pg.Client): Promise<void> {
  await client.query('delete from graphile_worker._private_jobs');
}

/** Installs graphile-worker's schema (once, before any worker starts, so they do not race to). */
export async function prepareGraphile(connectionString: string): Promise<void> {
  await runMigrations({ connectionString, logger: quiet });
}

/**
 * Gives the planner statistics of a busy jobs table: `jobs` jobs added with no worker running, ANALYZE, then
 * deleted; runGraphileThroughput does it before each run. Otherwise a run that starts on statistics of an empty
 * table (a fresh database, or autovacuum's ANALYZE after the previous run emptied the table) plans get_job for an
 * empty table and runs about 4× slower until autovacuum analyzes it again mid-run.
 */
export async function primeGraphile(connectionString: string, jobs: number): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await graphileReset(client);
    for (const n of chunks(jobs, BULK)) await graphileAddJobs(client, n);
    await client.query('analyze graphile_worker._private_jobs');
    await graphileReset(client);
  } finally {
    await client.end().catch(() => {});
  }
}

const graphileAddJobs = (client: pg.Client, n: number): Promise<unknown> =>
  client.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row('noop', json_build_object('i', i), null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $1::int) i))`,
    [n],
  );

export async function runGraphileThroughput(o: GraphileOptions): Promise<ThroughputResult> {
  const c = o.config ?? GRAPHILE_CONFIG;
  await prepareGraphile(o.connectionString);
  const client = new pg.Client({ connectionString: o.connectionString });
  await client.connect();
  let pool: WorkerPool | undefined;
  try {
    await primeGraphile(o.connectionString, o.jobs);
    pool = await WorkerPool.start('graphile', 'throughput', c.workers, graphileEnv(o.connectionString, c));
    const empty = async (): Promise<boolean> =>
      (await client.query<{ n: number }>('select count(*)::int as n from graphile_worker._private_jobs')).rows[0].n ===
      0;
    // Warm-up: connections, prepared statements, JIT.
    const warm = Math.min(500, o.jobs);
    await graphileAddJobs(client, warm);
    await pool.waitForCount(warm, 60_000);
    await waitEmpty(empty, 60_000);
    await sleep(200);

    const base = pool.count;
    const t0 = hr();
    for (const n of chunks(o.jobs, BULK)) await graphileAddJobs(client, n);
    const enqueueMs = hr() - t0;
    await pool.waitForCount(base + o.jobs, o.timeoutMs ?? 600_000);
    await waitEmpty(empty, 60_000);
    const ms = hr() - t0;
    return { jobs: o.jobs, ms, jobsPerSec: (o.jobs / ms) * 1000, enqueueMs };
  } finally {
    await pool?.stop();
    await client.end().catch(() => {});
  }
}

/** Enqueue → handler latencies in ms, one job at a time. */
async function latencyLoop(
  pool: WorkerPool,
  jobs: number,
  warmup: number,
  add: () => Promise<unknown>,
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < warmup + jobs; i++) {
    let hit!: () => void;
    const ran = new Promise<void>((resolve) => (hit = resolve));
    let t1 = 0;
    pool.onHit = () => {
      t1 = hr();
      hit();
    };
    const t0 = hr();
    await add();
    const timeout = setTimeout(() => hit(), 30_000);
    await ran;
    clearTimeout(timeout);
    if (t1 === 0) throw new Error(`job ${i} did not run within 30 s:\n${pool.procs[0].tail()}`);
    if (i >= warmup) samples.push(t1 - t0);
    await sleep(5 + Math.random() * 10);
  }
  return samples;
}

export async function runGraphileLatency(o: GraphileOptions): Promise<number[]> {
  const c = o.config ?? GRAPHILE_CONFIG;
  await prepareGraphile(o.connectionString);
  const client = new pg.Client({ connectionString: o.connectionString });
  await client.connect();
  let pool: WorkerPool | undefined;
  const utils = await makeWorkerUtils({ connectionString: o.connectionString, logger: quiet });
  try {
    await graphileReset(client);
    pool = await WorkerPool.start('graphile', 'latency', c.workers, graphileEnv(o.connectionString, c));
    let i = 0;
    return await latencyLoop(pool, o.jobs, Math.min(20, o.jobs), () => utils.addJob('noop', { i: i++ }));
  } finally {
    await pool?.stop();
    await utils.release();
    await client.end().catch(() => {});
  }
}

// ---- BullMQ ----

export interface BullmqOptions {
  /** Port of a Redis on 127.0.0.1 that the benchmark may flush. */
  redisPort: number;
  jobs: number;
  config?: BullmqConfig;
  timeoutMs?: number;
}

const bullEnv = (port: number, c: BullmqConfig): NodeJS.ProcessEnv => ({
  PEER_REDIS_PORT: String(port),
  PEER_QUEUE: BULL_QUEUE,
  PEER_CONCURRENCY: String(c.concurrency),
});

const BULL_JOB_OPTS = { removeOnComplete: true, removeOnFail: true } as const;

async function withBull<T>(
  o: BullmqOptions,
  mode: WorkerMode,
  fn: (queue: Queue, pool: WorkerPool) => Promise<T>,
): Promise<T> {
  const c = o.config ?? BULLMQ_CONFIG;
  const admin = new Redis({ host: '127.0.0.1', port: o.redisPort, maxRetriesPerRequest: null });
  await admin.flushall();
  const queue = new Queue(BULL_QUEUE, {
    connection: { host: '127.0.0.1', port: o.redisPort, maxRetriesPerRequest: null },
  });
  await queue.waitUntilReady();
  let pool: WorkerPool | undefined;
  try {
    pool = await WorkerPool.start('bullmq', mode, c.workers, bullEnv(o.redisPort, c));
    return await fn(queue, pool);
  } finally {
    await pool?.stop();
    await queue.close();
    admin.disconnect();
  }
}

const bullAddBulk = (queue: Queue, from: number, n: number): Promise<unknown> =>
  queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { i: from + k }, opts: BULL_JOB_OPTS })));

export async function runBullmqThroughput(o: BullmqOptions): Promise<ThroughputResult> {
  return withBull(o, 'throughput', async (queue, pool) => {
    const empty = async (): Promise<boolean> => {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
      return Object.values(counts).every((n) => n === 0);
    };
    const warm = Math.min(500, o.jobs);
    await bullAddBulk(queue, 0, warm);
    await pool.waitForCount(warm, 60_000);
    await waitEmpty(empty, 60_000);
    await sleep(200);

    const base = pool.count;
    const t0 = hr();
    let from = 0;
    for (const n of chunks(o.jobs, BULK)) {
      await bullAddBulk(queue, from, n);
      from += n;
    }
    const enqueueMs = hr() - t0;
    await pool.waitForCount(base + o.jobs, o.timeoutMs ?? 600_000);
    await waitEmpty(empty, 60_000);
    const ms = hr() - t0;
    return { jobs: o.jobs, ms, jobsPerSec: (o.jobs / ms) * 1000, enqueueMs };
  });
}

export async function runBullmqLatency(o: BullmqOptions): Promise<number[]> {
  return withBull(o, 'latency', async (queue, pool) => {
    let i = 0;
    return latencyLoop(pool, o.jobs, Math.min(20, o.jobs), () => queue.add('noop', { i: i++ }, BULL_JOB_OPTS));
  });
}

// ---- versions ----

const require = createRequire(import.meta.url);

/** The installed version of a package, from its package.json. */
export function packageVersion(name: string): string {
  try {
    const main = require.resolve(name);
    let dir = path.dirname(main);
    for (;;) {
      try {
        const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
          name?: string;
          version?: string;
        };
        if (pkg.name === name && pkg.version) return pkg.version;
      } catch {
        // keep looking up
      }
      const up = path.dirname(dir);
      if (up === dir) return '?';
      dir = up;
    }
  } catch {
    return '?';
  }
}
