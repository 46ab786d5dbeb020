// The Store contract: what every Store implementation must do, whatever the database. Run it with
// storeContract('name', makeStore) from a *.test.ts file; makeStore returns a fresh, migrated, empty store.
import { afterEach, beforeEach, describe, it, expect } from 'vitest';
import { parseJobSpec, type JobSpec, type JobSpecInput } from '../../src/core/jobSpec.js';
import { canTransition, stallFailureMessage, type JobState } from '../../src/core/jobState.js';
import type { LogEntryUpdate } from '../../src/core/protocol.js';
import {
  QUEUE_STATS_WINDOW_MS,
  StaleAttemptError,
  type ExecutorInfo,
  type FinishRequest,
  type FinishResult,
  type JobRecord,
  type Store,
} from '../../src/store/store.js';

/** A fixed clock; tests pass `now` explicitly, so nothing depends on real time. */
const T0 = 1_700_000_000_000;
const BACKOFF = 5_000;

function makeSpec(overrides: Partial<JobSpecInput> = {}): JobSpec {
  const result = parseJobSpec({ queue: 'default', steps: [{ run: 'echo hello' }], ...overrides });
  if (!result.ok) throw new Error(`bad test spec: ${JSON.stringify(result.issues)}`);
  return result.value;
}

function executorInfo(name: string, overrides: Partial<ExecutorInfo> = {}): ExecutorInfo {
  return {
    name,
    hostname: `${name}.local`,
    os: 'linux',
    arch: 'x64',
    version: '0.1.0',
    runtime: 'shell',
    runtimeVersion: null,
    queues: ['default'],
    maxJobs: 2,
    runningJobs: 0,
    jobCpus: null,
    jobMemoryBytes: null,
    jobDiskBytes: null,
    pid: 4242,
    ...overrides,
  };
}

function entry(index: number, offset: number, out: string, extra: Partial<LogEntryUpdate> = {}): LogEntryUpdate {
  return {
    index,
    key: `step-${index + 1}`,
    command: ['bash', `step-${index + 1}.sh`],
    startTime: T0 + index,
    offset,
    out,
    ...extra,
  };
}

function expectOk(result: FinishResult): JobRecord & { changed: boolean } {
  if (!result.ok) throw new Error(`expected finish to succeed, got ${JSON.stringify(result)}`);
  return { ...result.job, changed: result.changed };
}

export function storeContract(name: string, makeStore: () => Promise<Store>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let tokenCounter = 0;

    beforeEach(async () => {
      store = await makeStore();
      tokenCounter = 0;
    });

    afterEach(async () => {
      await store.close();
    });

    const enqueue = (overrides: Partial<JobSpecInput> = {}, now = T0) => store.jobs.enqueue(makeSpec(overrides), now);

    /** Dequeues for one executor; returns the job and the token hash its attempt was recorded with. */
    async function claim(queues: string[] = ['default'], now = T0, executorName = 'exec-1') {
      const tokenHash = `token-hash-${++tokenCounter}`;
      const job = await store.jobs.dequeue({ executorName, queues, tokenHash, now });
      return { job, tokenHash };
    }

    async function claimOrFail(queues: string[] = ['default'], now = T0, executorName = 'exec-1') {
      const { job, tokenHash } = await claim(queues, now, executorName);
      if (!job) throw new Error(`expected a job in ${queues.join(', ')} at ${now}`);
      return { job, tokenHash };
    }

    /** Finishes an attempt and checks that the state change is one the state machine allows. */
    async function finish(
      job: JobRecord,
      kind: FinishRequest['kind'],
      extra: Partial<FinishRequest> = {},
    ): Promise<FinishResult> {
      const before = (await store.jobs.getJob(job.id))!.state;
      const result = await store.jobs.finish({
        jobId: job.id,
        attempt: job.attempt,
        kind,
        now: T0 + 1_000,
        retryBackoffMs: BACKOFF,
        ...extra,
      });
      if (result.ok && result.changed) {
        expect(canTransition(before, result.job.state), `${before} -> ${result.job.state}`).toBe(true);
      }
      return result;
    }

    describe('setup', () => {
      it('answers ping', async () => {
        await expect(store.ping()).resolves.toBeUndefined();
      });

      it('takes a probe write, again and again, and tells storage faults from other errors', async () => {
        await store.probeWrite(T0);
        await store.probeWrite(T0 + 1);
        // A refused statement is the caller's business, not the storage's.
        const refused = await store.accounts.addMember(999_999, 999_999, T0).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(refused, 'a membership of no org must be refused').toBeInstanceOf(Error);
        expect(store.storageFault(refused)).toBeUndefined();
        expect(store.storageFault(new Error('boom'))).toBeUndefined();
        expect(store.storageFault(undefined)).toBeUndefined();
      });

      it('can be migrated again without harm', async () => {
        const job = await enqueue();
        await store.migrate();
        await store.migrate();
        expect(await store.jobs.getJob(job.id)).toEqual(job);
        const next = await enqueue();
        expect(next.id).toBeGreaterThan(job.id);
      });
    });

    describe('users, orgs and tokens', () => {
      it('creates users once by name and keeps at least one site admin', async () => {
        const admin = (await store.accounts.createUser('admin', true, T0))!;
        expect(admin).toEqual({ id: expect.any(Number), name: 'admin', siteAdmin: true, createdAt: T0 });
        expect(await store.accounts.createUser('admin', false, T0 + 1)).toBeUndefined();
        await store.accounts.createUser('alice', false, T0);
        expect(await store.accounts.setSiteAdmin('admin', false)).toBe('last_admin');
        expect(await store.accounts.deleteUser('admin')).toBe('last_admin');
        expect(await store.accounts.setSiteAdmin('alice', true)).toBe('ok');
        expect(await store.accounts.setSiteAdmin('admin', false)).toBe('ok');
        expect(await store.accounts.setSiteAdmin('nobody', true)).toBe('missing');
        expect(await store.accounts.deleteUser('nobody')).toBe('missing');
        expect((await store.accounts.listUsers()).map((u) => [u.name, u.siteAdmin])).toEqual([
          ['admin', false],
          ['alice', true],
        ]);
      });

      it('keeps org memberships, and a user lists only their orgs', async () => {
        const alice = (await store.accounts.createUser('alice', false, T0))!;
        const bob = (await store.accounts.createUser('bob', false, T0))!;
        const acme = (await store.accounts.createOrg('acme', alice.id, T0))!;
        expect(acme).toMatchObject({ name: 'acme', members: 1 });
        expect(await store.accounts.createOrg('acme', bob.id, T0)).toBeUndefined();
        await store.accounts.createOrg('zeta', undefined, T0);
        expect(await store.accounts.addMember(acme.id, bob.id, T0)).toBe(true);
        expect(await store.accounts.addMember(acme.id, bob.id, T0)).toBe(false);
        expect((await store.accounts.listMembers(acme.id)).map((u) => u.name)).toEqual(['alice', 'bob']);
        expect(await store.accounts.orgsOf(bob.id)).toEqual(['acme']);
        expect((await store.accounts.listOrgs(bob.id)).map((o) => o.name)).toEqual(['acme']);
        expect((await store.accounts.listOrgs()).map((o) => [o.name, o.members])).toEqual([
          ['acme', 2],
          ['zeta', 0],
        ]);
        expect((await store.accounts.listUsers()).find((u) => u.name === 'bob')?.orgs).toEqual(['acme']);
        expect(await store.accounts.removeMember(acme.id, bob.id)).toBe(true);
        expect(await store.accounts.removeMember(acme.id, bob.id)).toBe(false);
        expect(await store.accounts.orgsOf(bob.id)).toEqual([]);
      });

      it('finds tokens by hash with their user, records their use, and keeps one token per hash', async () => {
        const alice = (await store.accounts.createUser('alice', false, T0))!;
        expect(await store.accounts.countTokens()).toBe(0);
        const made = await store.accounts.createToken(alice.id, 'laptop', 'hash-a', T0);
        expect(made).toEqual({
          id: expect.any(Number),
          name: 'laptop',
          user: 'alice',
          createdAt: T0,
          lastUsedAt: null,
        });
        // Two replicas bootstrapping the same token: the second insert changes nothing.
        await store.accounts.createToken(alice.id, 'again', 'hash-a', T0 + 1);
        expect(await store.accounts.countTokens()).toBe(1);
        const found = (await store.accounts.findToken('hash-a', T0 + 5))!;
        expect(found.user).toEqual(alice);
        expect(found.token.name).toBe('laptop');
        expect((await store.accounts.getToken(made.id))?.lastUsedAt).toBe(T0 + 5);
        expect(await store.accounts.findToken('hash-unknown', T0)).toBeUndefined();
      });

      it('lists and deletes tokens per user', async () => {
        const alice = (await store.accounts.createUser('alice', false, T0))!;
        const bob = (await store.accounts.createUser('bob', false, T0))!;
        const a1 = await store.accounts.createToken(alice.id, 'up', 'h1', T0);
        await store.accounts.createToken(alice.id, 'up', 'h2', T0);
        await store.accounts.createToken(bob.id, 'up', 'h3', T0);
        expect((await store.accounts.listTokens(alice.id)).map((t) => t.user)).toEqual(['alice', 'alice']);
        expect(await store.accounts.listTokens()).toHaveLength(3);
        await store.accounts.deleteTokensNamed(alice.id, 'up');
        expect(await store.accounts.listTokens(alice.id)).toEqual([]);
        expect(await store.accounts.findToken('h3', T0)).toBeDefined();
        expect(await store.accounts.deleteToken(a1.id)).toBe(false);
      });

      it("deleting a user takes their tokens, memberships and user secrets, and leaves others' alone", async () => {
        await store.accounts.createUser('admin', true, T0);
        const alice = (await store.accounts.createUser('alice', false, T0))!;
        const acme = (await store.accounts.createOrg('acme', alice.id, T0))!;
        await store.accounts.createToken(alice.id, 't', 'h-alice', T0);
        await store.accounts.putSecret({
          namespace: 'user:alice',
          name: 'TOKEN',
          ciphertext: 'c1',
          updatedBy: 'alice',
          now: T0,
        });
        await store.accounts.putSecret({
          namespace: 'org:acme',
          name: 'TOKEN',
          ciphertext: 'c2',
          updatedBy: 'alice',
          now: T0,
        });
        expect(await store.accounts.deleteUser('alice')).toBe('ok');
        expect(await store.accounts.findToken('h-alice', T0)).toBeUndefined();
        expect(await store.accounts.listMembers(acme.id)).toEqual([]);
        expect((await store.accounts.listSecrets()).map((s) => s.namespace)).toEqual(['org:acme']);
        expect(await store.accounts.deleteOrg('acme')).toBe(true);
        expect(await store.accounts.listSecrets()).toEqual([]);
        expect(await store.accounts.deleteOrg('acme')).toBe(false);
      });
    });

    describe('secrets', () => {
      const put = (namespace: string, name: string, ciphertext: string, now = T0) =>
        store.accounts.putSecret({ namespace, name, ciphertext, updatedBy: 'admin', now });

      it('creates, then replaces, a secret per namespace and name, and never lists values', async () => {
        expect((await put('global', 'TOKEN', 'c1')).created).toBe(true);
        const replaced = await store.accounts.putSecret({
          namespace: 'global',
          name: 'TOKEN',
          ciphertext: 'c2',
          updatedBy: 'alice',
          now: T0 + 5,
        });
        expect(replaced).toEqual({
          created: false,
          secret: { namespace: 'global', name: 'TOKEN', updatedBy: 'alice', createdAt: T0, updatedAt: T0 + 5 },
        });
        await put('user:alice', 'TOKEN', 'c3');
        await put('org:acme', 'KEY', 'c4');
        const listed = await store.accounts.listSecrets();
        expect(listed.map((s) => `${s.namespace}/${s.name}`)).toEqual([
          'global/TOKEN',
          'org:acme/KEY',
          'user:alice/TOKEN',
        ]);
        expect(JSON.stringify(listed)).not.toMatch(/c[1-4]/);
        expect((await store.accounts.listSecrets(['global', 'user:alice'])).map((s) => s.namespace)).toEqual([
          'global',
          'user:alice',
        ]);
      });

      it("finds a job's secrets in its namespace and in global only", async () => {
        await put('global', 'TOKEN', 'global-token');
        await put('global', 'OTHER', 'global-other');
        await put('user:alice', 'TOKEN', 'alice-token');
        await put('user:bob', 'TOKEN', 'bob-token');
        const found = await store.accounts.findSecrets('user:alice', ['TOKEN', 'MISSING']);
        expect(found.map((s) => `${s.namespace}=${s.ciphertext}`).sort()).toEqual([
          'global=global-token',
          'user:alice=alice-token',
        ]);
        expect(await store.accounts.findSecrets('user:alice', [])).toEqual([]);
        expect(await store.accounts.deleteSecret('user:alice', 'TOKEN')).toBe(true);
        expect(await store.accounts.deleteSecret('user:alice', 'TOKEN')).toBe(false);
      });

      it('keeps an access-log row per resolution, newest first, filtered', async () => {
        await store.accounts.recordSecretAccess([
          { namespace: 'global', name: 'A', jobId: 1, attempt: 1, executorName: 'e1', accessedAt: T0 },
          { namespace: 'user:alice', name: 'B', jobId: 2, attempt: 1, executorName: 'e2', accessedAt: T0 + 1 },
          { namespace: 'global', name: 'A', jobId: 2, attempt: 2, executorName: 'e1', accessedAt: T0 + 2 },
        ]);
        expect((await store.accounts.listSecretAccess({ limit: 10 })).map((e) => [e.name, e.jobId, e.attempt])).toEqual(
          [
            ['A', 2, 2],
            ['B', 2, 1],
            ['A', 1, 1],
          ],
        );
        expect(await store.accounts.listSecretAccess({ name: 'A', jobId: 1, limit: 10 })).toEqual([
          { namespace: 'global', name: 'A', jobId: 1, attempt: 1, executorName: 'e1', accessedAt: T0 },
        ]);
        expect(await store.accounts.listSecretAccess({ namespace: 'user:alice', limit: 1 })).toHaveLength(1);
        expect(await store.accounts.listSecretAccess({ limit: 2 })).toHaveLength(2);
      });

      it('rewrites every ciphertext in one go, for key rotation, and reports the key prefixes in use', async () => {
        await put('global', 'A', 'dh1:aaaaaaaa:x');
        await put('org:acme', 'B', 'dh1:bbbbbbbb:y');
        const job = await store.jobs.enqueue(makeSpec({ namespace: 'global' }), T0, {
          dockerAuthConfig: 'dh1:aaaaaaaa:z',
        });
        expect((await store.accounts.ciphertextPrefixes(13)).sort()).toEqual(['dh1:aaaaaaaa:', 'dh1:bbbbbbbb:']);
        const seen: string[] = [];
        const counts = await store.accounts.rewriteCiphertexts((ciphertext, context) => {
          seen.push(context);
          return ciphertext.startsWith('dh1:aaaaaaaa:') ? ciphertext.replace('aaaaaaaa', 'cccccccc') : ciphertext;
        });
        expect(counts).toEqual({ secrets: 1, jobs: 1 });
        expect(seen.sort()).toEqual(['job:docker_auth_config', 'secret:global/A', 'secret:org:acme/B']);
        expect((await store.accounts.ciphertextPrefixes(13)).sort()).toEqual(['dh1:bbbbbbbb:', 'dh1:cccccccc:']);
        expect(await store.jobs.getDockerAuthConfig(job.id)).toBe('dh1:cccccccc:z');
      });
    });

    describe('enqueue, getJob and listJobs', () => {
      it('stores a batch of jobs in the order given, each as enqueue would, and hands them out in that order', async () => {
        const specs = [
          makeSpec({ queue: 'a' }),
          makeSpec({ queue: 'b', maxAttempts: 2 }),
          makeSpec({ queue: 'a', namespace: 'org:acme' }),
        ];
        const jobs = await store.jobs.enqueueMany(
          specs.map((spec, i) => ({
            spec,
            submittedBy: `user-${i}`,
            ...(i === 1 ? { dockerAuthConfig: 'dh1:aaaaaaaa:x' } : {}),
          })),
          T0,
        );
        expect(jobs.map((j) => [j.queue, j.namespace, j.maxAttempts, j.submittedBy, j.state, j.createdAt])).toEqual([
          ['a', 'global', specs[0].maxAttempts, 'user-0', 'queued', T0],
          ['b', 'global', 2, 'user-1', 'queued', T0],
          ['a', 'org:acme', specs[2].maxAttempts, 'user-2', 'queued', T0],
        ]);
        expect(jobs.map((j) => j.spec)).toEqual(specs);
        expect(jobs[0].id).toBeLessThan(jobs[1].id);
        expect(jobs[1].id).toBeLessThan(jobs[2].id);
        for (const job of jobs) expect(await store.jobs.getJob(job.id)).toEqual(job);
        expect(await store.jobs.getDockerAuthConfig(jobs[1].id)).toBe('dh1:aaaaaaaa:x');
        expect(await store.jobs.getDockerAuthConfig(jobs[0].id)).toBeUndefined();
        // A claim carries the job's sealed registry credentials, as getDockerAuthConfig gives them.
        const [claimed] = await store.jobs.dequeueMany({
          executorName: 'exec-1',
          queues: ['b'],
          tokenHashes: ['h-1', 'h-2'],
          now: T0,
        });
        expect(claimed.job.id).toBe(jobs[1].id);
        expect(claimed.dockerAuthConfig).toBe('dh1:aaaaaaaa:x');
        expect((await claimOrFail(['a'])).job.id).toBe(jobs[0].id);
      });

      it('stores a queued job with its spec', async () => {
        const spec = makeSpec({
          queue: 'build',
          namespace: 'org:acme',
          maxAttempts: 5,
          repository: { url: 'https://example.com/r.git' },
          files: { 'a.txt': 'A' },
          steps: [{ run: 'make', timeout: '5m', env: { CI: true } }],
        });
        const job = await store.jobs.enqueue(spec, T0, { submittedBy: 'alice' });
        expect(job).toEqual({
          id: expect.any(Number),
          queue: 'build',
          namespace: 'org:acme',
          spec,
          submittedBy: 'alice',
          state: 'queued',
          attempt: 0,
          maxAttempts: 5,
          numFailures: 0,
          numResets: 0,
          cancelRequested: false,
          failureMessage: null,
          failureReason: null,
          executorName: null,
          createdAt: T0,
          queuedAt: T0,
          availableAt: T0,
          startedAt: null,
          finishedAt: null,
          lastHeartbeatAt: null,
        });
        expect(job.id).toBeGreaterThan(0);
        expect(await store.jobs.getJob(job.id)).toEqual(job);
      });

      it('keeps registry credentials apart from the spec, for the executor only', async () => {
        const secret = JSON.stringify({ auths: { 'registry.example.com': { auth: 'dXNlcjpzM2NyZXQ=' } } });
        const job = await store.jobs.enqueue(makeSpec({ queue: 'q' }), T0, { dockerAuthConfig: secret });
        expect(JSON.stringify(await store.jobs.getJob(job.id))).not.toContain('dXNlcjpzM2NyZXQ=');
        expect(await store.jobs.getDockerAuthConfig(job.id)).toBe(secret);
        expect(await store.jobs.getDockerAuthConfig((await enqueue()).id)).toBeUndefined();
      });

      it('gives increasing ids', async () => {
        const a = await enqueue();
        const b = await enqueue();
        const c = await enqueue({ queue: 'other' });
        expect(b.id).toBeGreaterThan(a.id);
        expect(c.id).toBeGreaterThan(b.id);
      });

      it('returns undefined for an unknown job', async () => {
        expect(await store.jobs.getJob(987_654)).toBeUndefined();
      });

      it('lists jobs newest first, filtered by queue, state and namespace', async () => {
        const a = await enqueue({ queue: 'build' });
        const b = await enqueue({ queue: 'test', namespace: 'user:alice' });
        const c = await enqueue({ queue: 'build', namespace: 'user:alice' });
        const d = await enqueue({ queue: 'build' });
        await claimOrFail(['test']);
        const ids = (jobs: JobRecord[]) => jobs.map((j) => j.id);

        expect(ids(await store.jobs.listJobs({ limit: 100 }))).toEqual([d.id, c.id, b.id, a.id]);
        expect(ids(await store.jobs.listJobs({ queue: 'build', limit: 100 }))).toEqual([d.id, c.id, a.id]);
        expect(ids(await store.jobs.listJobs({ state: 'processing', limit: 100 }))).toEqual([b.id]);
        expect(ids(await store.jobs.listJobs({ state: 'queued', limit: 100 }))).toEqual([d.id, c.id, a.id]);
        expect(ids(await store.jobs.listJobs({ namespace: 'user:alice', limit: 100 }))).toEqual([c.id, b.id]);
        expect(ids(await store.jobs.listJobs({ namespaces: ['user:alice', 'org:none'], limit: 100 }))).toEqual([
          c.id,
          b.id,
        ]);
        expect(ids(await store.jobs.listJobs({ namespaces: [], limit: 100 }))).toEqual([]);
        expect(
          ids(await store.jobs.listJobs({ queue: 'build', namespace: 'user:alice', state: 'queued', limit: 100 })),
        ).toEqual([c.id]);
        expect(await store.jobs.listJobs({ queue: 'nothing-here', limit: 100 })).toEqual([]);
        expect(ids(await store.jobs.listJobs({ limit: 2 }))).toEqual([d.id, c.id]);
        const listed = (await store.jobs.listJobs({ queue: 'test', limit: 1 }))[0];
        expect(listed).toEqual(await store.jobs.getJob(b.id));
      });

      it('pages with beforeId, newest first, without gaps or repeats', async () => {
        const all: number[] = [];
        for (let i = 0; i < 11; i++) all.push((await enqueue({ queue: i % 2 ? 'odd' : 'even' }, T0 + i)).id);
        const seen: number[] = [];
        let beforeId: number | undefined;
        for (let page = 0; page < 10; page++) {
          const jobs = await store.jobs.listJobs({ limit: 3, ...(beforeId ? { beforeId } : {}) });
          if (jobs.length === 0) break;
          expect(jobs.length).toBeLessThanOrEqual(3);
          seen.push(...jobs.map((j) => j.id));
          beforeId = jobs.at(-1)!.id;
        }
        expect(seen).toEqual([...all].reverse());

        const evens = all.filter((_, i) => i % 2 === 0).reverse();
        const firstPage = await store.jobs.listJobs({ queue: 'even', limit: 2 });
        expect(firstPage.map((j) => j.id)).toEqual(evens.slice(0, 2));
        const secondPage = await store.jobs.listJobs({ queue: 'even', limit: 2, beforeId: firstPage[1].id });
        expect(secondPage.map((j) => j.id)).toEqual(evens.slice(2, 4));
      });
    });

    describe('dequeue', () => {
      it('returns nothing when no job is queued in the given queues', async () => {
        expect((await claim()).job).toBeUndefined();
        await enqueue({ queue: 'other' });
        expect((await claim(['default'])).job).toBeUndefined();
        expect((await claim(['default', 'third'])).job).toBeUndefined();
      });

      it('hands out the oldest job first', async () => {
        const a = await enqueue({}, T0);
        const b = await enqueue({}, T0 + 10);
        const c = await enqueue({}, T0 + 20);
        const now = T0 + 100;
        expect((await claimOrFail(['default'], now)).job.id).toBe(a.id);
        expect((await claimOrFail(['default'], now)).job.id).toBe(b.id);
        expect((await claimOrFail(['default'], now)).job.id).toBe(c.id);
      });

      it('hands each job out exactly once across many calls', async () => {
        const enqueued = new Set<number>();
        for (let i = 0; i < 30; i++) enqueued.add((await enqueue({ queue: ['a', 'b', 'c'][i % 3] }, T0 + i)).id);
        const handedOut: number[] = [];
        for (let i = 0; i < 100; i++) {
          const queues = i % 2 ? ['a', 'b', 'c'] : ['c', 'b', 'a'];
          const { job } = await claim(queues, T0 + 1_000 + i, `exec-${i % 4}`);
          if (!job) break;
          handedOut.push(job.id);
        }
        expect(handedOut).toHaveLength(30);
        expect(new Set(handedOut)).toEqual(enqueued);
        expect((await claim(['a', 'b', 'c'], T0 + 5_000)).job).toBeUndefined();
      });

      it('respects the queue list', async () => {
        const build = await enqueue({ queue: 'build' });
        const test = await enqueue({ queue: 'test' });
        const deploy = await enqueue({ queue: 'deploy' });
        expect((await claimOrFail(['test'])).job.id).toBe(test.id);
        expect((await claim(['test'])).job).toBeUndefined();
        const next = (await claimOrFail(['deploy', 'build'])).job;
        expect([build.id, deploy.id]).toContain(next.id);
        const last = (await claimOrFail(['deploy', 'build'])).job;
        expect(new Set([next.id, last.id])).toEqual(new Set([build.id, deploy.id]));
        expect((await store.jobs.getJob(test.id))!.state).toBe('processing');
      });

      it('serves the queues in the order given: the first with an available job wins', async () => {
        const older = await enqueue({ queue: 'y' }, T0);
        const newer = await enqueue({ queue: 'x' }, T0 + 10);
        expect((await claimOrFail(['x', 'y'], T0 + 100)).job.id).toBe(newer.id);
        expect((await claimOrFail(['x', 'y'], T0 + 100)).job.id).toBe(older.id);
      });

      it('serves the namespaces of a queue round robin, the oldest job of each in turn', async () => {
        const ids: Record<string, number[]> = { 'org:a': [], 'org:b': [], 'org:c': [] };
        let t = T0;
        for (const namespace of ['org:a', 'org:a', 'org:a', 'org:a', 'org:a', 'org:c', 'org:c', 'org:b']) {
          ids[namespace].push((await enqueue({ namespace }, t++)).id);
        }
        const order: number[] = [];
        for (let i = 0; i < 8; i++) order.push((await claimOrFail(['default'], T0 + 100)).job.id);
        const [a, b, c] = [ids['org:a'], ids['org:b'], ids['org:c']];
        // Never served counts as longest ago; between equals the oldest job goes first.
        expect(order).toEqual([a[0], c[0], b[0], a[1], c[1], a[2], a[3], a[4]]);
      });

      it('claims a batch in one call exactly as the same number of dequeues one after another would', async () => {
        // Two queues, namespaces with different backlogs and a turn already taken, a job not yet available.
        const specs: [Partial<JobSpecInput>, number][] = [
          [{ queue: 'x', namespace: 'org:a' }, T0],
          [{ queue: 'x', namespace: 'org:a' }, T0 + 1],
          [{ queue: 'x', namespace: 'org:a' }, T0 + 2],
          [{ queue: 'x', namespace: 'org:b' }, T0 + 3],
          [{ queue: 'x', namespace: 'org:c' }, T0 + 4],
          [{ queue: 'x', namespace: 'org:c' }, T0 + 5],
          [{ queue: 'y', namespace: 'org:a' }, T0 + 6],
          [{ queue: 'y', namespace: 'org:b' }, T0 + 7],
          [{ queue: 'y', namespace: 'org:b' }, T0 + 8],
          [{ queue: 'x', namespace: 'org:b' }, T0 + 500],
        ];
        // The same alternating queue order for each claim, in both runs.
        const orderAt = (i: number): string[] => (i % 3 === 2 ? ['y', 'x'] : ['x', 'y']);
        const run = async (batch: boolean): Promise<string[]> => {
          const ids: number[] = [];
          for (const [overrides, at] of specs) ids.push((await enqueue(overrides, at)).id);
          // A turn taken before: org:c was served in x.
          await store.jobs.enqueue(makeSpec({ queue: 'x', namespace: 'org:c' }), T0 - 10);
          await claimOrFail(['x'], T0 + 100);
          const names = (jobs: JobRecord[]): string[] =>
            jobs.map((j) => `${j.queue}/${j.namespace}/${ids.indexOf(j.id)}`);
          if (batch) {
            let call = 0;
            const hashes = Array.from({ length: 12 }, (_, i) => `batch-hash-${i}`);
            const claimed = await store.jobs.dequeueMany({
              executorName: 'exec-1',
              queues: ['x', 'y'],
              tokenHashes: hashes,
              now: T0 + 100,
              order: () => orderAt(call++),
            });
            for (const [i, { job }] of claimed.entries())
              expect((await store.jobs.findAttemptByToken(hashes[i]))?.jobId).toBe(job.id);
            return names(claimed.map((c) => c.job));
          }
          const jobs: JobRecord[] = [];
          for (let i = 0; i < 12; i++) {
            const { job } = await claim(orderAt(i), T0 + 100);
            if (!job) break;
            jobs.push(job);
          }
          return names(jobs);
        };
        const oneByOne = await run(false);
        await store.close();
        store = await makeStore();
        const together = await run(true);
        expect(oneByOne).toHaveLength(9);
        expect(together).toEqual(oneByOne);
      });

      it('records several reports in one call as finish would one by one, and finds attempts by several tokens', async () => {
        for (let i = 0; i < 4; i++) await enqueue({ maxAttempts: 2 });
        const claimed = [await claimOrFail(), await claimOrFail(), await claimOrFail(), await claimOrFail()];
        const [a, b, c, d] = claimed.map((x) => x.job);
        await finish(d, 'complete');
        const now = T0 + 1_000;
        const req = (
          job: JobRecord,
          kind: FinishRequest['kind'],
          extra: Partial<FinishRequest> = {},
        ): FinishRequest => ({ jobId: job.id, attempt: job.attempt, kind, now, retryBackoffMs: BACKOFF, ...extra });
        const results = await store.jobs.finishMany([
          req(a, 'complete'),
          req(b, 'error', { message: 'flaky', reason: 'checkout_failure' }),
          req(c, 'fail', { attempt: 99, message: 'x' }),
          req(d, 'complete'),
          req(d, 'fail', { message: 'late' }),
          req({ ...a, id: 999_999 }, 'complete'),
        ]);
        expect(results.map((r) => (r.ok ? `${r.job.state}${r.changed ? '' : ' (repeat)'}` : r.reason))).toEqual([
          'completed',
          'queued',
          'unknown_job',
          'completed (repeat)',
          'stale_attempt',
          'unknown_job',
        ]);
        expect(await store.jobs.getJob(a.id)).toMatchObject({
          state: 'completed',
          finishedAt: now,
          failureReason: null,
        });
        expect(await store.jobs.getJob(b.id)).toMatchObject({
          state: 'queued',
          numFailures: 1,
          availableAt: now + BACKOFF,
          queuedAt: now,
          finishedAt: null,
          failureReason: 'checkout_failure',
        });
        expect((await store.jobs.listAttempts(b.id))[0]).toMatchObject({
          outcome: 'errored',
          message: 'flaky',
          failureReason: 'checkout_failure',
          finishedAt: now,
        });
        expect(await store.jobs.getJob(c.id)).toMatchObject({ state: 'processing' });
        expect(await store.jobs.finishMany([])).toEqual([]);

        // Reasons, each job's own (and decisive over the kind), go through a batch as through finish.
        const more = [];
        for (let i = 0; i < 3; i++) await enqueue({ queue: 'reasons' });
        for (let i = 0; i < 3; i++) more.push((await claimOrFail(['reasons'], now)).job);
        const reasons = await store.jobs.finishMany([
          req(more[0], 'fail', { message: 'oom', reason: 'out_of_memory', now: now + BACKOFF }),
          req(more[1], 'error', { message: 'exit 1', reason: 'script_failure', now: now + BACKOFF }),
          req(more[2], 'fail', { message: 'old executor', now: now + BACKOFF }),
        ]);
        expect(reasons.map((r) => r.ok && [r.job.state, r.job.failureReason])).toEqual([
          ['failed', 'out_of_memory'],
          ['failed', 'script_failure'],
          ['failed', 'script_failure'],
        ]);
        for (const job of more) {
          const attempt = (await store.jobs.listAttempts(job.id)).at(-1)!;
          expect(attempt.failureReason).toBe((await store.jobs.getJob(job.id))!.failureReason);
        }

        const found = await store.jobs.findAttemptsByTokens([
          claimed[2].tokenHash,
          'no-such-hash',
          claimed[0].tokenHash,
        ]);
        expect(found.map((x) => x && [x.jobId, x.attempt])).toEqual([[c.id, 1], undefined, [a.id, 1]]);
      });

      it('lets a single job of one namespace through after at most one job of a namespace with many queued', async () => {
        for (let i = 0; i < 50; i++) await enqueue({ namespace: 'user:batch' }, T0 + i);
        const single = await enqueue({ namespace: 'user:alone' }, T0 + 100);
        const first = (await claimOrFail(['default'], T0 + 200)).job;
        const second = (await claimOrFail(['default'], T0 + 200)).job;
        expect(first.namespace).toBe('user:batch');
        expect(second.id).toBe(single.id);
      });

      it('keeps the namespace turns per queue', async () => {
        await enqueue({ queue: 'q1', namespace: 'org:a' }, T0);
        await enqueue({ queue: 'q1', namespace: 'org:b' }, T0 + 1);
        const q2a = await enqueue({ queue: 'q2', namespace: 'org:a' }, T0 + 2);
        await enqueue({ queue: 'q2', namespace: 'org:b' }, T0 + 3);
        expect((await claimOrFail(['q1'], T0 + 10)).job.namespace).toBe('org:a');
        // org:a was served in q1, not in q2: in q2 it is still its oldest job's turn.
        expect((await claimOrFail(['q2'], T0 + 10)).job.id).toBe(q2a.id);
      });

      it('does not hand out a job before it is available', async () => {
        const job = await enqueue({}, T0);
        expect((await claim(['default'], T0 - 1)).job).toBeUndefined();
        expect((await claimOrFail(['default'], T0)).job.id).toBe(job.id);
      });

      it('starts an attempt: processing, attempt + 1, executor and times recorded', async () => {
        const queued = await enqueue();
        const now = T0 + 500;
        const { job, tokenHash } = await claimOrFail(['default'], now, 'exec-7');
        expect(job).toEqual({
          ...queued,
          state: 'processing',
          attempt: 1,
          executorName: 'exec-7',
          startedAt: now,
          lastHeartbeatAt: now,
        });
        expect(await store.jobs.getJob(job.id)).toEqual(job);

        const attempt = {
          jobId: job.id,
          attempt: 1,
          executorName: 'exec-7',
          startedAt: now,
          finishedAt: null,
          outcome: null,
          message: null,
          failureReason: null,
        };
        expect(await store.jobs.listAttempts(job.id)).toEqual([attempt]);
        expect(await store.jobs.findAttemptByToken(tokenHash)).toEqual(attempt);
        expect(await store.jobs.findAttemptByToken('token-hash-unknown')).toBeUndefined();
      });

      it('records a new attempt with its own token for every dequeue of the same job', async () => {
        const queued = await enqueue();
        const first = await claimOrFail();
        expectOk(await finish(first.job, 'error', { message: 'flaky', now: T0 + 10 }));
        const again = await claimOrFail(['default'], T0 + 10 + BACKOFF, 'exec-2');
        expect(again.job.id).toBe(queued.id);
        expect(again.job.attempt).toBe(2);
        expect(again.job.executorName).toBe('exec-2');
        expect(await store.jobs.findAttemptByToken(first.tokenHash)).toMatchObject({
          jobId: queued.id,
          attempt: 1,
          executorName: 'exec-1',
          outcome: 'errored',
        });
        expect(await store.jobs.findAttemptByToken(again.tokenHash)).toMatchObject({
          jobId: queued.id,
          attempt: 2,
          executorName: 'exec-2',
          outcome: null,
        });
        expect((await store.jobs.listAttempts(queued.id)).map((a) => a.attempt)).toEqual([1, 2]);
      });
    });

    describe('heartbeat', () => {
      it('knows only the jobs whose named attempt this executor runs', async () => {
        await enqueue();
        await enqueue();
        const mine = (await claimOrFail(['default'], T0, 'exec-1')).job;
        const theirs = (await claimOrFail(['default'], T0, 'exec-2')).job;
        const queued = await enqueue({}, T0 + 1);

        const now = T0 + 30_000;
        const answer = await store.jobs.heartbeat({
          executorName: 'exec-1',
          now,
          jobs: [
            { id: mine.id, attempt: 1 },
            { id: theirs.id, attempt: 1 }, // another executor's job
            { id: mine.id, attempt: 2 }, // wrong attempt
            { id: queued.id, attempt: 1 }, // not started
            { id: 987_654, attempt: 1 }, // unknown
          ],
        });
        expect(answer).toEqual({ knownIds: [mine.id], cancelIds: [] });
        expect((await store.jobs.getJob(mine.id))!.lastHeartbeatAt).toBe(now);
        expect((await store.jobs.getJob(theirs.id))!.lastHeartbeatAt).toBe(T0);

        const other = await store.jobs.heartbeat({
          executorName: 'exec-2',
          now,
          jobs: [
            { id: theirs.id, attempt: 1 },
            { id: mine.id, attempt: 1 },
          ],
        });
        expect(other).toEqual({ knownIds: [theirs.id], cancelIds: [] });
      });

      it('answers an empty list with empty lists', async () => {
        expect(await store.jobs.heartbeat({ executorName: 'exec-1', now: T0, jobs: [] })).toEqual({
          knownIds: [],
          cancelIds: [],
        });
      });

      it('names the jobs a user asked to cancel', async () => {
        await enqueue();
        await enqueue();
        const a = (await claimOrFail()).job;
        const b = (await claimOrFail()).job;
        await store.jobs.requestCancel(b.id, T0 + 5);
        const answer = await store.jobs.heartbeat({
          executorName: 'exec-1',
          now: T0 + 10,
          jobs: [
            { id: a.id, attempt: 1 },
            { id: b.id, attempt: 1 },
          ],
        });
        expect(answer.knownIds.sort()).toEqual([a.id, b.id].sort());
        expect(answer.cancelIds).toEqual([b.id]);
      });

      it('forgets a job once its attempt is finished', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        expectOk(await finish(job, 'complete'));
        expect(
          await store.jobs.heartbeat({ executorName: 'exec-1', now: T0 + 2_000, jobs: [{ id: job.id, attempt: 1 }] }),
        ).toEqual({ knownIds: [], cancelIds: [] });
      });
    });

    describe('finish', () => {
      it('completes a job', async () => {
        await enqueue();
        const { job, tokenHash } = await claimOrFail();
        const done = expectOk(await finish(job, 'complete', { now: T0 + 7_000 }));
        expect(done).toMatchObject({
          id: job.id,
          state: 'completed',
          finishedAt: T0 + 7_000,
          failureMessage: null,
          attempt: 1,
          changed: true,
        });
        const { changed: _changed, ...record } = done;
        expect(await store.jobs.getJob(job.id)).toEqual(record);
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({
          outcome: 'completed',
          finishedAt: T0 + 7_000,
        });
      });

      it('repeating the same report changes nothing', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        const first = expectOk(await finish(job, 'complete', { now: T0 + 7_000 }));
        const again = expectOk(await finish(job, 'complete', { now: T0 + 9_000 }));
        expect(again.changed).toBe(false);
        expect(again.state).toBe('completed');
        expect(again.finishedAt).toBe(first.finishedAt);
        expect((await store.jobs.listAttempts(job.id))[0].finishedAt).toBe(T0 + 7_000);
      });

      it('re-queues an errored job with a backoff while attempts remain', async () => {
        await enqueue({ maxAttempts: 3 });
        const { job, tokenHash } = await claimOrFail();
        const now = T0 + 2_000;
        const errored = expectOk(await finish(job, 'error', { message: 'network unreachable', now }));
        expect(errored).toMatchObject({
          state: 'queued',
          numFailures: 1,
          availableAt: now + BACKOFF,
          queuedAt: now,
          finishedAt: null,
          changed: true,
        });
        expect(errored.availableAt).toBeGreaterThan(now);
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({
          outcome: 'errored',
          message: 'network unreachable',
          finishedAt: now,
        });
        expect(await store.jobs.nextAvailableAt(['default'])).toBe(now + BACKOFF);
        expect(await store.jobs.nextAvailableAt(['other'])).toBeUndefined();

        expect((await claim(['default'], now + BACKOFF - 1)).job).toBeUndefined();
        const second = (await claimOrFail(['default'], now + BACKOFF)).job;
        expect(second).toMatchObject({ id: job.id, attempt: 2, state: 'processing' });
        expect(await store.jobs.nextAvailableAt(['default'])).toBeUndefined();

        // The second failure waits twice as long.
        const later = now + BACKOFF + 1_000;
        const erroredAgain = expectOk(await finish(second, 'error', { message: 'again', now: later }));
        expect(erroredAgain).toMatchObject({ state: 'queued', numFailures: 2, availableAt: later + 2 * BACKOFF });
      });

      it('repeating an error report does not count a second failure', async () => {
        await enqueue({ maxAttempts: 3 });
        const { job } = await claimOrFail();
        expectOk(await finish(job, 'error', { message: 'boom', now: T0 + 10 }));
        const again = expectOk(await finish(job, 'error', { message: 'boom', now: T0 + 20 }));
        expect(again).toMatchObject({
          changed: false,
          numFailures: 1,
          state: 'queued',
          availableAt: T0 + 10 + BACKOFF,
        });
      });

      it('fails an errored job when its attempts are used up', async () => {
        await enqueue({ maxAttempts: 2 });
        let { job } = await claimOrFail();
        expectOk(await finish(job, 'error', { message: 'first', now: T0 + 10 }));
        job = (await claimOrFail(['default'], T0 + 10 + BACKOFF)).job;
        const failed = expectOk(await finish(job, 'error', { message: 'second', now: T0 + 20_000 }));
        expect(failed).toMatchObject({
          state: 'failed',
          numFailures: 2,
          failureMessage: 'second',
          finishedAt: T0 + 20_000,
          attempt: 2,
        });
        expect((await store.jobs.listAttempts(job.id)).map((a) => a.outcome)).toEqual(['errored', 'errored']);
        expect((await claim(['default'], T0 + 1_000_000)).job).toBeUndefined();
      });

      it('fails a job at once on a fail report', async () => {
        await enqueue({ maxAttempts: 3 });
        const { job, tokenHash } = await claimOrFail();
        const failed = expectOk(await finish(job, 'fail', { message: 'exit code 2', now: T0 + 3_000 }));
        expect(failed).toMatchObject({
          state: 'failed',
          failureMessage: 'exit code 2',
          finishedAt: T0 + 3_000,
          numFailures: 0,
          changed: true,
        });
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({
          outcome: 'failed',
          message: 'exit code 2',
        });
        const again = expectOk(await finish(job, 'fail', { message: 'exit code 2', now: T0 + 4_000 }));
        expect(again).toMatchObject({ changed: false, state: 'failed', finishedAt: T0 + 3_000 });
      });

      it("records why an attempt ended on the attempt and the job, and clears the job's reason when it completes", async () => {
        await enqueue({ maxAttempts: 3 });
        let { job, tokenHash } = await claimOrFail();
        const errored = expectOk(
          await finish(job, 'error', { message: 'git fetch failed', reason: 'checkout_failure', now: T0 + 10 }),
        );
        expect(errored).toMatchObject({
          state: 'queued',
          failureMessage: 'git fetch failed',
          failureReason: 'checkout_failure',
        });
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({
          outcome: 'errored',
          failureReason: 'checkout_failure',
        });
        // A running attempt has no reason of its own; the job keeps the last one meanwhile, as it keeps the message.
        ({ job, tokenHash } = await claimOrFail(['default'], T0 + 10 + BACKOFF));
        expect(job).toMatchObject({ state: 'processing', failureReason: 'checkout_failure' });
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({ outcome: null, failureReason: null });
        const done = expectOk(await finish(job, 'complete', { now: T0 + 20_000 }));
        expect(done).toMatchObject({ state: 'completed', failureMessage: null, failureReason: null });
        expect((await store.jobs.listAttempts(job.id)).map((a) => [a.outcome, a.failureReason])).toEqual([
          ['errored', 'checkout_failure'],
          ['completed', null],
        ]);
      });

      it('fails with the reason of a final report, and lets the reason decide over the kind', async () => {
        await enqueue({ maxAttempts: 3 });
        await enqueue({ maxAttempts: 3 });
        const timedOut = (await claimOrFail()).job;
        const misrouted = (await claimOrFail()).job;
        const failed = expectOk(
          await finish(timedOut, 'fail', { message: 'step slow timed out after 1s', reason: 'step_timeout' }),
        );
        expect(failed).toMatchObject({
          state: 'failed',
          failureMessage: 'step slow timed out after 1s',
          failureReason: 'step_timeout',
        });
        expect((await store.jobs.listAttempts(timedOut.id))[0]).toMatchObject({
          outcome: 'failed',
          failureReason: 'step_timeout',
        });
        // A script failure sent as an error is still final: the table, not the route, decides.
        const final = expectOk(await finish(misrouted, 'error', { message: 'exit 1', reason: 'script_failure' }));
        expect(final).toMatchObject({ state: 'failed', numFailures: 0, failureReason: 'script_failure' });
        expect(
          expectOk(await finish(misrouted, 'error', { message: 'exit 1', reason: 'script_failure' })).changed,
        ).toBe(false);
      });

      it('stores an untyped report (an older executor) with the reason it most likely meant', async () => {
        await enqueue({ maxAttempts: 2 });
        await enqueue({ maxAttempts: 2 });
        const a = (await claimOrFail()).job;
        const b = (await claimOrFail()).job;
        expect(expectOk(await finish(a, 'error', { message: 'boom' }))).toMatchObject({
          state: 'queued',
          failureReason: 'system_failure',
        });
        expect(expectOk(await finish(b, 'fail', { message: 'exit 1' }))).toMatchObject({
          state: 'failed',
          failureReason: 'script_failure',
        });
        expect((await store.jobs.listAttempts(a.id))[0].failureReason).toBe('system_failure');
        expect((await store.jobs.listAttempts(b.id))[0].failureReason).toBe('script_failure');
      });

      it('refuses a different report for an attempt that already ended', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        expectOk(await finish(job, 'fail', { message: 'x' }));
        const result = await finish(job, 'complete');
        expect(result).toMatchObject({ ok: false, reason: 'stale_attempt' });
        expect((await store.jobs.getJob(job.id))!.state).toBe('failed');
      });

      it('answers unknown_job for an unknown job or attempt', async () => {
        expect(
          await store.jobs.finish({ jobId: 987_654, attempt: 1, kind: 'complete', now: T0, retryBackoffMs: BACKOFF }),
        ).toMatchObject({ ok: false, reason: 'unknown_job' });
        const queued = await enqueue();
        expect(
          await store.jobs.finish({ jobId: queued.id, attempt: 1, kind: 'complete', now: T0, retryBackoffMs: BACKOFF }),
        ).toMatchObject({ ok: false, reason: 'unknown_job' });
        const { job } = await claimOrFail();
        expect(
          await store.jobs.finish({ jobId: job.id, attempt: 2, kind: 'complete', now: T0, retryBackoffMs: BACKOFF }),
        ).toMatchObject({ ok: false, reason: 'unknown_job' });
        expect((await store.jobs.getJob(job.id))!.state).toBe('processing');
      });

      it('refuses the result of an attempt that was reset, before and after the job is dequeued again', async () => {
        await enqueue();
        const { job } = await claimOrFail(['default'], T0);
        const swept = await store.jobs.resetStalled({
          now: T0 + 120_000,
          timeoutMs: 60_000,
          maxResets: 3,
          notBefore: 0,
        });
        expect(swept.reset.map((j) => j.id)).toEqual([job.id]);

        for (const kind of ['complete', 'error', 'fail'] as const) {
          const result = await finish(job, kind, { message: 'late', now: T0 + 121_000 });
          expect(result).toMatchObject({ ok: false, reason: 'stale_attempt' });
        }
        expect((await store.jobs.getJob(job.id))!).toMatchObject({ state: 'queued', numFailures: 0 });

        const second = (await claimOrFail(['default'], T0 + 130_000, 'exec-2')).job;
        expect(second.attempt).toBe(2);
        expect(await finish(job, 'complete', { now: T0 + 131_000 })).toMatchObject({
          ok: false,
          reason: 'stale_attempt',
        });
        expect((await store.jobs.getJob(job.id))!.state).toBe('processing');
        expect(expectOk(await finish(second, 'complete', { now: T0 + 132_000 })).state).toBe('completed');
      });
    });

    describe('requestCancel', () => {
      it('cancels a queued job at once', async () => {
        const queued = await enqueue();
        const canceled = await store.jobs.requestCancel(queued.id, T0 + 100);
        expect(canceled).toMatchObject({
          id: queued.id,
          state: 'canceled',
          cancelRequested: true,
          finishedAt: T0 + 100,
        });
        expect(canceled!.failureMessage).toMatch(/cancel/);
        expect(canceled!.failureReason).toBe('canceled');
        expect(await store.jobs.getJob(queued.id)).toEqual(canceled);
        expect((await claim(['default'], T0 + 200)).job).toBeUndefined();
      });

      it('asks the executor of a processing job to stop; a later complete yields canceled', async () => {
        await enqueue();
        const { job, tokenHash } = await claimOrFail();
        const requested = await store.jobs.requestCancel(job.id, T0 + 100);
        expect(requested).toMatchObject({ state: 'processing', cancelRequested: true, finishedAt: null });
        const done = expectOk(await finish(job, 'complete', { now: T0 + 200 }));
        expect(done).toMatchObject({
          state: 'canceled',
          finishedAt: T0 + 200,
          changed: true,
          failureReason: 'canceled',
        });
        expect(await store.jobs.findAttemptByToken(tokenHash)).toMatchObject({
          outcome: 'canceled',
          failureReason: 'canceled',
        });
      });

      it('cancels instead of retrying when a canceled job reports an error', async () => {
        await enqueue({ maxAttempts: 3 });
        const { job } = await claimOrFail();
        await store.jobs.requestCancel(job.id, T0 + 100);
        const done = expectOk(
          await finish(job, 'error', { message: 'killed', reason: 'runtime_unavailable', now: T0 + 200 }),
        );
        expect(done).toMatchObject({ state: 'canceled', finishedAt: T0 + 200, failureReason: 'canceled' });
        expect((await store.jobs.listAttempts(job.id))[0]).toMatchObject({
          outcome: 'canceled',
          message: 'killed',
          failureReason: 'canceled',
        });
        expect((await claim(['default'], T0 + 1_000_000)).job).toBeUndefined();
      });

      it('cancels when the executor reports it stopped the job for a cancel', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        await store.jobs.requestCancel(job.id, T0 + 100);
        const done = expectOk(
          await finish(job, 'fail', { message: 'stopped', canceledByExecutor: true, now: T0 + 200 }),
        );
        expect(done).toMatchObject({ state: 'canceled', failureReason: 'canceled' });
        const again = expectOk(
          await finish(job, 'fail', { message: 'stopped', canceledByExecutor: true, now: T0 + 300 }),
        );
        expect(again).toMatchObject({ state: 'canceled', changed: false });
      });

      it('repeating a complete report for a canceled job changes nothing', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        await store.jobs.requestCancel(job.id, T0 + 100);
        expectOk(await finish(job, 'complete', { now: T0 + 200 }));
        const again = await finish(job, 'complete', { now: T0 + 300 });
        expect(again).toMatchObject({ ok: true, changed: false, job: { state: 'canceled', finishedAt: T0 + 200 } });
      });

      it('leaves a finished job alone and answers undefined for an unknown job', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        const done = expectOk(await finish(job, 'complete'));
        const after = await store.jobs.requestCancel(job.id, T0 + 5_000);
        expect(after).toMatchObject({ state: 'completed', finishedAt: done.finishedAt });
        expect(await store.jobs.requestCancel(987_654, T0)).toBeUndefined();
      });
    });

    describe('retry', () => {
      for (const end of ['completed', 'failed', 'canceled'] as const) {
        it(`queues a ${end} job again with a clean slate`, async () => {
          await enqueue({ maxAttempts: 2 });
          const { job } = await claimOrFail();
          if (end === 'completed') expectOk(await finish(job, 'complete'));
          if (end === 'failed') expectOk(await finish(job, 'fail', { message: 'broken', reason: 'out_of_disk' }));
          if (end === 'canceled') {
            await store.jobs.requestCancel(job.id, T0 + 10);
            expectOk(await finish(job, 'fail', { message: 'stopped', canceledByExecutor: true }));
          }
          expect((await store.jobs.getJob(job.id))!).toMatchObject({
            state: end,
            failureReason: { completed: null, failed: 'out_of_disk', canceled: 'canceled' }[end],
          });
          expect(canTransition(end, 'queued')).toBe(true);

          const now = T0 + 50_000;
          const retried = await store.jobs.retry(job.id, now);
          expect(retried).toMatchObject({
            id: job.id,
            state: 'queued',
            numFailures: 0,
            numResets: 0,
            cancelRequested: false,
            failureMessage: null,
            failureReason: null,
            finishedAt: null,
            queuedAt: now,
            availableAt: now,
          });
          const again = (await claimOrFail(['default'], now)).job;
          expect(again).toMatchObject({ id: job.id, attempt: 2, state: 'processing' });
          expect(expectOk(await finish(again, 'complete', { now: now + 1 })).state).toBe('completed');
          expect((await store.jobs.listAttempts(job.id)).map((a) => a.attempt)).toEqual([1, 2]);
          // The history keeps why the first attempt ended.
          expect((await store.jobs.listAttempts(job.id))[0].failureReason).toBe(
            { completed: null, failed: 'out_of_disk', canceled: 'canceled' }[end],
          );
        });
      }

      it('resets the failure count, so a retried job gets all its attempts again', async () => {
        await enqueue({ maxAttempts: 2 });
        let { job } = await claimOrFail();
        expectOk(await finish(job, 'error', { message: 'a', now: T0 }));
        job = (await claimOrFail(['default'], T0 + BACKOFF)).job;
        expect(expectOk(await finish(job, 'error', { message: 'b', now: T0 + BACKOFF })).state).toBe('failed');
        await store.jobs.retry(job.id, T0 + 100_000);
        job = (await claimOrFail(['default'], T0 + 100_000)).job;
        expect(expectOk(await finish(job, 'error', { message: 'c', now: T0 + 100_001 })).state).toBe('queued');
      });

      it('leaves queued and processing jobs alone and answers undefined for an unknown job', async () => {
        const queued = await enqueue({}, T0);
        expect(await store.jobs.retry(queued.id, T0 + 10)).toEqual(queued);
        const { job } = await claimOrFail(['default'], T0 + 20);
        expect(await store.jobs.retry(job.id, T0 + 30)).toEqual(job);
        expect(await store.jobs.retry(987_654, T0)).toBeUndefined();
      });
    });

    describe('resetStalled', () => {
      const TIMEOUT = 60_000;

      it('resets a job whose executor went silent for longer than the timeout', async () => {
        await enqueue();
        const { job, tokenHash } = await claimOrFail(['default'], T0, 'exec-silent');
        expect(
          await store.jobs.resetStalled({ now: T0 + TIMEOUT - 1, timeoutMs: TIMEOUT, maxResets: 3, notBefore: 0 }),
        ).toEqual({ reset: [], failed: [] });
        expect((await store.jobs.getJob(job.id))!.state).toBe('processing');

        const now = T0 + TIMEOUT + 1_000;
        const result = await store.jobs.resetStalled({ now, timeoutMs: TIMEOUT, maxResets: 3, notBefore: 0 });
        expect(result.failed).toEqual([]);
        expect(result.reset).toHaveLength(1);
        expect(result.reset[0]).toMatchObject({
          id: job.id,
          state: 'queued',
          numResets: 1,
          numFailures: 0,
          queuedAt: now,
          availableAt: now,
          failureReason: null,
        });
        expect(await store.jobs.getJob(job.id)).toEqual(result.reset[0]);
        const attempt = await store.jobs.findAttemptByToken(tokenHash);
        expect(attempt).toMatchObject({ outcome: 'reset', finishedAt: now, failureReason: 'executor_lost' });
        expect(attempt!.message).toContain('exec-silent');

        const again = (await claimOrFail(['default'], now, 'exec-2')).job;
        expect(again).toMatchObject({ id: job.id, attempt: 2 });
      });

      it('keeps a job alive while heartbeats come', async () => {
        await enqueue();
        const { job } = await claimOrFail(['default'], T0);
        await store.jobs.heartbeat({ executorName: 'exec-1', now: T0 + 50_000, jobs: [{ id: job.id, attempt: 1 }] });
        const result = await store.jobs.resetStalled({
          now: T0 + 100_000,
          timeoutMs: TIMEOUT,
          maxResets: 3,
          notBefore: 0,
        });
        expect(result).toEqual({ reset: [], failed: [] });
        expect((await store.jobs.getJob(job.id))!.state).toBe('processing');
      });

      it('does not count silence from before notBefore', async () => {
        await enqueue();
        const { job } = await claimOrFail(['default'], T0);
        const now = T0 + 10 * TIMEOUT;
        // The server came up less than a timeout ago: it cannot know whether the executor is silent.
        expect(
          await store.jobs.resetStalled({ now, timeoutMs: TIMEOUT, maxResets: 3, notBefore: now - TIMEOUT + 1 }),
        ).toEqual({ reset: [], failed: [] });
        expect((await store.jobs.getJob(job.id))!.state).toBe('processing');
        const result = await store.jobs.resetStalled({
          now,
          timeoutMs: TIMEOUT,
          maxResets: 3,
          notBefore: now - TIMEOUT - 1,
        });
        expect(result.reset.map((j) => j.id)).toEqual([job.id]);
      });

      it('fails the job once it has been reset maxResets times', async () => {
        await enqueue();
        const maxResets = 2;
        let now = T0;
        let job: JobRecord | undefined;
        for (let round = 1; round <= maxResets; round++) {
          job = (await claimOrFail(['default'], now, `exec-${round}`)).job;
          now += TIMEOUT + 1_000;
          const result = await store.jobs.resetStalled({ now, timeoutMs: TIMEOUT, maxResets, notBefore: 0 });
          expect(result.reset.map((j) => j.numResets)).toEqual([round]);
        }
        job = (await claimOrFail(['default'], now, 'exec-last')).job;
        now += TIMEOUT + 1_000;
        const result = await store.jobs.resetStalled({ now, timeoutMs: TIMEOUT, maxResets, notBefore: 0 });
        expect(result.reset).toEqual([]);
        expect(result.failed).toHaveLength(1);
        expect(result.failed[0]).toMatchObject({ id: job.id, state: 'failed', finishedAt: now, attempt: 3 });
        expect(result.failed[0].failureMessage).toBe(stallFailureMessage(maxResets, 'exec-last', TIMEOUT));
        expect(result.failed[0].failureReason).toBe('executor_lost');
        expect((await store.jobs.listAttempts(job.id)).map((a) => [a.outcome, a.failureReason])).toEqual([
          ['reset', 'executor_lost'],
          ['reset', 'executor_lost'],
          ['reset', 'executor_lost'],
        ]);
        expect((await claim(['default'], now + 1)).job).toBeUndefined();
      });

      it('cancels a stalled job whose cancel was requested instead of queuing it again', async () => {
        await enqueue();
        const { job } = await claimOrFail(['default'], T0);
        await store.jobs.requestCancel(job.id, T0 + 1);
        const now = T0 + TIMEOUT + 1_000;
        const result = await store.jobs.resetStalled({ now, timeoutMs: TIMEOUT, maxResets: 3, notBefore: 0 });
        expect(result.reset).toEqual([]);
        expect((await store.jobs.getJob(job.id))!).toMatchObject({
          state: 'canceled',
          finishedAt: now,
          failureReason: 'canceled',
        });
        expect((await store.jobs.listAttempts(job.id))[0]).toMatchObject({
          outcome: 'reset',
          failureReason: 'executor_lost',
        });
        expect((await claim(['default'], now + 1)).job).toBeUndefined();
      });

      it('leaves queued and finished jobs alone', async () => {
        const queued = await enqueue({ queue: 'idle' }, T0);
        await enqueue({}, T0);
        const { job } = await claimOrFail(['default'], T0);
        expectOk(await finish(job, 'complete', { now: T0 + 1 }));
        const result = await store.jobs.resetStalled({
          now: T0 + 10 * TIMEOUT,
          timeoutMs: TIMEOUT,
          maxResets: 3,
          notBefore: 0,
        });
        expect(result).toEqual({ reset: [], failed: [] });
        expect(await store.jobs.getJob(queued.id)).toEqual(queued);
        expect((await store.jobs.getJob(job.id))!.state).toBe('completed');
      });
    });

    describe('logs', () => {
      async function readAll(jobId: number, attempt: number): Promise<Map<number, string>> {
        const texts = new Map<number, string>();
        for (const chunk of await store.logs.readLogChunks(jobId, attempt, 0, 10_000)) {
          const text = texts.get(chunk.index) ?? '';
          expect(chunk.offset).toBe(text.length);
          texts.set(chunk.index, text + chunk.data);
        }
        return texts;
      }

      it('appends output by offset, keeping only the new tail of a retried request', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 0, 'hello ')])).toEqual([{ index: 0, length: 6 }]);
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 6, 'world\n')])).toEqual([{ index: 0, length: 12 }]);
        // The answer to the last request was lost: the executor sends it again along with new output.
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 6, 'world\nmore\n')])).toEqual([
          { index: 0, length: 17 },
        ]);
        // A full duplicate adds nothing.
        const before = await store.logs.readLogChunks(job.id, 1, 0, 100);
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 6, 'world\nmore\n')])).toEqual([
          { index: 0, length: 17 },
        ]);
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 0, 'hello world\nmore\n')])).toEqual([
          { index: 0, length: 17 },
        ]);
        expect(await store.logs.readLogChunks(job.id, 1, 0, 100)).toEqual(before);
        expect((await readAll(job.id, 1)).get(0)).toBe('hello world\nmore\n');
      });

      it('records entries with their lengths and exit codes', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        await store.logs.appendLogs(job.id, 1, [entry(0, 0, '')]);
        expect(await store.logs.listLogEntries(job.id, 1)).toEqual([
          {
            index: 0,
            key: 'step-1',
            command: ['bash', 'step-1.sh'],
            startTime: T0,
            exitCode: null,
            durationMs: null,
            length: 0,
          },
        ]);
        await store.logs.appendLogs(job.id, 1, [
          entry(0, 0, 'abc\n', { exitCode: 0, durationMs: 1_500 }),
          entry(1, 0, 'x'),
        ]);
        await store.logs.appendLogs(job.id, 1, [entry(1, 1, 'yz\n', { exitCode: 2, durationMs: 10 })]);
        // A later update without an exit code keeps the one recorded.
        await store.logs.appendLogs(job.id, 1, [entry(1, 4, '')]);
        expect(await store.logs.listLogEntries(job.id, 1)).toEqual([
          {
            index: 0,
            key: 'step-1',
            command: ['bash', 'step-1.sh'],
            startTime: T0,
            exitCode: 0,
            durationMs: 1_500,
            length: 4,
          },
          {
            index: 1,
            key: 'step-2',
            command: ['bash', 'step-2.sh'],
            startTime: T0 + 1,
            exitCode: 2,
            durationMs: 10,
            length: 4,
          },
        ]);
        const texts = await readAll(job.id, 1);
        expect([texts.get(0), texts.get(1)]).toEqual(['abc\n', 'xyz\n']);
      });

      it('keeps output for unicode by UTF-16 offsets', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        const text = 'héllo 🚀 wörld\n';
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 0, text)])).toEqual([
          { index: 0, length: text.length },
        ]);
        expect(await store.logs.appendLogs(job.id, 1, [entry(0, 0, `${text}ünï\n`)])).toEqual([
          { index: 0, length: text.length + 4 },
        ]);
        expect((await readAll(job.id, 1)).get(0)).toBe(`${text}ünï\n`);
      });

      it('keeps attempts and jobs apart', async () => {
        await enqueue({ maxAttempts: 2 });
        await enqueue();
        const a = (await claimOrFail()).job;
        const b = (await claimOrFail()).job;
        await store.logs.appendLogs(a.id, 1, [entry(0, 0, 'a1\n')]);
        await store.logs.appendLogs(b.id, 1, [entry(0, 0, 'b1\n')]);
        // a's second attempt, after a retryable error.
        await finish(a, 'error', { message: 'flaky', reason: 'system_failure' });
        expect((await claimOrFail(['default'], T0 + 1_000 + BACKOFF)).job).toMatchObject({ id: a.id, attempt: 2 });
        await store.logs.appendLogs(a.id, 2, [entry(0, 0, 'a2-attempt\n')]);
        expect((await readAll(a.id, 1)).get(0)).toBe('a1\n');
        expect((await readAll(a.id, 2)).get(0)).toBe('a2-attempt\n');
        expect((await readAll(b.id, 1)).get(0)).toBe('b1\n');
        expect((await store.logs.listLogEntries(a.id, 1))[0].length).toBe(3);
        expect(await store.logs.listLogEntries(b.id, 2)).toEqual([]);
        expect(await store.logs.readLogChunks(b.id, 2, 0, 100)).toEqual([]);
      });

      it('reads chunks in order and pages with afterSeq', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        const writes: [number, number, string][] = [
          [0, 0, 'one\n'],
          [1, 0, 'uno\n'],
          [0, 4, 'two\n'],
          [1, 4, 'dos\n'],
          [0, 8, 'three\n'],
          [2, 0, 'eins\n'],
        ];
        for (const [index, offset, out] of writes) await store.logs.appendLogs(job.id, 1, [entry(index, offset, out)]);
        const all = await store.logs.readLogChunks(job.id, 1, 0, 100);
        expect(all.map((c) => [c.index, c.offset, c.data])).toEqual(writes);
        for (let i = 1; i < all.length; i++) expect(all[i].seq).toBeGreaterThan(all[i - 1].seq);

        const paged: typeof all = [];
        let after = 0;
        for (;;) {
          const page = await store.logs.readLogChunks(job.id, 1, after, 4);
          expect(page.length).toBeLessThanOrEqual(4);
          if (page.length === 0) break;
          paged.push(...page);
          after = page.at(-1)!.seq;
        }
        expect(paged).toEqual(all);
        expect(await store.logs.readLogChunks(job.id, 1, all.at(-1)!.seq, 100)).toEqual([]);

        // A follower that saw everything gets just the next chunk.
        await store.logs.appendLogs(job.id, 1, [entry(2, 5, 'zwei\n')]);
        expect((await store.logs.readLogChunks(job.id, 1, all.at(-1)!.seq, 100)).map((c) => c.data)).toEqual([
          'zwei\n',
        ]);
      });

      it("appendLogsMany stores an attempt's output only while that attempt is current, item by item", async () => {
        await enqueue({}, T0);
        await enqueue({}, T0);
        const { job: reset } = await claimOrFail(['default'], T0, 'exec-silent');
        const { job: running } = await claimOrFail(['default'], T0 + 60_000, 'exec-alive');
        // The first executor went silent: its attempt is reset before its buffered output arrives.
        const swept = await store.jobs.resetStalled({
          now: T0 + 61_000,
          timeoutMs: 60_000,
          maxResets: 3,
          notBefore: 0,
        });
        expect(swept.reset.map((j) => j.id)).toEqual([reset.id]);
        const results = await store.logs.appendLogsMany([
          { jobId: reset.id, attempt: 1, entries: [entry(0, 0, 'too late\n')] },
          { jobId: running.id, attempt: 1, entries: [entry(0, 0, 'on time\n')] },
          { jobId: running.id, attempt: 2, entries: [entry(0, 0, 'no such attempt\n')] },
        ]);
        expect(results[0]).toEqual({ ok: false, job: expect.objectContaining({ id: reset.id, state: 'queued' }) });
        expect(results[1]).toEqual({ ok: true, entries: [{ index: 0, length: 8 }] });
        expect(results[2]).toMatchObject({ ok: false });
        expect(await store.logs.listLogEntries(reset.id, 1)).toEqual([]);
        expect(await store.logs.listLogEntries(running.id, 2)).toEqual([]);
        expect((await readAll(running.id, 1)).get(0)).toBe('on time\n');
      });

      it('appendLogs, the single form, refuses an attempt that is not current, storing nothing', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        await expect(store.logs.appendLogs(job.id, 2, [entry(0, 0, 'no such attempt\n')])).rejects.toThrow(
          StaleAttemptError,
        );
        expect(await store.logs.listLogEntries(job.id, 2)).toEqual([]);
      });

      it('handles several entries in one request', async () => {
        await enqueue();
        const { job } = await claimOrFail();
        const answer = await store.logs.appendLogs(job.id, 1, [
          entry(0, 0, 'a\n'),
          entry(1, 0, 'bb\n'),
          entry(2, 0, ''),
        ]);
        expect(answer).toEqual([
          { index: 0, length: 2 },
          { index: 1, length: 3 },
          { index: 2, length: 0 },
        ]);
        expect((await store.logs.listLogEntries(job.id, 1)).map((e) => [e.index, e.length])).toEqual([
          [0, 2],
          [1, 3],
          [2, 0],
        ]);
      });
    });

    describe('executors and stats', () => {
      it('upserts executors, keeping firstSeenAt', async () => {
        await store.executors.upsertExecutor(executorInfo('exec-a'), T0);
        await store.executors.upsertExecutor(
          executorInfo('exec-b', {
            queues: ['gpu', 'default'],
            runtimeVersion: '24.0.7',
            maxJobs: null,
            jobCpus: 1.5,
            jobMemoryBytes: 2 ** 30,
            jobDiskBytes: 20 * 2 ** 30,
          }),
          T0 + 10,
        );
        await store.executors.upsertExecutor(
          executorInfo('exec-a', { version: '0.2.0', runningJobs: 2, queues: ['x'], hostname: 'moved', pid: 5151 }),
          T0 + 5_000,
        );
        const executors = (await store.executors.listExecutors()).sort((x, y) => x.name.localeCompare(y.name));
        expect(executors).toEqual([
          {
            ...executorInfo('exec-a', {
              version: '0.2.0',
              runningJobs: 2,
              queues: ['x'],
              hostname: 'moved',
              pid: 5151,
            }),
            firstSeenAt: T0,
            lastSeenAt: T0 + 5_000,
          },
          {
            ...executorInfo('exec-b', {
              queues: ['gpu', 'default'],
              runtimeVersion: '24.0.7',
              maxJobs: null,
              jobCpus: 1.5,
              jobMemoryBytes: 2 ** 30,
              jobDiskBytes: 20 * 2 ** 30,
            }),
            firstSeenAt: T0 + 10,
            lastSeenAt: T0 + 10,
          },
        ]);
      });

      it('keeps the per-job disk limit an executor reports: beyond 32 bits, 0 for unbounded, null from an executor that reports none', async () => {
        const limits = { runtime: 'docker', jobCpus: 2, jobMemoryBytes: 8 * 2 ** 30 };
        const diskOf = async () =>
          (await store.executors.listExecutors()).find((e) => e.name === 'exec-disk')?.jobDiskBytes;
        await store.executors.upsertExecutor(executorInfo('exec-disk', { ...limits, jobDiskBytes: 2 * 2 ** 40 }), T0);
        expect(await diskOf()).toBe(2 * 2 ** 40);
        await store.executors.upsertExecutor(executorInfo('exec-disk', { ...limits, jobDiskBytes: 0 }), T0 + 1);
        expect(await diskOf()).toBe(0);
        // An executor from before disk limits: its CPU and memory stay, the disk limit is unknown again.
        await store.executors.upsertExecutor(executorInfo('exec-disk', { ...limits, jobDiskBytes: null }), T0 + 2);
        expect((await store.executors.listExecutors()).find((e) => e.name === 'exec-disk')).toMatchObject({
          ...limits,
          jobDiskBytes: null,
        });
      });

      it('gives an executor name to one process at a time: the holder keeps it while it calls, another takes it after its window', async () => {
        const a = { id: 'instance-a', windowMs: 3_000 };
        const b = { id: 'instance-b', windowMs: 6_000 };
        expect(await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-a' }), T0, a)).toEqual({
          ok: true,
        });
        // A second process within the holder's window is refused, told who holds the name, and changes nothing.
        expect(
          await store.executors.upsertExecutor(
            executorInfo('shared', { hostname: 'host-b', runningJobs: 3 }),
            T0 + 1_000,
            b,
          ),
        ).toEqual({
          ok: false,
          holder: { id: 'instance-a', hostname: 'host-a', seenAt: T0, windowMs: 3_000 },
        });
        expect(await store.executors.listExecutors()).toEqual([
          { ...executorInfo('shared', { hostname: 'host-a' }), firstSeenAt: T0, lastSeenAt: T0 },
        ]);
        // Each call of the holder renews its window.
        expect(
          await store.executors.upsertExecutor(
            executorInfo('shared', { hostname: 'host-a', runningJobs: 1 }),
            T0 + 2_000,
            a,
          ),
        ).toEqual({ ok: true });
        expect(await store.executors.executorInstance('shared')).toEqual({
          id: 'instance-a',
          hostname: 'host-a',
          seenAt: T0 + 2_000,
          windowMs: 3_000,
        });
        expect(
          (await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-b' }), T0 + 4_999, b)).ok,
        ).toBe(false);
        // Silent for its whole window: the name goes to the next process that calls, with that one's window.
        expect(
          await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-b' }), T0 + 5_000, b),
        ).toEqual({
          ok: true,
        });
        expect(await store.executors.listExecutors()).toEqual([
          { ...executorInfo('shared', { hostname: 'host-b' }), firstSeenAt: T0, lastSeenAt: T0 + 5_000 },
        ]);
        expect(
          await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-a' }), T0 + 10_999, a),
        ).toEqual({
          ok: false,
          holder: { id: 'instance-b', hostname: 'host-b', seenAt: T0 + 5_000, windowMs: 6_000 },
        });
        expect(
          (await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-a' }), T0 + 11_000, a)).ok,
        ).toBe(true);
        expect(await store.executors.executorInstance('unknown')).toBeUndefined();
      });

      it("hands a name over at once when its holder lets go; a call without an instance id is never refused, and leaves a live holder's row alone", async () => {
        const a = { id: 'instance-a', windowMs: 3_000 };
        const b = { id: 'instance-b', windowMs: 3_000 };
        await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-a' }), T0, a);
        // Only the holder can let go.
        await store.executors.releaseExecutorName('shared', 'instance-b');
        expect(
          (await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-b' }), T0 + 1, b)).ok,
        ).toBe(false);
        // An executor from before instance ids keeps working, but the list goes on showing the live holder.
        expect(
          await store.executors.upsertExecutor(
            executorInfo('shared', { hostname: 'old-host', version: '0.1.0-old' }),
            T0 + 2,
          ),
        ).toEqual({ ok: true });
        expect((await store.executors.listExecutors())[0]).toMatchObject({ hostname: 'host-a', lastSeenAt: T0 });
        await store.executors.releaseExecutorName('shared', 'instance-a');
        expect(await store.executors.executorInstance('shared')).toBeUndefined();
        expect(await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'host-b' }), T0 + 3, b)).toEqual(
          {
            ok: true,
          },
        );
        expect(await store.executors.executorInstance('shared')).toEqual({
          id: 'instance-b',
          hostname: 'host-b',
          seenAt: T0 + 3,
          windowMs: 3_000,
        });
        // Once the holder is silent, the old executor's calls show again.
        await store.executors.upsertExecutor(executorInfo('shared', { hostname: 'old-host' }), T0 + 3_003);
        expect((await store.executors.listExecutors())[0]).toMatchObject({
          hostname: 'old-host',
          lastSeenAt: T0 + 3_003,
        });
        // A name first used by an old executor is free for a process with an instance id.
        await store.executors.upsertExecutor(executorInfo('old-only', { hostname: 'old-host' }), T0);
        expect(
          await store.executors.upsertExecutor(executorInfo('old-only', { hostname: 'host-a' }), T0 + 1, a),
        ).toEqual({
          ok: true,
        });
      });

      it('lists no executors at first', async () => {
        expect(await store.executors.listExecutors()).toEqual([]);
      });

      it('counts queued and processing jobs per queue', async () => {
        expect(await store.jobs.queueStats(T0)).toEqual([]);
        await enqueue({ queue: 'a' }, T0);
        await enqueue({ queue: 'a' }, T0 + 1);
        await enqueue({ queue: 'a' }, T0 + 2);
        await enqueue({ queue: 'b' }, T0 + 3);
        await enqueue({ queue: 'c' }, T0 + 4);
        await claimOrFail(['a'], T0 + 10);
        const c = (await claimOrFail(['c'], T0 + 10)).job;
        expectOk(await finish(c, 'complete'));

        expect(await store.jobs.queueStats(T0 + 2_000)).toEqual([
          { queue: 'a', queued: 2, processing: 1, oldestQueuedAt: T0 + 1, completedLastHour: 0, failedLastHour: 0 },
          { queue: 'b', queued: 1, processing: 0, oldestQueuedAt: T0 + 3, completedLastHour: 0, failedLastHour: 0 },
          // A queue with nothing waiting or running is listed while it has jobs finished in the last hour.
          { queue: 'c', queued: 0, processing: 0, oldestQueuedAt: null, completedLastHour: 1, failedLastHour: 0 },
        ]);
      });

      it('counts the jobs completed and failed in the hour before now, not canceled ones', async () => {
        const HOUR = QUEUE_STATS_WINDOW_MS;
        /** Runs a job in `queue` to its end at `at`. */
        const endJob = async (
          queue: string,
          at: number,
          ending: 'complete' | 'fail' | 'error' | 'cancel' | 'canceledByExecutor',
        ) => {
          await enqueue({ queue, maxAttempts: 1 }, at - 100);
          const { job } = await claimOrFail([queue], at - 50);
          if (ending === 'cancel') {
            await store.jobs.requestCancel(job.id, at - 10);
            return expectOk(await finish(job, 'complete', { now: at }));
          }
          if (ending === 'canceledByExecutor')
            return expectOk(await finish(job, 'fail', { now: at, canceledByExecutor: true }));
          return expectOk(await finish(job, ending, { now: at }));
        };
        const now = T0 + 10 * HOUR;
        expect((await endJob('done', now - HOUR, 'complete')).state).toBe('completed'); // exactly an hour ago: out
        await endJob('done', now - HOUR - 5_000, 'fail'); // before the window
        await endJob('done', now - HOUR + 1, 'complete');
        await endJob('done', now - 60_000, 'complete');
        await endJob('done', now, 'complete');
        expect((await endJob('done', now - 1_000, 'fail')).state).toBe('failed');
        expect((await endJob('done', now - 2_000, 'error')).state).toBe('failed'); // attempts used up
        expect((await endJob('done', now - 3_000, 'cancel')).state).toBe('canceled');
        expect((await endJob('done', now - 4_000, 'canceledByExecutor')).state).toBe('canceled');
        const queuedThenCanceled = await enqueue({ queue: 'done' }, now - 500);
        expect((await store.jobs.requestCancel(queuedThenCanceled.id, now - 400))!.state).toBe('canceled');
        // Only canceled jobs in the last hour: the queue is not listed.
        await endJob('canceled-only', now - 1_000, 'cancel');
        // Old finished jobs only: not listed either.
        await endJob('old', now - 2 * HOUR, 'complete');
        // A retried job counts by its state now: queued again, it is no longer completed.
        const retried = await endJob('retried', now - 1_000, 'complete');
        await store.jobs.retry(retried.id, now - 500);
        // Live and finished jobs in one queue.
        await enqueue({ queue: 'mixed' }, now - 300);
        await endJob('mixed', now - 200, 'fail');

        expect(await store.jobs.queueStats(now)).toEqual([
          { queue: 'done', queued: 0, processing: 0, oldestQueuedAt: null, completedLastHour: 3, failedLastHour: 2 },
          {
            queue: 'mixed',
            queued: 1,
            processing: 0,
            oldestQueuedAt: now - 300,
            completedLastHour: 0,
            failedLastHour: 1,
          },
          {
            queue: 'retried',
            queued: 1,
            processing: 0,
            oldestQueuedAt: now - 500,
            completedLastHour: 0,
            failedLastHour: 0,
          },
        ]);
        // An hour later all of it has left the window but the queued jobs.
        expect(await store.jobs.queueStats(now + HOUR)).toEqual([
          {
            queue: 'mixed',
            queued: 1,
            processing: 0,
            oldestQueuedAt: now - 300,
            completedLastHour: 0,
            failedLastHour: 0,
          },
          {
            queue: 'retried',
            queued: 1,
            processing: 0,
            oldestQueuedAt: now - 500,
            completedLastHour: 0,
            failedLastHour: 0,
          },
        ]);
      });
    });

    describe('state machine', () => {
      it('every finish changes state only along allowed transitions', async () => {
        // finish() in this suite checks canTransition for each change; walk a job through every kind of ending.
        const states: JobState[] = [];
        await enqueue({ maxAttempts: 3 });
        let { job } = await claimOrFail();
        states.push(job.state);
        states.push(expectOk(await finish(job, 'error', { message: 'retry me', now: T0 })).state);
        job = (await claimOrFail(['default'], T0 + BACKOFF)).job;
        states.push(job.state);
        states.push(expectOk(await finish(job, 'fail', { message: 'give up', now: T0 + BACKOFF })).state);
        states.push((await store.jobs.retry(job.id, T0 + 100_000))!.state);
        job = (await claimOrFail(['default'], T0 + 100_000)).job;
        states.push(job.state);
        states.push(expectOk(await finish(job, 'complete', { now: T0 + 100_001 })).state);
        expect(states).toEqual(['processing', 'queued', 'processing', 'failed', 'queued', 'processing', 'completed']);
        for (let i = 1; i < states.length; i++)
          expect(canTransition(states[i - 1], states[i]), `${states[i - 1]} -> ${states[i]}`).toBe(true);
      });
    });
  });
}
