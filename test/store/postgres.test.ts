// The Store contract against a real PostgreSQL, plus what only a shared database has: replicas migrating at once,
// and two stores (two server replicas) dequeuing from the same queue.
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/core/jobSpec.js';
import { PostgresStore } from '../../src/store/postgres/postgresStore.js';
import { createTestDatabase } from '../support/postgres.js';
import { until } from '../support/wait.js';
import { buildsContract, newBuild } from './builds.js';
import { storeContract } from './contract.js';

const databases: { drop(): Promise<void> }[] = [];

afterAll(async () => {
  await Promise.all(databases.map((d) => d.drop()));
});

async function freshDatabase(): Promise<string> {
  const db = await createTestDatabase('store');
  databases.push(db);
  return db.url;
}

async function freshStore(): Promise<PostgresStore> {
  const store = new PostgresStore(await freshDatabase());
  await store.migrate();
  return store;
}

storeContract('postgres', freshStore);
buildsContract('postgres', freshStore);

function spec(queue: string) {
  const parsed = parseJobSpec({ queue, steps: [{ run: 'true' }] });
  if (!parsed.ok) throw new Error('bad spec');
  return parsed.value;
}

describe('PostgresStore with several replicas', () => {
  it('is named postgres', async () => {
    const store = await freshStore();
    expect(store.kind).toBe('postgres');
    await store.close();
  });

  it('migrates once when replicas start together, and again harmlessly', async () => {
    const url = await freshDatabase();
    const replicas = [new PostgresStore(url), new PostgresStore(url), new PostgresStore(url)];
    await Promise.all(replicas.map((r) => r.migrate()));
    await replicas[0].migrate();
    const job = await replicas[1].jobs.enqueue(spec('q'), 1_000);
    expect(await replicas[2].jobs.getJob(job.id)).toEqual(job);
    await Promise.all(replicas.map((r) => r.close()));
  });

  it('never hands one job to two replicas dequeuing at the same time', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const ids = [];
    for (let i = 0; i < 200; i++) ids.push((await a.jobs.enqueue(spec('race'), 1_000)).id);
    let token = 0;
    const drain = async (store: PostgresStore, name: string): Promise<number[]> => {
      const got: number[] = [];
      for (;;) {
        const job = await store.jobs.dequeue({
          executorName: name,
          queues: ['race'],
          tokenHash: `${name}-${++token}`,
          now: 2_000,
        });
        if (!job) return got;
        got.push(job.id);
      }
    };
    const taken = await Promise.all([drain(a, 'a1'), drain(a, 'a2'), drain(b, 'b1'), drain(b, 'b2')]);
    const all = taken.flat().sort((x, y) => x - y);
    expect(all).toEqual(ids);
    expect(taken.filter((t) => t.length > 0).length).toBeGreaterThan(1);
    await a.close();
    await b.close();
  });

  it('hands each job to one of two replicas taking batches from several namespaces at the same time, without deadlocks', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const ids: number[] = [];
    // Interleaved namespaces, so that every batch claims from several and writes several turn rows.
    for (let i = 0; i < 240; i++)
      ids.push((await a.jobs.enqueue({ ...spec('race'), namespace: `org:n${i % 4}` }, 1_000 + i)).id);
    let token = 0;
    const drain = async (store: PostgresStore, name: string): Promise<number[]> => {
      const got: number[] = [];
      for (;;) {
        const hashes = Array.from({ length: 16 }, () => `${name}-${++token}`);
        const jobs = await store.jobs.dequeueMany({
          executorName: name,
          queues: ['race'],
          tokenHashes: hashes,
          now: 5_000,
        });
        if (!jobs.length) return got;
        got.push(...jobs.map((c) => c.job.id));
      }
    };
    const taken = await Promise.all([drain(a, 'a1'), drain(a, 'a2'), drain(b, 'b1'), drain(b, 'b2')]);
    expect(taken.flat().sort((x, y) => x - y)).toEqual(ids);
    expect(taken.filter((t) => t.length > 0).length).toBeGreaterThan(1);
    await a.close();
    await b.close();
  });

  it('gives an executor name to one of several processes calling two replicas at the same time', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const info = (hostname: string) => ({
      name: 'contested',
      hostname,
      os: 'linux',
      arch: 'x64',
      version: '1',
      runtime: 'shell',
      runtimeVersion: null,
      queues: ['q'],
      maxJobs: 1,
      runningJobs: 0,
      jobCpus: null,
      jobMemoryBytes: null,
      jobDiskBytes: null,
      pid: null,
    });
    for (let round = 0; round < 10; round++) {
      // Each round the name is free again (its holder fell silent), and eight new processes race for it.
      const now = 1_000_000 + round * 10_000;
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 ? a : b).executors.upsertExecutor(info(`host-${round}-${i}`), now, {
            id: `instance-${round}-${i}`,
            windowMs: 5_000,
          }),
        ),
      );
      const winners = answers.flatMap((answer, i) => (answer.ok ? [i] : []));
      expect(winners).toHaveLength(1);
      for (const answer of answers)
        if (!answer.ok)
          expect(answer.holder).toMatchObject({
            id: `instance-${round}-${winners[0]}`,
            hostname: `host-${round}-${winners[0]}`,
          });
    }
    await a.close();
    await b.close();
  });

  it("stores no log append for an attempt another replica resets between the append's fence check and its write", async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const job = await a.jobs.enqueue(spec('fence'), 1_000);
    await a.jobs.dequeue({ executorName: 'silent', queues: ['fence'], tokenHash: 'fence-token', now: 1_000 });
    // The test holds the attempt's row, so replica B's reset stops half-way: job row locked and changed, not committed.
    const holder = new pg.Client({ connectionString: url });
    // Its own connection: inside the holder's transaction pg_stat_activity would stay as first read.
    const observer = new pg.Client({ connectionString: url });
    await Promise.all([holder.connect(), observer.connect()]);
    const waiting = async (): Promise<number> =>
      Number(
        (
          await observer.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
          )
        ).rows[0].n,
      );
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT * FROM job_attempts WHERE job_id = $1 FOR UPDATE', [job.id]);
      const reset = b.jobs.resetStalled({ now: 100_000, timeoutMs: 25_000, maxResets: 3, notBefore: 0 });
      await until('the reset waits for the held attempt', async () => (await waiting()) === 1);
      let settled = false;
      const append = a.logs.appendLogsMany([
        {
          jobId: job.id,
          attempt: 1,
          entries: [{ index: 0, key: 'step-1', command: ['sh'], startTime: 1_000, offset: 0, out: 'late output\n' }],
        },
      ]);
      void append.finally(() => (settled = true));
      // Either the append waits for the reset (a second backend waiting on a lock), or it went ahead on its own.
      await until('the append waits for the reset, or finishes', async () => settled || (await waiting()) === 2);
      expect(settled, 'the append went ahead of the uncommitted reset').toBe(false);
      await holder.query('COMMIT');
      expect((await reset).reset.map((j) => j.id)).toEqual([job.id]);
      expect(await append).toEqual([{ ok: false, job: expect.objectContaining({ id: job.id, state: 'queued' }) }]);
      expect(await a.logs.listLogEntries(job.id, 1)).toEqual([]);
    } finally {
      await Promise.all([holder.end(), observer.end()]);
      await a.close();
      await b.close();
    }
  });

  it('claims builds from two replicas at once without two unended tries for a repository or more than the worker cap', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const WORKERS = 3;
    const repos = ['r0', 'r1', 'r2', 'r3', 'r4'].map((r) => `registry.example.com/race/${r}`);
    for (let i = 0; i < 40; i++) {
      const created = await a.builds.create(
        newBuild({ repository: repos[i % repos.length], triesRemaining: 2 }),
        1_000,
        1_000,
      );
      expect(typeof created).toBe('object');
    }
    const unended = async () => {
      const tries = [];
      for (const build of await a.builds.list({ limit: 100 }))
        for (const t of await a.builds.listTries(build.id)) if (t.endedAt === null) tries.push({ build, t });
      return tries;
    };
    let claims = 0;
    let running: { buildId: number; tryNumber: number }[] = [];
    for (let round = 0; round < 100 && claims < 80; round++) {
      const now = 2_000 + round;
      // Sixteen claims (eight per replica) race each other and the ends of the last round's tries.
      const [claimed] = await Promise.all([
        Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? a : b).builds.claimNext(now, WORKERS))),
        Promise.all(
          running.map(({ buildId, tryNumber }, i) =>
            (i % 2 ? b : a).builds.endTry(
              buildId,
              tryNumber,
              i % 3
                ? { outcome: 'complete', message: null, phase: 'complete', final: true }
                : { outcome: 'expired', message: 'x', phase: 'internalerror', final: false, availableAt: now },
              now,
            ),
          ),
        ),
      ]);
      const ended = running.length;
      const won = claimed.filter((c) => c !== undefined);
      claims += won.length;
      expect(new Set(won.map((c) => c.build.id)).size).toBe(won.length);
      const open = await unended();
      expect(open.length).toBeLessThanOrEqual(WORKERS);
      expect(new Set(open.map((o) => o.build.repository)).size).toBe(open.length);
      expect(await b.builds.activeCount()).toBe(open.length);
      running = open.map((o) => ({ buildId: o.t.buildId, tryNumber: o.t.number }));
      // Done when a round that ended nothing claimed nothing either.
      if (!ended && !won.length) break;
    }
    // Every build ran until it completed or spent its tries.
    expect(claims).toBeGreaterThan(40);
    expect((await a.builds.list({ limit: 100 })).every((x) => x.final || x.triesRemaining === 0)).toBe(true);
    await a.close();
    await b.close();
  });

  it('numbers the log entries of two replicas appending to one build at once consecutively', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    const build = await a.builds.create(newBuild(), 1_000, 10);
    if (typeof build === 'string') throw new Error(build);
    const appends = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? a : b).builds.appendLog(build.id, [
          { at: 1_000, try: 0, kind: 'log', text: `${i} first` },
          { at: 1_000, try: 0, kind: 'log', text: `${i} second` },
        ]),
      ),
    );
    for (const entries of appends) expect(entries[1].seq).toBe(entries[0].seq + 1);
    const log = await a.builds.readLog(build.id, 0, 100);
    expect(log.map((e) => e.seq)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
    await a.close();
    await b.close();
  });

  it('resets a stalled job once when two replicas sweep at the same time', async () => {
    const url = await freshDatabase();
    const a = new PostgresStore(url);
    const b = new PostgresStore(url);
    await a.migrate();
    for (let i = 0; i < 20; i++) {
      await a.jobs.enqueue(spec('stall'), 1_000);
      await a.jobs.dequeue({ executorName: 'gone', queues: ['stall'], tokenHash: `t${i}`, now: 1_000 });
    }
    const sweep = { now: 100_000, timeoutMs: 25_000, maxResets: 3, notBefore: 0 };
    const [ra, rb] = await Promise.all([a.jobs.resetStalled(sweep), b.jobs.resetStalled(sweep)]);
    expect(ra.reset.length + rb.reset.length).toBe(20);
    const jobs = await a.jobs.listJobs({ limit: 100 });
    expect(jobs.every((j) => j.state === 'queued' && j.numResets === 1)).toBe(true);
    await a.close();
    await b.close();
  });
});
