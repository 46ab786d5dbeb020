// The build store's contract (store/builds.ts): what it must do on every database. Run it with
// buildsContract('name', open) from a *.test.ts file; `open` returns a fresh, migrated, empty store.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildRecord, NewBuild, TryEnd } from '../../src/store/builds.js';
import type { Store } from '../../src/store/store.js';

const T0 = 1_700_000_000_000;
const REPO = 'registry.example.com/acme/app';

export function newBuild(overrides: Partial<NewBuild> = {}): NewBuild {
  const repository = overrides.repository ?? REPO;
  return {
    namespace: 'org:acme',
    repository,
    spec: {
      context: { git: { url: 'https://git.example.com/acme/app.git', commit: 'abc1234' } },
      dockerfile: 'Dockerfile',
      tags: [`${repository}:1.0`],
    },
    commit: 'abc1234',
    triesRemaining: 3,
    submittedBy: 'alice',
    ...overrides,
  };
}

const complete: TryEnd = { outcome: 'complete', message: null, phase: 'complete', final: true };
const retry = (availableAt: number, extra: Partial<TryEnd> = {}): TryEnd => ({
  outcome: 'expired',
  message: 'no heartbeat',
  phase: 'internalerror',
  final: false,
  availableAt,
  ...extra,
});

export function buildsContract(name: string, open: () => Promise<Store>): void {
  describe(`Builds contract: ${name}`, () => {
    let store: Store;

    beforeEach(async () => {
      store = await open();
    });

    afterEach(async () => {
      await store.close();
    });

    async function create(overrides: Partial<NewBuild> = {}, now = T0, maxQueued = 100): Promise<BuildRecord> {
      const created = await store.builds.create(newBuild(overrides), now, maxQueued);
      if (typeof created === 'string') throw new Error(`create refused: ${created}`);
      return created;
    }

    async function claim(now = T0, allowedWorkers = 10) {
      const claimed = await store.builds.claimNext(now, allowedWorkers);
      if (!claimed) throw new Error('expected a build to claim');
      return claimed;
    }

    const claimedIds = async (now: number, allowedWorkers: number, times: number): Promise<(number | undefined)[]> => {
      const ids = [];
      for (let i = 0; i < times; i++) ids.push((await store.builds.claimNext(now, allowedWorkers))?.build.id);
      return ids;
    };

    describe('create', () => {
      it('stores a waiting build with a phase log entry', async () => {
        const build = await create();
        expect(build).toEqual({
          id: expect.any(Number),
          namespace: 'org:acme',
          repository: REPO,
          phase: 'waiting',
          final: false,
          spec: newBuild().spec,
          commit: 'abc1234',
          triesRemaining: 3,
          tries: 0,
          plane: null,
          digest: null,
          message: null,
          submittedBy: 'alice',
          cancelRequested: false,
          availableAt: T0,
          createdAt: T0,
          startedAt: null,
          finishedAt: null,
          failedPlanes: [],
        });
        expect(await store.builds.get(build.id)).toEqual(build);
        expect(await store.builds.get(build.id + 100)).toBeUndefined();
        expect(await store.builds.readLog(build.id, 0, 10)).toEqual([
          { seq: 1, at: T0, try: 0, kind: 'phase', text: 'phase waiting', phase: 'waiting' },
        ]);
        expect(await store.builds.listTries(build.id)).toEqual([]);
      });

      it('refuses a build over its namespace cap of builds that are not final', async () => {
        await create({}, T0, 2);
        const second = await create({}, T0, 2);
        expect(await store.builds.create(newBuild(), T0, 2)).toBe('over_cap');
        expect(await create({ namespace: 'org:other' }, T0, 2)).toMatchObject({ namespace: 'org:other' });
        await store.builds.cancel(second.id, T0 + 1);
        expect(await create({}, T0 + 2, 2)).toMatchObject({ namespace: 'org:acme' });
        expect(await store.builds.list({ namespaces: ['org:acme'], active: true, limit: 10 })).toHaveLength(2);
      });

      it('binds an unbound uploaded context of its namespace, once', async () => {
        const data = Buffer.from([0x1f, 0x8b, 0, 1, 2, 255]);
        await store.builds.putContext({ id: 'ctx_a', namespace: 'org:acme', sha256: 'sum-a', data }, T0);
        expect(await store.builds.create(newBuild({ contextId: 'ctx_missing' }), T0, 10)).toBe('no_context');
        expect(await store.builds.create(newBuild({ namespace: 'org:other', contextId: 'ctx_a' }), T0, 10)).toBe(
          'no_context',
        );
        const build = await create({ contextId: 'ctx_a' });
        expect(await store.builds.getContextOfBuild(build.id)).toEqual({ data, sha256: 'sum-a' });
        expect(await store.builds.create(newBuild({ contextId: 'ctx_a' }), T0, 10)).toBe('no_context');
        // A refused create leaves nothing behind.
        expect(await store.builds.list({ limit: 10 })).toHaveLength(1);
      });
    });

    it('lists builds newest first, by namespace, active only, before an id, up to a limit', async () => {
      const a1 = await create({ namespace: 'org:a' });
      const b1 = await create({ namespace: 'org:b' });
      const a2 = await create({ namespace: 'org:a' });
      const c1 = await create({ namespace: 'org:c' });
      await store.builds.cancel(a2.id, T0);
      const ids = async (filter: Parameters<Store['builds']['list']>[0]) =>
        (await store.builds.list(filter)).map((b) => b.id);
      expect(await ids({ limit: 10 })).toEqual([c1.id, a2.id, b1.id, a1.id]);
      expect(await ids({ limit: 2 })).toEqual([c1.id, a2.id]);
      expect(await ids({ limit: 10, beforeId: a2.id })).toEqual([b1.id, a1.id]);
      expect(await ids({ limit: 10, namespaces: ['org:a', 'org:b'] })).toEqual([a2.id, b1.id, a1.id]);
      expect(await ids({ limit: 10, namespaces: ['org:a'], active: true })).toEqual([a1.id]);
      expect(await ids({ limit: 10, namespaces: [] })).toEqual([]);
    });

    describe('claimNext', () => {
      it('claims the oldest build first, spending a try and starting it', async () => {
        const first = await create({ repository: 'r.example.com/a' });
        const second = await create({ repository: 'r.example.com/b' }, T0 + 1);
        const third = await create({ repository: 'r.example.com/c' }, T0 + 2);
        const claimed = await claim(T0 + 10);
        expect(claimed.tryNumber).toBe(1);
        expect(claimed.build).toEqual({
          ...first,
          phase: 'build-scheduled',
          tries: 1,
          triesRemaining: 2,
          startedAt: T0 + 10,
        });
        expect(await store.builds.get(first.id)).toEqual(claimed.build);
        expect(await store.builds.listTries(first.id)).toEqual([
          {
            buildId: first.id,
            number: 1,
            plane: '',
            executionId: null,
            registrationJti: null,
            setupDeadline: null,
            startedAt: T0 + 10,
            registeredAt: null,
            lastHeartbeatAt: null,
            endedAt: null,
            outcome: null,
            message: null,
            workerStopped: false,
          },
        ]);
        expect(await store.builds.readLog(first.id, 1, 10)).toEqual([
          { seq: 2, at: T0 + 10, try: 1, kind: 'phase', text: 'phase build-scheduled', phase: 'build-scheduled' },
        ]);
        expect(await claimedIds(T0 + 10, 10, 3)).toEqual([second.id, third.id, undefined]);
        expect(await store.builds.activeCount()).toBe(3);
      });

      it('runs one build of a repository at a time, and the others meanwhile', async () => {
        const a1 = await create({ repository: 'r.example.com/a' });
        const a2 = await create({ repository: 'r.example.com/a' });
        const b1 = await create({ repository: 'r.example.com/b' });
        expect(await claimedIds(T0, 10, 3)).toEqual([a1.id, b1.id, undefined]);
        expect(await store.builds.endTry(a1.id, 1, complete, T0 + 5)).toBe(true);
        expect(await claimedIds(T0 + 5, 10, 2)).toEqual([a2.id, undefined]);
      });

      it('starts no more builds than allowedWorkers', async () => {
        const builds = [];
        for (const repo of ['a', 'b', 'c']) builds.push(await create({ repository: `r.example.com/${repo}` }));
        expect(await claimedIds(T0, 2, 3)).toEqual([builds[0].id, builds[1].id, undefined]);
        expect(await store.builds.activeCount()).toBe(2);
        await store.builds.endTry(builds[0].id, 1, complete, T0 + 1);
        expect(await store.builds.activeCount()).toBe(1);
        expect(await claimedIds(T0 + 1, 2, 2)).toEqual([builds[2].id, undefined]);
      });

      it('waits for availableAt, then claims a build in internalerror again', async () => {
        const build = await create();
        await claim(T0);
        expect(await store.builds.endTry(build.id, 1, retry(T0 + 5_000), T0 + 100)).toBe(true);
        expect(await store.builds.get(build.id)).toMatchObject({
          phase: 'internalerror',
          final: false,
          availableAt: T0 + 5_000,
          triesRemaining: 2,
          message: 'no heartbeat',
        });
        expect(await store.builds.claimNext(T0 + 4_999, 10)).toBeUndefined();
        const again = await claim(T0 + 5_000);
        expect(again).toMatchObject({ tryNumber: 2, build: { id: build.id, tries: 2, triesRemaining: 1 } });
        // startedAt is the first claim's.
        expect(again.build.startedAt).toBe(T0);
      });

      it('claims no build without tries remaining, nor a cancel-requested or final one', async () => {
        const build = await create({ triesRemaining: 1 });
        await claim(T0);
        await store.builds.endTry(build.id, 1, retry(T0), T0);
        expect(await store.builds.get(build.id)).toMatchObject({ triesRemaining: 0, final: false });
        expect(await store.builds.claimNext(T0 + 1, 10)).toBeUndefined();
        const cancelled = await create({ repository: 'r.example.com/x' });
        await store.builds.cancel(cancelled.id, T0);
        expect(await store.builds.claimNext(T0 + 1, 10)).toBeUndefined();
      });
    });

    describe('a try', () => {
      const worker = (n = 1) => ({
        plane: 'docker',
        executionId: `dockhand-build-1-${n}`,
        registrationJti: `jti-${n}`,
        setupDeadline: T0 + 60_000,
      });

      it('records its worker while it has not ended', async () => {
        const build = await create();
        await claim();
        expect(await store.builds.setTryWorker(build.id, 1, worker())).toBe(true);
        expect((await store.builds.listTries(build.id))[0]).toMatchObject({ ...worker(), endedAt: null });
        expect((await store.builds.get(build.id))!.plane).toBe('docker');
        expect(await store.builds.setTryWorker(build.id, 2, worker(2))).toBe(false);
        await store.builds.endTry(build.id, 1, complete, T0 + 1);
        expect(await store.builds.setTryWorker(build.id, 1, { ...worker(), plane: 'other' })).toBe(false);
        expect((await store.builds.listTries(build.id))[0].plane).toBe('docker');
      });

      it('registers once, for its jti, and is found by its job token', async () => {
        const build = await create();
        await claim();
        await store.builds.setTryWorker(build.id, 1, worker());
        expect(await store.builds.register(build.id, 1, 'jti-wrong', 'hash-1', T0 + 1)).toBe(false);
        expect(await store.builds.register(build.id, 2, 'jti-1', 'hash-1', T0 + 1)).toBe(false);
        expect(await store.builds.register(build.id, 1, 'jti-1', 'hash-1', T0 + 2)).toBe(true);
        expect(await store.builds.register(build.id, 1, 'jti-1', 'hash-2', T0 + 3)).toBe(false);
        const found = await store.builds.findTryByToken('hash-1');
        expect(found?.build).toEqual(await store.builds.get(build.id));
        expect(found?.try).toMatchObject({
          buildId: build.id,
          number: 1,
          registeredAt: T0 + 2,
          lastHeartbeatAt: T0 + 2,
        });
        expect(await store.builds.findTryByToken('hash-2')).toBeUndefined();
      });

      it('does not register once ended', async () => {
        const build = await create();
        await claim();
        await store.builds.setTryWorker(build.id, 1, worker());
        await store.builds.endTry(build.id, 1, retry(T0), T0 + 1);
        expect(await store.builds.register(build.id, 1, 'jti-1', 'hash-1', T0 + 2)).toBe(false);
      });

      it('takes heartbeats until it ends', async () => {
        const build = await create();
        await claim();
        expect(await store.builds.heartbeat(build.id, 1, T0 + 10)).toBe(true);
        expect((await store.builds.listTries(build.id))[0].lastHeartbeatAt).toBe(T0 + 10);
        expect(await store.builds.heartbeat(build.id, 2, T0 + 11)).toBe(false);
        await store.builds.endTry(build.id, 1, complete, T0 + 12);
        expect(await store.builds.heartbeat(build.id, 1, T0 + 13)).toBe(false);
        expect((await store.builds.listTries(build.id))[0].lastHeartbeatAt).toBe(T0 + 10);
      });

      it('sets phases only while it is current and unended', async () => {
        const build = await create();
        await claim();
        expect(await store.builds.setPhase(build.id, 1, 'unpacking', T0 + 1)).toBe(true);
        expect(await store.builds.setPhase(build.id, 1, 'unpacking', T0 + 2)).toBe(true);
        expect(await store.builds.setPhase(build.id, 1, 'building', T0 + 3)).toBe(true);
        expect(await store.builds.setPhase(build.id, 2, 'pushing', T0 + 4)).toBe(false);
        expect(await store.builds.setPhase(build.id + 100, 1, 'pushing', T0 + 4)).toBe(false);
        expect((await store.builds.get(build.id))!.phase).toBe('building');
        expect((await store.builds.readLog(build.id, 0, 10)).filter((e) => e.kind === 'phase')).toEqual([
          expect.objectContaining({ phase: 'waiting', try: 0 }),
          expect.objectContaining({ phase: 'build-scheduled', try: 1 }),
          { seq: 3, at: T0 + 1, try: 1, kind: 'phase', text: 'phase unpacking', phase: 'unpacking' },
          { seq: 4, at: T0 + 3, try: 1, kind: 'phase', text: 'phase building', phase: 'building' },
        ]);

        // A try that ended (an internal error, retried) is no longer current, nor after the next try starts.
        await store.builds.endTry(build.id, 1, retry(T0 + 10, { outcome: 'incomplete', restoreTry: true }), T0 + 5);
        expect(await store.builds.setPhase(build.id, 1, 'pushing', T0 + 6)).toBe(false);
        await claim(T0 + 10);
        expect(await store.builds.setPhase(build.id, 1, 'pushing', T0 + 11)).toBe(false);
        expect(await store.builds.setPhase(build.id, 2, 'pulling', T0 + 12)).toBe(true);

        // Archived: the phase never changes again.
        await store.builds.endTry(build.id, 2, complete, T0 + 13);
        expect(await store.builds.setPhase(build.id, 2, 'pushing', T0 + 14)).toBe(false);
        expect((await store.builds.get(build.id))!.phase).toBe('complete');
      });
    });

    describe('endTry', () => {
      it('ends a try once and applies a final phase, with its pushes', async () => {
        const build = await create();
        await claim();
        await store.builds.setPhase(build.id, 1, 'pushing', T0 + 1);
        const digest = `sha256:${'a'.repeat(64)}`;
        const push = { image: REPO, digest, repository: 'https://git.example.com/acme/app.git', commit: 'abc1234' };
        const end: TryEnd = {
          ...complete,
          digest,
          pushes: [
            { ...push, tag: '1.0', buildId: build.id, at: T0 + 2 },
            { ...push, tag: 'latest', buildId: build.id, at: T0 + 2 },
          ],
        };
        expect(await store.builds.endTry(build.id, 1, end, T0 + 2)).toBe(true);
        expect(await store.builds.endTry(build.id, 1, { ...end, phase: 'error' }, T0 + 3)).toBe(false);
        expect(await store.builds.get(build.id)).toMatchObject({
          phase: 'complete',
          final: true,
          digest,
          finishedAt: T0 + 2,
          triesRemaining: 2,
        });
        expect((await store.builds.listTries(build.id))[0]).toMatchObject({
          endedAt: T0 + 2,
          outcome: 'complete',
          message: null,
        });
        const log = await store.builds.readLog(build.id, 0, 10);
        expect(log[log.length - 1]).toEqual({
          seq: log.length,
          at: T0 + 2,
          try: 1,
          kind: 'phase',
          text: 'phase complete',
          phase: 'complete',
        });
        expect(await store.builds.listImagePushes({ limit: 10 })).toEqual([
          { id: expect.any(Number), ...push, tag: '1.0', buildId: build.id, at: T0 + 2 },
          { id: expect.any(Number), ...push, tag: 'latest', buildId: build.id, at: T0 + 2 },
        ]);
        expect(await store.builds.latestPushed(REPO)).toMatchObject({ tag: 'latest', digest });
        expect(await store.builds.latestPushed('registry.example.com/other')).toBeUndefined();
      });

      it('gives a try back with restoreTry, and records a plane whose worker never registered, once', async () => {
        const build = await create();
        await claim(T0);
        await store.builds.endTry(build.id, 1, retry(T0, { restoreTry: true, failedPlane: 'docker' }), T0);
        expect(await store.builds.get(build.id)).toMatchObject({ triesRemaining: 3, failedPlanes: ['docker'] });
        await claim(T0);
        await store.builds.endTry(build.id, 2, retry(T0, { failedPlane: 'docker' }), T0);
        await claim(T0);
        await store.builds.endTry(build.id, 3, retry(T0, { failedPlane: 'kube' }), T0);
        expect(await store.builds.get(build.id)).toMatchObject({
          tries: 3,
          triesRemaining: 1,
          failedPlanes: ['docker', 'kube'],
        });
        // The phase stayed internalerror after the first retry: no more phase entries for it.
        const phases = (await store.builds.readLog(build.id, 0, 100)).filter((e) => e.kind === 'phase');
        expect(phases.map((e) => e.phase)).toEqual([
          'waiting',
          'build-scheduled',
          'internalerror',
          'build-scheduled',
          'internalerror',
          'build-scheduled',
          'internalerror',
        ]);
      });

      it('ends a build in a final internalerror, and it is never claimed or changed again', async () => {
        const build = await create({ triesRemaining: 1 });
        await claim(T0);
        await store.builds.endTry(build.id, 1, { ...retry(T0), final: true }, T0 + 1);
        expect(await store.builds.get(build.id)).toMatchObject({
          phase: 'internalerror',
          final: true,
          finishedAt: T0 + 1,
        });
        expect(await store.builds.claimNext(T0 + 2, 10)).toBeUndefined();
        expect(await store.builds.cancel(build.id, T0 + 3)).toMatchObject({ ok: false, reason: 'final' });
      });

      it('is refused for a missing build or try', async () => {
        expect(await store.builds.endTry(999, 1, complete, T0)).toBe(false);
        const build = await create();
        expect(await store.builds.endTry(build.id, 1, complete, T0)).toBe(false);
        expect((await store.builds.get(build.id))!.phase).toBe('waiting');
      });
    });

    describe('cancel', () => {
      it('cancels a waiting build', async () => {
        const build = await create();
        const result = await store.builds.cancel(build.id, T0 + 5);
        expect(result).toEqual({
          ok: true,
          build: { ...build, phase: 'cancelled', final: true, cancelRequested: true, finishedAt: T0 + 5 },
        });
        const log = await store.builds.readLog(build.id, 1, 10);
        expect(log).toEqual([
          { seq: 2, at: T0 + 5, try: 0, kind: 'phase', text: 'phase cancelled', phase: 'cancelled' },
        ]);
        expect(await store.builds.cancel(build.id, T0 + 6)).toEqual({
          ok: false,
          reason: 'final',
          build: result.ok && result.build,
        });
        expect(await store.builds.cancel(build.id + 100, T0)).toEqual({ ok: false, reason: 'missing' });
      });

      it('ends the running try, which then changes nothing', async () => {
        const build = await create();
        await claim(T0);
        await store.builds.setPhase(build.id, 1, 'building', T0 + 1);
        const result = await store.builds.cancel(build.id, T0 + 5);
        expect(result).toMatchObject({
          ok: true,
          build: { phase: 'cancelled', final: true, cancelRequested: true },
          endedTry: { buildId: build.id, number: 1, endedAt: T0 + 5, outcome: 'cancelled' },
        });
        expect(await store.builds.activeCount()).toBe(0);
        expect(await store.builds.heartbeat(build.id, 1, T0 + 6)).toBe(false);
        expect(await store.builds.endTry(build.id, 1, complete, T0 + 6)).toBe(false);
        expect(await store.builds.setPhase(build.id, 1, 'pushing', T0 + 6)).toBe(false);
        expect((await store.builds.get(build.id))!.phase).toBe('cancelled');
        const log = await store.builds.readLog(build.id, 0, 10);
        expect(log[log.length - 1]).toMatchObject({ try: 1, phase: 'cancelled' });
      });

      it('refuses a pushing build', async () => {
        const build = await create();
        await claim(T0);
        await store.builds.setPhase(build.id, 1, 'pushing', T0 + 1);
        expect(await store.builds.cancel(build.id, T0 + 2)).toMatchObject({
          ok: false,
          reason: 'pushing',
          build: { id: build.id, phase: 'pushing', final: false },
        });
        expect(await store.builds.activeCount()).toBe(1);
      });
    });

    it('finds expired tries: unregistered past the setup deadline, silent, or of a build running too long', async () => {
      const HEARTBEAT = 60_000;
      const MAX = 3_600_000;
      const now = T0 + MAX + 1_000;
      const ids: number[] = [];
      for (const repo of ['unregistered', 'silent', 'old', 'fresh', 'fresh-unregistered'])
        ids.push((await create({ repository: `r.example.com/${repo}` })).id);
      // Claimed in id order: 'old' at T0, the others just before now.
      await store.builds.claimNext(now - 5_000, 10); // unregistered
      await store.builds.claimNext(now - 5_000, 10); // silent
      await store.builds.claimNext(T0, 10); // old
      await store.builds.claimNext(now - 5_000, 10); // fresh
      await store.builds.claimNext(now - 5_000, 10); // fresh-unregistered
      const setup = (id: number, jti: string, deadline: number) =>
        store.builds.setTryWorker(id, 1, {
          plane: 'p',
          executionId: `e-${id}`,
          registrationJti: jti,
          setupDeadline: deadline,
        });
      await setup(ids[0], 'j0', now - 1);
      await setup(ids[1], 'j1', now + 60_000);
      await store.builds.register(ids[1], 1, 'j1', 'h1', now - 4_000);
      await store.builds.heartbeat(ids[1], 1, now - HEARTBEAT - 1);
      await setup(ids[2], 'j2', T0 + 60_000);
      await store.builds.register(ids[2], 1, 'j2', 'h2', T0 + 1_000);
      await store.builds.heartbeat(ids[2], 1, now - 1_000);
      await setup(ids[3], 'j3', now + 60_000);
      await store.builds.register(ids[3], 1, 'j3', 'h3', now - 4_000);
      await store.builds.heartbeat(ids[3], 1, now - HEARTBEAT);
      await setup(ids[4], 'j4', now);
      const expired = await store.builds.expiredTries(now, HEARTBEAT, MAX);
      expect(expired.map((t) => t.buildId)).toEqual([ids[0], ids[1], ids[2]]);
      await store.builds.endTry(ids[0], 1, retry(now), now);
      expect((await store.builds.expiredTries(now, HEARTBEAT, MAX)).map((t) => t.buildId)).toEqual([ids[1], ids[2]]);
    });

    it('expires a try that never got a worker (its scheduler stopped between claim and launch)', async () => {
      const orphan = await create({ repository: 'r.example.com/orphan' });
      await store.builds.claimNext(T0, 10);
      expect(await store.builds.expiredTries(T0 + 59_000, 60_000, 3_600_000, 60_000)).toEqual([]);
      expect((await store.builds.expiredTries(T0 + 61_000, 60_000, 3_600_000, 60_000)).map((t) => t.buildId)).toEqual([
        orphan.id,
      ]);
    });

    it('lists ended tries whose worker is still to be stopped', async () => {
      const a = await create({ repository: 'r.example.com/a' });
      const b = await create({ repository: 'r.example.com/b' });
      const c = await create({ repository: 'r.example.com/c' });
      await claimedIds(T0, 10, 3);
      for (const id of [a.id, b.id])
        await store.builds.setTryWorker(id, 1, {
          plane: 'p',
          executionId: `e-${id}`,
          registrationJti: 'j',
          setupDeadline: T0 + 1,
        });
      expect(await store.builds.unstoppedTries(10)).toEqual([]);
      await store.builds.endTry(b.id, 1, complete, T0 + 1);
      await store.builds.endTry(a.id, 1, complete, T0 + 2);
      await store.builds.endTry(c.id, 1, complete, T0 + 3); // no worker was started for it
      expect((await store.builds.unstoppedTries(10)).map((t) => [t.buildId, t.executionId])).toEqual([
        [b.id, `e-${b.id}`],
        [a.id, `e-${a.id}`],
      ]);
      expect(await store.builds.unstoppedTries(1)).toHaveLength(1);
      await store.builds.markWorkerStopped(b.id, 1);
      expect((await store.builds.listTries(b.id))[0].workerStopped).toBe(true);
      expect((await store.builds.unstoppedTries(10)).map((t) => t.buildId)).toEqual([a.id]);
    });

    it('prunes the contexts of final builds and unbound ones too old to be used', async () => {
      const put = (id: string, at: number) =>
        store.builds.putContext({ id, namespace: 'org:acme', sha256: `sum-${id}`, data: Buffer.from(id) }, at);
      await put('ctx_old', T0);
      await put('ctx_new', T0 + 10_000);
      await put('ctx_running', T0);
      await put('ctx_done', T0);
      const running = await create({ contextId: 'ctx_running', repository: 'r.example.com/a' });
      const done = await create({ contextId: 'ctx_done', repository: 'r.example.com/b' });
      await store.builds.cancel(done.id, T0 + 1);
      expect(await store.builds.pruneContexts(T0 + 5_000)).toBe(2);
      expect(await store.builds.getContextOfBuild(done.id)).toBeUndefined();
      expect(await store.builds.getContextOfBuild(running.id)).toEqual({
        data: Buffer.from('ctx_running'),
        sha256: 'sum-ctx_running',
      });
      expect(await store.builds.create(newBuild({ contextId: 'ctx_old' }), T0, 10)).toBe('no_context');
      expect(await create({ contextId: 'ctx_new' })).toMatchObject({ namespace: 'org:acme' });
      expect(await store.builds.pruneContexts(T0 + 5_000)).toBe(0);
    });

    it('lists image pushes after an id, by image, up to a limit; the latest comes from a complete build', async () => {
      const pushes = [];
      for (const [i, image] of ['r.example.com/a', 'r.example.com/b', 'r.example.com/a'].entries()) {
        const build = await create({ repository: image });
        await claim(T0 + i);
        const push = {
          image,
          tag: `v${i}`,
          digest: `sha256:${String(i).repeat(64)}`,
          repository: 'upload',
          commit: null,
          buildId: build.id,
          at: T0 + i,
        };
        await store.builds.endTry(build.id, 1, { ...complete, digest: push.digest, pushes: [push] }, T0 + i);
        pushes.push(push);
      }
      const all = await store.builds.listImagePushes({ limit: 10 });
      expect(all.map(({ id: _, ...p }) => p)).toEqual(pushes);
      expect(all[1].id).toBeGreaterThan(all[0].id);
      expect((await store.builds.listImagePushes({ afterId: all[0].id, limit: 10 })).map((p) => p.tag)).toEqual([
        'v1',
        'v2',
      ]);
      expect((await store.builds.listImagePushes({ image: 'r.example.com/a', limit: 10 })).map((p) => p.tag)).toEqual([
        'v0',
        'v2',
      ]);
      expect((await store.builds.listImagePushes({ limit: 1 })).map((p) => p.tag)).toEqual(['v0']);
      expect((await store.builds.listImagePushes({ buildId: pushes[1].buildId, limit: 10 })).map((p) => p.tag)).toEqual(
        ['v1'],
      );
      expect(await store.builds.latestPushed('r.example.com/a')).toMatchObject({ tag: 'v2' });
      expect(await store.builds.latestPushed('r.example.com/b')).toMatchObject({ tag: 'v1' });
    });

    it('gives a lease to one holder at a time, until it expires or is released', async () => {
      const leases = store.builds;
      expect(await leases.acquireLease('scheduler', 'a', T0, 1_000)).toBe(true);
      expect(await leases.acquireLease('scheduler', 'b', T0 + 500, 1_000)).toBe(false);
      expect(await leases.acquireLease('scheduler', 'a', T0 + 900, 1_000)).toBe(true); // renewed to T0 + 1900
      expect(await leases.acquireLease('scheduler', 'b', T0 + 1_500, 1_000)).toBe(false);
      expect(await leases.acquireLease('other', 'b', T0 + 1_500, 1_000)).toBe(true);
      expect(await leases.acquireLease('scheduler', 'b', T0 + 1_900, 1_000)).toBe(true); // expired
      expect(await leases.acquireLease('scheduler', 'a', T0 + 2_000, 1_000)).toBe(false);
      await leases.releaseLease('scheduler', 'a'); // not its holder: nothing happens
      expect(await leases.acquireLease('scheduler', 'a', T0 + 2_000, 1_000)).toBe(false);
      await leases.releaseLease('scheduler', 'b');
      expect(await leases.acquireLease('scheduler', 'a', T0 + 2_000, 1_000)).toBe(true);
      const racers = await Promise.all(['x', 'y', 'z'].map((holder) => leases.acquireLease('race', holder, T0, 1_000)));
      expect(racers.filter(Boolean)).toHaveLength(1);
    });

    describe('log', () => {
      it('appends entries after the last, and reads them back in order', async () => {
        const build = await create();
        const appended = await store.builds.appendLog(build.id, [
          { at: T0 + 1, try: 0, kind: 'system', text: 'queued behind 2 builds' },
          { at: T0 + 2, try: 0, kind: 'log', text: 'line' },
        ]);
        expect(appended).toEqual([
          { seq: 2, at: T0 + 1, try: 0, kind: 'system', text: 'queued behind 2 builds' },
          { seq: 3, at: T0 + 2, try: 0, kind: 'log', text: 'line' },
        ]);
        expect(await store.builds.readLog(build.id, 1, 10)).toEqual(appended);
        expect(await store.builds.readLog(build.id, 0, 2)).toEqual([
          expect.objectContaining({ seq: 1, phase: 'waiting' }),
          appended[0],
        ]);
        expect(await store.builds.readLog(build.id, 3, 10)).toEqual([]);
        expect(await store.builds.appendLog(build.id, [])).toEqual([]);
        expect(await store.builds.appendLog(build.id + 100, [{ at: T0, try: 0, kind: 'log', text: 'x' }])).toEqual([]);
      });

      it('numbers entries of appends at once consecutively, and many in one append', async () => {
        const build = await create();
        const other = await create({ repository: 'r.example.com/other' });
        const lines = (n: number, prefix: string) =>
          Array.from({ length: n }, (_, i) => ({ at: T0, try: 0, kind: 'log' as const, text: `${prefix} ${i}` }));
        const results = await Promise.all([
          store.builds.appendLog(build.id, lines(250, 'a')),
          store.builds.appendLog(build.id, lines(3, 'b')),
          store.builds.appendLog(other.id, lines(2, 'c')),
          store.builds.appendLog(build.id, lines(7, 'd')),
        ]);
        const seqs = [results[0], results[1], results[3]].flatMap((r) => r.map((e) => e.seq)).sort((x, y) => x - y);
        expect(seqs).toEqual(Array.from({ length: 260 }, (_, i) => i + 2));
        const log = await store.builds.readLog(build.id, 0, 1_000);
        expect(log.map((e) => e.seq)).toEqual(Array.from({ length: 261 }, (_, i) => i + 1));
        expect(log.filter((e) => e.text.startsWith('a ')).map((e) => e.text)).toEqual(
          lines(250, 'a').map((l) => l.text),
        );
        expect((await store.builds.readLog(other.id, 0, 10)).map((e) => e.seq)).toEqual([1, 2, 3]);
      });
    });
  });
}
