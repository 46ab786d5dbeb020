// Throughput: no-op jobs through the whole executor protocol (HTTP, one real `dockhand server`, EXECUTORS real
// `dockhand executor` processes on the shell runtime), on SQLite and on PostgreSQL, against graphile-worker
// (PostgreSQL) and BullMQ (Redis) running the same number of no-op jobs with their own workers, in the same run.
// "No-op" for Dockhand: a job with zero steps (the protocol alone), and a job with one step `true`.
//
// Usage: node dist-bench/bench/throughput.js [--tiny] [--jobs N] [--runs N] [--no-write]
// Environment: THROUGHPUT_JOBS (default 20000), THROUGHPUT_RUNS (default 3), THROUGHPUT_ONLY (comma-separated
// subjects: sqlite-none, sqlite-true, postgres-none, postgres-true, spawn, graphile, bullmq, and with
// THROUGHPUT_BEFORE=<an earlier build's dist/cli/main.js> before-sqlite-none, before-postgres-none),
// THROUGHPUT_BEFORE_LABEL, THROUGHPUT_SECTION (default throughput), BENCH_WRITE=0, BENCH_QUIET_WAIT_S,
// BENCH_MAX_TRIES. --tiny: 100 jobs, no warm-up, one run, BENCHMARKS.md untouched (what CI runs).
import Database from 'better-sqlite3';
import path from 'node:path';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { PostgresHandle } from '../test/support/postgres.js';
import { ensurePostgres, ensureRedis, freshDatabase, postgresVersion } from './services.js';
import {
  ROOT,
  api,
  quantile,
  sleep,
  startExecutor,
  startServer,
  tempDir,
  writeSection,
  type Proc,
  flag,
  opt,
  num,
} from './lib.js';
import { describeMachine, undisturbed } from './machine.js';
import {
  BULLMQ_CONFIG,
  GRAPHILE_CONFIG,
  describeBullmq,
  describeGraphile,
  packageVersion,
  prepareGraphile,
  runBullmqThroughput,
  runGraphileThroughput,
  BULK,
  type RedisHandle,
  type ThroughputResult,
} from './peers.js';

/** BENCHMARKS.md section (THROUGHPUT_SECTION): a before/after run goes in a section of its own. */
const SECTION = process.env.THROUGHPUT_SECTION ?? 'throughput';
const DOCKHAND_VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;
const TINY = flag('--tiny');
const JOBS = num(opt('--jobs') ?? process.env.THROUGHPUT_JOBS, TINY ? 100 : 20_000);
const RUNS = num(opt('--runs') ?? process.env.THROUGHPUT_RUNS, TINY ? 1 : 3);
const WRITE = !TINY && !flag('--no-write') && process.env.BENCH_WRITE !== '0';
const DISTURBED = 0.1;
const MAX_TRIES = num(process.env.BENCH_MAX_TRIES, TINY ? 1 : 3);
const QUIET_WAIT_MS = 1000 * num(process.env.BENCH_QUIET_WAIT_S, TINY ? 0 : 300);

/** Executor processes and job slots in each (EXECUTOR_MAXIMUM_NUM_JOBS). */
const EXECUTORS = 4;
const SLOTS = 64;
// CI's tiny run proves the benchmark runs, nothing more: no warm-up.
const WARM_UP = TINY ? 0 : Math.min(500, JOBS);
/** Submit calls in flight for a build without the bulk route. */
const SUBMITTERS = 32;
const QUEUE = 'bench-throughput';

/**
 * An earlier build to measure in the same run (THROUGHPUT_BEFORE=path/to/its/dist/cli/main.js, with
 * THROUGHPUT_BEFORE_LABEL naming it): its zero-step runs are reported next to this build's, as a before/after ratio.
 */
const BEFORE_CLI = process.env.THROUGHPUT_BEFORE;
const BEFORE_LABEL = process.env.THROUGHPUT_BEFORE_LABEL ?? 'an earlier build';

type Subject =
  | 'sqlite-none'
  | 'sqlite-true'
  | 'postgres-none'
  | 'postgres-true'
  | 'before-sqlite-none'
  | 'before-sqlite-true'
  | 'before-postgres-none'
  | 'before-postgres-true'
  | 'spawn'
  | 'graphile'
  | 'bullmq';
const ALL: Subject[] = [
  'sqlite-none',
  'sqlite-true',
  'postgres-none',
  'postgres-true',
  ...(BEFORE_CLI
    ? (['before-sqlite-none', 'before-sqlite-true', 'before-postgres-none', 'before-postgres-true'] as const)
    : []),
  'spawn',
  'graphile',
  'bullmq',
];
const ONLY = process.env.THROUGHPUT_ONLY?.split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const SUBJECTS = ALL.filter((s) => !ONLY || ONLY.includes(s));
const PEERS: Subject[] = ['graphile', 'bullmq'];
const LABEL: Record<Subject, string> = {
  'sqlite-none': 'Dockhand, SQLite, zero steps',
  'sqlite-true': 'Dockhand, SQLite, one step `true`',
  'postgres-none': 'Dockhand, PostgreSQL, zero steps',
  'postgres-true': 'Dockhand, PostgreSQL, one step `true`',
  'before-sqlite-none': `before (${BEFORE_LABEL}), SQLite, zero steps`,
  'before-sqlite-true': `before (${BEFORE_LABEL}), SQLite, one step \`true\``,
  'before-postgres-none': `before (${BEFORE_LABEL}), PostgreSQL, zero steps`,
  'before-postgres-true': `before (${BEFORE_LABEL}), PostgreSQL, one step \`true\``,
  spawn: `limit for one-step jobs: ${EXECUTORS} Node processes spawning \`/bin/sh -c true\``,
  graphile: 'graphile-worker (PostgreSQL)',
  bullmq: 'BullMQ (Redis)',
};

interface Run extends ThroughputResult {
  others: number;
  tries: number;
}

const n = (x: number): string => Math.round(x).toLocaleString('en-US');
const pct = (x: number): string => `${Math.round(100 * x)}%`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

interface QueueRow {
  queue: string;
  queued: number;
  processing: number;
  completedLastHour: number;
  failedLastHour: number;
}

async function waitCompleted(url: string, total: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { queues } = await api<{ queues: QueueRow[] }>(url, 'GET', '/queues');
    const row = queues.find((r) => r.queue === QUEUE);
    if (row && row.failedLastHour > 0) throw new Error(`${row.failedLastHour} jobs failed`);
    if (row && row.completedLastHour >= total) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(row)} of ${total} jobs`);
    await sleep(20);
  }
}

/** The moment the last job finished, as the server recorded it (ms since the epoch, the clock the benchmark uses). */
async function lastFinishedAt(dataDir: string, dbUrl: string | undefined): Promise<number> {
  const sql = 'SELECT max(finished_at) AS at FROM jobs';
  if (!dbUrl) {
    const db = new Database(path.join(dataDir, 'dockhand.db'), { readonly: true });
    try {
      return Number((db.prepare(sql).get() as { at: number }).at);
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    return Number((await client.query<{ at: string }>(sql)).rows[0].at);
  } finally {
    await client.end();
  }
}

let databases = 0;

/**
 * The physical limit of one-step shell jobs on this machine: EXECUTORS Node processes (as many as the executors)
 * each spawning `/bin/sh -c true` with its output piped, SLOTS at a time, JOBS in all, as fast as they can.
 */
async function runSpawnLimit(): Promise<ThroughputResult> {
  const each = Math.ceil(JOBS / EXECUTORS);
  const program = `
    const { spawn } = require('node:child_process');
    let next = 0, done = 0;
    const one = () => { if (next++ >= ${each}) return;
      const c = spawn('/bin/sh', ['-c', 'true'], { stdio: ['ignore', 'pipe', 'pipe'] });
      c.stdout.resume(); c.stderr.resume();
      c.on('close', () => { if (++done === ${each}) process.exit(0); one(); }); };
    for (let i = 0; i < ${SLOTS}; i++) one();`;
  const t0 = Date.now();
  await Promise.all(
    Array.from(
      { length: EXECUTORS },
      () =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(process.execPath, ['-e', program], { stdio: 'ignore' });
          child.once('error', reject);
          child.once('exit', (code) =>
            code === 0 ? resolve() : reject(new Error(`spawning process exited with ${code}`)),
          );
        }),
    ),
  );
  const ms = Date.now() - t0;
  return { jobs: each * EXECUTORS, ms, jobsPerSec: (each * EXECUTORS) / (ms / 1000), enqueueMs: 0 };
}

/** One Dockhand run: fresh server and store, EXECUTORS idle executors, warm-up, then JOBS jobs timed. */
async function runDockhand(subject: Subject, adminUrl: string | undefined): Promise<ThroughputResult> {
  const before = subject.startsWith('before-');
  const cli = before ? BEFORE_CLI : undefined;
  const postgres = subject.includes('postgres');
  const steps = subject.endsWith('-true') ? [{ run: 'true' }] : [];
  const dataDir = await tempDir('throughput');
  const workDir = await tempDir('throughput-work');
  const database = postgres
    ? await freshDatabase(adminUrl!, `bench_throughput_${process.pid}_${++databases}`)
    : undefined;
  const dbUrl = database?.url;
  let server: Proc | undefined;
  const executors: Proc[] = [];
  try {
    const started = await startServer(dataDir, dbUrl ? { DOCKHAND_DATABASE_URL: dbUrl } : {}, cli);
    server = started.proc;
    const url = started.url;
    for (let i = 0; i < EXECUTORS; i++) {
      executors.push(
        await startExecutor(
          url,
          {
            EXECUTOR_NAME: `bench-throughput-${i + 1}`,
            EXECUTOR_QUEUE_NAME: QUEUE,
            EXECUTOR_RUNTIME: 'shell',
            EXECUTOR_WORKSPACE_ROOT: workDir,
            EXECUTOR_MAXIMUM_NUM_JOBS: String(SLOTS),
          },
          cli,
        ),
      );
    }
    /**
     * `count` jobs in `POST /jobs/batch` requests of up to BULK, one after another, as the peers enqueue theirs; a
     * build from before that route submits them one per `POST /jobs`, SUBMITTERS calls at a time.
     */
    // An earlier build may predate the bulk route: it answers 404 to an empty probe instead of 400.
    const bulk =
      !before ||
      !/HTTP 404/.test(
        await api(url, 'POST', '/jobs/batch', { jobs: [] }).then(
          () => '',
          (err: Error) => err.message,
        ),
      );
    const submit = async (count: number): Promise<void> => {
      if (!bulk) {
        let next = 0;
        const submitter = async (): Promise<void> => {
          while (next++ < count) await api(url, 'POST', '/jobs', { queue: QUEUE, steps });
        };
        await Promise.all(Array.from({ length: SUBMITTERS }, submitter));
        return;
      }
      for (let left = count; left > 0; left -= BULK) {
        await api(url, 'POST', '/jobs/batch', {
          jobs: Array.from({ length: Math.min(BULK, left) }, () => ({ queue: QUEUE, steps })),
        });
      }
    };
    // Warm-up: connections, prepared statements, JIT, in every process.
    if (WARM_UP > 0) {
      await submit(WARM_UP);
      await waitCompleted(url, WARM_UP, 120_000);
    }

    const t0 = Date.now();
    await submit(JOBS);
    const enqueueMs = Date.now() - t0;
    await waitCompleted(url, WARM_UP + JOBS, 600_000);
    const ms = (await lastFinishedAt(dataDir, dbUrl)) - t0;
    return { jobs: JOBS, ms, jobsPerSec: JOBS / (ms / 1000), enqueueMs };
  } finally {
    await Promise.all(executors.map((e) => e.stop()));
    await server?.stop();
    await database?.drop().catch(() => {});
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  let pgHandle: PostgresHandle | undefined;
  let redis: RedisHandle | undefined;
  let graphileDb: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  const runs = new Map<Subject, Run[]>(SUBJECTS.map((s) => [s, []]));
  let versions = '';
  try {
    const needPostgres = SUBJECTS.some((s) => s.includes('postgres') || s === 'graphile');
    if (needPostgres) pgHandle = await ensurePostgres();
    const adminUrl = pgHandle?.url;
    if (SUBJECTS.includes('graphile')) {
      graphileDb = await freshDatabase(adminUrl!, `bench_throughput_graphile_${process.pid}`);
      await prepareGraphile(graphileDb.url);
    }
    if (SUBJECTS.includes('bullmq')) redis = await ensureRedis();
    versions =
      `Node ${process.version}; Dockhand ${DOCKHAND_VERSION}; PostgreSQL ${adminUrl ? await postgresVersion(adminUrl) : '–'}; Redis ${redis?.version ?? '–'}; ` +
      `graphile-worker ${packageVersion('graphile-worker')}; BullMQ ${packageVersion('bullmq')} with ioredis ${packageVersion('ioredis')}`;
    console.error(`${describeMachine()}; ${versions}`);
    console.error(`${n(JOBS)} jobs × ${RUNS} runs: ${SUBJECTS.join(', ')}`);

    for (let run = 1; run <= RUNS; run++) {
      // Each run in another order, so that a slow phase of the machine does not always hit the same subject.
      const order = SUBJECTS.map((_, i) => SUBJECTS[(i + run - 1) % SUBJECTS.length]);
      for (const subject of order) {
        const { result, others, tries } = await undisturbed(
          () =>
            subject === 'graphile'
              ? runGraphileThroughput({ connectionString: graphileDb!.url, jobs: JOBS })
              : subject === 'bullmq'
                ? runBullmqThroughput({ redisPort: redis!.port, jobs: JOBS })
                : subject === 'spawn'
                  ? runSpawnLimit()
                  : runDockhand(subject, adminUrl),
          { disturbed: DISTURBED, maxTries: MAX_TRIES, quietWaitMs: QUIET_WAIT_MS, label: LABEL[subject] },
        );
        runs.get(subject)!.push({ ...result, others, tries });
        console.error(
          `[run ${run}] ${LABEL[subject]}: ${n(result.jobsPerSec)} jobs/s (${secs(result.ms)}, enqueue ${secs(result.enqueueMs)}; ` +
            `other processes ${pct(others)} of the CPU)`,
        );
      }
    }
  } finally {
    await graphileDb?.drop().catch(() => {});
    await pgHandle?.stop().catch((err: Error) => console.error(`stopping PostgreSQL: ${err.message}`));
    await redis?.stop().catch((err: Error) => console.error(`stopping Redis: ${err.message}`));
  }
  const body = report(runs, versions, (Date.now() - started) / 1000);
  console.log(`\n${body}\n`);
  if (WRITE) {
    await writeSection(SECTION, body);
    console.error('wrote BENCHMARKS.md');
  }
}

/** Where the time goes, from CPU profiles taken outside the timed runs (dated: rerun them when the code changes). */
const ANALYSIS =
  '**What the numbers show.** CPU profiles of the server and the four executors during a 20,000-job zero-step run on ' +
  'SQLite (`node --cpu-prof`, 2026-11-23) show the run is CPU-bound on this 2-CPU machine, the four executors together ' +
  "using about twice the server's CPU, and no single hot spot left. Per job, the server claims it (one transaction " +
  'for a whole dequeue of up to 100 jobs), records its report (one transaction per `/jobs/batch` of up to 500) and ' +
  "writes one log line; each executor keeps a job's state (its log, redactor, timers) and its calls; every HTTP " +
  'request costs both ends a write system call of ~0.2 ms here. Submitting the 20,000 jobs takes about 2 s of the ' +
  'run (each job validated, its namespace checked and inserted, and answered with its record), and the executors ' +
  'get less CPU meanwhile. A BullMQ job costs a few Redis commands from a worker that holds its connection; a ' +
  'Dockhand job costs an authenticated HTTP exchange and SQL transactions shared with the rest of its batch, and ' +
  'carries what makes it resumable and auditable: an attempt with its own hashed token (fencing), a stored result ' +
  'and log. A job with a step pays for a process: the spawn-limit row is what four Node processes doing nothing else ' +
  "reach, and a Dockhand executor adds the job's workspace (two directories and the script file), the step's log " +
  'entry and its redaction. On PostgreSQL every statement is a round trip, and log appends are stored one item at a ' +
  'time, which is why one-step jobs are slower there. Before this work (the throughput-before-after section) an ' +
  'executor took one job per dequeue and reported each job alone, and the server prepared every SQL statement anew.';

/** What made the difference to the earlier build, for a before/after run. */
const BEFORE_AFTER =
  '**What changed.** The hottest path, found with CPU profiles of the server and the executors running zero-step jobs, ' +
  'was the protocol itself. Before, an executor took one job per dequeue and reported each job in a request of its ' +
  "own, re-sent its held heartbeat whenever a job started or ended, built every job's redactor from scratch (encoding " +
  "its own token again each time) and logged through pino's wildcard redact paths (~20 µs a line); the server " +
  'prepared every SQL statement anew (preparing cost more than running most of them), claimed and finished each job ' +
  'in a transaction of its own, and sent a PostgreSQL NOTIFY per event. Now an executor asks for as many jobs as it ' +
  'has free slots and the server claims them in one transaction from one look at each queue; reports and small log ' +
  'appends of many jobs travel in one `/jobs/batch` request, stored in one transaction; SQLite statements are ' +
  "prepared once; PostgreSQL finishes a batch in four set-based statements and sends a tick's events in one " +
  'NOTIFY; the held heartbeat is re-sent at most every 500 ms; executors call over node:http with kept-alive ' +
  'connections, share the encoded forms of their own secrets between jobs, and log through a formatter that looks ' +
  "only at the log object's keys. The earlier build has no bulk submit: its jobs are submitted one per request, and " +
  "that time is in its clock (the enqueue column), as the bulk submit's is in this build's.";

function report(runs: Map<Subject, Run[]>, versions: string, elapsed: number): string {
  const median = (s: Subject): number =>
    quantile(
      runs.get(s)!.map((r) => r.jobsPerSec),
      0.5,
    );
  const has = (s: Subject): boolean => runs.has(s);
  const peers = PEERS.filter(has);
  const best = peers.reduce<Subject | undefined>(
    (a, p) => (a === undefined || median(p) > median(a) ? p : a),
    undefined,
  );
  const ratio = (a: Subject, b: Subject | undefined): string =>
    b && has(a) && has(b) ? `${(median(a) / median(b)).toFixed(2)}×` : '–';
  const lines = [
    SECTION === 'throughput'
      ? '## Throughput: no-op jobs through the executor protocol, against the peers'
      : `## Throughput, ${BEFORE_CLI ? `before and after: this build and ${BEFORE_LABEL}` : SECTION}`,
    '',
    `One real \`dockhand server\` and ${EXECUTORS} real \`dockhand executor\` processes (shell runtime, ${SLOTS} job slots each, ` +
      'other settings at their defaults), started fresh for each run on a fresh store: SQLite in a new data dir, or a new ' +
      'PostgreSQL database. Jobs are submitted with `POST /api/v1/jobs/batch`, ' +
      `${n(BULK)} per request one after another, as the peers enqueue theirs in bulk; the clock runs from the first submit ` +
      `to the \`finished_at\` of the last job (read from the store), after ${n(WARM_UP)} warm-up jobs. "Zero steps" is the ` +
      'protocol alone (dequeue, result reported); "one step `true`" adds a workspace, the step\'s log entry and a process ' +
      'run by the shell runtime. The executors take up to 100 jobs per dequeue (as many as they have free slots) and ' +
      "send several jobs' log appends and results in one `/jobs/batch` request when calls queue up (docs/protocol.md). " +
      `The limit for one-step jobs is measured in the same run: ${EXECUTORS} Node processes spawning \`/bin/sh -c true\` with ` +
      `piped output, ${SLOTS} at a time each, as fast as they can — what any executor that runs a step as a process pays. ` +
      (peers.length > 0
        ? 'The peers, in the same run, in their high-throughput configurations: ' +
          `graphile-worker ${describeGraphile(GRAPHILE_CONFIG)}; BullMQ ${describeBullmq(BULLMQ_CONFIG)} ` +
          '(bench/peers.ts: jobs enqueued in bulk, the clock from the first enqueue until every job has run). '
        : 'No peer is in this run (the throughput section has them). ') +
      (BEFORE_CLI
        ? `"Before" is ${BEFORE_LABEL}, measured in the same run the same way (a build without the bulk submit gets its jobs ` +
          `one per \`POST /api/v1/jobs\`, ${SUBMITTERS} calls in flight, included in its clock as for the others). `
        : '') +
      `${RUNS} runs, the subjects in a rotating order; a run during which other processes used over ${pct(DISTURBED)} of ` +
      `the machine's CPU is taken again (up to ${MAX_TRIES} tries). Source: \`bench/throughput.ts\`; \`npm run bench:throughput\`.`,
    '',
    `Machine: ${describeMachine()}; ${new Date().toISOString().slice(0, 10)}. ${versions}. PostgreSQL is a throwaway ` +
      'cluster as the tests start it (fsync, synchronous_commit and full_page_writes off), for Dockhand and ' +
      `graphile-worker alike. A full run took ${Math.round(elapsed)} s.`,
    '',
    `| subject | jobs/s median | min | max | runs | enqueue time (median) | others' CPU (max) | ÷ best peer${best ? ` (${LABEL[best]})` : ''} | other ratio |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const other: Partial<Record<Subject, string>> = {
    'sqlite-true': has('spawn') ? `${ratio('sqlite-true', 'spawn')} the spawn limit` : '',
    'postgres-true': has('spawn') ? `${ratio('postgres-true', 'spawn')} the spawn limit` : '',
    'sqlite-none': has('before-sqlite-none') ? `**${ratio('sqlite-none', 'before-sqlite-none')}** before` : '',
    'postgres-none': has('before-postgres-none') ? `**${ratio('postgres-none', 'before-postgres-none')}** before` : '',
    ...(has('before-sqlite-true')
      ? {
          'sqlite-true': `**${ratio('sqlite-true', 'before-sqlite-true')}** before; ${ratio('sqlite-true', 'spawn')} the spawn limit`,
        }
      : {}),
    ...(has('before-postgres-true')
      ? {
          'postgres-true': `**${ratio('postgres-true', 'before-postgres-true')}** before; ${ratio('postgres-true', 'spawn')} the spawn limit`,
        }
      : {}),
  };
  for (const [subject, rs] of runs) {
    const rates = rs.map((r) => r.jobsPerSec);
    const ours = !PEERS.includes(subject) && subject !== 'spawn';
    const vsPeer = ours || PEERS.includes(subject) ? ratio(subject, best) : '–';
    lines.push(
      `| ${LABEL[subject]} | **${n(median(subject))}** | ${n(Math.min(...rates))} | ${n(Math.max(...rates))} | ${rs.length} | ` +
        `${
          subject === 'spawn'
            ? '–'
            : secs(
                quantile(
                  rs.map((r) => r.enqueueMs),
                  0.5,
                ),
              )
        } | ${pct(Math.max(...rs.map((r) => r.others)))} | ` +
        `${ours && !subject.startsWith('before') ? `**${vsPeer}**` : vsPeer} | ${other[subject] ?? ''} |`,
    );
  }
  lines.push(
    '',
    best ? "Goal: ≥ 1.0× the best peer's jobs/s." : BEFORE_CLI ? "Goal: ≥ 1.0× the earlier build's jobs/s." : '',
    '',
    SECTION === 'throughput' ? ANALYSIS : SECTION === 'throughput-before-after' ? BEFORE_AFTER : '',
  );
  return lines.join('\n');
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
