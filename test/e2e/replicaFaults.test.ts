// Replicas under faults, with real processes on a real PostgreSQL: a replica killed with -9 in the middle of a
// 2,000-job run behind a load balancer, and one server's PostgreSQL connections cut and restored (through a TCP
// proxy), once while a single job runs and once while executors keep transactions in flight.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { http, TestClient, type HttpAnswer } from '../support/api.js';
import { createTestDatabase } from '../support/postgres.js';
import { startExecutor, startServer, tempDir, type ServerHandle } from '../support/processes.js';
import { startBalancer, targetOf } from '../support/tcpBalancer.js';
import { until } from '../support/wait.js';
import type { JobRecord } from '../../src/store/store.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  // Last registered first: processes, then the balancers they talk through, then their database.
  for (const fn of cleanup.reverse()) await fn().catch((err: Error) => console.warn(`cleanup: ${err.message}`));
  cleanup = [];
});

/** Registers `fn` to run after the test; later registrations run first (processes before their database). */
function defer(fn: () => Promise<unknown>): void {
  cleanup.push(async () => void (await fn()));
}

function alive(server: ServerHandle): boolean {
  return server.proc.child.exitCode === null && server.proc.child.signalCode === null;
}

/** Undefined while the server runs; once it has exited, how, with its output since `from` (request errors left out). */
function exitReport(server: ServerHandle, from = 0): string | undefined {
  if (alive(server)) return undefined;
  const { exitCode, signalCode } = server.proc.child;
  const output = server.proc.output
    .slice(from)
    .split('\n')
    .filter((l) => !l.includes('"request failed"'))
    .join('\n');
  return `the server exited (code ${exitCode}, signal ${signalCode}); its output:\n${output.slice(-4000)}`;
}

/** `url` (a postgres:// URL) with its port replaced by a proxy's. */
function viaProxy(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/** Queued and processing jobs of `queue`, from GET /api/v1/queues. */
async function queueCounts(client: TestClient, queue: string): Promise<{ queued: number; processing: number }> {
  const answer = await client.call<{ queues: { queue: string; queued: number; processing: number }[] }>(
    'GET',
    '/queues',
  );
  if (answer.status !== 200) throw new Error(`GET /queues: ${answer.status} ${JSON.stringify(answer.body)}`);
  const row = answer.body.queues.find((q) => q.queue === queue);
  return { queued: Number(row?.queued ?? 0), processing: Number(row?.processing ?? 0) };
}

type JobPage = { jobs: JobRecord[]; nextBefore: number | null };

/** Every job of `queue`, paging through GET /api/v1/jobs (newest first, 500 a page). */
async function allJobs(client: TestClient, queue: string): Promise<JobRecord[]> {
  const jobs: JobRecord[] = [];
  let before: number | null = null;
  do {
    const answer: HttpAnswer<JobPage> = await client.call<JobPage>(
      'GET',
      `/jobs?queue=${queue}&limit=500${before === null ? '' : `&before=${before}`}`,
    );
    if (answer.status !== 200) throw new Error(`GET /jobs: ${answer.status} ${JSON.stringify(answer.body)}`);
    jobs.push(...answer.body.jobs);
    before = answer.body.nextBefore;
  } while (before !== null);
  return jobs;
}

describe('replicas under faults', () => {
  it('two replicas, four executors, 2,000 jobs, each completes exactly once; a replica killed mid-run, work continues through the other', async () => {
    const began = Date.now();
    const TOTAL = 2_000;
    const queue = 'rf';
    const dir = await tempDir('replica-kill');
    const runs = path.join(dir, 'runs');

    const database = await createTestDatabase('replica_faults');
    defer(() => database.drop());
    const replicas = await Promise.all(
      ['a', 'b'].map((name) =>
        startServer({ name: `rf-replica-${name}`, env: { DOCKHAND_DATABASE_URL: database.url } }),
      ),
    );
    const [doomed, survivor] = replicas;
    const balancer = await startBalancer(replicas.map((r) => targetOf(r.url)));
    defer(() => balancer.close());
    for (const r of replicas) defer(() => r.stop());
    const executors = await Promise.all(
      [1, 2, 3, 4].map((i) =>
        startExecutor(balancer.url, { name: `rf-exec-${i}`, queues: [queue], env: { EXECUTOR_MAXIMUM_NUM_JOBS: '4' } }),
      ),
    );
    for (const e of executors) defer(() => e.stop());
    const started = Date.now();

    // Submit through the balancer, 100 at a time.
    const viaBalancer = new TestClient(balancer.url);
    const submitted: number[] = [];
    for (let i = 0; i < TOTAL; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, TOTAL - i) }, () =>
          viaBalancer.submit({ queue, steps: [{ key: 'mark', run: `echo "$DOCKHAND_JOB_ID" >> ${runs}` }] }),
        ),
      );
      submitted.push(...batch.map((j) => j.id));
    }
    const submittedIn = Date.now() - started;

    // About a third done: kill -9 replica A, wherever the executors' requests were at that moment.
    const direct = new TestClient(survivor.url);
    const atKill = await until(
      'a third of the jobs to complete',
      async () => {
        const { queued, processing } = await queueCounts(direct, queue);
        const completed = TOTAL - queued - processing;
        return completed >= TOTAL / 3 ? { completed, queued, processing } : undefined;
      },
      90_000,
      50,
    );
    const executorLogAtKill = executors.map((e) => e.proc.output.length);
    doomed.proc.signal('SIGKILL');
    await doomed.proc.exit();
    const killedAt = Date.now();
    // The kill must land mid-run, or it proves nothing.
    expect(atKill.completed).toBeLessThan(TOTAL * 0.8);

    await until(
      'every job to finish after the kill',
      async () => {
        const { queued, processing } = await queueCounts(direct, queue);
        return queued + processing === 0 ? true : undefined;
      },
      90_000,
      200,
      () => exitReport(survivor),
    );
    const finishedAt = Date.now();

    const jobs = await allJobs(direct, queue);
    const lines = readFileSync(runs, 'utf8').trim().split('\n').map(Number);
    const runsOf = new Map<number, number>();
    for (const id of lines) runsOf.set(id, (runsOf.get(id) ?? 0) + 1);
    const twice = [...runsOf].filter(([, n]) => n > 1);
    const moreAttempts = jobs.filter((j) => j.attempt > 1);
    const history = await Promise.all(
      moreAttempts.map(async (j) => ({ job: j, attempts: (await direct.job(j.id)).attempts })),
    );
    const report = {
      totalMs: Date.now() - began,
      submitMs: submittedIn,
      untilKillMs: killedAt - started,
      afterKillMs: finishedAt - killedAt,
      atKill,
      balancer: { forwarded: balancer.forwarded, refused: balancer.refused },
      ranTwice: twice,
      jobsWithSeveralAttempts: history.map(({ job, attempts }) => ({
        id: job.id,
        numResets: job.numResets,
        numFailures: job.numFailures,
        attempts: attempts.map((a) => ({
          attempt: a.attempt,
          executor: a.executorName,
          outcome: a.outcome,
          message: a.message,
        })),
      })),
      resetsLoggedBySurvivor: survivor.proc.output.split('\n').filter((l) => l.includes('job reset')),
      // What the executors felt of the kill: requests that failed and were retried through the balancer.
      executorRetriesAfterKill: Object.fromEntries(
        ['dequeue failed', 'heartbeat failed', 'cannot deliver the result yet', 'abandoning job'].map((msg) => [
          msg,
          executors.reduce((n, e, i) => n + e.proc.output.slice(executorLogAtKill[i]).split(msg).length - 1, 0),
        ]),
      ),
    };
    console.log(`replica kill run: ${JSON.stringify(report, null, 2)}`);

    // Each job was submitted once, ran once and completed.
    expect(jobs.map((j) => j.id).sort((a, b) => a - b)).toEqual([...submitted].sort((a, b) => a - b));
    expect(
      jobs.filter((j) => j.state !== 'completed').map((j) => ({ id: j.id, state: j.state, message: j.failureMessage })),
    ).toEqual([]);
    expect(twice).toEqual([]);
    expect([...runsOf.keys()].sort((a, b) => a - b)).toEqual([...submitted].sort((a, b) => a - b));
    // A second attempt only after a reset (a claim whose answer died with replica A): never after an error, and
    // every attempt but the last one ended by the reaper.
    for (const j of jobs)
      expect({ id: j.id, attempt: j.attempt }).toEqual({ id: j.id, attempt: 1 + j.numResets + j.numFailures });
    expect(jobs.filter((j) => j.numFailures > 0).map((j) => j.id)).toEqual([]);
    for (const { job, attempts } of history) {
      expect({ id: job.id, outcomes: attempts.map((a) => a.outcome) }).toEqual({
        id: job.id,
        outcomes: [...Array(job.attempt - 1).fill('reset'), 'completed'],
      });
    }
    // Both replicas took a share of the connections before the kill, and work went on through the other after.
    expect(balancer.forwarded.every((n) => n > 0)).toBe(true);
    expect(alive(survivor)).toBe(true);
  }, 240_000);

  it('PostgreSQL connection loss: health goes unhealthy, the server recovers without a restart, and executors keep their jobs', async () => {
    const queue = 'pgloss';
    const dir = await tempDir('pg-loss');
    const gate = path.join(dir, 'gate');
    const database = await createTestDatabase('pg_loss');
    defer(() => database.drop());
    const proxy = await startBalancer([targetOf(database.url)]);
    defer(() => proxy.close());
    const server = await startServer({
      name: 'pgloss-server',
      env: { DOCKHAND_DATABASE_URL: viaProxy(database.url, proxy.port) },
    });
    defer(() => server.stop());
    const executor = await startExecutor(server.url, {
      name: 'pgloss-exec',
      queues: [queue],
      env: { EXECUTOR_MAXIMUM_NUM_JOBS: '1' },
    });
    defer(() => executor.stop());
    const client = new TestClient(server.url);
    const health = () => http(`${server.url}/healthz`, 'GET', undefined);
    expect((await health()).status).toBe(200);
    const pid = server.proc.pid;

    // About 6 s of work, with a line printed while the database is away (the test opens the gate after the cut).
    const job = await client.submit({
      queue,
      steps: [
        {
          key: 'slow',
          run: `echo before\nsleep 1\nwhile [ ! -f ${gate} ]; do sleep 0.05; done\necho during the outage\nsleep 5\necho after`,
        },
      ],
    });
    await client.waitFor(job.id, (j) => j.state === 'processing', 20_000);
    await until(
      'the first line to reach the server',
      async () => ((await client.logs(job.id)).entries[0]?.out.includes('stdout: before') ? true : undefined),
      20_000,
      50,
    );

    // Cut: no new connections, and every open one (the pool's and the LISTEN connection) dropped at once.
    const serverLogBefore = server.proc.output.length;
    const executorLogBefore = executor.proc.output.length;
    const cutAt = Date.now();
    await proxy.cut();
    writeFileSync(gate, '');
    const crashed = () => exitReport(server, serverLogBefore);
    const unhealthy = await until(
      '/healthz to answer 503',
      async () => {
        const answer = await health().catch(() => undefined);
        return answer?.status === 503 ? answer : undefined;
      },
      10_000,
      50,
      crashed,
    );
    const unhealthyAfterMs = Date.now() - cutAt;
    expect(unhealthyAfterMs).toBeLessThan(5_000);
    expect(unhealthy.body).toMatchObject({ status: 'unhealthy', reason: expect.stringMatching(/^database: /) });
    // The executor feels the outage (three heartbeats in a row fail, about 2 s) but keeps the job running.
    await until(
      'three failed heartbeats',
      async () =>
        (executor.proc.output.slice(executorLogBefore).match(/heartbeat failed/g)?.length ?? 0) >= 3 ? true : undefined,
      15_000,
      50,
      crashed,
    );
    expect(crashed()).toBeUndefined();
    // The API cannot answer either (a 5xx; the executor retries those), but the process is up.
    expect((await client.call('GET', `/jobs/${job.id}`)).status).toBeGreaterThanOrEqual(500);
    expect((await health()).status).toBe(503);

    // Restore on the same port: the same process becomes healthy again.
    await proxy.start();
    const restoredAt = Date.now();
    await until(
      '/healthz to answer 200 again',
      async () => ((await health().catch(() => undefined))?.status === 200 ? true : undefined),
      15_000,
      100,
      crashed,
    );
    const healthyAfterMs = Date.now() - restoredAt;
    expect(crashed()).toBeUndefined();
    expect(server.proc.pid).toBe(pid);

    // The job kept running through the outage: same attempt, completed, its whole output stored, including what
    // it printed while the server could not store it.
    const done = await client.waitForState(job.id, 'completed', 30_000);
    expect(done).toMatchObject({ attempt: 1, numResets: 0, numFailures: 0 });
    expect((await client.logs(job.id)).entries.map((e) => [e.key, e.out, e.exitCode])).toEqual([
      ['step.slow', 'stdout: before\nstdout: during the outage\nstdout: after\n', 0],
    ]);

    // New work runs, and the LISTEN connection is back (the relay says so when it resumes).
    const fresh = await client.submit({ queue, steps: [{ run: 'echo fresh after the outage' }] });
    const freshDone = await client.waitForState(fresh.id, 'completed', 30_000);
    expect((await client.logs(fresh.id)).entries[0].out).toBe('stdout: fresh after the outage\n');
    await server.proc.waitFor(/events again after losing the connection/, 30_000);
    expect(alive(server)).toBe(true);
    console.log(
      `PostgreSQL outage: ${JSON.stringify(
        {
          outageMs: restoredAt - cutAt,
          unhealthyAfterMs,
          healthyAfterMs,
          freshStartLatencyMs: freshDone.startedAt! - freshDone.createdAt,
          // Requests that failed on the database are logged one line each; show how many, and every other line.
          failedRequests: server.proc.output
            .slice(serverLogBefore)
            .split('\n')
            .filter((l) => l.includes('"request failed"')).length,
          serverLog: server.proc.output
            .slice(serverLogBefore)
            .split('\n')
            .filter((l) => l && !l.includes('"request failed"')),
        },
        null,
        2,
      )}`,
    );
  }, 120_000);

  it('PostgreSQL connection loss while executors are busy (transactions in flight): the server stays up, recovers, and every job runs once', async () => {
    const TOTAL = 300;
    const queue = 'pgbusy';
    const dir = await tempDir('pg-busy');
    const runs = path.join(dir, 'runs');
    const database = await createTestDatabase('pg_busy');
    defer(() => database.drop());
    const proxy = await startBalancer([targetOf(database.url)]);
    defer(() => proxy.close());
    // A claim whose answer is lost in the cut is reset after the stall timeout: keep that wait short.
    const server = await startServer({
      name: 'pgbusy-server',
      env: { DOCKHAND_DATABASE_URL: viaProxy(database.url, proxy.port), DOCKHAND_STALLED_JOB_TIMEOUT: '10s' },
    });
    defer(() => server.stop());
    const executors = await Promise.all(
      [1, 2].map((i) => startExecutor(server.url, { name: `pgbusy-exec-${i}`, queues: [queue] })),
    );
    for (const e of executors) defer(() => e.stop());
    const client = new TestClient(server.url);
    const submitted: number[] = [];
    for (let i = 0; i < TOTAL; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: 100 }, () =>
          client.submit({ queue, steps: [{ key: 'mark', run: `echo "$DOCKHAND_JOB_ID" >> ${runs}` }] }),
        ),
      );
      submitted.push(...batch.map((j) => j.id));
    }
    await until(
      'a few dozen jobs to complete',
      async () => {
        const { queued, processing } = await queueCounts(client, queue);
        return TOTAL - queued - processing >= 40 ? true : undefined;
      },
      60_000,
      20,
    );

    // Cut while dequeues, log appends and reports are running their transactions: a connection lost under a
    // transaction must fail that one request (the executor retries it), not the server.
    const serverLogBefore = server.proc.output.length;
    const cutAt = Date.now();
    await proxy.cut();
    const crashed = () => exitReport(server, serverLogBefore);
    const health = async () => (await http(`${server.url}/healthz`, 'GET', undefined).catch(() => undefined))?.status;
    await until(
      '/healthz to answer 503',
      async () => ((await health()) === 503 ? true : undefined),
      10_000,
      50,
      crashed,
    );
    const executorLogBefore = executors[0].proc.output.length;
    await until(
      'two failed heartbeats',
      async () =>
        (executors[0].proc.output.slice(executorLogBefore).match(/heartbeat failed/g)?.length ?? 0) >= 2
          ? true
          : undefined,
      15_000,
      50,
      crashed,
    );

    await proxy.start();
    const restoredAt = Date.now();
    await until(
      '/healthz to answer 200 again',
      async () => ((await health()) === 200 ? true : undefined),
      15_000,
      100,
      crashed,
    );
    await until(
      'every job to finish',
      async () => {
        const { queued, processing } = await queueCounts(client, queue);
        return queued + processing === 0 ? true : undefined;
      },
      60_000,
      200,
      crashed,
    );
    expect(crashed()).toBeUndefined();

    const jobs = await allJobs(client, queue);
    const lines = readFileSync(runs, 'utf8').trim().split('\n').map(Number);
    const runsOf = new Map<number, number>();
    for (const id of lines) runsOf.set(id, (runsOf.get(id) ?? 0) + 1);
    console.log(
      `PostgreSQL outage under load: ${JSON.stringify({
        outageMs: restoredAt - cutAt,
        afterRestoreMs: Date.now() - restoredAt,
        severalAttempts: jobs
          .filter((j) => j.attempt > 1)
          .map((j) => ({ id: j.id, attempt: j.attempt, numResets: j.numResets, numFailures: j.numFailures })),
      })}`,
    );
    expect(
      jobs.filter((j) => j.state !== 'completed').map((j) => ({ id: j.id, state: j.state, message: j.failureMessage })),
    ).toEqual([]);
    expect([...runsOf].filter(([, n]) => n > 1)).toEqual([]);
    expect([...runsOf.keys()].sort((a, b) => a - b)).toEqual([...submitted].sort((a, b) => a - b));
  }, 120_000);
});
