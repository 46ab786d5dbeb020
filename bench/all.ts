// Every benchmark, one after another (they share the machine, so never at once), each rewriting its own section of
// BENCHMARKS.md. `--tiny` runs each once at a tiny size and writes nothing: what CI does to prove they still work.
//
// Usage: node dist-bench/bench/all.js [--tiny] [NAME ...]   (names: see BENCHES; default all but those run only
// when named, such as the soak)
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface Bench {
  name: string;
  script: string;
  /** How to run it at a tiny size, writing nothing. */
  tiny: { args?: string[]; env?: NodeJS.ProcessEnv };
  /** Run only when named: too long for `npm run bench`. CI names each benchmark, so its tiny runs include it. */
  onlyWhenNamed?: boolean;
}

export const BENCHES: Bench[] = [
  {
    name: 'docker-overhead',
    script: 'dockerOverhead.js',
    tiny: { env: { BENCH_JOBS: '1', BENCH_WARMUP: '0', BENCH_WRITE: '0' } },
  },
  {
    name: 'store',
    script: 'storeDequeue.js',
    tiny: {
      env: {
        BENCH_DEPTHS: '1000',
        BENCH_DEQUEUES: '50',
        BENCH_E2E_JOBS: '40',
        BENCH_E2E_RUNS: '1',
        BENCH_MAX_TRIES: '1',
        BENCH_WRITE: '0',
      },
    },
  },
  { name: 'peers', script: 'peersBench.js', tiny: { args: ['--tiny'] } },
  { name: 'throughput', script: 'throughput.js', tiny: { args: ['--tiny'] } },
  { name: 'latency', script: 'latency.js', tiny: { args: ['--tiny'] } },
  { name: 'logs', script: 'logStream.js', tiny: { args: ['--tiny'], env: { BENCH_PARTS: 'logs,memory' } } },
  {
    name: 'kubernetes',
    script: 'kubernetesFirstLog.js',
    tiny: { env: { BENCH_JOBS: '1', BENCH_WARMUP: '0', BENCH_WRITE: '0' } },
  },
  {
    name: 'builds',
    script: 'buildManager.js',
    // The process plane alone: the container planes' image builds would double the suite's time for no new proof.
    tiny: { env: { BENCH_BUILDS: '1', BENCH_WARMUP: '0', BENCH_PLANES: 'process', BENCH_WRITE: '0' } },
  },
  { name: 'soak', script: 'soak.js', tiny: { args: ['--tiny'] }, onlyWhenNamed: true },
];

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const tiny = argv.includes('--tiny');
const names = argv.filter((a) => !a.startsWith('--'));
const unknown = names.filter((n) => !BENCHES.some((b) => b.name === n));
if (unknown.length) {
  console.error(`unknown benchmark ${unknown.join(', ')}: choose from ${BENCHES.map((b) => b.name).join(', ')}`);
  process.exit(2);
}

function run(bench: Bench): Promise<number> {
  const args = [path.join(here, bench.script), ...(tiny ? (bench.tiny.args ?? []) : [])];
  // Tiny runs prove the benchmark works, not how fast: a run disturbed by other processes is not taken again.
  const env = { ...process.env, ...(tiny ? { BENCH_MAX_TRIES: '1', BENCH_QUIET_WAIT_S: '0', ...bench.tiny.env } : {}) };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: 'inherit' });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const failed: string[] = [];
for (const bench of BENCHES.filter((b) => (names.length === 0 ? !b.onlyWhenNamed : names.includes(b.name)))) {
  const started = Date.now();
  console.error(`\n==== ${bench.name}${tiny ? ' (tiny)' : ''} ====`);
  const code = await run(bench);
  console.error(
    `==== ${bench.name}: ${code === 0 ? 'done' : `FAILED (exit ${code})`} in ${Math.round((Date.now() - started) / 1000)} s ====`,
  );
  if (code !== 0) failed.push(bench.name);
}
if (failed.length) {
  console.error(`\nfailed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
