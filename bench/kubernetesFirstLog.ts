// Job submitted → its first step's first log line, on the kubernetes runtime against the Kubernetes API test double
// (which runs each pod in Docker), and on the docker runtime (runc) in the same run: one server, one executor of
// each, jobs alternated in blocks so noise spreads evenly over both.
//
//   first line   from the submit's request to the first `stdout` line of the step in the job's log, as a client
//                polling GET /jobs/:id/logs every BENCH_POLL_MS (default 5) sees it: both runtimes pay the same lag.
//   completed    the server's finishedAt - createdAt for the same job.
//
// The job: one step, `echo first-line; sleep 0.2; echo done`, no checkout, no files (the kubernetes pod then has
// no setup container: one step container and the main one).
//
// Environment: BENCH_JOBS (default 30 of each), BENCH_WARMUP (2), BENCH_WRITE=0 to leave BENCHMARKS.md alone.
import { DOCKER_TEST_IMAGE, ensureGitTestImage, ensureTestImages } from '../test/support/docker.js';
import { kubernetesExecutorEnv } from '../test/support/kubernetes/executorEnv.js';
import { startKubeDouble } from '../test/support/kubernetes/index.js';
import { describeMachine } from './machine.js';
import {
  Proc,
  api,
  fmtMs,
  fmtRatio,
  sleep,
  startExecutor,
  startServer,
  summarize,
  tempDir,
  writeSection,
  type ApiJob,
  type Summary,
} from './lib.js';

const JOBS = Number(process.env.BENCH_JOBS ?? 30);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 5);
const BLOCK = 5;
const KINDS = ['kubernetes', 'docker'] as const;
type Kind = (typeof KINDS)[number];

interface Sample {
  firstLineMs: number;
  completedMs: number;
  /** createdAt → startedAt: until an executor took the job. */
  queueMs: number;
  /** startedAt → the step's log entry: the runtime's open (for kubernetes: the Job, its Secret, the resume, the list). */
  beforeMs: number;
  /** The step's entry start → its first line in the job's log (for kubernetes: the pod made, its containers started, the log followed). */
  toFirstLineMs: number;
}

interface LogEntry {
  key: string;
  startTime: number;
  durationMs: number | null;
  out: string;
}

async function once(url: string, kind: Kind): Promise<Sample> {
  const started = performance.now();
  const { job } = await api<{ job: ApiJob }>(url, 'POST', '/jobs', {
    queue: kind,
    maxAttempts: 1,
    steps: [{ key: 'first', run: 'echo first-line; sleep 0.2; echo done' }],
  });
  let firstLineMs = NaN;
  let firstLineWall = NaN;
  for (;;) {
    const logs = await api<{ entries: LogEntry[] }>(url, 'GET', `/jobs/${job.id}/logs`);
    if (logs.entries.some((e) => e.out.includes('stdout: first-line'))) {
      firstLineMs = performance.now() - started;
      firstLineWall = Date.now();
      break;
    }
    await sleep(POLL_MS);
  }
  for (;;) {
    const { job: now } = await api<{ job: ApiJob }>(url, 'GET', `/jobs/${job.id}`);
    if (now.state === 'completed') {
      const { entries } = await api<{ entries: LogEntry[] }>(url, 'GET', `/jobs/${job.id}/logs`);
      const step = entries.find((e) => e.key === 'step.first')!;
      return {
        firstLineMs,
        completedMs: now.finishedAt! - now.createdAt,
        queueMs: now.startedAt! - now.createdAt,
        beforeMs: step.startTime - now.startedAt!,
        toFirstLineMs: firstLineWall - step.startTime,
      };
    }
    if (['failed', 'canceled'].includes(now.state))
      throw new Error(`${kind} job ${job.id} ended ${now.state}: ${JSON.stringify(now)}`);
    await sleep(20);
  }
}

async function main(): Promise<void> {
  await ensureTestImages();
  await ensureGitTestImage();
  const cluster = await startKubeDouble({ namespaces: ['dockhand'] });
  const procs: Proc[] = [];
  try {
    const kubeconfig = await cluster.writeKubeconfig(await tempDir('bench-kubeconfig'), 'admin', 'dockhand');
    const server = await startServer(await tempDir('bench-k8s-server'));
    procs.push(server.proc);
    const common = { EXECUTOR_JOB_NUM_CPUS: '1', EXECUTOR_JOB_MEMORY: '256M', EXECUTOR_JOB_DISK: '256M' };
    procs.push(
      await startExecutor(server.url, {
        ...kubernetesExecutorEnv(kubeconfig, 'dockhand'),
        EXECUTOR_NAME: 'bench-kubernetes',
        EXECUTOR_QUEUE_NAME: 'kubernetes',
      }),
      await startExecutor(server.url, {
        ...common,
        EXECUTOR_NAME: 'bench-docker',
        EXECUTOR_QUEUE_NAME: 'docker',
        EXECUTOR_RUNTIME: 'docker',
        EXECUTOR_DOCKER_RUNTIME: 'runc',
        EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE,
      }),
    );
    for (let i = 0; i < WARMUP; i++) for (const kind of KINDS) await once(server.url, kind);
    const samples: Record<Kind, Sample[]> = { kubernetes: [], docker: [] };
    while (samples.docker.length < JOBS) {
      for (const kind of KINDS) {
        for (let i = 0; i < BLOCK && samples[kind].length < JOBS; i++) samples[kind].push(await once(server.url, kind));
      }
    }
    await report(samples);
  } finally {
    for (const p of procs) await p.stop();
    await cluster.close();
  }
}

async function report(samples: Record<Kind, Sample[]>): Promise<void> {
  const first = (k: Kind): Summary => summarize(samples[k].map((s) => s.firstLineMs));
  const done = (k: Kind): Summary => summarize(samples[k].map((s) => s.completedMs));
  const row = (label: string, k: Kind) =>
    `| ${label} | ${fmtMs(first(k).median)} | ${fmtMs(first(k).p90)} | ${fmtMs(done(k).median)} | ${fmtMs(done(k).p90)} |`;
  const part = (label: string, pick: (s: Sample) => number) => {
    const [k, d] = [summarize(samples.kubernetes.map(pick)), summarize(samples.docker.map(pick))];
    return `| ${label} | ${fmtMs(k.median)} | ${fmtMs(d.median)} | ${fmtMs(k.median - d.median)} |`;
  };
  const table = [
    '| runtime | first line median | first line p90 | completed median | completed p90 |',
    '|---|---:|---:|---:|---:|',
    row('kubernetes (API double, pods in Docker)', 'kubernetes'),
    row('docker (runc)', 'docker'),
    `| ratio kubernetes / docker | ${fmtRatio(first('kubernetes').median / first('docker').median)} | ${fmtRatio(first('kubernetes').p90 / first('docker').p90)} | ${fmtRatio(done('kubernetes').median / done('docker').median)} | ${fmtRatio(done('kubernetes').p90 / done('docker').p90)} |`,
    '',
    "| where the first line's time goes (medians) | kubernetes | docker | difference |",
    '|---|---:|---:|---:|',
    part('submit → an executor takes the job (createdAt → startedAt)', (x) => x.queueMs),
    part("taken → the step's entry opens (the runtime's open: Job, Secret, resume, list)", (x) => x.beforeMs),
    part("entry opens → the first line is in the job's log", (x) => x.toFirstLineMs),
  ].join('\n');
  console.log(table);
  const body = [
    '## Kubernetes runtime: submit to first log line',
    '',
    `How long a one-step job (\`echo first-line; sleep 0.2; echo done\`) takes from its submit to its first line in ` +
      "the job's log, on the kubernetes runtime against the Kubernetes API test double (test/support/kubernetes, " +
      'which runs each pod in Docker: a sandbox container, then the step container, then the main one) and on the ' +
      `docker runtime (runc) in the same run: ${JOBS} jobs of each, alternated in blocks of ${BLOCK}, after ` +
      `${WARMUP} warm-up jobs of each, one executor of each taking one job at a time. The first line is timed as a ` +
      `client polling the job's log every ${POLL_MS} ms sees it (both runtimes pay the same lag, and the executor's ` +
      "log flush interval, 200 ms by default); completed is the server's finishedAt - createdAt. Source: " +
      '`bench/kubernetesFirstLog.ts`, `npm run bench:kubernetes`.',
    '',
    `Machine: ${describeMachine()}; Node ${process.version}.`,
    '',
    table,
    '',
    "What this measures is the runtime's own path: four API calls before the step (the Job created suspended, its " +
      'Secret, the resume, the pod list that starts the watch), the watch that sees the step container start, and ' +
      'the log followed from then on; and, on the double, one more container per pod (the sandbox) than the docker ' +
      'runtime starts. What a real cluster adds is not measured here, for want of one: the scheduler placing the ' +
      'pod (milliseconds on an idle cluster, longer under load or when the autoscaler must add a node), the ' +
      "kubelet's pod sandbox with its network plugin's setup (commonly a few hundred milliseconds to a few seconds), " +
      'image pulls (none for images a node has, `IfNotPresent`; seconds to minutes otherwise), and the kubelet ' +
      "reporting statuses to the API server. What it does not add: the runtime's API calls are the same in number, " +
      "and once a step runs its lines reach the job's log as they are written, as on the docker runtime.",
  ].join('\n');
  if (process.env.BENCH_WRITE !== '0') await writeSection('kubernetes-first-log', body);
}

await main();
