// The peers alone: graphile-worker and BullMQ throughput (jobs/s over RUNS runs, the peers alternating) and
// enqueue → handler latency on this machine, so that Dockhand's throughput can be given as a ratio to them. The
// measurements themselves are in bench/peers.ts (which a Dockhand benchmark can import to measure the peers in
// its own run); this script prints a table and rewrites the `bench:peers` section of BENCHMARKS.md.
//
// Usage: node dist-bench/bench/peersBench.js [--tiny] [--jobs N] [--latency-jobs N] [--runs N] [--no-write]
// or the environment PEERS_JOBS (default 20000), PEERS_LATENCY_JOBS (default 1000), PEERS_RUNS (default 3),
// BENCH_WRITE=0. --tiny is 200 and 50 jobs, one run, and does not touch BENCHMARKS.md (for CI). PEERS_ONLY=graphile
// or bullmq measures one. PostgreSQL: a throwaway cluster from test/support/postgres.ts (or
// DOCKHAND_TEST_POSTGRES_URL); Redis: a throwaway Debian `redis-server` (apt-get install -y redis-server).
import os from 'node:os';
import type { PostgresHandle } from '../test/support/postgres.js';
import { ensurePostgres, ensureRedis, freshDatabase, postgresVersion } from './services.js';
import { quantile, writeSection, flag, opt, num } from './lib.js';
import { cpuModel, measured, waitQuiet } from './machine.js';
import {
  BULLMQ_CONFIG,
  GRAPHILE_CONFIG,
  describeBullmq,
  describeGraphile,
  packageVersion,
  prepareGraphile,
  runBullmqLatency,
  runBullmqThroughput,
  runGraphileLatency,
  runGraphileThroughput,
  type RedisHandle,
  type ThroughputResult,
} from './peers.js';

const SECTION = 'peers';
const TINY = flag('--tiny');
const JOBS = num(opt('--jobs') ?? process.env.PEERS_JOBS, TINY ? 200 : 20_000);
const LATENCY_JOBS = num(opt('--latency-jobs') ?? process.env.PEERS_LATENCY_JOBS, TINY ? 50 : 1_000);
const RUNS = num(opt('--runs') ?? process.env.PEERS_RUNS, TINY ? 1 : 3);
const WRITE = !TINY && !flag('--no-write') && process.env.BENCH_WRITE !== '0';
const ONLY = process.env.PEERS_ONLY;
/** A run during which other processes used more than this share of the machine's CPU is taken again, up to MAX_TRIES times. */
const DISTURBED = 0.1;
const MAX_TRIES = num(process.env.BENCH_MAX_TRIES, 3);
/** How long to wait for a quiet machine before each measurement (BENCH_QUIET_WAIT_S, default 300). */
const QUIET_WAIT_MS = 1000 * num(process.env.BENCH_QUIET_WAIT_S, TINY ? 0 : 300);

type Peer = 'graphile' | 'bullmq';
const PEERS: Peer[] = (['graphile', 'bullmq'] as Peer[]).filter((p) => !ONLY || ONLY === p);
const NAME: Record<Peer, string> = { graphile: 'graphile-worker', bullmq: 'BullMQ' };

interface Run extends ThroughputResult {
  /** Share of the machine's CPU that other processes used during the run. */
  others: number;
  tries: number;
}

interface Machine {
  cpus: string;
  ram: string;
  kernel: string;
  node: string;
  postgres: string;
  redis: string;
  graphile: string;
  bullmq: string;
  ioredis: string;
}

const n = (x: number): string => Math.round(x).toLocaleString('en-US');
const pct = (x: number): string => `${Math.round(100 * x)}%`;
const ms = (x: number): string =>
  x < 10 ? `${x.toFixed(2)} ms` : x < 1000 ? `${x.toFixed(1)} ms` : `${(x / 1000).toFixed(2)} s`;

async function main(): Promise<void> {
  const started = Date.now();
  let pgHandle: PostgresHandle | undefined;
  let redis: RedisHandle | undefined;
  let database: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  const throughput: Record<Peer, Run[]> = { graphile: [], bullmq: [] };
  const latency: Record<Peer, number[]> = { graphile: [], bullmq: [] };
  const latencyOthers: Record<Peer, number> = { graphile: 0, bullmq: 0 };
  let machine: Machine;
  try {
    let postgres = '–';
    if (PEERS.includes('graphile')) {
      pgHandle = await ensurePostgres();
      postgres = await postgresVersion(pgHandle.url);
      database = await freshDatabase(pgHandle.url, `bench_peers_${process.pid}`);
      await prepareGraphile(database.url);
    }
    if (PEERS.includes('bullmq')) redis = await ensureRedis();
    machine = {
      cpus: cpuModel(),
      ram: `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
      kernel: `${os.type()} ${os.release()}`,
      node: process.version,
      postgres,
      redis: redis?.version ?? '–',
      graphile: packageVersion('graphile-worker'),
      bullmq: packageVersion('bullmq'),
      ioredis: packageVersion('ioredis'),
    };
    console.error(
      `${machine.cpus}, ${machine.ram}, ${machine.kernel}; Node ${machine.node}, PostgreSQL ${machine.postgres}, Redis ${machine.redis}`,
    );
    console.error(`throughput: ${n(JOBS)} jobs × ${RUNS} runs; latency: ${n(LATENCY_JOBS)} jobs`);

    for (let run = 1; run <= RUNS; run++) {
      for (const peer of run % 2 ? PEERS : [...PEERS].reverse()) {
        for (let tries = 1; ; tries++) {
          await waitQuiet(DISTURBED, QUIET_WAIT_MS);
          const { result: r, others } = await measured(() =>
            peer === 'graphile'
              ? runGraphileThroughput({ connectionString: database!.url, jobs: JOBS })
              : runBullmqThroughput({ redisPort: redis!.port, jobs: JOBS }),
          );
          console.error(
            `[run ${run}] ${NAME[peer]}: ${n(r.jobsPerSec)} jobs/s (${(r.ms / 1000).toFixed(2)} s, enqueue ` +
              `${(r.enqueueMs / 1000).toFixed(2)} s; other processes ${Math.round(100 * others)}% of the CPU)`,
          );
          if (others <= DISTURBED || tries >= MAX_TRIES) {
            throughput[peer].push({ ...r, others, tries });
            break;
          }
          console.error(`  other processes used over ${Math.round(100 * DISTURBED)}% of the CPU: running again`);
        }
      }
    }
    for (const peer of PEERS) {
      await waitQuiet(DISTURBED, QUIET_WAIT_MS);
      const { result, others } = await measured(() =>
        peer === 'graphile'
          ? runGraphileLatency({ connectionString: database!.url, jobs: LATENCY_JOBS })
          : runBullmqLatency({ redisPort: redis!.port, jobs: LATENCY_JOBS }),
      );
      latency[peer] = result;
      latencyOthers[peer] = others;
      const l = latency[peer];
      console.error(
        `${NAME[peer]} latency: p50 ${ms(quantile(l, 0.5))}, p95 ${ms(quantile(l, 0.95))}, p99 ${ms(quantile(l, 0.99))} ` +
          `(other processes ${Math.round(100 * others)}% of the CPU)`,
      );
    }
  } finally {
    await database?.drop().catch((err: Error) => console.error(`dropping graphile-worker's database: ${err.message}`));
    await pgHandle?.stop().catch((err: Error) => console.error(`stopping PostgreSQL: ${err.message}`));
    await redis?.stop().catch((err: Error) => console.error(`stopping Redis: ${err.message}`));
  }
  const elapsed = (Date.now() - started) / 1000;
  const body = report(machine, throughput, latency, latencyOthers, elapsed);
  console.log(`\n${body}\n`);
  if (WRITE) {
    await writeSection(SECTION, body);
    console.error('wrote BENCHMARKS.md');
  }
}

function report(
  m: Machine,
  throughput: Record<Peer, Run[]>,
  latency: Record<Peer, number[]>,
  latencyOthers: Record<Peer, number>,
  elapsed: number,
): string {
  const date = new Date().toISOString().slice(0, 10);
  const lines = [
    '## Peers: graphile-worker and BullMQ',
    '',
    'The job runners Dockhand is compared with, measured alone on this machine with no-op jobs, each with its own ' +
      "worker processes (child processes of the benchmark, sharing the CPUs as Dockhand's executors do). " +
      `**Throughput**: the workers are started and idle, then ${n(JOBS)} jobs are enqueued in bulk, and the clock runs ` +
      'from the first enqueue until every job has run and the queue is empty again (graphile-worker: no row left in ' +
      'its jobs table; BullMQ: no job waiting, active, delayed or prioritized); after min(500, that many) warm-up jobs; ' +
      `${RUNS} runs, the peers alternating, fresh workers each run; a run during which other processes used over ` +
      `${Math.round(100 * DISTURBED)}% of the machine's CPU is taken again (up to ${MAX_TRIES} tries, each after waiting for other processes to use at most that share for 2 s; "others' CPU" is that share, ` +
      "from /proc: the machine's busy time less that of the benchmark, its workers, Redis and PostgreSQL). " +
      `**Latency**: ${n(LATENCY_JOBS)} jobs submitted one at a time to idle workers (after 20 warm-up jobs), each 5–15 ms ` +
      "after the previous one's handler ran; from just before the add call to the handler's IPC message reaching the " +
      'benchmark, on one monotonic clock. Source: `bench/peers.ts` (importable by a Dockhand benchmark to measure the ' +
      'peers in its own run), `bench/peerWorker.ts`, `bench/peersBench.ts`; `npm run bench:peers`.',
    '',
    `Machine: ${m.cpus}, ${m.ram}, ${m.kernel}; ${date}. Node ${m.node}; PostgreSQL ${m.postgres} (a throwaway cluster ` +
      'as the tests start it: fsync, synchronous_commit and full_page_writes off); Redis ' +
      `${m.redis} (Debian's redis-server, \`--save '' --appendonly no\`); graphile-worker ${m.graphile}; BullMQ ${m.bullmq} ` +
      `with ioredis ${m.ioredis}. A full run took ${Math.round(elapsed)} s.`,
    '',
    `- graphile-worker: ${describeGraphile(GRAPHILE_CONFIG)}. Before each run (untimed) its jobs table is analyzed ` +
      `with ${n(JOBS)} jobs in it, then emptied: a run that starts on the statistics of an empty table (a fresh database, ` +
      "or autovacuum's ANALYZE after the previous run emptied it) plans get_job for an empty table and ran 4–5× slower here " +
      '(500–760 jobs/s) until autovacuum analyzed the table again mid-run.',
    `- BullMQ: ${describeBullmq(BULLMQ_CONFIG)}.`,
    '',
    `| peer | jobs/s median | min | max | runs | enqueue time (median) | others' CPU (max) | latency p50 | p95 | p99 | others' CPU |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const peer of PEERS) {
    const rates = throughput[peer].map((r) => r.jobsPerSec);
    const l = latency[peer];
    const enq = quantile(
      throughput[peer].map((r) => r.enqueueMs),
      0.5,
    );
    lines.push(
      `| ${NAME[peer]} | **${n(quantile(rates, 0.5))}** | ${n(Math.min(...rates))} | ${n(Math.max(...rates))} | ${rates.length} | ` +
        `${ms(enq)} | ${pct(Math.max(...throughput[peer].map((r) => r.others)))} | ${ms(quantile(l, 0.5))} | ` +
        `${ms(quantile(l, 0.95))} | ${ms(quantile(l, 0.99))} | ${pct(latencyOthers[peer])} |`,
    );
  }
  return lines.join('\n');
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
