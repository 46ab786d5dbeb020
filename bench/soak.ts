// Soak: many jobs through one real `dockhand server` and real `dockhand executor` processes (shell runtime) while
// things go wrong on purpose: some steps exit non-zero, some jobs are canceled (before or while they run), and an
// executor is killed with SIGKILL every few seconds and replaced by a new one, so the reaper must reset its jobs
// for another executor to run. At the end every job's final state is reconciled against what was submitted. Not a
// benchmark (no number is judged) and not in CI by default: `all.js` runs it only when named (`--tiny soak` in CI).
//
// Usage: node dist-bench/bench/soak.js [--tiny] [--jobs N] [--executors N] [--store sqlite|postgres]
//   [--fail-rate F] [--cancel-rate F] [--sleep-rate F] [--kill-every SECONDS] [--seed N] [--slots N]
//   [--stall-timeout SECONDS] [--max-resets N] [--check N] [--deadline SECONDS] [--stuck-after SECONDS]
// Each option falls back to an environment variable: SOAK_JOBS, SOAK_EXECUTORS, SOAK_STORE, SOAK_FAIL_RATE, …
// (the option's name in capitals, dashes as underscores, after SOAK_). --tiny: 400 jobs, 2 executors, a kill every
// 2 s, every job's attempts and log checked (what CI runs). Exits 1 with the list of discrepancies if any.
import { rm } from 'node:fs/promises';
import type { PostgresHandle } from '../test/support/postgres.js';
import { ensurePostgres, freshDatabase } from './services.js';
import { api, flag, num, opt, sleep, startExecutor, startServer, tempDir, type Proc } from './lib.js';
import { describeMachine } from './machine.js';

const TINY = flag('--tiny');
/** `--name VALUE`, else SOAK_NAME from the environment. */
const setting = (name: string): string | undefined =>
  opt(`--${name}`) ?? process.env[`SOAK_${name.toUpperCase().replaceAll('-', '_')}`];

const JOBS = num(setting('jobs'), TINY ? 400 : 100_000);
const EXECUTORS = num(setting('executors'), TINY ? 2 : 4);
const STORE = setting('store') ?? 'sqlite';
const FAIL_RATE = num(setting('fail-rate'), 0.1);
const CANCEL_RATE = num(setting('cancel-rate'), 0.05);
/** Jobs whose step sleeps a little before its end, so that cancels and kills also hit running jobs. */
const SLEEP_RATE = num(setting('sleep-rate'), 0.2);
const KILL_EVERY_S = num(setting('kill-every'), TINY ? 2 : 10);
const SEED = num(setting('seed'), Math.floor(Math.random() * 2 ** 31));
/** Job slots per executor (EXECUTOR_MAXIMUM_NUM_JOBS): a kill takes up to this many running jobs with it. */
const SLOTS = num(setting('slots'), 32);
/**
 * A short stall timeout gets a killed executor's jobs reset and run again within seconds; heartbeats every
 * HEARTBEAT_S keep live executors well inside it even on a loaded machine.
 */
const STALL_TIMEOUT_S = num(setting('stall-timeout'), 5);
const HEARTBEAT_S = Math.min(1, STALL_TIMEOUT_S / 5);
/** Enough that a job caught by several kills in a row is still run; a job that exhausts them is counted apart. */
const MAX_RESETS = num(setting('max-resets'), 10);
/** Jobs whose attempts and log are fetched and checked (besides every job that was reset): all of them when tiny. */
const CHECK = num(setting('check'), TINY ? Number.POSITIVE_INFINITY : 2000);
const DEADLINE_S = num(setting('deadline'), Math.max(300, Math.ceil(JOBS / 20)));
/** No job reaching a terminal state for this long means something is stuck: fail now, not at the deadline. */
const STUCK_S = num(setting('stuck-after'), 120);

const QUEUE = 'soak';
const BULK = 1000;
const POLL_MS = 200;
const FAIL_EXIT = 3;

function usage(problem: string): never {
  console.error(`soak: ${problem}`);
  process.exit(2);
}
const isRate = (x: number): boolean => Number.isFinite(x) && x >= 0 && x <= 1;
const isCount = (x: number, min = 1): boolean => Number.isInteger(x) && x >= min;
if (!isCount(JOBS)) usage('--jobs must be a whole number ≥ 1');
if (!isCount(EXECUTORS)) usage('--executors must be a whole number ≥ 1');
if (STORE !== 'sqlite' && STORE !== 'postgres') usage('--store must be sqlite or postgres');
if (!isRate(FAIL_RATE) || !isRate(CANCEL_RATE) || !isRate(SLEEP_RATE)) usage('rates must be between 0 and 1');
if (!Number.isFinite(KILL_EVERY_S) || KILL_EVERY_S < 0) usage('--kill-every must be ≥ 0 seconds (0: no kills)');
if (!isCount(SEED, 0)) usage('--seed must be a whole number ≥ 0');
if (!isCount(SLOTS)) usage('--slots must be a whole number ≥ 1');
if (!(STALL_TIMEOUT_S >= 0.2)) usage('--stall-timeout must be ≥ 0.2 seconds');
if (!isCount(MAX_RESETS, 0) || MAX_RESETS > 100) usage('--max-resets must be 0 to 100');
if (!(CHECK >= 0)) usage('--check must be ≥ 0');

/** mulberry32: a small seeded generator, so that `--seed` gives the same mix of jobs and the same kill choices. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// ---- the plan: what each job does, and when it is canceled ----

interface Plan {
  fail: boolean;
  sleepMs: number;
  /**
   * Cancel the job once this many jobs are terminal, or never (null). Jobs are taken roughly in submit order, so a
   * trigger a little below the job's own index lands while it waits in the queue or while it runs: a random time
   * before or during its run that follows the run's real pace instead of a guessed one.
   */
  cancelAt: number | null;
}

function makePlans(random: () => number): Plan[] {
  const inFlight = EXECUTORS * SLOTS;
  return Array.from({ length: JOBS }, (_, i) => ({
    fail: random() < FAIL_RATE,
    sleepMs: random() < SLEEP_RATE ? 100 + Math.floor(random() * 1400) : 0,
    cancelAt: random() < CANCEL_RATE ? Math.max(0, i - Math.floor(random() * 2 * inFlight)) : null,
  }));
}

/** The line a job prints on success: its id (from the executor) and its index (from the spec) must agree. */
const okLine = (id: number, index: number): string => `stdout: soak job ${id} #${index} ok\n`;

function stepOf(plan: Plan, index: number): { key: string; run: string } {
  const lines: string[] = [];
  if (plan.sleepMs) lines.push(`sleep ${(plan.sleepMs / 1000).toFixed(3)}`);
  if (plan.fail) lines.push(`echo "soak job $DOCKHAND_JOB_ID #${index} fails" >&2`, `exit ${FAIL_EXIT}`);
  else lines.push(`echo "soak job $DOCKHAND_JOB_ID #${index} ok"`);
  return { key: 'work', run: lines.join('\n') };
}

// ---- the client API, as far as the soak reads it ----

interface Job {
  id: number;
  state: string;
  attempt: number;
  numResets: number;
  cancelRequested: boolean;
  failureMessage: string | null;
  executorName: string | null;
}
interface Attempt {
  attempt: number;
  startedAt: number;
  finishedAt: number | null;
  executorName: string | null;
  outcome: string | null;
  message: string | null;
}
interface QueueRow {
  queue: string;
  queued: number;
  processing: number;
}

const httpStatus = (err: unknown): number | undefined => {
  const m = /: HTTP (\d{3}):/.exec((err as Error).message);
  return m ? Number(m[1]) : undefined;
};

/** Retries calls that failed without an answer or with a 5xx (a loaded server may shed a request), not other errors. */
async function call<T>(url: string, method: string, route: string, body?: unknown): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await api<T>(url, method, route, body);
    } catch (err) {
      const status = httpStatus(err);
      if ((status !== undefined && status < 500) || tries >= 5) throw err;
      await sleep(200 * tries);
    }
  }
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** What the cancel call answered. */
type CancelResult =
  | { kind: 'before-start' } // queued, never dequeued: canceled at once
  | { kind: 'queued-after-reset' } // queued again after a reset: canceled at once
  | { kind: 'running'; attempt: number; cancelRequested: boolean; sentAt: number; answeredAt: number } // processing
  | { kind: 'too-late'; state: string } // it had already ended: 409
  | { kind: 'error'; message: string };

// ---- the run ----

interface Run {
  url: string;
  ids: number[];
  submitted: number;
  cancels: Map<number, CancelResult>;
  kills: number;
  elapsedMs: number;
}

const secs = (ms: number): string => `${Math.round(ms / 1000)} s`;

/** Kills a random executor every KILL_EVERY_S (SIGKILL: no goodbye, no report) and starts a new one in its place. */
function startKiller(
  executors: Proc[],
  spawnExecutor: () => Promise<Proc>,
  random: () => number,
): { stop(): Promise<number>; failure(): Error | undefined } {
  let stopped = false;
  let kills = 0;
  let error: Error | undefined;
  let wake: () => void = () => {};
  const loop = (async (): Promise<void> => {
    if (KILL_EVERY_S <= 0) return;
    while (!stopped) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, KILL_EVERY_S * 1000);
      });
      if (stopped) return;
      const i = Math.floor(random() * executors.length);
      executors[i].child.kill('SIGKILL');
      kills++;
      executors[i] = await spawnExecutor();
    }
  })().catch((err: Error) => void (error = new Error(`starting a replacement executor failed: ${err.message}`)));
  return {
    async stop(): Promise<number> {
      stopped = true;
      wake();
      await loop;
      return kills;
    },
    failure: () => error,
  };
}

async function listJobs(url: string, state?: string, max = Number.POSITIVE_INFINITY): Promise<Job[]> {
  const jobs: Job[] = [];
  let before: number | null = null;
  do {
    const query = new URLSearchParams({ queue: QUEUE, limit: '500' });
    if (state) query.set('state', state);
    if (before !== null) query.set('before', String(before));
    const page: { jobs: Job[]; nextBefore: number | null } = await call(url, 'GET', `/jobs?${query}`);
    for (const j of page.jobs) {
      jobs.push({
        id: j.id,
        state: j.state,
        attempt: j.attempt,
        numResets: j.numResets,
        cancelRequested: j.cancelRequested,
        failureMessage: j.failureMessage,
        executorName: j.executorName,
      });
    }
    before = page.nextBefore;
  } while (before !== null && jobs.length < max);
  return jobs;
}

async function soak(url: string, plans: Plan[], executors: Proc[], spawnExecutor: () => Promise<Proc>): Promise<Run> {
  const ids: number[] = new Array<number>(JOBS);
  const cancels = new Map<number, CancelResult>();
  let submitted = 0;
  let submitError: Error | undefined;
  const t0 = Date.now();
  const killer = startKiller(executors, spawnExecutor, rng(SEED + 1));

  const submission = (async (): Promise<void> => {
    for (let start = 0; start < JOBS; start += BULK) {
      const batch = plans
        .slice(start, start + BULK)
        .map((plan, k) => ({ queue: QUEUE, steps: [stepOf(plan, start + k)] }));
      // Not retried: a batch is all or none, but an answer lost after the commit would submit it twice.
      const { jobs } = await api<{ jobs: Job[] }>(url, 'POST', '/jobs/batch', { jobs: batch });
      jobs.forEach((j, k) => (ids[start + k] = j.id));
      submitted = start + jobs.length;
    }
  })().catch((err: Error) => void (submitError = err));

  const targets = plans
    .map((p, i) => i)
    .filter((i) => plans[i].cancelAt !== null)
    .sort((a, b) => plans[a].cancelAt! - plans[b].cancelAt!);
  let nextTarget = 0;
  const cancel = async (index: number): Promise<void> => {
    const id = ids[index];
    const sentAt = Date.now();
    try {
      const { job } = await call<{ job: Job }>(url, 'POST', `/jobs/${id}/cancel`);
      if (job.state === 'canceled')
        cancels.set(id, { kind: job.attempt === 0 ? 'before-start' : 'queued-after-reset' });
      else if (job.state === 'processing') {
        cancels.set(id, {
          kind: 'running',
          attempt: job.attempt,
          cancelRequested: job.cancelRequested,
          sentAt,
          answeredAt: Date.now(),
        });
      } else {
        // A job that ended before the cancel took effect must be answered 409, never 200 with the finished job.
        cancels.set(id, { kind: 'error', message: `answered 200 with the job already ${job.state} (409 expected)` });
      }
    } catch (err) {
      const message = (err as Error).message;
      cancels.set(
        id,
        httpStatus(err) === 409
          ? { kind: 'too-late', state: /already (\w+)/.exec(message)?.[1] ?? '?' }
          : { kind: 'error', message },
      );
    }
  };

  const deadline = t0 + DEADLINE_S * 1000;
  let lastTerminal = -1;
  let lastProgressAt = Date.now();
  let lastReport = Date.now();
  let stuck: string | undefined;
  let kills = 0;
  let finishedAt = 0;
  try {
    for (;;) {
      if (submitError) throw new Error(`submitting failed after ${submitted} jobs: ${submitError.message}`);
      const killerError = killer.failure();
      if (killerError) throw killerError;
      const { queues } = await call<{ queues: QueueRow[] }>(url, 'GET', '/queues');
      const row = queues.find((r) => r.queue === QUEUE) ?? { queued: 0, processing: 0 };
      // Jobs of a batch being submitted may already be counted as queued: this can only undercount.
      const open = row.queued + row.processing;
      const terminal = Math.max(0, submitted - open);

      const due: number[] = [];
      while (
        nextTarget < targets.length &&
        plans[targets[nextTarget]].cancelAt! <= terminal &&
        targets[nextTarget] < submitted
      ) {
        due.push(targets[nextTarget++]);
      }
      await pool(due, 16, cancel);

      const now = Date.now();
      if (terminal !== lastTerminal) {
        lastTerminal = terminal;
        lastProgressAt = now;
      }
      if (now - lastReport >= 10_000) {
        lastReport = now;
        console.error(
          `soak: ${secs(now - t0)}: submitted ${submitted}, terminal ${terminal}, queued ${row.queued}, processing ${row.processing}; ` +
            `${cancels.size} cancels sent`,
        );
      }
      if (submitted === JOBS && nextTarget === targets.length && open === 0) {
        finishedAt = now;
        break;
      }
      if (now > deadline) stuck = `not every job is terminal after the ${DEADLINE_S} s deadline`;
      else if (now - lastProgressAt > STUCK_S * 1000) stuck = `no job became terminal for ${STUCK_S} s`;
      if (stuck) break;
      await sleep(POLL_MS);
    }
  } finally {
    // Kills stop here: what is left to do is reading the results.
    kills = await killer.stop();
    await submission;
  }
  if (stuck) {
    const open = [
      ...(await listJobs(url, 'queued', 50)).slice(0, 50),
      ...(await listJobs(url, 'processing', 50)).slice(0, 50),
    ];
    const list = open.map(
      (j) =>
        `  job ${j.id}: ${j.state}, attempt ${j.attempt}, executor ${j.executorName ?? '–'}, resets ${j.numResets}${j.cancelRequested ? ', cancel requested' : ''}`,
    );
    throw new Error(`soak: STUCK: ${stuck} (${kills} executor kills); open jobs (up to 100):\n${list.join('\n')}`);
  }
  return { url, ids, submitted, cancels, kills, elapsedMs: finishedAt - t0 };
}

// ---- reconciliation ----

interface Counts {
  completed: number;
  failed: number;
  canceled: number;
  /** Failed because the reaper reset the job more than MAX_RESETS times: a failed state, reported apart. */
  errored: number;
}

const RESETS_EXHAUSTED = /because its executor stopped sending heartbeats/;

interface Reconciled {
  actual: Counts;
  expected: Counts;
  resets: number;
  resetJobs: number;
  checked: number;
  problems: string[];
}

async function reconcile(run: Run, plans: Plan[]): Promise<Reconciled> {
  const problems: string[] = [];
  const problem = (p: string): void => void problems.push(p);
  const listed = await listJobs(run.url);
  const byId = new Map<number, Job>();
  for (const j of listed) {
    if (byId.has(j.id)) problem(`job ${j.id} is listed twice`);
    byId.set(j.id, j);
  }
  const indexOf = new Map<number, number>(run.ids.map((id, i) => [id, i]));
  for (const j of listed) if (!indexOf.has(j.id)) problem(`job ${j.id} is in queue ${QUEUE} but was never submitted`);

  const actual: Counts = { completed: 0, failed: 0, canceled: 0, errored: 0 };
  const expected: Counts = { completed: 0, failed: 0, canceled: 0, errored: 0 };
  let resets = 0;
  let resetJobs = 0;
  const toCheck: number[] = [];
  const others: number[] = [];
  /** Jobs that ended in the wrong state: their attempts are listed with the discrepancies. */
  const wrong: number[] = [];
  run.ids.forEach((id, index) => {
    const plan = plans[index];
    const job = byId.get(id);
    const cancel = run.cancels.get(id);
    const canceled = cancel !== undefined && cancel.kind !== 'too-late' && cancel.kind !== 'error';
    if (cancel?.kind === 'error') problem(`job ${id}: the cancel call failed: ${cancel.message}`);
    if (cancel?.kind === 'running' && !cancel.cancelRequested)
      problem(`job ${id}: the cancel answered processing without cancelRequested`);
    if (!job) {
      problem(`job ${id} (#${index}) was submitted but is gone (lost)`);
      return;
    }
    resets += job.numResets;
    if (job.numResets > 0) resetJobs++;
    const exhausted = job.state === 'failed' && RESETS_EXHAUSTED.test(job.failureMessage ?? '');
    if (job.state === 'completed') actual.completed++;
    else if (job.state === 'canceled') actual.canceled++;
    else if (exhausted) actual.errored++;
    else if (job.state === 'failed') actual.failed++;
    else problem(`job ${id} is ${job.state}, not terminal`);

    // What it should have become: canceled if a cancel was accepted, else what its step does (or errored, which a
    // kill can cause to any job that is not canceled: counted, not a discrepancy).
    const want = canceled ? 'canceled' : exhausted ? 'errored' : plan.fail ? 'failed' : 'completed';
    expected[want]++;
    const got = exhausted ? 'errored' : job.state;
    if (got !== want) {
      const why = !cancel
        ? 'not canceled'
        : cancel.kind === 'too-late'
          ? `cancel too late: already ${cancel.state} (HTTP 409)`
          : cancel.kind === 'running'
            ? `cancel sent at ${cancel.sentAt}, answered processing at attempt ${cancel.attempt}, cancelRequested ` +
              `${cancel.cancelRequested} at ${cancel.answeredAt}`
            : `cancel: ${cancel.kind}`;
      problem(
        `job ${id} (#${index}, step ${plan.fail ? 'fails' : 'succeeds'}; ${why}) ended ${got}, expected ${want} ` +
          `(now attempt ${job.attempt}, cancelRequested ${job.cancelRequested}, resets ${job.numResets}, message ${JSON.stringify(job.failureMessage)})`,
      );
      wrong.push(id);
    }
    if (cancel?.kind === 'before-start' && job.attempt !== 0)
      problem(`job ${id} was canceled before it started but has ${job.attempt} attempt(s)`);
    if (
      job.state === 'failed' &&
      !exhausted &&
      !new RegExp(`exit code ${FAIL_EXIT}\\b`).test(job.failureMessage ?? '')
    ) {
      problem(`job ${id} failed with an unexpected message: ${job.failureMessage}`);
    }
    // Every job that ran more than once, or was canceled while it ran, is checked; the others by sample.
    if (job.attempt > 1 || job.numResets > 0 || cancel?.kind === 'running') toCheck.push(id);
    else others.push(id);
  });

  // A sample of the rest, drawn with the seed so a rerun checks the same ones.
  const random = rng(SEED + 2);
  for (let i = others.length - 1; i > 0; i--) {
    const k = Math.floor(random() * (i + 1));
    [others[i], others[k]] = [others[k], others[i]];
  }
  toCheck.push(...others.slice(0, Math.min(others.length, CHECK)));
  await pool(toCheck, 8, async (id) => {
    const job = byId.get(id)!;
    const { attempts } = await call<{ attempts: Attempt[] }>(run.url, 'GET', `/jobs/${id}`);
    const outcomes = attempts.map((a) => `${a.attempt}:${a.outcome ?? 'running'}`).join(', ');
    const completedAttempts = attempts.filter((a) => a.outcome === 'completed');
    if (attempts.some((a) => a.outcome === null))
      problem(`job ${id} is ${job.state} but has an attempt still running (${outcomes})`);
    if (attempts.length !== job.attempt)
      problem(`job ${id} is at attempt ${job.attempt} but has ${attempts.length} attempts (${outcomes})`);
    if (job.state !== 'completed') {
      if (completedAttempts.length) problem(`job ${id} is ${job.state} but an attempt completed (${outcomes})`);
      return;
    }
    if (completedAttempts.length !== 1 || completedAttempts[0].attempt !== job.attempt) {
      problem(`job ${id} completed, but not by exactly its last attempt (${outcomes})`);
    }
    const { entries } = await call<{ entries: { out: string }[] }>(run.url, 'GET', `/jobs/${id}/logs`);
    const log = entries.map((e) => e.out).join('');
    const line = okLine(id, indexOf.get(id)!);
    const times = log.split(line).length - 1;
    if (times !== 1)
      problem(
        `job ${id}: its log has its line ${JSON.stringify(line.trim())} ${times} times, not once: ${JSON.stringify(log.slice(0, 300))}`,
      );
  });

  await pool(wrong.slice(0, 50), 8, async (id) => {
    const { attempts } = await call<{ attempts: Attempt[] }>(run.url, 'GET', `/jobs/${id}`);
    const list = attempts.map(
      (a) =>
        `${a.attempt} on ${a.executorName ?? '–'} ${a.startedAt}–${a.finishedAt ?? ''}: ${a.outcome ?? 'running'}${a.message ? ` (${a.message})` : ''}`,
    );
    problem(`job ${id}'s attempts: ${list.join('; ') || 'none'}`);
  });

  const sum = actual.completed + actual.failed + actual.canceled + actual.errored;
  if (sum !== run.submitted) problem(`the terminal states add up to ${sum}, not the ${run.submitted} jobs submitted`);
  if (listed.length !== run.submitted)
    problem(`queue ${QUEUE} lists ${listed.length} jobs, not the ${run.submitted} submitted`);
  return { actual, expected, resets, resetJobs, checked: toCheck.length, problems };
}

function cancelCounts(cancels: Map<number, CancelResult>): Record<CancelResult['kind'], number> {
  const counts = { 'before-start': 0, 'queued-after-reset': 0, running: 0, 'too-late': 0, error: 0 };
  for (const c of cancels.values()) counts[c.kind]++;
  return counts;
}

function report(run: Run, r: Reconciled): string {
  const { actual: a, expected: e } = r;
  const c = cancelCounts(run.cancels);
  return [
    '| final state | jobs | expected |',
    '|---|---:|---:|',
    `| completed | ${a.completed} | ${e.completed} |`,
    `| failed (step exited ${FAIL_EXIT}) | ${a.failed} | ${e.failed} |`,
    `| failed (reset more than ${MAX_RESETS} times) | ${a.errored} | ${e.errored} |`,
    `| canceled | ${a.canceled} | ${e.canceled} |`,
    `| **all** | **${a.completed + a.failed + a.errored + a.canceled}** | **${run.submitted}** submitted |`,
    '',
    '| event | count |',
    '|---|---:|',
    `| cancels sent | ${run.cancels.size} |`,
    `| … canceled before it started | ${c['before-start']} |`,
    `| … canceled while queued again after a reset | ${c['queued-after-reset']} |`,
    `| … canceled while running | ${c.running} |`,
    `| … too late (already finished: 409) | ${c['too-late']} |`,
    `| executor kills (SIGKILL) | ${run.kills} |`,
    `| resets (jobs reset) | ${r.resets} (${r.resetJobs}) |`,
    `| jobs whose attempts and log were checked | ${r.checked} |`,
  ].join('\n');
}

// ---- main ----

async function main(): Promise<void> {
  const plans = makePlans(rng(SEED));
  console.error(
    `soak: ${JOBS} jobs, ${EXECUTORS} executors × ${SLOTS} slots, ${STORE}, seed ${SEED} (rerun with --seed ${SEED}); fail ${FAIL_RATE}, ` +
      `cancel ${CANCEL_RATE}, sleep ${SLEEP_RATE}; a kill every ${KILL_EVERY_S} s; stall timeout ${STALL_TIMEOUT_S} s, max resets ${MAX_RESETS}; ` +
      describeMachine(),
  );
  const dataDir = await tempDir('soak');
  const workDir = await tempDir('soak-work');
  let pgHandle: PostgresHandle | undefined;
  let database: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  let server: Proc | undefined;
  const executors: Proc[] = [];
  let started = 0;
  try {
    if (STORE === 'postgres') {
      pgHandle = await ensurePostgres();
      database = await freshDatabase(pgHandle.url, `bench_soak_${process.pid}`);
    }
    const s = await startServer(dataDir, {
      ...(database ? { DOCKHAND_DATABASE_URL: database.url } : {}),
      DOCKHAND_STALLED_JOB_TIMEOUT: String(STALL_TIMEOUT_S),
      DOCKHAND_MAX_JOB_RESETS: String(MAX_RESETS),
    });
    server = s.proc;
    const spawnExecutor = (): Promise<Proc> =>
      startExecutor(s.url, {
        // A new name for each: a replacement is a new executor, as a restarted machine's would be in a fleet.
        EXECUTOR_NAME: `soak-${++started}`,
        EXECUTOR_QUEUE_NAME: QUEUE,
        EXECUTOR_RUNTIME: 'shell',
        EXECUTOR_WORKSPACE_ROOT: workDir,
        EXECUTOR_MAXIMUM_NUM_JOBS: String(SLOTS),
        EXECUTOR_HEARTBEAT_INTERVAL: String(HEARTBEAT_S),
      });
    for (let i = 0; i < EXECUTORS; i++) executors.push(await spawnExecutor());

    const run = await soak(s.url, plans, executors, spawnExecutor);
    const r = await reconcile(run, plans);
    const { actual: a } = r;
    const ok = r.problems.length === 0;
    console.log(`\n${report(run, r)}\n`);
    if (!ok) {
      const shown = r.problems.slice(0, 200);
      console.log(
        `discrepancies (${r.problems.length}${r.problems.length > shown.length ? `, first ${shown.length}` : ''}):\n${shown.map((p) => `- ${p}`).join('\n')}\n`,
      );
      process.exitCode = 1;
    }
    const seconds = run.elapsedMs / 1000;
    console.log(
      `soak: ${run.submitted} jobs in ${Math.round(seconds)} s (${Math.round(run.submitted / seconds)} jobs/s) on ${STORE}: ` +
        `completed ${a.completed}, failed ${a.failed}, canceled ${a.canceled}, errored ${a.errored}; ` +
        `${run.kills} executor kills, ${r.resets} resets; ${ok ? 'reconciled OK' : `reconciled with ${r.problems.length} discrepancies`} (seed ${SEED})`,
    );
  } catch (err) {
    if (server && !server.running) console.error(`the server exited:\n${server.tail()}`);
    throw err;
  } finally {
    await Promise.all(executors.map((e) => e.stop()));
    await server?.stop();
    await database?.drop().catch(() => {});
    await pgHandle?.stop().catch((err: Error) => console.error(`stopping PostgreSQL: ${err.message}`));
    await rm(dataDir, { recursive: true, force: true });
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
