// The database's disk fills up or turns read-only under a running server. The server must say so on /healthz (503,
// with a reason an operator can act on), refuse new work rather than half-store it, keep the executors' results
// waiting (they resend what is refused), reset no job whose heartbeats it could not store, and pick up again when the
// disk has room or is writable again, with nothing lost and the database intact.
import Database from 'better-sqlite3';
import { existsSync, writeFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { mountExt4, mountTmpfs, type Tmpfs } from '../support/disks.js';
import { createTestDatabase, postgresUser, withAdmin } from '../support/postgres.js';
import { startExecutor, startServer, tempDir, type ExecutorHandle, type ServerHandle } from '../support/processes.js';
import { until } from '../support/wait.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

const MiB = 1024 * 1024;

/** Runs SQL on the test PostgreSQL server as its superuser. */
const admin = (sql: string): Promise<unknown> => withAdmin(inject('postgresUrl'), (c) => c.query(sql));

/** A server (stopped after the test) on queue "disk", with one executor heartbeating every 500 ms unless `executorEnv` says otherwise. */
async function serverWithExecutor(
  name: string,
  server: { dataDir?: string; env: NodeJS.ProcessEnv },
  executorEnv: NodeJS.ProcessEnv = {},
): Promise<{ server: ServerHandle; executor: ExecutorHandle; client: TestClient }> {
  const started = await startServer({ name: `${name}-server`, ...server });
  cleanup.push(() => started.stop());
  const executor = await startExecutor(started.url, {
    name: `${name}-executor`,
    queues: ['disk'],
    env: { EXECUTOR_HEARTBEAT_INTERVAL: '500ms', ...executorEnv },
  });
  cleanup.push(() => executor.stop());
  return { server: started, executor, client: new TestClient(started.url) };
}

interface Health {
  status: number;
  body: { status: string; reason?: string; storage?: string };
}

async function health(server: ServerHandle): Promise<Health> {
  const answer = await fetch(`${server.url}/healthz`);
  return { status: answer.status, body: (await answer.json()) as Health['body'] };
}

const unhealthy = (server: ServerHandle, storage: string) => async (): Promise<Health | undefined> => {
  const h = await health(server);
  return h.status === 503 && h.body.storage === storage ? h : undefined;
};

const healthy = (server: ServerHandle) => async (): Promise<boolean> => (await health(server)).status === 200;

/** A step that waits for its gate file, so the test decides when it ends. */
function gatedStep(dir: string): { key: string; run: string } {
  return {
    key: 'gated',
    run: `touch ${dir}/running-$DOCKHAND_JOB_ID\nwhile [ ! -f ${dir}/gate-$DOCKHAND_JOB_ID ]; do sleep 0.05; done\necho "job $DOCKHAND_JOB_ID done"`,
  };
}

/**
 * A read while the database cannot take writes. It may be told 503 STORAGE_UNAVAILABLE, to try again: on PostgreSQL,
 * a new connection to a database whose disk is full fails. Anything else fails the test.
 */
async function readDuringFault(client: TestClient, route: string): Promise<any> {
  const answer = await until(`GET ${route} answers`, async () => {
    const got = await client.call('GET', route);
    if (got.status === 503 && got.body.code === 'STORAGE_UNAVAILABLE') return undefined;
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    return got;
  });
  return answer.body;
}

/** New work is refused with a 503 that says why, and nothing is stored. */
async function expectNewWorkRefused(client: TestClient, storage: string): Promise<void> {
  const before = (await readDuringFault(client, '/jobs?queue=disk')).jobs.length;
  const refused = await client.call('POST', '/jobs', { queue: 'disk', steps: [{ run: 'true' }] });
  expect(refused.status, JSON.stringify(refused.body)).toBe(503);
  expect(refused.body.code).toBe('STORAGE_UNAVAILABLE');
  expect(refused.headers.get('retry-after')).toBe('5');
  expect(refused.body.storage).toBe(storage);
  expect(refused.body.error).toMatch(
    /takes no new work now: .+ Nothing was stored; try again once GET \/healthz answers 200/,
  );
  const batch = await client.call('POST', '/jobs/batch', { jobs: [{ queue: 'disk', steps: [{ run: 'true' }] }] });
  expect(batch.status).toBe(503);
  expect((await readDuringFault(client, '/jobs?queue=disk')).jobs.length).toBe(before);
}

function integrityOf(file: string): string {
  const db = new Database(file, { readonly: true });
  try {
    return db.pragma('integrity_check', { simple: true }) as string;
  } finally {
    db.close();
  }
}

/**
 * A job floods its log (20,000 numbered lines of 496 bytes, 10 MB) onto a disk too small for it. The server must
 * report the disk full, refuse new work, and not reset the job while its heartbeats cannot be stored; once the disk
 * is grown, the job completes on its first attempt with every line once and in order, and new work runs.
 */
async function floodPastFullDisk(
  name: string,
  serverOptions: { dataDir?: string; env: NodeJS.ProcessEnv },
  disk: Tmpfs,
  reason: RegExp,
): Promise<ServerHandle> {
  const { server, client } = await serverWithExecutor(name, serverOptions);
  const LINES = 20_000;
  const job = await client.submit({
    // Random hex: PostgreSQL compresses what it stores, and a log of zeros would fit in a few kilobytes.
    queue: 'disk',
    steps: [
      {
        key: 'flood',
        run: `seq 1 ${LINES} | awk 'BEGIN { srand(1) } { s = ""; for (i = 0; i < 61; i++) s = s sprintf("%08x", int(rand() * 4294967295)); printf "%06d %s\\n", $1, s }'`,
      },
    ],
  });
  const full = await until('the server reports the disk full', unhealthy(server, 'disk-full'), 60_000, 100);
  expect(full.body.reason).toMatch(reason);
  await expectNewWorkRefused(client, 'disk-full');
  // Well past the stall timeout: the job's heartbeats could not be stored, which is no reason to reset it.
  await new Promise((r) => setTimeout(r, 5_000));
  expect((await readDuringFault(client, `/jobs/${job.id}`)).job.state).toBe('processing');

  await disk.resize(64 * MiB);
  await until('the server is healthy again', healthy(server), 30_000, 100);
  await client.waitForState(job.id, 'completed', 60_000);
  const { attempts } = await client.job(job.id);
  expect(attempts.map((a) => a.outcome)).toEqual(['completed']);
  const out = (await client.logs(job.id)).entries[0].out.split('\n').filter(Boolean);
  expect(out.length).toBe(LINES);
  out.forEach((line, i) =>
    expect(line.slice(0, 14), `line ${i + 1}`).toBe(`stdout: ${String(i + 1).padStart(6, '0')}`),
  );
  const after = await client.submit({ queue: 'disk', steps: [{ run: 'echo after' }] });
  await client.waitForState(after.id, 'completed', 30_000);
  return server;
}

describe('the SQLite data directory runs out of space', () => {
  it(
    'a full disk: writes fail cleanly, new work is refused, the running job waits and then finishes whole when space returns',
    { timeout: 180_000 },
    async () => {
      const disk = await mountTmpfs(6 * MiB);
      cleanup.push(() => disk.unmount());
      // No free-space margin: the database itself meets the full disk.
      const server = await floodPastFullDisk(
        'diskfull',
        { dataDir: disk.dir, env: { DOCKHAND_MIN_FREE_DISK: '0', DOCKHAND_STALLED_JOB_TIMEOUT: '3s' } },
        disk,
        /the database cannot take writes \(disk-full: SQLITE_FULL: .+\); free space on the database disk/,
      );
      await server.stop();
      expect(integrityOf(path.join(disk.dir, 'dockhand.db'))).toBe('ok');
    },
  );

  it(
    'under DOCKHAND_MIN_FREE_DISK: no new work is taken or handed out, running jobs finish, and work resumes when space is freed',
    { timeout: 120_000 },
    async () => {
      const disk = await mountTmpfs(32 * MiB);
      cleanup.push(() => disk.unmount());
      const { server, client } = await serverWithExecutor(
        'lowdisk',
        { dataDir: disk.dir, env: { DOCKHAND_MIN_FREE_DISK: '16M' } },
        { EXECUTOR_MAXIMUM_NUM_JOBS: '1' },
      );
      const dir = await tempDir('lowdisk');

      const running = await client.submit({ queue: 'disk', steps: [gatedStep(dir)] });
      await until('the first job runs', () => existsSync(path.join(dir, `running-${running.id}`)));
      // Waits behind the first: the executor has one slot.
      const waiting = await client.submit({ queue: 'disk', steps: [gatedStep(dir)] });

      const ballast = path.join(disk.dir, 'ballast');
      await writeFile(ballast, Buffer.alloc(20 * MiB));
      const low = await until('the server reports low disk space', unhealthy(server, 'low-disk'), 30_000, 100);
      expect(low.body.reason).toMatch(
        new RegExp(
          `only .+ free on the disk of the data directory ${disk.dir}, under DOCKHAND_MIN_FREE_DISK \\(16Mi\\)`,
        ),
      );
      await expectNewWorkRefused(client, 'low-disk');

      // The running job still reports; the waiting one is not handed out while space is short.
      writeFileSync(path.join(dir, `gate-${running.id}`), '');
      await client.waitForState(running.id, 'completed', 30_000);
      await new Promise((r) => setTimeout(r, 2_000));
      expect((await client.job(waiting.id)).job.state).toBe('queued');

      await rm(ballast);
      await until('the server is healthy again', healthy(server), 30_000, 100);
      await until('the waiting job runs', () => existsSync(path.join(dir, `running-${waiting.id}`)), 30_000);
      writeFileSync(path.join(dir, `gate-${waiting.id}`), '');
      await client.waitForState(waiting.id, 'completed', 30_000);
    },
  );
});

describe('the SQLite data directory turns read-only', () => {
  it(
    'the kernel remounts the disk read-only: the server says so and takes no work; after fsck and a restart, the held result lands',
    { timeout: 120_000 },
    async () => {
      const disk = await mountExt4(64 * MiB);
      cleanup.push(() => disk.unmount());
      const dataDir = path.join(disk.dir, 'data');
      const { server, executor, client } = await serverWithExecutor('readonly', {
        dataDir,
        env: { DOCKHAND_STALLED_JOB_TIMEOUT: '3s', DOCKHAND_MIN_FREE_DISK: '1M' },
      });
      const dir = await tempDir('readonly');

      const job = await client.submit({ queue: 'disk', steps: [gatedStep(dir)] });
      await until('the job runs', () => existsSync(path.join(dir, `running-${job.id}`)));
      await disk.fail();
      const broken = await until(
        'the server reports the database unwritable',
        async () => {
          const h = await health(server);
          return h.status === 503 ? h : undefined;
        },
        30_000,
        100,
      );
      expect(broken.body.reason).toContain(`the data directory ${dataDir} is on a read-only file system (EROFS)`);
      await expectNewWorkRefused(client, broken.body.storage!);
      // The step ends; its result cannot be stored, so the executor keeps it.
      writeFileSync(path.join(dir, `gate-${job.id}`), '');
      await executor.proc.waitFor(/cannot deliver the result yet; keeping it and retrying/, 30_000);

      // What an operator does: stop the server, repair the disk, start the server again.
      await server.stop();
      await disk.repair();
      await server.restart();
      await client.waitForState(job.id, 'completed', 30_000);
      const { attempts } = await client.job(job.id);
      expect(attempts.map((a) => a.outcome)).toEqual(['completed']);
      expect((await client.logs(job.id)).entries[0].out).toBe(`stdout: job ${job.id} done\n`);
      const after = await client.submit({ queue: 'disk', steps: [{ run: 'echo after' }] });
      await client.waitForState(after.id, 'completed', 30_000);
      await server.stop();
      expect(integrityOf(path.join(dataDir, 'dockhand.db'))).toBe('ok');
    },
  );

  it('a server started on a read-only data directory refuses to start, saying why', { timeout: 60_000 }, async () => {
    const disk = await mountExt4(16 * MiB);
    cleanup.push(() => disk.unmount());
    const dataDir = path.join(disk.dir, 'data');
    const env = { DOCKHAND_MIN_FREE_DISK: '1M' };
    const first = await startServer({ name: 'readonly-start-server', dataDir, env });
    await first.stop();
    await disk.fail();
    await expect(startServer({ name: 'readonly-start-server', dataDir, env })).rejects.toThrow(
      new RegExp(
        `cannot open the database ${dataDir}/dockhand.db for writing \\(SQLITE_\\w+: .+\\): the data directory ${dataDir} is on a read-only file system \\(EROFS\\)\\. Give --data-dir`,
      ),
    );
  });
});

describe('the PostgreSQL database runs out of space', () => {
  it(
    'its tablespace fills up: the same as on SQLite, and it recovers without a restart when space returns',
    { timeout: 180_000 },
    async () => {
      const owner = postgresUser();
      if (!owner)
        throw new Error('no postgres user on this machine: the tablespace must belong to the user PostgreSQL runs as');
      const disk = await mountTmpfs(64 * MiB, owner);
      cleanup.push(() => disk.unmount());
      const database = await createTestDatabase('diskfull');
      const name = new URL(database.url).pathname.slice(1);
      // The database's tables live on the small disk; PostgreSQL's own WAL stays where it was.
      await admin(`CREATE TABLESPACE "${name}" LOCATION '${disk.dir}'`);
      cleanup.push(() => admin(`DROP TABLESPACE IF EXISTS "${name}"`).then(() => undefined));
      cleanup.push(() => database.drop());
      await admin(`ALTER DATABASE "${name}" SET TABLESPACE "${name}"`);
      // Room for the schema and a few MB more, not for the 10 MB log to come.
      await disk.resize((await disk.usedBytes()) + 4 * MiB);
      await floodPastFullDisk(
        'pg-diskfull',
        { env: { DOCKHAND_DATABASE_URL: database.url, DOCKHAND_STALLED_JOB_TIMEOUT: '3s' } },
        disk,
        /the database cannot take writes \(disk-full: 53100: could not extend file .+\); free space on the database disk/,
      );
    },
  );
});

describe('the PostgreSQL database turns read-only', () => {
  it('a server started on a read-only database refuses to start, saying why', { timeout: 60_000 }, async () => {
    const database = await createTestDatabase('readonly-start');
    cleanup.push(() => database.drop());
    const name = new URL(database.url).pathname.slice(1);
    const env = { DOCKHAND_DATABASE_URL: database.url };
    const first = await startServer({ name: 'pg-readonly-start-server', env });
    await first.stop();
    await admin(`ALTER DATABASE "${name}" SET default_transaction_read_only = on`);
    await expect(startServer({ name: 'pg-readonly-start-server', env })).rejects.toThrow(
      /the PostgreSQL database .+ cannot take writes \(read-only: 25006: .+\)\. Point DOCKHAND_DATABASE_URL at the primary, writable database\./,
    );
  });

  it(
    'after a failover to a read-only database: unhealthy with the reason, no new work, results kept; writable again, it recovers by itself',
    { timeout: 120_000 },
    async () => {
      const database = await createTestDatabase('readonly');
      cleanup.push(() => database.drop());
      const name = new URL(database.url).pathname.slice(1);
      const { server, executor, client } = await serverWithExecutor('pg-readonly', {
        env: { DOCKHAND_DATABASE_URL: database.url, DOCKHAND_STALLED_JOB_TIMEOUT: '3s' },
      });
      const dir = await tempDir('pg-readonly');

      const job = await client.submit({ queue: 'disk', steps: [gatedStep(dir)] });
      await until('the job runs', () => existsSync(path.join(dir, `running-${job.id}`)));
      // As after a failover to a standby: every new session is read-only, and the open ones are gone.
      await admin(`ALTER DATABASE "${name}" SET default_transaction_read_only = on`);
      await admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`);
      const readOnly = await until(
        'the server reports the database read-only',
        unhealthy(server, 'read-only'),
        30_000,
        100,
      );
      expect(readOnly.body.reason).toMatch(
        /the database cannot take writes \(read-only: 25006: cannot execute .+ in a read-only transaction\); make the database writable again/,
      );
      await expectNewWorkRefused(client, 'read-only');
      writeFileSync(path.join(dir, `gate-${job.id}`), '');
      await executor.proc.waitFor(/cannot deliver the result yet; keeping it and retrying/, 30_000);
      await new Promise((r) => setTimeout(r, 4_000));
      expect((await readDuringFault(client, `/jobs/${job.id}`)).job.state).toBe('processing');

      // Writable again, with no restart: connections that met the fault are replaced by fresh ones.
      await admin(`ALTER DATABASE "${name}" RESET default_transaction_read_only`);
      await until('the server is healthy again', healthy(server), 30_000, 100);
      await client.waitForState(job.id, 'completed', 30_000);
      expect((await client.job(job.id)).attempts.map((a) => a.outcome)).toEqual(['completed']);
      const after = await client.submit({ queue: 'disk', steps: [{ run: 'echo after' }] });
      await client.waitForState(after.id, 'completed', 30_000);
    },
  );
});
