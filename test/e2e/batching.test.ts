// End to end: the batched calls. The executor protocol's dequeue with maxJobs and POST /jobs/batch, and the client
// API's bulk submit (POST /api/v1/jobs/batch), against a real `dockhand server` on SQLite and on PostgreSQL; then real
// `dockhand executor` processes that use them, directly and through a proxy that plays a server from before them.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DequeuedJob, LogEntryUpdate } from '../../src/core/protocol.js';
import type { JobRecord } from '../../src/store/store.js';
import { TestClient, http as call, type HttpAnswer } from '../support/api.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN, startExecutor, startServer, type ServerHandle } from '../support/processes.js';
import { until } from '../support/wait.js';

const EXECUTOR_AUTH = `token-executor ${EXECUTORS_TOKEN}`;

/** A dequeue as a raw executor; waitMs 0 unless given. */
function dequeue(url: string, body: Record<string, unknown>): Promise<HttpAnswer> {
  return call(`${url}/api/executor/v1/dequeue`, 'POST', EXECUTOR_AUTH, {
    executorName: 'batch-raw',
    version: 'test',
    waitMs: 0,
    ...body,
  });
}

/** Dequeues with maxJobs and expects jobs. */
async function take(url: string, queue: string, maxJobs: number): Promise<DequeuedJob[]> {
  const answer = await dequeue(url, { queues: [queue], maxJobs });
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return answer.body.jobs;
}

/** A `/jobs/batch` request; `auth` null sends no Authorization header. */
function batch(url: string, body: unknown, auth: string | null = EXECUTOR_AUTH): Promise<HttpAnswer> {
  return call(`${url}/api/executor/v1/jobs/batch`, 'POST', auth ?? undefined, body);
}

/** A single-job route of the protocol, with a job token, to compare its answer with a batch item's. */
function single(url: string, id: number, action: string, token: string, body: unknown): Promise<HttpAnswer> {
  return call(`${url}/api/executor/v1/jobs/${id}/${action}`, 'POST', `Bearer ${token}`, body);
}

function entry(out: string, extra: Partial<LogEntryUpdate> = {}): LogEntryUpdate {
  return { index: 0, key: 'step.raw', command: ['raw'], startTime: Date.now(), offset: 0, out, ...extra };
}

/** A request body sent as it is, with its own Content-Type (YAML). */
async function rawPost(url: string, route: string, contentType: string, text: string): Promise<HttpAnswer> {
  const res = await fetch(`${url}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': contentType },
    body: text,
  });
  const body = await res.text();
  return { status: res.status, body: body ? JSON.parse(body) : undefined, headers: res.headers };
}

const fields = (body: { issues?: { field: string }[] }): string[] => (body.issues ?? []).map((i) => i.field);

const STORES = ['sqlite', 'postgres'] as const;

describe.each(STORES)('batched calls on %s', (store) => {
  let server: ServerHandle;
  let database: TestDatabase | undefined;
  let client: TestClient;
  let url: string;
  let queueSeq = 0;
  /** A queue of the test's own, so that tests never take each other's jobs. */
  const freshQueue = (): string => `${store}-q${++queueSeq}`;

  beforeAll(async () => {
    const env: NodeJS.ProcessEnv = { DOCKHAND_RETRY_BACKOFF: '200ms' };
    if (store === 'postgres') {
      database = await createTestDatabase('batching');
      env.DOCKHAND_DATABASE_URL = database.url;
    }
    server = await startServer({ name: `batching-${store}-server`, env });
    url = server.url;
    client = new TestClient(url);
  });

  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });

  /** Submits `count` jobs to `queue` with the bulk route, in order. */
  async function submitMany(queue: string, count: number, extra: Record<string, unknown> = {}): Promise<JobRecord[]> {
    const answer = await client.call('POST', '/jobs/batch', {
      jobs: Array.from({ length: count }, () => ({ queue, steps: [], ...extra })),
    });
    expect(answer.status, JSON.stringify(answer.body)).toBe(201);
    return answer.body.jobs;
  }

  describe('dequeue with maxJobs', () => {
    it('answers one job, as before, without maxJobs', async () => {
      const queue = freshQueue();
      const [first, second] = [await client.submit({ queue, steps: [] }), await client.submit({ queue, steps: [] })];
      const answer = await dequeue(url, { queues: [queue] });
      expect(answer.status).toBe(200);
      expect(answer.body).not.toHaveProperty('jobs');
      expect(answer.body).toMatchObject({
        id: first.id,
        attempt: 1,
        queue,
        namespace: 'user:admin',
        spec: { queue, steps: [] },
      });
      expect(answer.body.token).toMatch(/^dhj_[0-9a-f]{48}$/);
      expect((await dequeue(url, { queues: [queue] })).body).toMatchObject({ id: second.id, attempt: 1 });
      const empty = await dequeue(url, { queues: [queue] });
      expect(empty.status).toBe(204);
      expect(empty.body).toBeUndefined();
    });

    it('hands out up to maxJobs ready jobs, each a new attempt with its own token, and 204 when none is ready', async () => {
      const queue = freshQueue();
      const submitted = await submitMany(queue, 5);
      const three = await take(url, queue, 3);
      expect(three.map((j) => j.id)).toEqual(submitted.slice(0, 3).map((j) => j.id));
      // Every ready job up to maxJobs, without waiting for more: 2 of 10 at once although waitMs is long.
      const started = Date.now();
      const rest = await take(url, queue, 10);
      expect(Date.now() - started).toBeLessThan(5_000);
      const all = [...three, ...rest];
      expect(all.map((j) => j.id)).toEqual(submitted.map((j) => j.id));
      expect(new Set(all.map((j) => j.token)).size).toBe(5);
      for (const job of all) {
        expect(job).toMatchObject({ attempt: 1, queue, namespace: 'user:admin' });
        expect(job.token).toMatch(/^dhj_[0-9a-f]{48}$/);
        const { job: record, attempts } = await client.job(job.id);
        expect(record).toMatchObject({ state: 'processing', attempt: 1, executorName: 'batch-raw' });
        expect(attempts.map((a) => [a.attempt, a.executorName, a.outcome])).toEqual([[1, 'batch-raw', null]]);
      }
      // Each token is its own job's: it completes that job and no other.
      for (const job of all)
        expect((await single(url, job.id, 'complete', job.token, {})).body).toEqual({ state: 'completed' });

      const empty = await dequeue(url, { queues: [queue], maxJobs: 5 });
      expect(empty.status).toBe(204);
      expect(empty.body).toBeUndefined();
    });

    it('a held dequeue with maxJobs wakes on a submit and answers { jobs } with what arrived', async () => {
      const queue = freshQueue();
      const held = dequeue(url, { queues: [queue], maxJobs: 4, waitMs: 20_000 });
      await new Promise((r) => setTimeout(r, 300));
      const job = await client.submit({ queue, steps: [] });
      const answer = await held;
      expect(answer.status).toBe(200);
      expect(answer.body.jobs.map((j: DequeuedJob) => [j.id, j.attempt])).toEqual([[job.id, 1]]);
    });

    it('a job taken again gets a new attempt and a new token; the old one is stale', async () => {
      const queue = freshQueue();
      const [job] = await submitMany(queue, 1, { maxAttempts: 2 });
      const [first] = await take(url, queue, 2);
      expect((await single(url, job.id, 'error', first.token, { message: 'try again' })).body).toEqual({
        state: 'queued',
      });
      // The dequeue waits out the retry backoff (200 ms here).
      const again = await dequeue(url, { queues: [queue], maxJobs: 2, waitMs: 15_000 });
      expect(again.status).toBe(200);
      const [second] = again.body.jobs as DequeuedJob[];
      expect([second.id, second.attempt]).toEqual([job.id, 2]);
      expect(second.token).not.toBe(first.token);
      const late = await single(url, job.id, 'logs', first.token, { entries: [entry('late\n')] });
      expect([late.status, late.body.code]).toEqual([409, 'stale_attempt']);
    });

    it('refuses maxJobs outside 1-100, naming the field', async () => {
      for (const maxJobs of [0, 101, 1.5, '3']) {
        const answer = await dequeue(url, { queues: [freshQueue()], maxJobs });
        expect(answer.status, String(maxJobs)).toBe(400);
        expect(fields(answer.body)).toEqual(['maxJobs']);
      }
    });
  });

  describe('POST /api/executor/v1/jobs/batch', () => {
    it('reports several jobs in one request, each answered with its state', async () => {
      const queue = freshQueue();
      const submitted = await submitMany(queue, 4, { maxAttempts: 2 });
      const [a, b, c, d] = await take(url, queue, 4);
      const answer = await batch(url, {
        items: [
          { id: a.id, token: a.token, report: { kind: 'complete' } },
          { id: b.id, token: b.token, report: { kind: 'error', message: 'network hiccup' } },
          { id: c.id, token: c.token, report: { kind: 'fail', message: 'step x failed with exit code 1' } },
          { id: d.id, token: d.token, report: { kind: 'fail', message: 'canceled by a user', canceled: true } },
        ],
      });
      expect(answer.status).toBe(200);
      expect(answer.body).toEqual({
        items: [
          { id: a.id, status: 200, state: 'completed' },
          { id: b.id, status: 200, state: 'queued' },
          { id: c.id, status: 200, state: 'failed' },
          { id: d.id, status: 200, state: 'canceled' },
        ],
      });
      const outcomes = await Promise.all(
        submitted.map(async (j) => {
          const { job, attempts } = await client.job(j.id);
          return [job.state, job.numFailures, job.failureMessage, attempts.map((t) => [t.outcome, t.message])];
        }),
      );
      expect(outcomes).toEqual([
        ['completed', 0, null, [['completed', null]]],
        ['queued', 1, 'network hiccup', [['errored', 'network hiccup']]],
        ['failed', 0, 'step x failed with exit code 1', [['failed', 'step x failed with exit code 1']]],
        ['canceled', 0, 'canceled by a user', [['canceled', 'canceled by a user']]],
      ]);
    });

    it('answers each item on its own: 401, 403 and 409 for some, the others still applied, as the single routes would', async () => {
      const queue = freshQueue();
      await submitMany(queue, 4);
      const [a, b, c, done] = await take(url, queue, 4);
      expect((await single(url, done.id, 'complete', done.token, {})).status).toBe(200);
      const unknownToken = `dhj_${'0'.repeat(48)}`;
      const items = [
        { id: a.id, token: a.token, logs: [entry('stdout: from a\n')] },
        { id: b.id, token: unknownToken, report: { kind: 'complete' } }, // 401: no such token
        { id: b.id + 0, token: c.token, report: { kind: 'complete' } }, // 403: c's token, b's id
        { id: done.id, token: done.token, logs: [entry('stdout: too late\n')] }, // 409: the attempt has ended
        { id: done.id, token: done.token, report: { kind: 'fail', message: 'changed my mind' } }, // 409: another report
        { id: c.id, token: c.token, report: { kind: 'complete' } },
      ];
      const answer = await batch(url, { items });
      expect(answer.status).toBe(200);
      const results = answer.body.items;
      expect(results.map((r: { id: number; status: number }) => [r.id, r.status])).toEqual([
        [a.id, 200],
        [b.id, 401],
        [b.id, 403],
        [done.id, 409],
        [done.id, 409],
        [c.id, 200],
      ]);
      expect(results[0]).toEqual({ id: a.id, status: 200, entries: [{ index: 0, length: 15 }] });
      expect(results[1].error).toMatch(/^invalid job token/);
      expect(results[2].error).toBe(`this job token belongs to job ${c.id}, not job ${b.id}`);
      expect(results[3]).toMatchObject({
        code: 'stale_attempt',
        error: `attempt 1 of job ${done.id} is no longer current (job is completed); stop working on it`,
      });
      expect(results[4].code).toBe('stale_attempt');
      expect(results[5]).toEqual({ id: c.id, status: 200, state: 'completed' });

      // Exactly what the single-job routes answer to the same calls.
      const alone = [
        await single(url, b.id, 'complete', unknownToken, {}),
        await single(url, b.id, 'complete', c.token, {}),
        await single(url, done.id, 'logs', done.token, { entries: [entry('stdout: too late\n')] }),
        await single(url, done.id, 'fail', done.token, { message: 'changed my mind' }),
      ];
      expect(
        alone.map((r) => ({ status: r.status, error: r.body.error, ...(r.body.code ? { code: r.body.code } : {}) })),
      ).toEqual(results.slice(1, 5).map(({ id: _id, ...rest }: { id: number }) => rest));

      // The refused items changed nothing; the others were applied.
      expect((await client.job(a.id)).job.state).toBe('processing');
      expect((await client.logs(a.id)).entries.map((e) => e.out)).toEqual(['stdout: from a\n']);
      expect((await client.job(b.id)).job.state).toBe('processing');
      expect((await client.job(c.id)).job.state).toBe('completed');
      expect((await client.job(done.id)).job.state).toBe('completed');
      expect((await client.logs(done.id)).entries).toEqual([]);
    });

    it("stores an item's logs before its report: the entry is there with its exit code", async () => {
      const queue = freshQueue();
      await submitMany(queue, 2);
      const [job, other] = await take(url, queue, 2);
      const startTime = Date.now();
      const answer = await batch(url, {
        items: [
          {
            id: job.id,
            token: job.token,
            logs: [
              {
                index: 0,
                key: 'setup.files',
                command: ['write', '0 file(s)'],
                startTime,
                offset: 0,
                out: '',
                exitCode: 0,
                durationMs: 1,
              },
              {
                index: 1,
                key: 'step.build',
                command: ['/bin/sh', '-e', 'build.sh'],
                startTime,
                offset: 0,
                out: 'stdout: built\nstderr: warned\n',
                exitCode: 3,
                durationMs: 42,
              },
            ],
            report: { kind: 'fail', message: 'step build failed with exit code 3' },
          },
          // Logs alone: the job goes on.
          { id: other.id, token: other.token, logs: [entry('stdout: half way\n')] },
        ],
      });
      expect(answer.body).toEqual({
        items: [
          {
            id: job.id,
            status: 200,
            entries: [
              { index: 0, length: 0 },
              { index: 1, length: 29 },
            ],
            state: 'failed',
          },
          { id: other.id, status: 200, entries: [{ index: 0, length: 17 }] },
        ],
      });
      const { entries } = await client.logs(job.id);
      expect(entries).toEqual([
        expect.objectContaining({ index: 0, key: 'setup.files', exitCode: 0, durationMs: 1, out: '' }),
        expect.objectContaining({
          index: 1,
          key: 'step.build',
          command: ['/bin/sh', '-e', 'build.sh'],
          exitCode: 3,
          durationMs: 42,
          out: 'stdout: built\nstderr: warned\n',
        }),
      ]);
      expect((await client.job(job.id)).job).toMatchObject({
        state: 'failed',
        failureMessage: 'step build failed with exit code 3',
      });
      expect((await client.job(other.id)).job.state).toBe('processing');
      // An item with a report after its logs were refused: neither is applied.
      const late = await batch(url, {
        items: [{ id: job.id, token: job.token, logs: [entry('x\n', { index: 2 })], report: { kind: 'complete' } }],
      });
      expect(late.body.items[0]).toMatchObject({ status: 409, code: 'stale_attempt' });
      expect((await client.job(job.id)).job.state).toBe('failed');
    });

    it('takes items of the same job one after another, in order', async () => {
      const queue = freshQueue();
      await submitMany(queue, 2);
      const [job, other] = await take(url, queue, 2);
      const answer = await batch(url, {
        items: [
          { id: job.id, token: job.token, logs: [entry('stdout: a\n')] },
          { id: other.id, token: other.token, logs: [entry('stdout: other\n')], report: { kind: 'complete' } },
          // A retry of the first append (offset 0) plus the next line: nothing is stored twice.
          { id: job.id, token: job.token, logs: [entry('stdout: a\nstdout: b\n', { exitCode: 0, durationMs: 5 })] },
          { id: job.id, token: job.token, report: { kind: 'complete' } },
          // The same report again is answered as recorded; another report, or more output, is stale.
          { id: job.id, token: job.token, report: { kind: 'complete' } },
          { id: job.id, token: job.token, report: { kind: 'error', message: 'no' } },
          { id: job.id, token: job.token, logs: [entry('stdout: c\n', { offset: 20 })] },
        ],
      });
      expect(answer.status).toBe(200);
      expect(
        answer.body.items.map((r: { id: number; status: number; code?: string; state?: string }) => [
          r.id,
          r.status,
          r.state ?? r.code ?? null,
        ]),
      ).toEqual([
        [job.id, 200, null],
        [other.id, 200, 'completed'],
        [job.id, 200, null],
        [job.id, 200, 'completed'],
        [job.id, 200, 'completed'],
        [job.id, 409, 'stale_attempt'],
        [job.id, 409, 'stale_attempt'],
      ]);
      expect(answer.body.items[0].entries).toEqual([{ index: 0, length: 10 }]);
      expect(answer.body.items[2].entries).toEqual([{ index: 0, length: 20 }]);
      const { entries } = await client.logs(job.id);
      expect(entries.map((e) => [e.out, e.exitCode])).toEqual([['stdout: a\nstdout: b\n', 0]]);
      expect((await client.job(job.id)).attempts.map((a) => a.outcome)).toEqual(['completed']);
      expect((await client.logs(other.id)).entries.map((e) => e.out)).toEqual(['stdout: other\n']);
    });

    it('refuses an invalid body with 400 naming the field, and applies none of its items', async () => {
      const queue = freshQueue();
      await submitMany(queue, 1);
      const [job] = await take(url, queue, 1);
      const good = { id: job.id, token: job.token, report: { kind: 'complete' } };
      const cases: [string, unknown, string][] = [
        ['no items', { items: [] }, 'items'],
        ['items missing', {}, 'items'],
        ['unknown report kind', { items: [good, { ...good, report: { kind: 'finish' } }] }, 'items[1].report.kind'],
        ['error without message', { items: [good, { ...good, report: { kind: 'error' } }] }, 'items[1].report.message'],
        ['no token', { items: [good, { id: job.id, report: { kind: 'complete' } }] }, 'items[1].token'],
        ['bad id', { items: [{ ...good, id: 0 }] }, 'items[0].id'],
        [
          'bad log entry',
          { items: [good, { ...good, logs: [entry('x', { offset: -1 })] }] },
          'items[1].logs[0].offset',
        ],
        ['more than 500 items', { items: Array.from({ length: 501 }, () => good) }, 'items'],
      ];
      for (const [name, body, field] of cases) {
        const answer = await batch(url, body);
        expect(answer.status, name).toBe(400);
        expect(answer.body.error, name).toBe('invalid request body');
        expect(fields(answer.body), name).toContain(field);
      }
      expect((await client.job(job.id)).job.state).toBe('processing');
      // 500 items is the most, and fine (the same job's report, then 499 repeats of it).
      const most = await batch(url, { items: Array.from({ length: 500 }, () => good) });
      expect(most.status).toBe(200);
      expect(new Set(most.body.items.map((r: { status: number; state: string }) => `${r.status} ${r.state}`))).toEqual(
        new Set(['200 completed']),
      );
    });

    it('needs the executor token', async () => {
      const queue = freshQueue();
      await submitMany(queue, 1);
      const [job] = await take(url, queue, 1);
      const body = { items: [{ id: job.id, token: job.token, report: { kind: 'complete' } }] };
      for (const auth of [
        null,
        `Bearer ${job.token}`,
        `Bearer ${ADMIN_TOKEN}`,
        `token-executor ${job.token}`,
        'token-executor wrong-executors-token-0123456789',
      ]) {
        const answer = await batch(url, body, auth);
        expect(answer.status, String(auth)).toBe(401);
        expect(answer.body.error).toMatch(/token-executor/);
      }
      expect((await client.job(job.id)).job.state).toBe('processing');
      expect((await batch(url, body)).body.items).toEqual([{ id: job.id, status: 200, state: 'completed' }]);
    });
  });

  describe('POST /api/v1/jobs/batch (bulk submit)', () => {
    it('queues every job and answers them in the order given', async () => {
      const [q1, q2] = [freshQueue(), freshQueue()];
      await client.addOrg(`${store}-acme`);
      const specs = [
        { queue: q1, steps: [{ run: 'echo one' }] },
        {
          queue: q2,
          namespace: 'global',
          steps: [{ key: 'build', run: 'make' }, { run: 'make test' }],
          maxAttempts: 5,
        },
        { queue: q1, namespace: `org:${store}-acme`, steps: [], maxRuntime: '5m', files: { 'a.txt': 'hi' } },
      ];
      const answer = await client.call('POST', '/jobs/batch', { jobs: specs });
      expect(answer.status).toBe(201);
      const jobs: JobRecord[] = answer.body.jobs;
      expect(Object.keys(answer.body)).toEqual(['jobs']);
      expect(jobs.map((j) => [j.queue, j.namespace, j.state, j.attempt, j.maxAttempts, j.submittedBy])).toEqual([
        [q1, 'user:admin', 'queued', 0, 3, 'admin'],
        [q2, 'global', 'queued', 0, 5, 'admin'],
        [q1, `org:${store}-acme`, 'queued', 0, 3, 'admin'],
      ]);
      expect(jobs[0].id).toBeLessThan(jobs[1].id);
      expect(jobs[1].id).toBeLessThan(jobs[2].id);
      expect(jobs[1].spec.steps.map((s) => s.key)).toEqual(['build', 'step-2']);
      expect(jobs[2].spec).toMatchObject({ maxRuntime: 300_000, files: { 'a.txt': 'hi' }, steps: [] });
      // What was stored is what was answered, and the single submit stores the same spec.
      for (const job of jobs) expect((await client.job(job.id)).job).toEqual(job);
      const alone = await client.submit(specs[1]);
      expect(alone.spec).toEqual(jobs[1].spec);
      // Dequeued in order.
      expect((await take(url, q1, 5)).map((j) => j.id)).toEqual([jobs[0].id, jobs[2].id]);
    });

    it('stores none of the jobs when one is refused, naming it', async () => {
      const queue = freshQueue();
      const bob = await client.addUser(`${store}-bob`);
      const ok = { queue, steps: [{ run: 'true' }] };
      const cases: [string, TestClient, unknown[], number, string][] = [
        ['an invalid spec', client, [ok, ok, { queue, steps: [{ run: '' }] }], 400, 'jobs[2].steps[0].run'],
        ['an unknown field', client, [ok, { ...ok, stpes: [] }], 400, 'jobs[1].stpes'],
        [
          'a namespace that does not exist',
          client,
          [ok, { ...ok, namespace: 'org:nowhere' }],
          400,
          'jobs[1].namespace',
        ],
        ['a namespace that is not theirs', bob, [ok, ok, { ...ok, namespace: 'global' }], 403, 'jobs[2].namespace'],
        [
          'a secret that does not exist',
          client,
          [
            { ...ok, secrets: [] },
            { ...ok, secrets: ['NO_SUCH_SECRET'] },
          ],
          400,
          'jobs[1].secrets[0]',
        ],
      ];
      for (const [name, who, jobs, status, field] of cases) {
        const answer = await who.call('POST', '/jobs/batch', { jobs });
        expect(answer.status, name).toBe(status);
        expect(fields(answer.body), name).toEqual([field]);
        expect(answer.body.issues[0].message.length, name).toBeGreaterThan(5);
      }
      // More than an executor of the queue allows one job.
      const heartbeat = await call(`${url}/api/executor/v1/heartbeat`, 'POST', EXECUTOR_AUTH, {
        executorName: `${store}-small`,
        hostname: 'h',
        os: 'linux',
        arch: 'x64',
        version: 'test',
        runtime: 'docker',
        queues: [queue],
        resources: { cpus: 2, memoryBytes: 1 << 30 },
        jobs: [],
      });
      expect(heartbeat.status).toBe(200);
      const big = await client.call('POST', '/jobs/batch', {
        jobs: [ok, { ...ok, resources: { cpus: 1 } }, { ...ok, resources: { cpus: 8 } }],
      });
      expect(big.status).toBe(400);
      expect(fields(big.body)).toEqual(['jobs[2].resources.cpus']);

      expect((await client.call('GET', `/jobs?queue=${queue}`)).body.jobs).toEqual([]);
      expect((await bob.call('GET', '/jobs')).body.jobs).toEqual([]);
    });

    it('takes at most 1000 jobs, and says so', async () => {
      const queue = freshQueue();
      const tooMany = await client.call('POST', '/jobs/batch', {
        jobs: Array.from({ length: 1001 }, () => ({ queue, steps: [] })),
      });
      expect(tooMany.status).toBe(400);
      expect(tooMany.body.error).toBe('invalid job batch');
      expect(tooMany.body.issues).toEqual([
        { field: 'jobs', message: 'at most 1000 jobs per request; send more requests' },
      ]);
      const none = await client.call('POST', '/jobs/batch', { jobs: [] });
      expect(none.status).toBe(400);
      expect(none.body.issues).toEqual([{ field: 'jobs', message: 'name at least one job' }]);
      expect((await client.call('POST', '/jobs/batch', { job: [{ queue, steps: [] }] })).status).toBe(400);
      expect((await client.call('GET', `/jobs?queue=${queue}`)).body.jobs).toEqual([]);

      const most = await client.call('POST', '/jobs/batch', {
        jobs: Array.from({ length: 1000 }, (_, i) => ({ queue, steps: [{ key: `s${i}`, run: 'true' }] })),
      });
      expect(most.status).toBe(201);
      expect(most.body.jobs.map((j: JobRecord) => j.spec.steps[0].key)).toEqual(
        Array.from({ length: 1000 }, (_, i) => `s${i}`),
      );
      const ids = most.body.jobs.map((j: JobRecord) => j.id);
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      expect((await client.call('GET', '/queues')).body.queues).toContainEqual(
        expect.objectContaining({ queue, queued: 1000 }),
      );
    });

    it('accepts YAML, as the single submit does', async () => {
      const queue = freshQueue();
      const yaml = `jobs:\n  - queue: ${queue}\n    steps:\n      - run: echo one\n  - queue: ${queue}\n    maxAttempts: 1\n    steps: []\n`;
      const answer = await rawPost(url, '/api/v1/jobs/batch', 'application/yaml', yaml);
      expect(answer.status, JSON.stringify(answer.body)).toBe(201);
      expect(answer.body.jobs.map((j: JobRecord) => [j.queue, j.maxAttempts, j.spec.steps.length])).toEqual([
        [queue, 3, 1],
        [queue, 1, 0],
      ]);
      const bad = await rawPost(
        url,
        '/api/v1/jobs/batch',
        'text/yaml',
        `jobs:\n  - queue: ${queue}\n    steps: [{run: ''}]\n`,
      );
      expect(bad.status).toBe(400);
      expect(fields(bad.body)).toEqual(['jobs[0].steps[0].run']);
    });
  });
});

/**
 * An HTTP proxy in front of a server that counts the executor protocol's requests by route and, with `old`, plays
 * a server from before batching: no /jobs/batch route, and dequeue ignores maxJobs. Its 404 takes a while, as over a
 * slow link, so that the executor makes more calls while its first batch is on its way (as it does under load).
 */
async function protocolProxy(target: string, old: boolean) {
  const counts = new Map<string, number>();
  /** How many jobs each dequeue answer carried (a batch answer, or one job). */
  const dequeued: number[] = [];
  const maxJobsAsked: number[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const route = (req.url ?? '').replace(/\/jobs\/\d+\//, '/jobs/{id}/');
        counts.set(route, (counts.get(route) ?? 0) + 1);
        let body = Buffer.concat(chunks).toString();
        if (route === '/api/executor/v1/dequeue') {
          const parsed = JSON.parse(body);
          maxJobsAsked.push(parsed.maxJobs);
          if (old) delete parsed.maxJobs;
          body = JSON.stringify(parsed);
        }
        if (old && route === '/api/executor/v1/jobs/batch') {
          await new Promise((r) => setTimeout(r, 500));
          res
            .writeHead(404, { 'content-type': 'application/json' })
            .end(JSON.stringify({ error: `no route POST ${req.url}` }));
          return;
        }
        try {
          const headers: Record<string, string> = {};
          if (req.headers.authorization) headers.authorization = req.headers.authorization;
          if (req.headers['content-type']) headers['content-type'] = req.headers['content-type'];
          const answer = await fetch(`${target}${req.url}`, {
            method: req.method,
            headers,
            body: req.method === 'GET' ? undefined : body,
          });
          const text = await answer.text();
          if (route === '/api/executor/v1/dequeue' && answer.status === 200) {
            const parsed = JSON.parse(text);
            dequeued.push(parsed.jobs ? parsed.jobs.length : 1);
          }
          res
            .writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' })
            .end(text);
        } catch {
          res.destroy();
        }
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    count: (route: string): number => counts.get(route) ?? 0,
    dequeued,
    maxJobsAsked,
    close(): Promise<void> {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a real executor', () => {
  let server: ServerHandle;
  let client: TestClient;
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    server = await startServer({ name: 'batching-executor-server' });
    client = new TestClient(server.url);
  });

  afterAll(async () => {
    for (const stop of stops.reverse()) await stop();
    await server?.stop();
  });

  it('runs 200 jobs submitted in one request, each exactly once, taking several per dequeue and reporting in batches', async () => {
    const queue = 'bulk-200';
    const answer = await client.call('POST', '/jobs/batch', {
      jobs: Array.from({ length: 200 }, () => ({ queue, steps: [] })),
    });
    expect(answer.status).toBe(201);
    const ids: number[] = answer.body.jobs.map((j: JobRecord) => j.id);
    const proxy = await protocolProxy(server.url, false);
    stops.push(() => proxy.close());
    // Submitted before the executor starts, so its first dequeue finds a backlog.
    const executor = await startExecutor(proxy.url, {
      name: 'batching-exec',
      queues: [queue],
      env: { EXECUTOR_MAXIMUM_NUM_JOBS: '8' },
    });
    stops.push(() => executor.stop());

    await until(
      'all 200 jobs complete',
      async () => (await client.call('GET', `/jobs?queue=${queue}&state=completed&limit=500`)).body.jobs.length === 200,
      90_000,
      250,
      () =>
        executor.proc.child.exitCode !== null
          ? `the executor exited:\n${executor.proc.output.slice(-3000)}`
          : undefined,
    );
    for (const id of ids) {
      const { job, attempts } = await client.job(id);
      expect(job.state).toBe('completed');
      expect(attempts.map((a) => [a.attempt, a.executorName, a.outcome])).toEqual([[1, 'batching-exec', 'completed']]);
    }
    // It asked for its free slots and got several jobs at once; every report went through /jobs/batch.
    expect(proxy.maxJobsAsked[0]).toBe(8);
    expect(proxy.dequeued[0]).toBe(8);
    expect(proxy.dequeued.reduce((a, b) => a + b, 0)).toBe(200);
    expect(proxy.count('/api/executor/v1/jobs/batch')).toBeGreaterThan(0);
    expect(proxy.count('/api/executor/v1/jobs/batch')).toBeLessThanOrEqual(400);
    for (const kind of ['complete', 'error', 'fail', 'logs'])
      expect(proxy.count(`/api/executor/v1/jobs/{id}/${kind}`), kind).toBe(0);
    expect(executor.proc.output).not.toMatch(/"level":(50|60)/);
  });

  it('works with a server from before batching: one job per dequeue, single-job routes after a 404', async () => {
    const queue = 'old-server';
    const proxy = await protocolProxy(server.url, true);
    stops.push(() => proxy.close());
    const executor = await startExecutor(proxy.url, {
      name: 'batching-old',
      queues: [queue],
      env: { EXECUTOR_MAXIMUM_NUM_JOBS: '4' },
    });
    stops.push(() => executor.stop());
    const answer = await client.call('POST', '/jobs/batch', {
      jobs: Array.from({ length: 12 }, (_, i) => ({
        queue,
        steps: [{ key: 'hello', run: `echo "hello ${i} from $DOCKHAND_JOB_ID"` }],
      })),
    });
    expect(answer.status).toBe(201);
    const jobs: JobRecord[] = answer.body.jobs;
    for (const job of jobs) await client.waitForState(job.id, 'completed', 60_000);
    for (const [i, job] of jobs.entries()) {
      const { attempts } = await client.job(job.id);
      expect(attempts.map((a) => [a.executorName, a.outcome])).toEqual([['batching-old', 'completed']]);
      const { entries } = await client.logs(job.id);
      expect(entries.map((e) => [e.key, e.exitCode, e.out])).toEqual([
        ['step.hello', 0, `stdout: hello ${i} from ${job.id}\n`],
      ]);
    }
    expect(proxy.maxJobsAsked.every((n) => n >= 1 && n <= 4)).toBe(true);
    expect(proxy.dequeued.every((n) => n === 1)).toBe(true);
    // The first batch was refused; from then on every call went to its single-job route.
    expect(proxy.count('/api/executor/v1/jobs/batch')).toBeGreaterThanOrEqual(1);
    expect(proxy.count('/api/executor/v1/jobs/batch')).toBeLessThanOrEqual(2);
    expect(proxy.count('/api/executor/v1/jobs/{id}/complete')).toBe(12);
    expect(proxy.count('/api/executor/v1/jobs/{id}/logs')).toBeGreaterThanOrEqual(12);
  });
});
