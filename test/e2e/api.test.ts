// The HTTP API in-process: validation errors name the field, every route refuses missing and wrong credentials
// (walked from the route table, so new routes are covered without editing this file), OpenAPI and metrics.
import type { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { RouteDef } from '../../src/server/http.js';
import type { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import { inProcessServer, type InProcessServer } from '../support/inProcess.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN } from '../support/processes.js';
import { until } from '../support/wait.js';

let server: InProcessServer;
let app: FastifyInstance;
let routes: RouteDef<any, any>[];
let store: SqliteStore;

beforeAll(async () => {
  server = await inProcessServer();
  ({ app, routes, store } = server);
});

afterAll(async () => {
  await server.close();
});

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function submit(payload: unknown, headers: Record<string, string> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/jobs',
    headers: { ...admin, ...headers },
    payload: payload as object,
  });
  return { status: res.statusCode, body: res.json() };
}

describe('job spec validation over HTTP', () => {
  const base = { queue: 'default', steps: [{ run: 'echo hi' }] };
  const bad: [string, unknown, string][] = [
    ['missing queue', { steps: [{ run: 'x' }] }, 'queue'],
    ['bad queue name', { ...base, queue: 'no spaces allowed' }, 'queue'],
    ['missing steps', { queue: 'default' }, 'steps'],
    ['empty run', { ...base, steps: [{ run: '' }] }, 'steps[0].run'],
    ['run not a string', { ...base, steps: [{ run: 42 }] }, 'steps[0].run'],
    ['typo in a field', { ...base, stpes: [] }, 'stpes'],
    ['typo in a step field', { ...base, steps: [{ run: 'x', comand: 'y' }] }, 'steps[0].comand'],
    ['dir escapes the workspace', { ...base, steps: [{ run: 'x', dir: '../../etc' }] }, 'steps[0].dir'],
    ['absolute file path', { ...base, files: { '/etc/passwd': 'x' } }, 'files./etc/passwd'],
    ['file path with ..', { ...base, files: { 'a/../../b': 'x' } }, 'files.a/../../b'],
    ['bad timeout', { ...base, steps: [{ run: 'x', timeout: 'soon' }] }, 'steps[0].timeout'],
    ['bad env name', { ...base, steps: [{ run: 'x', env: { 'A=B': '1' } }] }, 'steps[0].env.A=B'],
    [
      'duplicate step keys',
      {
        ...base,
        steps: [
          { key: 'a', run: 'x' },
          { key: 'a', run: 'y' },
        ],
      },
      'steps[1].key',
    ],
    ['maxAttempts zero', { ...base, maxAttempts: 0 }, 'maxAttempts'],
    ['bad memory', { ...base, resources: { memory: 'lots' } }, 'resources.memory'],
    [
      'command-running git transport',
      { ...base, repository: { url: 'ext::sh -c touch% /tmp/pwned', commit: 'abc' } },
      'repository.url',
    ],
    [
      'commit that looks like an option',
      { ...base, repository: { url: 'https://example.com/r.git', commit: '--upload-pack=evil' } },
      'repository.commit',
    ],
    ['bad namespace', { ...base, namespace: 'bob' }, 'namespace'],
    ['bad maxRuntime', { ...base, maxRuntime: -5 }, 'maxRuntime'],
  ];
  it.each(bad)('%s → 400 naming %s', async (_name, spec, field) => {
    const { status, body } = await submit(spec);
    expect(status).toBe(400);
    expect(body.error).toBe('invalid job spec');
    expect(body.issues.map((i: { field: string }) => i.field)).toContain(field);
    for (const issue of body.issues) expect(issue.message.length).toBeGreaterThan(5);
  });

  it('answers malformed JSON and non-object bodies with 400, not 500', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...admin, 'content-type': 'application/json' },
      payload: '{"queue": ',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBeTruthy();
    expect((await submit([1, 2, 3])).status).toBe(400);
    const yamlBad = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...admin, 'content-type': 'application/yaml' },
      payload: 'queue: [',
    });
    expect(yamlBad.statusCode).toBe(400);
  });

  it('accepts YAML bodies', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...admin, 'content-type': 'application/yaml' },
      payload: 'queue: default\nsteps:\n  - run: echo hi\n',
    });
    expect(res.statusCode).toBe(201);
    expect(res.json().job.spec.steps[0].key).toBe('step-1');
  });

  it('validates executor protocol bodies and query strings the same way', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/executor/v1/dequeue',
      headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` },
      payload: { executorName: 'e1', version: '1', queues: [] },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().issues[0].field).toBe('queues');
    const list = await app.inject({ method: 'GET', url: '/api/v1/jobs?state=exploded', headers: admin });
    expect(list.statusCode).toBe(400);
    expect(list.json().issues[0].field).toBe('state');
    // A report's reason must at least look like a reason name: the answer names the field.
    const report = await app.inject({
      method: 'POST',
      url: '/api/executor/v1/jobs/batch',
      headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` },
      payload: { items: [{ id: 1, token: 'dhj_x', report: { kind: 'fail', message: 'x', reason: 'OOM!' } }] },
    });
    expect(report.statusCode).toBe(400);
    expect(report.json().issues).toEqual([
      { field: 'items[0].report.reason', message: 'must be a failure reason name such as script_failure' },
    ]);
    const missing = await app.inject({ method: 'GET', url: '/api/v1/jobs/999999', headers: admin });
    expect(missing.statusCode).toBe(404);
    const notAnId = await app.inject({ method: 'GET', url: '/api/v1/jobs/abc', headers: admin });
    expect(notAnId.statusCode).toBe(404);
  });
});

describe('authentication on every route', () => {
  // A build worker's registration carries its one-time token in the body.
  const PUBLIC = new Set([
    'GET /healthz',
    'GET /metrics',
    'GET /api/openapi.json',
    'POST /api/build-worker/v1/register',
  ]);

  it('knows which routes are public, and no others are', () => {
    const publicRoutes = routes.filter((r) => r.auth === 'public').map((r) => `${r.method} ${r.url}`);
    expect(new Set(publicRoutes)).toEqual(PUBLIC);
    expect(routes.length).toBeGreaterThan(10);
  });

  it('refuses missing, malformed and wrong credentials on every non-public route', async () => {
    const job = await store.jobs.enqueue(
      (await import('../../src/core/jobSpec.js')).jobSpec.parse({ queue: 'auth', steps: [] }),
      Date.now(),
    );
    const wrong: Record<string, string[]> = {
      executor: [
        '',
        'token-executor wrong-token-wrong-token-wrong',
        `Bearer ${EXECUTORS_TOKEN}`,
        `Bearer ${ADMIN_TOKEN}`,
        `token-executor ${EXECUTORS_TOKEN}x`,
      ],
      client: [
        '',
        `Bearer ${ADMIN_TOKEN}x`,
        `token-executor ${EXECUTORS_TOKEN}`,
        ADMIN_TOKEN,
        'Bearer dha_000000000000000000000000000000000000000000000000',
        `Basic ${ADMIN_TOKEN}`,
      ],
      job: [
        '',
        'Bearer dhj_000000000000000000000000000000000000000000000000',
        `token-executor ${EXECUTORS_TOKEN}`,
        `Bearer ${ADMIN_TOKEN}`,
      ],
      buildWorker: [
        '',
        'Bearer dhb_000000000000000000000000000000000000000000000000',
        `token-executor ${EXECUTORS_TOKEN}`,
        `Bearer ${ADMIN_TOKEN}`,
      ],
    };
    for (const route of routes.filter((r) => r.auth !== 'public')) {
      for (const authorization of wrong[route.auth]) {
        const res = await app.inject({
          method: route.method,
          url: route.url.replace(':id', String(job.id)),
          headers: authorization ? { authorization } : {},
          payload: route.method === 'POST' ? {} : undefined,
        });
        expect(res.statusCode, `${route.method} ${route.url} with "${authorization.slice(0, 20)}"`).toBe(401);
        expect(res.json().error).toMatch(/token|credentials|scheme/);
      }
    }
  });

  it("refuses a job token on another job's routes", async () => {
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    const a = await store.jobs.enqueue(jobSpec.parse({ queue: 'fence', steps: [] }), Date.now());
    const b = await store.jobs.enqueue(jobSpec.parse({ queue: 'fence', steps: [] }), Date.now());
    const taken = await app.inject({
      method: 'POST',
      url: '/api/executor/v1/dequeue',
      headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` },
      payload: { executorName: 'e1', version: '1', queues: ['fence'], waitMs: 0 },
    });
    const token = taken.json().token as string;
    const other = taken.json().id === a.id ? b.id : a.id;
    const res = await app.inject({
      method: 'POST',
      url: `/api/executor/v1/jobs/${other}/complete`,
      headers: { authorization: `Bearer ${token}` },
      payload: {},
    });
    expect(res.statusCode).toBe(403);
  });
});

describe('held heartbeats', () => {
  const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
  const beat = (jobs: { id: number; attempt: number }[], waitMs: number) =>
    app.inject({
      method: 'POST',
      url: '/api/executor/v1/heartbeat',
      headers: executorAuth,
      payload: {
        executorName: 'held',
        hostname: 'h',
        os: 'linux',
        arch: 'x64',
        version: '1',
        runtime: 'shell',
        queues: ['held'],
        jobs,
        waitMs,
      },
    });

  it('return early on a cancel, and not on log appends', async () => {
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    await store.jobs.enqueue(jobSpec.parse({ queue: 'held', steps: [] }), Date.now());
    const taken = (
      await app.inject({
        method: 'POST',
        url: '/api/executor/v1/dequeue',
        headers: executorAuth,
        payload: { executorName: 'held', version: '1', queues: ['held'], waitMs: 0 },
      })
    ).json();
    const jobs = [{ id: taken.id, attempt: taken.attempt }];
    let answered = false;
    const held = beat(jobs, 25_000).then((res) => {
      answered = true;
      return res;
    });
    // Held: its wait for an interruption of the job is on the bus.
    const interruptions = (): number =>
      (server.coordinator.context.wakeups as unknown as { emitter: EventEmitter }).emitter.listenerCount(
        `interrupt:${taken.id}`,
      );
    await until('the heartbeat is held', () => interruptions() === 1, 10_000);
    const append = await app.inject({
      method: 'POST',
      url: `/api/executor/v1/jobs/${taken.id}/logs`,
      headers: { authorization: `Bearer ${taken.token}` },
      payload: { entries: [{ index: 0, key: 'k', command: [], startTime: 1, offset: 0, out: 'stdout: x\n' }] },
    });
    expect(append.statusCode).toBe(200);
    // The append's events were delivered before it was answered (wake-ups are synchronous), and a wake-up would
    // have ended the wait at once: it still waits.
    expect(interruptions()).toBe(1);
    expect(answered).toBe(false);
    expect(
      (await app.inject({ method: 'POST', url: `/api/v1/jobs/${taken.id}/cancel`, headers: admin })).statusCode,
    ).toBe(200);
    const res = await held;
    expect(res.json()).toEqual({ knownIds: [taken.id], cancelIds: [taken.id] });
  });
});

describe('held requests', () => {
  it('leave no waiter on the event bus when the store fails under them', async () => {
    const emitter = (server.coordinator.context.wakeups as unknown as { emitter: EventEmitter }).emitter;
    const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
    const { dequeueMany, heartbeat } = store.jobs;
    store.jobs.dequeueMany = async () => {
      throw new Error('the database went away');
    };
    store.jobs.heartbeat = async () => {
      throw new Error('the database went away');
    };
    try {
      const dequeued = await app.inject({
        method: 'POST',
        url: '/api/executor/v1/dequeue',
        headers: executorAuth,
        payload: { executorName: 'leak', version: '1', queues: ['leak'], waitMs: 1_000 },
      });
      expect(dequeued.statusCode).toBe(500);
      const beat = await app.inject({
        method: 'POST',
        url: '/api/executor/v1/heartbeat',
        headers: executorAuth,
        payload: {
          executorName: 'leak',
          hostname: 'h',
          os: 'linux',
          arch: 'x64',
          version: '1',
          runtime: 'shell',
          queues: ['leak'],
          jobs: [{ id: 999, attempt: 1 }],
          waitMs: 1_000,
        },
      });
      expect(beat.statusCode).toBe(500);
    } finally {
      store.jobs.dequeueMany = dequeueMany;
      store.jobs.heartbeat = heartbeat;
    }
    expect(emitter.listenerCount('queue:leak')).toBe(0);
    expect(emitter.listenerCount('interrupt:999')).toBe(0);
  });
});

describe('one executor name, one process', () => {
  const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
  const call = (route: string, payload: object) =>
    app.inject({ method: 'POST', url: `/api/executor/v1/${route}`, headers: executorAuth, payload });
  const beat = (instanceId: string | undefined, hostname: string) =>
    call('heartbeat', {
      executorName: 'twice',
      hostname,
      os: 'linux',
      arch: 'x64',
      version: '1',
      runtime: 'shell',
      queues: ['twice'],
      jobs: [],
      instanceId,
      heartbeatIntervalMs: 1_000,
    });
  const dequeue = (instanceId?: string) =>
    call('dequeue', {
      executorName: 'twice',
      version: '1',
      queues: ['twice'],
      waitMs: 0,
      instanceId,
      hostname: 'host-b',
    });

  it('refuses a second live process under a name, in heartbeats and dequeues, saying who holds it and what to do', async () => {
    expect((await beat('instance-a', 'host-a')).statusCode).toBe(200);
    const refused = await beat('instance-b', 'host-b');
    expect(refused.statusCode).toBe(409);
    const body = refused.json();
    expect(body).toEqual({
      error: expect.any(String),
      code: 'executor_name_in_use',
      windowMs: 3_000,
      retryAfterMs: expect.any(Number),
    });
    expect(body.error).toMatch(
      /^executor name "twice" is in use by another executor on host host-a \(last seen \d+ms ago\); this one runs on host host-b\. Give each executor its own name with EXECUTOR_NAME=/,
    );
    expect(body.retryAfterMs).toBeGreaterThan(0);
    expect(body.retryAfterMs).toBeLessThanOrEqual(3_000);
    expect((await dequeue('instance-b')).json()).toMatchObject({ code: 'executor_name_in_use' });
    expect((await dequeue('instance-a')).statusCode).toBe(204);
    // An executor from before instance ids is not checked.
    expect((await dequeue(undefined)).statusCode).toBe(204);
    expect((await beat(undefined, 'old-host')).statusCode).toBe(200);
    const listed = (await app.inject({ method: 'GET', url: '/api/v1/executors', headers: admin })).json().executors;
    expect(listed.find((e: { name: string }) => e.name === 'twice')).toMatchObject({ hostname: 'host-a' });

    // Only the holder can let go; then the other process gets the name at once, and the first one is refused.
    expect((await call('release', { executorName: 'twice', instanceId: 'instance-b' })).statusCode).toBe(200);
    expect((await beat('instance-b', 'host-b')).statusCode).toBe(409);
    expect((await call('release', { executorName: 'twice', instanceId: 'instance-a' })).statusCode).toBe(200);
    expect((await beat('instance-b', 'host-b')).statusCode).toBe(200);
    expect((await beat('instance-a', 'host-a')).json().error).toMatch(
      /on host host-b .*; this one runs on host host-a\./,
    );
  });

  it('names the field of a malformed instance id', async () => {
    const res = await beat('short', 'host-a');
    expect(res.statusCode).toBe(400);
    expect(res.json().issues).toEqual([
      { field: 'instanceId', message: expect.stringMatching(/^must be 8-64 letters/) },
    ]);
  });
});

describe('cancel', () => {
  it('answers 409 for a job that finishes between the look at it and the cancel itself, and changes nothing', async () => {
    const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    await store.jobs.enqueue(jobSpec.parse({ queue: 'race', steps: [] }), Date.now());
    const taken = (
      await app.inject({
        method: 'POST',
        url: '/api/executor/v1/dequeue',
        headers: executorAuth,
        payload: { executorName: 'race', version: '1', queues: ['race'], waitMs: 0 },
      })
    ).json();
    // The executor's report lands just before the store applies the cancel (the soak saw this on PostgreSQL).
    const requestCancel = store.jobs.requestCancel.bind(store);
    store.jobs.requestCancel = async (id, now) => {
      const done = await app.inject({
        method: 'POST',
        url: `/api/executor/v1/jobs/${taken.id}/complete`,
        headers: { authorization: `Bearer ${taken.token}` },
        payload: {},
      });
      expect(done.statusCode).toBe(200);
      return requestCancel(id, now);
    };
    try {
      const res = await app.inject({ method: 'POST', url: `/api/v1/jobs/${taken.id}/cancel`, headers: admin });
      expect(res.statusCode).toBe(409);
      expect(res.json().error).toBe(`job ${taken.id} already completed; nothing to cancel`);
    } finally {
      store.jobs.requestCancel = requestCancel;
    }
    expect((await store.jobs.getJob(taken.id))!).toMatchObject({ state: 'completed', cancelRequested: false });
  });
});

describe('failure reasons in reports', () => {
  const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
  /** Takes one job of a fresh queue, as an executor would; returns its id and job token. */
  async function taken(queue: string, maxAttempts = 3): Promise<{ id: number; token: string }> {
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    await store.jobs.enqueue(jobSpec.parse({ queue, maxAttempts, steps: [{ run: 'true' }] }), Date.now());
    const res = await app.inject({
      method: 'POST',
      url: '/api/executor/v1/dequeue',
      headers: executorAuth,
      payload: { executorName: 'reasons', version: '1', queues: [queue], waitMs: 0 },
    });
    return res.json();
  }
  const report = (job: { id: number; token: string }, kind: string, payload: object) =>
    app.inject({
      method: 'POST',
      url: `/api/executor/v1/jobs/${job.id}/${kind}`,
      headers: { authorization: `Bearer ${job.token}` },
      payload,
    });
  const shown = async (id: number) =>
    (await app.inject({ method: 'GET', url: `/api/v1/jobs/${id}`, headers: admin })).json();

  it('stores the reason with the attempt and the job, and the API returns both', async () => {
    const job = await taken('reasons-typed');
    expect((await report(job, 'error', { message: 'git fetch failed', reason: 'checkout_failure' })).json()).toEqual({
      state: 'queued',
    });
    const { job: record, attempts } = await shown(job.id);
    expect(record).toMatchObject({
      state: 'queued',
      failureMessage: 'git fetch failed',
      failureReason: 'checkout_failure',
    });
    expect(attempts).toEqual([
      expect.objectContaining({ outcome: 'errored', message: 'git fetch failed', failureReason: 'checkout_failure' }),
    ]);
    // Every job JSON has the field, null while there is none.
    const fresh = (await submit({ queue: 'reasons-none', steps: [{ run: 'true' }] })).body.job;
    expect(fresh.failureReason).toBeNull();
    const listed = (await app.inject({ method: 'GET', url: '/api/v1/jobs?queue=reasons-typed', headers: admin })).json()
      .jobs;
    expect(listed[0].failureReason).toBe('checkout_failure');
  });

  it("decides by the reason, not the route, and guesses an older executor's", async () => {
    const misrouted = await taken('reasons-misrouted');
    expect(
      (
        await report(misrouted, 'error', { message: 'step x failed with exit code 1', reason: 'script_failure' })
      ).json(),
    ).toEqual({ state: 'failed' });
    const untypedError = await taken('reasons-untyped-error');
    expect((await report(untypedError, 'error', { message: 'something broke' })).json()).toEqual({ state: 'queued' });
    expect((await shown(untypedError.id)).job.failureReason).toBe('system_failure');
    const untypedFail = await taken('reasons-untyped-fail');
    expect((await report(untypedFail, 'fail', { message: 'step x failed with exit code 1' })).json()).toEqual({
      state: 'failed',
    });
    expect((await shown(untypedFail.id)).attempts[0].failureReason).toBe('script_failure');
  });

  it("names the reason in the state event of a job's stream", async () => {
    const job = await taken('reasons-stream');
    await report(job, 'fail', { message: 'killed', reason: 'out_of_memory' });
    const stream = await app.inject({ method: 'GET', url: `/api/v1/jobs/${job.id}/logs/stream`, headers: admin });
    const state = stream.body.split('\n\n').find((e) => e.startsWith('event: state'))!;
    expect(JSON.parse(state.split('data: ')[1])).toMatchObject({
      state: 'failed',
      failureMessage: 'killed',
      failureReason: 'out_of_memory',
    });
  });
});

describe('executors and queues', () => {
  const baseInfo = {
    hostname: 'h',
    os: 'linux',
    arch: 'x64',
    runtime: 'shell',
    runtimeVersion: null,
    queues: ['q'],
    maxJobs: 1,
    runningJobs: 0,
    jobCpus: null,
    jobMemoryBytes: null,
    jobDiskBytes: null,
    pid: null,
  };

  it("lists executors with whether each one's version suits the server's, and the server's version", async () => {
    const { VERSION } = await import('../../src/core/version.js');
    const now = Date.now();
    await store.executors.upsertExecutor({ ...baseInfo, name: 'compat-same', version: VERSION }, now);
    await store.executors.upsertExecutor({ ...baseInfo, name: 'compat-ahead', version: '99.0.0' }, now);
    await store.executors.upsertExecutor({ ...baseInfo, name: 'compat-dev', version: '0.0.0-dev' }, now);
    await store.executors.upsertExecutor({ ...baseInfo, name: 'compat-gone', version: '99.0.0' }, now - 60_000); // not active
    const res = await app.inject({ method: 'GET', url: '/api/v1/executors', headers: admin });
    expect(res.statusCode).toBe(200);
    const body = res.json() as {
      executors: { name: string; active: boolean; compatibility: string | null }[];
      serverVersion: string;
    };
    expect(body.serverVersion).toBe(VERSION);
    const byName = new Map(body.executors.map((e) => [e.name, e]));
    expect(byName.get('compat-same')).toMatchObject({
      active: true,
      compatibility: 'up_to_date',
      version: VERSION,
      firstSeenAt: now,
    });
    expect(byName.get('compat-ahead')).toMatchObject({ active: true, compatibility: 'version_ahead' });
    expect(byName.get('compat-dev')).toMatchObject({ active: true, compatibility: null });
    expect(byName.get('compat-gone')).toMatchObject({ active: false, compatibility: null });
  });

  it("lists each executor's per-job limits as its heartbeats report them, and refuses at submit a job asking for more disk", async () => {
    const beat = (executorName: string, resources?: object) =>
      app.inject({
        method: 'POST',
        url: '/api/executor/v1/heartbeat',
        headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` },
        payload: {
          executorName,
          hostname: 'h',
          os: 'linux',
          arch: 'x64',
          version: '1',
          runtime: 'docker',
          queues: ['api-disk'],
          resources,
          jobs: [],
        },
      });
    const GiB = 2 ** 30;
    expect((await beat('disk-new', { cpus: 2, memoryBytes: GiB, diskBytes: 20 * GiB })).statusCode).toBe(200);
    const listed = (await app.inject({ method: 'GET', url: '/api/v1/executors', headers: admin })).json().executors;
    expect(listed.find((e: { name: string }) => e.name === 'disk-new')).toMatchObject({
      jobCpus: 2,
      jobMemoryBytes: GiB,
      jobDiskBytes: 20 * GiB,
    });
    const job = { queue: 'api-disk', steps: [{ run: 'true' }] };
    const refused = await submit({ ...job, resources: { disk: '1T' } });
    expect(refused.status).toBe(400);
    expect(refused.body.issues).toEqual([
      {
        field: 'resources.disk',
        message: 'asks for 1Ti but the executors of queue "api-disk" allow at most 20Gi per job (EXECUTOR_JOB_DISK)',
      },
    ]);
    expect((await submit({ ...job, resources: { disk: '20G' } })).status).toBe(201);

    // An executor from before disk limits reports CPU and memory only: it may take any disk, and the CPU check stays.
    expect((await beat('disk-old', { cpus: 1, memoryBytes: GiB })).statusCode).toBe(200);
    const old = (await app.inject({ method: 'GET', url: '/api/v1/executors', headers: admin })).json().executors;
    expect(old.find((e: { name: string }) => e.name === 'disk-old')).toMatchObject({ jobCpus: 1, jobDiskBytes: null });
    expect((await submit({ ...job, resources: { disk: '1T' } })).status).toBe(201);
    expect(
      (await submit({ ...job, resources: { cpus: 4 } })).body.issues.map((i: { field: string }) => i.field),
    ).toEqual(['resources.cpus']);
  });

  it('lists queues with the jobs completed and failed in the last hour, also queues with nothing left to run', async () => {
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    const runTo = async (kind: 'complete' | 'fail') => {
      const now = Date.now();
      await store.jobs.enqueue(jobSpec.parse({ queue: 'api-stats', steps: [{ run: 'true' }] }), now);
      const job = (await store.jobs.dequeue({
        executorName: 'e-stats',
        queues: ['api-stats'],
        tokenHash: `stats-${kind}-${now}`,
        now,
      }))!;
      expect(
        (await store.jobs.finish({ jobId: job.id, attempt: job.attempt, kind, now, retryBackoffMs: 1_000 })).ok,
      ).toBe(true);
    };
    await runTo('complete');
    await runTo('complete');
    await runTo('fail');
    const res = await app.inject({ method: 'GET', url: '/api/v1/queues', headers: admin });
    expect(res.statusCode).toBe(200);
    expect(res.json().queues).toContainEqual({
      queue: 'api-stats',
      queued: 0,
      processing: 0,
      oldestQueuedAt: null,
      completedLastHour: 2,
      failedLastHour: 1,
    });
    // The metrics read the same stats: a queue with only finished jobs is an empty one there.
    expect((await app.inject({ method: 'GET', url: '/metrics' })).body).toMatch(
      /^dockhand_queue_depth\{queue="api-stats"\} 0$/m,
    );
  });
});

describe("the executor protocol's answers", () => {
  it('are exactly what their schemas say: no field missing, none extra', async () => {
    const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
    /** Calls a route and checks its answer against the route's schema, which would drop any extra field. */
    const call = async (url: string, payload: object, authorization: string, status = 200) => {
      const res = await app.inject({ method: 'POST', url, headers: { authorization }, payload });
      expect(res.statusCode, `${url}: ${res.body}`).toBe(status);
      const route = routes.find(
        (r) => r.method === 'POST' && new RegExp(`^${r.url.replace(':id', '\\d+')}$`).test(url),
      )!;
      const body = res.json();
      expect(route.responseSchema!.parse(body), url).toEqual(body);
      return body;
    };
    const { jobSpec } = await import('../../src/core/jobSpec.js');
    for (let i = 0; i < 3; i++)
      await store.jobs.enqueue(
        jobSpec.parse({ queue: 'answers', namespace: 'global', steps: [{ run: 'true' }] }),
        Date.now(),
      );
    const dequeue = (maxJobs?: number) =>
      call(
        '/api/executor/v1/dequeue',
        { executorName: 'answers', version: '1', queues: ['answers'], waitMs: 0, ...(maxJobs ? { maxJobs } : {}) },
        executorAuth.authorization,
      );
    const one = await dequeue();
    const { jobs } = await dequeue(2);
    expect(jobs).toHaveLength(2);
    await call(
      '/api/executor/v1/heartbeat',
      {
        executorName: 'answers',
        hostname: 'h',
        os: 'linux',
        arch: 'x64',
        version: '1',
        runtime: 'shell',
        queues: ['answers'],
        jobs: [{ id: one.id, attempt: 1 }],
      },
      executorAuth.authorization,
    );
    const entries = [{ index: 0, key: 'k', command: ['true'], startTime: 1, offset: 0, out: 'stdout: x\n' }];
    await call(`/api/executor/v1/jobs/${one.id}/logs`, { entries }, `Bearer ${one.token}`);
    await call(`/api/executor/v1/jobs/${one.id}/complete`, {}, `Bearer ${one.token}`);
    await call(
      '/api/executor/v1/jobs/batch',
      {
        items: [
          { id: jobs[0].id, token: jobs[0].token, logs: entries, report: { kind: 'complete' } },
          { id: jobs[1].id, token: jobs[1].token, report: { kind: 'fail', message: 'no', reason: 'script_failure' } },
          { id: one.id, token: one.token, report: { kind: 'complete' } },
          { id: jobs[1].id + 1000, token: 'dhj_unknown', report: { kind: 'complete' } },
        ],
      },
      executorAuth.authorization,
    );
    await call(
      '/api/executor/v1/release',
      { executorName: 'answers', instanceId: 'not-the-holder' },
      executorAuth.authorization,
    );
  });
});

describe('OpenAPI and metrics', () => {
  it('describes every route in /api/openapi.json from the zod schemas', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/api/openapi.json' })).json();
    expect(doc.openapi).toBe('3.1.0');
    for (const route of routes) {
      const op = doc.paths[route.url.replace(/:(\w+)/g, '{$1}')]?.[route.method.toLowerCase()];
      expect(op, `${route.method} ${route.url}`).toBeDefined();
    }
    const submit = doc.paths['/api/executor/v1/dequeue'].post.requestBody.content['application/json'].schema;
    expect(submit.required).toEqual(expect.arrayContaining(['executorName', 'queues']));
    const spec = doc.paths['/api/v1/jobs'].post.requestBody.content['application/json'].schema;
    expect(spec.required).toEqual(expect.arrayContaining(['queue', 'steps']));
    expect(Object.keys(spec.properties.steps.items.properties)).toEqual(
      expect.arrayContaining(['key', 'image', 'run', 'dir', 'env', 'timeout']),
    );
  });

  it('answers every JSON route through a response schema, and documents it', async () => {
    // Not JSON: Prometheus text, an SSE stream, and the document itself.
    const notJson = new Set([
      'GET /metrics',
      'GET /api/v1/jobs/:id/logs/stream',
      'GET /api/openapi.json',
      'GET /api/build-worker/v1/context',
    ]);
    const doc = (await app.inject({ method: 'GET', url: '/api/openapi.json' })).json();
    for (const route of routes) {
      const name = `${route.method} ${route.url}`;
      if (notJson.has(name)) continue;
      expect(route.responseSchema, name).toBeDefined();
      const op = doc.paths[route.url.replace(/:(\w+)/g, '{$1}')][route.method.toLowerCase()];
      expect(op.responses[String(route.status ?? 200)].content['application/json'].schema, name).toBeTruthy();
      expect(op.responses['500'], name).toBeUndefined();
    }
    const job = doc.paths['/api/v1/jobs/{id}'].get.responses['200'].content['application/json'].schema;
    expect(job.properties.job.required).toEqual(expect.arrayContaining(['id', 'state', 'failureReason', 'spec']));
    const refused = doc.paths['/api/v1/jobs/{id}/cancel'].post.responses['409'].content['application/json'].schema;
    expect(refused.required).toEqual(['error']);
  });

  it('sends only the fields the response schema names', async () => {
    const [route] = routes.filter((r) => r.method === 'GET' && r.url === '/api/v1/queues');
    const schema = route.responseSchema!;
    const withExtra = {
      queues: [
        {
          queue: 'q',
          queued: 1,
          processing: 0,
          oldestQueuedAt: null,
          completedLastHour: 0,
          failedLastHour: 0,
          internal: 'x',
        },
      ],
    };
    expect(JSON.stringify(schema.parse(withExtra))).not.toContain('internal');
  });

  it('exposes queue depth, oldest age, durations, dequeue wait and executors online', async () => {
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    for (const name of [
      'dockhand_queue_depth',
      'dockhand_queue_oldest_age_seconds',
      'dockhand_job_duration_seconds',
      'dockhand_dequeue_wait_seconds',
      'dockhand_executors_online',
    ]) {
      expect(text).toContain(`# TYPE ${name}`);
    }
    expect(text).toMatch(/dockhand_queue_depth\{queue="default"\} \d+/);
  });

  it('reports health', async () => {
    const res = await app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json().status).toBe('ok');
  });
});
