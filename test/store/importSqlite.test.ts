// Moving an installation from SQLite to PostgreSQL: everything arrives, ids are kept, and the copy goes on working.
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseJobSpec, type JobSpecInput } from '../../src/core/jobSpec.js';
import { importSqlite } from '../../src/store/postgres/importSqlite.js';
import { PostgresStore } from '../../src/store/postgres/postgresStore.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import type { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const databases: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(databases.map((d) => d.drop()));
});

function spec(input: Partial<JobSpecInput>) {
  const parsed = parseJobSpec({ queue: 'q', steps: [{ run: 'true' }], ...input });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  return parsed.value;
}

/** A small installation's worth of everything the store keeps. */
async function populate(store: Store): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < 30; i++) {
    const job = await store.jobs.enqueue(
      spec({ namespace: i % 3 ? 'org:a' : 'user:b', queue: i % 2 ? 'q' : 'r' }),
      1_000 + i,
      i === 0 ? { dockerAuthConfig: '{"auths":{}}' } : {},
    );
    ids.push(job.id);
  }
  for (let i = 0; i < 12; i++) {
    const job = await store.jobs.dequeue({
      executorName: 'exec-1',
      queues: ['q', 'r'],
      tokenHash: `hash-${i}`,
      now: 5_000 + i,
    });
    await store.logs.appendLogs(job!.id, 1, [
      {
        index: 0,
        key: 'step.a',
        command: ['sh', '-c', 'x'],
        startTime: 5_000,
        offset: 0,
        out: `out ${i}\n`,
        exitCode: 0,
        durationMs: 3,
      },
    ]);
    if (i % 2)
      await store.jobs.finish({ jobId: job!.id, attempt: 1, kind: 'complete', now: 6_000, retryBackoffMs: 1_000 });
    else if (i % 4 === 0)
      await store.jobs.finish({
        jobId: job!.id,
        attempt: 1,
        kind: 'fail',
        reason: 'out_of_memory',
        message: 'oom',
        now: 6_000,
        retryBackoffMs: 1_000,
      });
  }
  await store.jobs.requestCancel(ids[29], 7_000);
  await store.executors.upsertExecutor(
    {
      name: 'exec-1',
      hostname: 'h',
      os: 'linux',
      arch: 'x64',
      version: '1',
      runtime: 'docker',
      runtimeVersion: 'Docker 20',
      queues: ['q', 'r'],
      maxJobs: 4,
      runningJobs: 6,
      jobCpus: 2,
      jobMemoryBytes: 2 ** 30,
      jobDiskBytes: 20 * 2 ** 30,
      pid: 31337,
    },
    8_000,
  );
  const admin = (await store.accounts.createUser('admin', true, 9_000))!;
  const acme = (await store.accounts.createOrg('acme', admin.id, 9_000))!;
  await store.accounts.createToken(admin.id, 'admin', 'token-hash-1', 9_000);
  await store.accounts.putSecret({
    namespace: 'org:acme',
    name: 'TOKEN',
    ciphertext: 'dh1:aaaaaaaa:x',
    updatedBy: 'admin',
    now: 9_000,
  });
  await store.accounts.recordSecretAccess([
    { namespace: 'org:acme', name: 'TOKEN', jobId: ids[0], attempt: 1, executorName: 'exec-1', accessedAt: 9_001 },
  ]);
  void acme;
  return ids;
}

async function snapshot(store: Store, ids: number[]) {
  return Promise.all(
    ids.map(async (id) => ({
      job: await store.jobs.getJob(id),
      attempts: await store.jobs.listAttempts(id),
      entries: await store.logs.listLogEntries(id, 1),
      chunks: await store.logs.readLogChunks(id, 1, 0, 100),
      auth: await store.jobs.getDockerAuthConfig(id),
    })),
  );
}

describe('dockhand db migrate (SQLite to PostgreSQL)', () => {
  it('copies every table with its ids, and the copy keeps working where SQLite left off', async () => {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'dockhand-import-')), 'dockhand.db');
    const sqlite = new SqliteStore(file);
    await sqlite.migrate();
    const ids = await populate(sqlite);
    const before = await snapshot(sqlite, ids);
    const executors = await sqlite.executors.listExecutors();
    await sqlite.close();

    const db = await createTestDatabase('import');
    databases.push(db);
    const reports = await importSqlite(file, db.url);
    expect(Object.fromEntries(reports.map((r) => [r.table, r.rows]))).toEqual({
      users: 1,
      orgs: 1,
      org_members: 1,
      jobs: 30,
      job_attempts: 12,
      log_entries: 12,
      log_chunks: 12,
      executors: 1,
      api_tokens: 1,
      secrets: 1,
      secret_access_log: 1,
      namespace_turns: 2,
      builds: 0,
      build_tries: 0,
      build_logs: 0,
      build_contexts: 0,
      image_pushes: 0,
    });

    const postgres = new PostgresStore(db.url);
    expect(await snapshot(postgres, ids)).toEqual(before);
    expect(await postgres.executors.listExecutors()).toEqual(executors);
    expect((await postgres.accounts.findToken('token-hash-1', 9_500))?.user).toMatchObject({
      id: 1,
      name: 'admin',
      siteAdmin: true,
    });
    expect((await postgres.accounts.findSecrets('org:acme', ['TOKEN']))[0]?.ciphertext).toBe('dh1:aaaaaaaa:x');
    expect(await postgres.accounts.listSecretAccess({ limit: 10 })).toHaveLength(1);
    expect(await postgres.accounts.orgsOf(1)).toEqual(['acme']);
    // Ids and sequences continue after the copied ones; namespaces keep their turns.
    const next = await postgres.jobs.enqueue(spec({}), 10_000);
    expect(next.id).toBe(ids[ids.length - 1] + 1);
    const claimed = await postgres.jobs.dequeue({
      executorName: 'exec-2',
      queues: ['q', 'r'],
      tokenHash: 'hash-new',
      now: 11_000,
    });
    expect(claimed).toBeDefined();
    await postgres.logs.appendLogs(claimed!.id, 1, [
      { index: 0, key: 'k', command: [], startTime: 0, offset: 0, out: 'x' },
    ]);
    expect((await postgres.logs.readLogChunks(claimed!.id, 1, 0, 10))[0].seq).toBe(13);
    await postgres.close();
  });

  it('refuses a target that already holds data, and changes nothing', async () => {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'dockhand-import-')), 'dockhand.db');
    const sqlite = new SqliteStore(file);
    await sqlite.migrate();
    await populate(sqlite);
    await sqlite.close();
    const db = await createTestDatabase('import-full');
    databases.push(db);
    await importSqlite(file, db.url);
    await expect(importSqlite(file, db.url)).rejects.toThrow(/the target database is not empty: .*jobs \(30 rows\)/);
  });

  it('runs from the CLI with a data directory, and says so without the database password', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dockhand-import-cli-'));
    const sqlite = new SqliteStore(path.join(dir, 'dockhand.db'));
    await sqlite.migrate();
    await populate(sqlite);
    await sqlite.close();
    const db = await createTestDatabase('import-cli');
    databases.push(db);
    const url = db.url.replace('postgres://postgres@', 'postgres://postgres:pw-never-shown@');
    const cli = path.resolve(import.meta.dirname, '../../dist/cli/main.js');
    const result = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(
        process.execPath,
        [cli, 'db', 'migrate', '--from', `sqlite:${dir}`, '--to', url],
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: stdout + stderr }),
      ),
    );
    expect(result.out).toContain('jobs: 30 rows');
    expect(result.out).toContain('migrated 75 rows; row counts match in every table');
    expect(result.out).toContain('postgres://postgres:***@');
    expect(result.out).not.toContain('pw-never-shown');
    expect(result.code).toBe(0);
  });
});
