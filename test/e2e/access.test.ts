// Who sees what, walked from the route table: every client route is classified below, and a route added without
// a class fails this test. A user reaches only their own namespace's and their orgs' jobs, logs and secrets;
// site-admin routes refuse everyone else; no answer ever carries a secret value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { jobSpec } from '../../src/core/jobSpec.js';
import { CLIENT_API_PREFIX } from '../../src/core/protocol.js';
import type { RouteDef } from '../../src/server/http.js';
import type { JobRecord } from '../../src/store/store.js';
import { inProcessServer, type InProcessServer } from '../support/inProcess.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN } from '../support/processes.js';

let server: InProcessServer;
const tokens: Record<string, string> = {};
let aliceJob: JobRecord;
let acmeJob: JobRecord;
let aliceTokenId: number;
let aliceBuild: number;
const ALICE_SECRET = 'alice-secret-value-123';
const ACME_SECRET = 'acme-secret-value-456';
const GLOBAL_SECRET = 'global-secret-value-789';

function call(who: string, method: string, url: string, payload?: unknown): Promise<LightMyRequestResponse> {
  return server.app.inject({
    method: method as 'GET',
    url: `${CLIENT_API_PREFIX}${url}`,
    headers: { authorization: `Bearer ${who === 'admin' ? ADMIN_TOKEN : tokens[who]}` },
    ...(payload === undefined ? {} : { payload: payload as object }),
  });
}

beforeAll(async () => {
  server = await inProcessServer();
  tokens.alice = await server.addUser('alice', { orgs: ['acme'] });
  tokens.carol = await server.addUser('carol', { orgs: ['acme'] });
  tokens.bob = await server.addUser('bob');
  aliceTokenId = (await server.store.accounts.listTokens((await server.store.accounts.getUser('alice'))!.id))[0].id;
  await server.secrets.set({ namespace: 'user:alice', name: 'TOKEN', value: ALICE_SECRET, updatedBy: 'alice' });
  await server.secrets.set({ namespace: 'org:acme', name: 'TOKEN', value: ACME_SECRET, updatedBy: 'alice' });
  await server.secrets.set({ namespace: 'global', name: 'TOKEN', value: GLOBAL_SECRET, updatedBy: 'admin' });

  const submit = async (who: string, spec: object): Promise<JobRecord> => {
    const res = await call(who, 'POST', '/jobs', spec);
    expect(res.statusCode, res.body).toBe(201);
    return res.json().job;
  };
  aliceJob = await submit('alice', { queue: 'access', secrets: ['TOKEN'], steps: [{ run: 'echo alice-output' }] });
  acmeJob = await submit('alice', {
    queue: 'access',
    namespace: 'org:acme',
    secrets: ['TOKEN'],
    steps: [{ run: 'echo acme-output' }],
  });
  // A build of alice's, stored as the build manager would (this server runs no build planes).
  const build = await server.store.builds.create(
    {
      namespace: 'user:alice',
      repository: 'registry.example.com/alice/app',
      spec: {
        context: { git: { url: 'https://git.example/app.git', commit: 'abcdef1' } },
        dockerfile: 'Dockerfile',
        tags: ['registry.example.com/alice/app:1'],
      },
      commit: 'abcdef1',
      triesRemaining: 3,
      submittedBy: 'alice',
    },
    Date.now(),
    10,
  );
  if (typeof build === 'string') throw new Error(build);
  aliceBuild = build.id;
  // Alice's job runs far enough to have a log.
  const executor = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
  const dequeued = await server.app.inject({
    method: 'POST',
    url: '/api/executor/v1/dequeue',
    headers: executor,
    payload: { executorName: 'e1', version: 't', queues: ['access'], waitMs: 0 },
  });
  expect(dequeued.json().id).toBe(aliceJob.id);
  await server.app.inject({
    method: 'POST',
    url: `/api/executor/v1/jobs/${aliceJob.id}/logs`,
    headers: { authorization: `Bearer ${dequeued.json().token}` },
    payload: {
      entries: [{ index: 0, key: 'step-1', command: ['sh'], startTime: 1, offset: 0, out: 'stdout: alice-output\n' }],
    },
  });
});

afterAll(async () => {
  await server.close();
});

/** What a route must do when bob (member of nothing) and carol (member of acme, not alice) reach for alice's things. */
type Probe = () => Promise<void>;

const hidesAliceJob =
  (method: string, suffix = ''): Probe =>
  async () => {
    for (const [who, job] of [
      ['bob', aliceJob],
      ['bob', acmeJob],
      ['carol', aliceJob],
    ] as const) {
      const res = await call(who, method, `/jobs/${job.id}${suffix}`, method === 'POST' ? {} : undefined);
      expect(res.statusCode, `${who} ${method} job ${job.id}${suffix}`).toBe(404);
      expect(res.json().error).toBe(`no job ${job.id}`);
      expect(res.body).not.toMatch(/alice-output|acme-output/);
    }
    // A fellow org member does reach the org's job.
    if (method === 'GET') expect((await call('carol', 'GET', `/jobs/${acmeJob.id}${suffix}`)).statusCode).toBe(200);
  };

const hidesAliceBuild =
  (method: string, suffix = ''): Probe =>
  async () => {
    for (const who of ['bob', 'carol']) {
      const res = await call(who, method, `/builds/${aliceBuild}${suffix}`, method === 'POST' ? {} : undefined);
      expect(res.statusCode, `${who} ${method} build ${aliceBuild}${suffix}`).toBe(404);
      expect(res.json().error).toBe(`no build ${aliceBuild}`);
    }
  };

const siteAdminsOnly =
  (method: string, url: string, payload?: unknown): Probe =>
  async () => {
    for (const who of ['bob', 'alice']) {
      const res = await call(who, method, url, payload);
      expect(res.statusCode, `${who} ${method} ${url}`).toBe(403);
      expect(res.json().error).toMatch(/only site admins can/);
    }
  };

const PROBES: Record<string, Probe> = {
  'POST /jobs': async () => {
    const res = await call('bob', 'POST', '/jobs', {
      queue: 'access',
      namespace: 'user:alice',
      steps: [{ run: 'true' }],
    });
    expect(res.statusCode).toBe(403);
    expect(res.json().issues).toEqual([{ field: 'namespace', message: expect.stringContaining('"user:bob"') }]);
    expect(
      (await call('bob', 'POST', '/jobs', { queue: 'access', namespace: 'org:acme', steps: [{ run: 'true' }] }))
        .statusCode,
    ).toBe(403);
    expect(
      (await call('bob', 'POST', '/jobs', { queue: 'access', namespace: 'global', steps: [{ run: 'true' }] }))
        .statusCode,
    ).toBe(403);
  },
  'POST /jobs/batch': async () => {
    const own = { queue: 'access', steps: [{ run: 'true' }] };
    const res = await call('bob', 'POST', '/jobs/batch', { jobs: [own, { ...own, namespace: 'user:alice' }] });
    expect(res.statusCode).toBe(403);
    expect(res.json().issues).toEqual([{ field: 'jobs[1].namespace', message: expect.stringContaining('"user:bob"') }]);
    // All or none: bob's own job of the refused batch was not stored either.
    expect((await call('bob', 'GET', '/jobs')).json().jobs).toEqual([]);
  },
  'GET /jobs': async () => {
    const ids = async (who: string, query = ''): Promise<number[]> =>
      (await call(who, 'GET', `/jobs${query}`)).json().jobs.map((j: JobRecord) => j.id);
    expect(await ids('bob')).toEqual([]);
    expect(await ids('bob', '?namespace=user:alice')).toEqual([]);
    expect(await ids('carol')).toEqual([acmeJob.id]);
    expect(await ids('alice')).toEqual([acmeJob.id, aliceJob.id]);
    expect(await ids('admin')).toEqual(expect.arrayContaining([acmeJob.id, aliceJob.id]));
  },
  'GET /jobs/:id': hidesAliceJob('GET'),
  'GET /jobs/:id/logs': hidesAliceJob('GET', '/logs'),
  'GET /jobs/:id/logs/stream': async () => {
    for (const job of [aliceJob, acmeJob]) {
      const res = await call('bob', 'GET', `/jobs/${job.id}/logs/stream`);
      expect(res.statusCode).toBe(404);
      expect(res.body).not.toContain('output');
    }
  },
  'POST /jobs/:id/cancel': hidesAliceJob('POST', '/cancel'),
  'POST /jobs/:id/retry': hidesAliceJob('POST', '/retry'),
  'GET /executors': siteAdminsOnly('GET', '/executors'),
  'GET /queues': async () => {
    // Counts per queue only: nothing of anyone's jobs.
    const res = await call('bob', 'GET', '/queues');
    expect(res.statusCode).toBe(200);
    expect(Object.keys(res.json().queues[0]).sort()).toEqual([
      'completedLastHour',
      'failedLastHour',
      'oldestQueuedAt',
      'processing',
      'queue',
      'queued',
    ]);
  },
  'GET /me': async () => {
    expect((await call('carol', 'GET', '/me')).json()).toEqual({
      user: { name: 'carol', siteAdmin: false, createdAt: expect.any(Number) },
      orgs: ['acme'],
      namespaces: ['user:carol', 'org:acme'],
    });
  },
  'GET /users': siteAdminsOnly('GET', '/users'),
  'POST /users': siteAdminsOnly('POST', '/users', { name: 'mallory', siteAdmin: true }),
  'POST /users/:name/site-admin': siteAdminsOnly('POST', '/users/bob/site-admin', { siteAdmin: true }),
  'DELETE /users/:name': siteAdminsOnly('DELETE', '/users/alice'),
  'GET /orgs': async () => {
    expect((await call('bob', 'GET', '/orgs')).json().orgs).toEqual([]);
    expect((await call('carol', 'GET', '/orgs')).json().orgs.map((o: { name: string }) => o.name)).toEqual(['acme']);
  },
  'POST /orgs': async () => {
    // Anyone may make an org; taking an existing name does not make you a member.
    expect((await call('bob', 'POST', '/orgs', { name: 'acme' })).statusCode).toBe(409);
    expect((await call('bob', 'GET', '/orgs/acme/members')).statusCode).toBe(404);
  },
  'DELETE /orgs/:name': async () => {
    expect((await call('bob', 'DELETE', '/orgs/acme')).statusCode).toBe(404);
  },
  'GET /orgs/:name/members': async () => {
    expect((await call('bob', 'GET', '/orgs/acme/members')).statusCode).toBe(404);
    expect(
      (await call('carol', 'GET', '/orgs/acme/members')).json().members.map((m: { name: string }) => m.name),
    ).toEqual(['alice', 'carol']);
  },
  'POST /orgs/:name/members': async () => {
    expect((await call('bob', 'POST', '/orgs/acme/members', { user: 'bob' })).statusCode).toBe(404);
  },
  'DELETE /orgs/:name/members/:user': async () => {
    expect((await call('bob', 'DELETE', '/orgs/acme/members/alice')).statusCode).toBe(404);
  },
  'POST /tokens': async () => {
    const res = await call('bob', 'POST', '/tokens', { name: 'stolen', user: 'alice' });
    expect(res.statusCode).toBe(403);
    expect(res.body).not.toContain('dha_');
  },
  'GET /tokens': async () => {
    expect((await call('bob', 'GET', '/tokens?user=alice')).statusCode).toBe(403);
    expect((await call('bob', 'GET', '/tokens')).json().tokens.map((t: { user: string }) => t.user)).toEqual(['bob']);
  },
  'DELETE /tokens/:id': async () => {
    expect((await call('bob', 'DELETE', `/tokens/${aliceTokenId}`)).statusCode).toBe(404);
    expect((await call('alice', 'GET', '/me')).statusCode).toBe(200);
  },
  'POST /secrets': async () => {
    for (const namespace of ['user:alice', 'org:acme', 'global']) {
      expect(
        (await call('bob', 'POST', '/secrets', { name: 'TOKEN', value: 'overwritten-by-bob', namespace })).statusCode,
      ).toBe(403);
    }
    expect(
      (
        await call('carol', 'POST', '/secrets', {
          name: 'TOKEN',
          value: 'overwritten-by-carol',
          namespace: 'user:alice',
        })
      ).statusCode,
    ).toBe(403);
  },
  'GET /secrets': async () => {
    const seen = async (who: string, query = ''): Promise<string[]> =>
      (await call(who, 'GET', `/secrets${query}`)).json().secrets.map((s: { namespace: string }) => s.namespace);
    expect(await seen('bob')).toEqual(['global']);
    expect(await seen('carol')).toEqual(['global', 'org:acme']);
    expect((await call('bob', 'GET', '/secrets?namespace=user:alice')).statusCode).toBe(403);
  },
  'DELETE /secrets/:name': async () => {
    for (const namespace of ['user:alice', 'org:acme', 'global']) {
      expect((await call('bob', 'DELETE', `/secrets/TOKEN?namespace=${namespace}`)).statusCode).toBe(403);
    }
    expect((await server.store.accounts.listSecrets()).length).toBe(3);
  },
  'GET /secrets/access-log': siteAdminsOnly('GET', '/secrets/access-log'),
  'POST /builds/contexts': async () => {
    const res = await server.app.inject({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/builds/contexts?namespace=user:alice`,
      headers: { authorization: `Bearer ${tokens.bob}`, 'content-type': 'application/gzip' },
      payload: Buffer.from([0x1f, 0x8b, ...new Array(30).fill(0)]),
    });
    expect(res.statusCode).toBe(403);
  },
  'POST /builds': async () => {
    const res = await call('bob', 'POST', '/builds', {
      namespace: 'user:alice',
      context: { git: { url: 'https://git.example/app.git', commit: 'abcdef1' } },
      tags: ['registry.example.com/a/b:1'],
    });
    expect(res.statusCode).toBe(403);
    expect(res.json().issues).toEqual([{ field: 'namespace', message: expect.stringContaining('"user:bob"') }]);
  },
  'GET /builds': async () => {
    const ids = async (who: string, query = ''): Promise<number[]> =>
      (await call(who, 'GET', `/builds${query}`)).json().builds.map((b: { id: number }) => b.id);
    expect(await ids('bob')).toEqual([]);
    expect(await ids('carol')).toEqual([]);
    expect(await ids('alice')).toEqual([aliceBuild]);
    expect((await call('bob', 'GET', '/builds?namespace=user:alice')).statusCode).toBe(403);
    expect(await ids('admin')).toEqual([aliceBuild]);
  },
  'GET /builds/:id': hidesAliceBuild('GET'),
  'GET /builds/:id/logs': hidesAliceBuild('GET', '/logs'),
  'POST /builds/:id/cancel': hidesAliceBuild('POST', '/cancel'),
  'GET /events/image-pushed': siteAdminsOnly('GET', '/events/image-pushed'),
};

describe('access control on every client route', () => {
  const clientRoutes = (): RouteDef<any, any>[] => server.routes.filter((r) => r.auth === 'client');
  const keyOf = (r: RouteDef<any, any>): string => `${r.method} ${r.url.slice(CLIENT_API_PREFIX.length)}`;

  it('has a rule for every client route in the route table', () => {
    expect(
      clientRoutes()
        .map(keyOf)
        .filter((k) => !(k in PROBES)),
      'routes without an access rule in this test',
    ).toEqual([]);
  });

  it('keeps every user to their own namespaces, and site-admin routes to site admins', async () => {
    for (const route of clientRoutes()) await PROBES[keyOf(route)]();
  });

  it('never answers with a secret value, on any GET route, even to a site admin', async () => {
    for (const route of server.routes.filter(
      (r) => r.method === 'GET' && r.auth === 'client' && !r.url.endsWith('/stream'),
    )) {
      for (const job of [aliceJob, acmeJob]) {
        const res = await call(
          'admin',
          'GET',
          route.url.slice(CLIENT_API_PREFIX.length).replace(':id', String(job.id)).replace(':name', 'acme'),
        );
        for (const value of [ALICE_SECRET, ACME_SECRET, GLOBAL_SECRET])
          expect(res.body, route.url).not.toContain(value);
      }
    }
  });

  it("resolves a job's secrets in its namespace over global, with one access-log row per resolution", async () => {
    const log = (await call('admin', 'GET', `/secrets/access-log?jobId=${aliceJob.id}`)).json().entries;
    expect(log).toEqual([
      {
        namespace: 'user:alice',
        name: 'TOKEN',
        jobId: aliceJob.id,
        attempt: 1,
        executorName: 'e1',
        accessedAt: expect.any(Number),
      },
    ]);
  });
});

describe('submitting with secrets', () => {
  it('refuses a job naming a secret its namespace and global lack, naming the field and the fix', async () => {
    const res = await call('bob', 'POST', '/jobs', {
      queue: 'access',
      secrets: ['TOKEN', 'NOPE'],
      steps: [{ run: 'true' }],
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().issues).toEqual([
      {
        field: 'secrets[1]',
        message:
          'no secret "NOPE" in user:bob or global; create it with: dockhand secret set NOPE --namespace user:bob',
      },
    ]);
  });

  it('refuses a namespace of a user or org that does not exist', async () => {
    const res = await call('admin', 'POST', '/jobs', {
      queue: 'access',
      namespace: 'org:acmee',
      steps: [{ run: 'true' }],
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().issues[0]).toEqual({
      field: 'namespace',
      message: 'no org "acmee"; create it with: dockhand org create acmee',
    });
  });

  it('refuses secret values under 8 characters, and DOCKER_AUTH_CONFIG values that are not a docker config', async () => {
    const short = await call('admin', 'POST', '/secrets', { name: 'PIN', value: '1234' });
    expect(short.statusCode).toBe(400);
    expect(short.json().issues[0]).toEqual({
      field: 'value',
      message: expect.stringMatching(/at least 8 characters: shorter values would be masked/),
    });
    const docker = await call('admin', 'POST', '/secrets', { name: 'DOCKER_AUTH_CONFIG', value: 'not json at all' });
    expect(docker.statusCode).toBe(400);
    expect(docker.json().issues[0].field).toBe('value');
    expect(docker.body).not.toContain('not json at all');
  });

  it('fails a job at dequeue, saying why, when its secret was deleted after it was submitted', async () => {
    const bob = tokens.bob;
    expect(bob).toBeDefined();
    await server.secrets.set({
      namespace: 'user:bob',
      name: 'SHORT_LIVED',
      value: 'short-lived-value',
      updatedBy: 'bob',
    });
    const job = (
      await call('bob', 'POST', '/jobs', { queue: 'gone', secrets: ['SHORT_LIVED'], steps: [{ run: 'true' }] })
    ).json().job;
    await server.store.accounts.deleteSecret('user:bob', 'SHORT_LIVED');
    const res = await server.app.inject({
      method: 'POST',
      url: '/api/executor/v1/dequeue',
      headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` },
      payload: { executorName: 'e1', version: 't', queues: ['gone'], waitMs: 0 },
    });
    expect(res.statusCode).toBe(204);
    const { job: failed, attempts } = (await call('bob', 'GET', `/jobs/${job.id}`)).json();
    expect(failed.state).toBe('failed');
    expect(failed.failureMessage).toBe(
      'cannot run: secret SHORT_LIVED no longer exists in user:bob or global (deleted after the job was submitted)',
    );
    expect(failed.failureReason).toBe('secret_unavailable');
    expect(attempts.map((a: { outcome: string; failureReason: string }) => [a.outcome, a.failureReason])).toEqual([
      ['failed', 'secret_unavailable'],
    ]);
  });

  it('keeps the spec the client gets back free of values, with the submitter recorded', async () => {
    const job = (await call('carol', 'GET', `/jobs/${acmeJob.id}`)).json().job;
    expect(job.submittedBy).toBe('alice');
    expect(job.spec.secrets).toEqual(['TOKEN']);
    expect(jobSpec.safeParse({ ...job.spec, namespace: job.namespace }).success).toBe(true);
  });
});
