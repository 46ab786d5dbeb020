// Per-job overhead of the docker runtime against a bare `docker run --rm` of the same command, in the same run,
// under runc and under gVisor's runsc. For each OCI runtime: one server, one executor (one job at a time, default
// settings), then 50 of each kind below, alternated in blocks so noise spreads evenly over them.
//
//   job            a Dockhand job, one step `echo hello`: submit, wait until completed, next. Its time is the
//                  server's finishedAt - createdAt, so the benchmark's own polling lag does not count. Broken down
//                  from the job record and the step's log entry: queue wait, before the step, the step container
//                  (the entry's durationMs), after the step.
//   plain          docker run --rm --runtime OCI IMAGE /bin/sh -c 'echo hello', timed around the CLI process.
//   network        the same on Dockhand's network (--network dockhand), the one option that costs time.
//   flags          docker run --rm with all the isolation Dockhand gives a step container (containerSpec.ts):
//                  --init, its network, --cap-drop NET_RAW, no-new-privileges, pids/cpu/memory limits, no log
//                  driver, the workspace and scripts bind mounts, the same script run by /bin/sh -e.
//   jobNone        a Dockhand job that asks for `network: none`,
//   none           and its peer, docker run --rm --network none.
//
// Environment: BENCH_JOBS (default 50 of each), BENCH_RUNTIMES (default runc,runsc), BENCH_WRITE=0 to leave
// BENCHMARKS.md alone, BENCH_RAW=FILE to save every sample as JSON, BENCH_POLL_MS (default 10) for how often a
// running job is polled. EXECUTOR_* variables in the environment reach the executor (for experiments) and are
// named in the report.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DOCKER_TEST_IMAGE, ensureTestImages } from '../test/support/docker.js';
import {
  Proc,
  api,
  fmtMs,
  fmtRatio,
  run,
  sleep,
  startExecutor,
  startServer,
  summarize,
  tempDir,
  timeCommand,
  writeSection,
  type Summary,
  type ApiJob,
} from './lib.js';

const IMAGE = DOCKER_TEST_IMAGE;
const JOBS = Number(process.env.BENCH_JOBS ?? 50);
/** Warm-up runs of each kind before the measured ones (BENCH_WARMUP; CI's tiny run takes none). */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const BLOCK = 5;
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? 'runc,runsc')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const WRITE = process.env.BENCH_WRITE !== '0';
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 10);
const QUEUE = 'bench';
const GOAL = 1.1;
/**
 * An earlier build to measure in the same run (DOCKER_BEFORE=path/to/its/dist/cli/main.js, DOCKER_BEFORE_LABEL naming
 * it): its executor takes the `jobBefore` jobs from a queue of its own, on the same server, alternated with the rest.
 */
const BEFORE_CLI = process.env.DOCKER_BEFORE;
const BEFORE_LABEL = process.env.DOCKER_BEFORE_LABEL ?? 'an earlier build';
const SECTION = process.env.DOCKER_SECTION ?? (BEFORE_CLI ? 'docker-overhead-before-after' : 'docker-overhead');

/** The executor's defaults for one job's limits (EXECUTOR_JOB_NUM_CPUS=4 capped at the host's CPUs, EXECUTOR_JOB_MEMORY=12G). */
const DEFAULT_JOB_CPUS = 4;
const DEFAULT_JOB_MEMORY = String(12 * 2 ** 30);
const DEFAULT_PIDS_LIMIT = '4096';
const NETWORK = 'dockhand';
const LABEL_EXECUTOR = 'dev.dockhand.executor';

const JOB_KINDS = ['job', 'jobNone', 'jobBefore'] as const;
const BASELINES = ['plain', 'network', 'flags', 'none'] as const;
type JobKind = (typeof JOB_KINDS)[number];
type Baseline = (typeof BASELINES)[number];
type Kind = JobKind | Baseline;
const KINDS: Kind[] = [
  'job',
  'plain',
  'network',
  'flags',
  'jobNone',
  'none',
  ...(BEFORE_CLI ? (['jobBefore'] as const) : []),
];

interface JobSample {
  total: number;
  queue: number;
  before: number;
  step: number;
  after: number;
}

interface RuntimeResult {
  oci: string;
  /** Dockhand gives this runtime's step containers no Docker network (see networkless). */
  networkless: boolean;
  jobs: Record<JobKind, JobSample[]>;
  runs: Record<Baseline, number[]>;
}

interface LogEntry {
  key: string;
  startTime: number;
  durationMs: number | null;
  exitCode: number | null;
  out: string;
}

async function main(): Promise<void> {
  await ensureTestImages();
  const machine = await describeMachine();
  const overrides = Object.keys(process.env)
    .filter((k) => k.startsWith('EXECUTOR_'))
    .sort();
  const hadNetwork = (await run('docker', ['network', 'ls', '--quiet', '--filter', `name=^${NETWORK}$`])) !== '';
  console.error(`docker runtime overhead: ${JOBS} of each kind per OCI runtime (${RUNTIMES.join(', ')})`);

  const results: RuntimeResult[] = [];
  try {
    for (const oci of RUNTIMES) results.push(await benchRuntime(oci, machine.cpus));
  } finally {
    // The executor makes Dockhand's network when it is missing: leave the engine as it was found.
    if (!hadNetwork) await run('docker', ['network', 'rm', NETWORK], true);
  }

  if (process.env.BENCH_RAW) await writeFile(process.env.BENCH_RAW, JSON.stringify({ machine, results }, null, 1));
  const body = report(results, machine, overrides);
  console.log(`\n${body}\n`);
  if (WRITE) {
    await writeSection(SECTION, body);
    console.error('wrote BENCHMARKS.md');
  }
}

async function benchRuntime(oci: string, hostCpus: number): Promise<RuntimeResult> {
  const dataDir = await tempDir('server');
  const flagsDir = await tempDir('flags');
  const executorName = `bench-${oci}-${process.pid}`;
  let server: { url: string; proc: Proc } | undefined;
  let executor: Proc | undefined;
  let before: Proc | undefined;
  try {
    server = await startServer(dataDir);
    executor = await startExecutor(server.url, {
      EXECUTOR_NAME: executorName,
      EXECUTOR_QUEUE_NAME: QUEUE,
      EXECUTOR_RUNTIME: 'docker',
      EXECUTOR_DOCKER_RUNTIME: oci,
      EXECUTOR_DOCKER_DEFAULT_IMAGE: IMAGE,
      EXECUTOR_MAXIMUM_NUM_JOBS: '1',
    });
    if (BEFORE_CLI) {
      before = await startExecutor(
        server.url,
        {
          EXECUTOR_NAME: `${executorName}-before`,
          EXECUTOR_QUEUE_NAME: `${QUEUE}-before`,
          EXECUTOR_RUNTIME: 'docker',
          EXECUTOR_DOCKER_RUNTIME: oci,
          EXECUTOR_DOCKER_DEFAULT_IMAGE: IMAGE,
          EXECUTOR_MAXIMUM_NUM_JOBS: '1',
        },
        BEFORE_CLI,
      );
    }
    const url = server.url;
    const args: Record<Baseline, string[]> = {
      plain: plainArgs(oci),
      network: plainArgs(oci, ['--network', NETWORK]),
      flags: await flagArgs(oci, flagsDir, hostCpus, (await networkless(oci)) ? 'none' : NETWORK),
      none: plainArgs(oci, ['--network', 'none']),
    };

    const result: RuntimeResult = {
      oci,
      networkless: await networkless(oci),
      jobs: { job: [], jobNone: [], jobBefore: [] },
      runs: { plain: [], network: [], flags: [], none: [] },
    };
    const runOne = async (kind: Kind, record: boolean): Promise<void> => {
      if (kind === 'job' || kind === 'jobNone' || kind === 'jobBefore') {
        const sample =
          kind === 'jobBefore'
            ? await dockhandJob(url, before!, false, `${QUEUE}-before`)
            : await dockhandJob(url, executor!, kind === 'jobNone', QUEUE);
        if (record) result.jobs[kind].push(sample);
        return;
      }
      const r = await timeCommand('docker', args[kind]);
      if (r.code !== 0 || r.stdout.trim() !== 'hello')
        throw new Error(`docker ${args[kind].join(' ')}: exit ${r.code}: ${r.stdout}${r.stderr}`);
      if (record) result.runs[kind].push(r.ms);
    };
    // Step containers are removed after the step, off its critical path: let that finish before a baseline runs.
    const quiesce = async (): Promise<void> => {
      await waitForNoContainers(executorName);
      if (before) await waitForNoContainers(`${executorName}-before`);
    };

    console.error(`[${oci}] warming up`);
    for (const kind of KINDS) for (let i = 0; i < WARMUP; i++) await runOne(kind, false);

    for (let block = 0, done = 0; done < JOBS; block++, done += BLOCK) {
      // Rotate which kind goes first, so none always follows the same other one.
      const order = KINDS.map((_, i) => KINDS[(i + block) % KINDS.length]);
      for (const kind of order) {
        await quiesce();
        for (let i = 0; i < Math.min(BLOCK, JOBS - done); i++) await runOne(kind, true);
      }
      console.error(`[${oci}] ${Math.min(done + BLOCK, JOBS)}/${JOBS}`);
    }
    await quiesce();
    return result;
  } finally {
    await executor?.stop();
    await before?.stop();
    await server?.proc.stop();
    // Nothing should be left; remove whatever is (a failed run), by this executor's label only.
    for (const name of [executorName, `${executorName}-before`]) {
      const left = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=${LABEL_EXECUTOR}=${name}`], true);
      if (left) await run('docker', ['rm', '--force', ...left.split('\n')], true);
    }
    await rm(dataDir, { recursive: true, force: true });
    await rm(flagsDir, { recursive: true, force: true });
  }
}

function plainArgs(oci: string, extra: string[] = []): string[] {
  return ['run', '--rm', '--runtime', oci, ...extra, IMAGE, '/bin/sh', '-c', 'echo hello'];
}

/**
 * Whether dockerd runs `oci` with "--network=none" (gVisor here): Dockhand then starts step containers with
 * `--network none`, as the sandbox could not use a Docker network anyway.
 */
async function networkless(oci: string): Promise<boolean> {
  const runtimes = JSON.parse(await run('docker', ['info', '--format', '{{json .Runtimes}}'])) as Record<
    string,
    { runtimeArgs?: string[] }
  >;
  return (runtimes[oci]?.runtimeArgs ?? []).includes('--network=none');
}

/** `docker run --rm` with the options Dockhand gives a step container (see containerSpec.ts). */
async function flagArgs(oci: string, dir: string, hostCpus: number, network: string): Promise<string[]> {
  const workspace = path.join(dir, 'workspace');
  const scripts = path.join(dir, 'scripts');
  await mkdir(workspace);
  await mkdir(scripts);
  await writeFile(path.join(scripts, 'step-1.sh'), 'echo hello\n', { mode: 0o755 });
  const env = {
    CI: 'true',
    DOCKHAND: 'true',
    DOCKHAND_JOB_ID: '1',
    DOCKHAND_JOB_ATTEMPT: '1',
    DOCKHAND_QUEUE: QUEUE,
    DOCKHAND_STEP_KEY: 'hello',
    DOCKHAND_WORKSPACE: '/data',
  };
  return [
    'run',
    '--rm',
    '--init',
    '--runtime',
    oci,
    '--network',
    network,
    '--cap-drop',
    'NET_RAW',
    '--security-opt',
    'no-new-privileges',
    '--pids-limit',
    DEFAULT_PIDS_LIMIT,
    '--cpus',
    String(Math.min(DEFAULT_JOB_CPUS, hostCpus)),
    '--memory',
    DEFAULT_JOB_MEMORY,
    '--memory-swap',
    DEFAULT_JOB_MEMORY,
    '--log-driver',
    'none',
    '-v',
    `${workspace}:/data`,
    '-v',
    `${scripts}:/dockhand:ro`,
    '-w',
    '/data',
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--entrypoint',
    '/bin/sh',
    IMAGE,
    '-e',
    '/dockhand/step-1.sh',
  ];
}

/** One job: submit, poll until it is over, and read the server's timestamps and the step's log entry. */
async function dockhandJob(url: string, executor: Proc, noNetwork: boolean, queue: string): Promise<JobSample> {
  const spec = {
    queue,
    ...(noNetwork ? { network: 'none' } : {}),
    steps: [{ key: 'hello', image: IMAGE, run: 'echo hello' }],
  };
  const { job: submitted } = await api<{ job: ApiJob }>(url, 'POST', '/jobs', spec);
  const deadline = Date.now() + 60_000;
  let job = submitted;
  while (job.state === 'queued' || job.state === 'processing') {
    if (Date.now() > deadline)
      throw new Error(`job ${job.id} is still ${job.state} after 60 s; executor log:\n${executor.tail()}`);
    await sleep(POLL_MS);
    job = (await api<{ job: ApiJob }>(url, 'GET', `/jobs/${job.id}`)).job;
  }
  if (job.state !== 'completed')
    throw new Error(`job ${job.id} ended ${job.state}: ${job.failureMessage}; executor log:\n${executor.tail()}`);
  const { entries } = await api<{ entries: LogEntry[] }>(url, 'GET', `/jobs/${job.id}/logs`);
  const step = entries.find((e) => e.key === 'step.hello');
  if (!step || step.durationMs === null || !step.out.includes('stdout: hello'))
    throw new Error(`job ${job.id}: unexpected log ${JSON.stringify(entries)}`);
  const startedAt = job.startedAt!;
  const finishedAt = job.finishedAt!;
  return {
    total: finishedAt - job.createdAt,
    queue: startedAt - job.createdAt,
    before: step.startTime - startedAt,
    step: step.durationMs,
    after: finishedAt - (step.startTime + step.durationMs),
  };
}

async function waitForNoContainers(executorName: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (await run('docker', ['ps', '--all', '--quiet', '--filter', `label=${LABEL_EXECUTOR}=${executorName}`])) {
    if (Date.now() > deadline) throw new Error(`step containers of ${executorName} were not removed within 30 s`);
    await sleep(20);
  }
}

// ---- the report ----

interface Machine {
  cpus: number;
  cpuModel: string;
  memory: string;
  kernel: string;
  node: string;
  dockerClient: string;
  dockerServer: string;
  runc: string;
  runsc: string;
}

async function describeMachine(): Promise<Machine> {
  const v = (
    await run('docker', [
      'version',
      '--format',
      '{{.Client.Version}}|{{.Client.APIVersion}}|{{.Server.Version}}|{{.Server.APIVersion}}',
    ])
  ).split('|');
  const components = await run('docker', [
    'version',
    '--format',
    '{{range .Server.Components}}{{.Name}}={{.Version}}\n{{end}}',
  ]);
  const runc = /^runc=(.*)$/m.exec(components)?.[1] ?? 'unknown';
  const runsc =
    (await run('runsc', ['--version'], true).catch(() => '')).split('\n')[0].replace(/^runsc version\s*/, '') ||
    'unknown';
  const cpus = Number(await run('docker', ['info', '--format', '{{.NCPU}}']));
  return {
    cpus,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    dockerClient: `${v[0]} (API ${v[1]})`,
    dockerServer: `${v[2]} (API ${v[3]})`,
    runc,
    runsc,
  };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

const signed = (ms: number): string => {
  const r = Math.round(ms);
  return `${r < 0 ? '−' : '+'}${Math.abs(r)} ms`;
};

function row(label: string, s: Summary, ratioTo?: Summary): string {
  const ratios = ratioTo ? `${fmtRatio(s.median / ratioTo.median)} | ${fmtRatio(s.mean / ratioTo.mean)}` : ' | ';
  return `| ${label} | ${s.n} | ${fmtMs(s.median)} | ${fmtMs(s.p90)} | ${fmtMs(s.mean)} | ${ratios} |`;
}

function jobRows(samples: JobSample[], title: string, ratioTo: Summary): string[] {
  const part = (f: (j: JobSample) => number): Summary => summarize(samples.map(f));
  return [
    row(
      title,
      part((j) => j.total),
      ratioTo,
    ),
    row(
      '&nbsp;&nbsp;queue wait (createdAt → startedAt)',
      part((j) => j.queue),
    ),
    row(
      '&nbsp;&nbsp;before the step (startedAt → step start)',
      part((j) => j.before),
    ),
    row(
      '&nbsp;&nbsp;step container (log entry durationMs)',
      part((j) => j.step),
    ),
    row(
      '&nbsp;&nbsp;after the step (step end → finishedAt)',
      part((j) => j.after),
    ),
  ];
}

function runtimeTable(r: RuntimeResult): string {
  const plain = summarize(r.runs.plain);
  return [
    `| ${r.oci} | n | median | p90 | mean | ÷ plain (median) | ÷ plain (mean) |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    row('`docker run --rm` (plain)', plain, plain),
    row(`\`docker run --rm --network ${NETWORK}\``, summarize(r.runs.network), plain),
    row("`docker run --rm` with all of Dockhand's options", summarize(r.runs.flags), plain),
    ...jobRows(r.jobs.job, '**Dockhand job** (createdAt → finishedAt)', plain),
    row('`docker run --rm --network none`', summarize(r.runs.none), plain),
    ...jobRows(r.jobs.jobNone, '**Dockhand job with `network: none`**', plain),
    ...(r.jobs.jobBefore.length ? jobRows(r.jobs.jobBefore, `**Dockhand job, before** (${BEFORE_LABEL})`, plain) : []),
  ].join('\n');
}

function explain(r: RuntimeResult): string {
  const m = (f: (j: JobSample) => number): number => mean(r.jobs.job.map(f));
  const plain = mean(r.runs.plain);
  const network = mean(r.runs.network);
  const flags = mean(r.runs.flags);
  const total = m((j) => j.total);
  const step = m((j) => j.step);
  const bookkeeping = m((j) => j.queue + j.before + j.after);
  const options = r.networkless
    ? `${r.oci} is registered with \`--network=none\`, so Dockhand gives its step containers no Docker network and pays ` +
      `no network setup; its options (\`--network none\` among them) account for ${signed(flags - plain)}; `
    : `Dockhand's network accounts for ${signed(network - plain)} (\`--network ${NETWORK}\` alone on the CLI); ` +
      `its other isolation options for ${signed(flags - network)}; `;
  return (
    `**${r.oci}**: a job takes ${fmtMs(total)} on average against ${fmtMs(plain)} for a plain \`docker run --rm\` ` +
    `(${signed(total - plain)}). Of that, ${options}` +
    `running the container over the Engine API instead of the CLI for ${signed(step - flags)} ` +
    `(step container ${fmtMs(step)} against ${fmtMs(flags)} for \`docker run --rm\` with all the options); ` +
    `and the job's bookkeeping around the container for ${signed(bookkeeping)}: queue wait ${fmtMs(m((j) => j.queue))}, ` +
    `before the step ${fmtMs(m((j) => j.before))}, after it ${fmtMs(m((j) => j.after))}.`
  );
}

function report(results: RuntimeResult[], machine: Machine, overrides: string[]): string {
  const lines: string[] = [];
  lines.push(BEFORE_CLI ? `## Docker runtime overhead, against ${BEFORE_LABEL}` : '## Docker runtime overhead', '');
  lines.push(
    'What a one-step job (`echo hello` in a tiny busybox image) costs on the docker runtime, end to end, against a ' +
      `bare \`docker run --rm\` of the same command in the same run: ${JOBS} of each per OCI runtime, alternated in blocks of ` +
      `${BLOCK} after ${WARMUP} warm-up runs of each, one executor running one job at a time. A job's time is the server's own ` +
      '`finishedAt - createdAt` (submit to result stored), so how often the benchmark polls does not count; a `docker run` ' +
      "is timed around the CLI process. More baselines show where the time goes: `docker run --rm` on Dockhand's " +
      `network (\`--network ${NETWORK}\`, a user-defined bridge); \`docker run --rm\` with every option Dockhand gives a step ` +
      'container (that network, or none for a runtime registered with `--network=none`, `--init`, `--cap-drop NET_RAW`, `no-new-privileges`, pids, CPU and memory limits, ' +
      'no log driver, the workspace and scripts bind mounts, the script run by `/bin/sh -e`); and a job that asks for ' +
      '`network: none` next to `docker run --rm --network none`. Source: ' +
      `\`bench/dockerOverhead.ts\`. Goal: a job within ${GOAL.toFixed(2)}× of the plain \`docker run --rm\`.`,
  );
  lines.push('');
  lines.push(
    `Machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memory} RAM, ${machine.kernel}; Docker engine ` +
      `${machine.dockerServer}, CLI ${machine.dockerClient}, runc ${machine.runc}, runsc ${machine.runsc}; Node ${machine.node}.` +
      (overrides.length
        ? ` Executor settings changed from their defaults: ${overrides.map((k) => `\`${k}=${process.env[k]}\``).join(', ')}.`
        : ' Executor settings at their defaults.'),
  );
  lines.push('');
  lines.push(
    '| OCI runtime | `docker run --rm` median | Dockhand job median | ratio (medians) | ratio (means) | goal ≤ 1.10× | ÷ `docker run --rm` with the same options (medians) | `network: none` job ÷ `docker run --rm --network none` (medians) |',
  );
  lines.push('|---|---:|---:|---:|---:|---|---:|---:|');
  const beforeRows: string[] = [];
  for (const r of results) {
    if (r.jobs.jobBefore.length) {
      const after = summarize(r.jobs.job.map((j) => j.total));
      const earlier = summarize(r.jobs.jobBefore.map((j) => j.total));
      beforeRows.push(
        `| ${r.oci} | ${fmtMs(earlier.median)} | ${fmtMs(after.median)} | **${fmtRatio(after.median / earlier.median)}** | ${fmtRatio(after.mean / earlier.mean)} | ` +
          `${fmtRatio(earlier.median / summarize(r.runs.plain).median)} → ${fmtRatio(after.median / summarize(r.runs.plain).median)} |`,
      );
    }
    const plain = summarize(r.runs.plain);
    const total = summarize(r.jobs.job.map((j) => j.total));
    const ratio = total.median / plain.median;
    const noneRatio = summarize(r.jobs.jobNone.map((j) => j.total)).median / summarize(r.runs.none).median;
    lines.push(
      `| ${r.oci} | ${fmtMs(plain.median)} | ${fmtMs(total.median)} | **${fmtRatio(ratio)}** | ${fmtRatio(total.mean / plain.mean)} | ` +
        `${ratio <= GOAL ? 'met' : 'missed'} | ${fmtRatio(total.median / summarize(r.runs.flags).median)} | ${fmtRatio(noneRatio)} |`,
    );
  }
  if (beforeRows.length) {
    lines.push(
      '',
      `Against ${BEFORE_LABEL}, whose executor ran its own queue on the same server, its jobs alternated with the rest in the same blocks:`,
      '',
      '| OCI runtime | job before (median) | job now (median) | now ÷ before (medians) | now ÷ before (means) | ÷ plain `docker run --rm`, before → now (medians) |',
      '|---|---:|---:|---:|---:|---|',
      ...beforeRows,
    );
  }
  for (const r of results) lines.push('', runtimeTable(r));
  lines.push('', '### What the overhead is made of', '');
  lines.push('Means add up (the parts of a job sum to its total; medians do not), so the split below uses them.');
  for (const r of results) lines.push('', `- ${explain(r)}`);
  lines.push(
    '',
    "The parts: **queue wait** is the idle executor's held dequeue request being woken by the submit and the job being " +
      'claimed. **Before the step**: the dequeue answer reaching the executor, the job directory, the step script and ' +
      'the log entry. **Step container** is what the runtime does for the step: image check, create, attach, start, ' +
      "wait, output drain and inspect over the Engine API; the container is removed afterwards, off the job's " +
      'critical path (a `docker run --rm`, in contrast, waits for the removal, and pays for starting the CLI). **After ' +
      "the step**: the job directory's removal, the last log upload and the result report to the server.",
    '',
    `Why the network costs time: containers on a user-defined network such as \`${NETWORK}\` get dockerd's embedded DNS ` +
      'resolver (`nameserver 127.0.0.11`), and dockerd sets it up at every container start by re-executing itself into the ' +
      "container's network namespace and adding NAT rules there with `iptables`, one process per rule (eleven on this " +
      "engine, seen by tracing dockerd's `execve` calls while one container started). The default `bridge` network has " +
      'no such resolver. Dockhand uses its own network for isolation: no traffic between job containers, and the ' +
      'cloud metadata address blocked on its bridge. A job that needs no network can ask for `network: none` (or an ' +
      'executor can force it with `EXECUTOR_DOCKER_NETWORK=none`); the last rows of each table show what that costs.',
  );
  return lines.join('\n');
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
