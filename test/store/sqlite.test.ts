import { afterAll, describe, it, expect } from 'vitest';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseJobSpec } from '../../src/core/jobSpec.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import { buildsContract } from './builds.js';
import { storeContract } from './contract.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'dockhand-sqlite-test-'));
let counter = 0;

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

async function freshStore(): Promise<SqliteStore> {
  const store = new SqliteStore(path.join(root, `db-${++counter}`, 'dockhand.db'));
  await store.migrate();
  return store;
}

storeContract('sqlite', freshStore);
buildsContract('sqlite', freshStore);

describe('SqliteStore', () => {
  it('is named sqlite', async () => {
    const store = await freshStore();
    expect(store.kind).toBe('sqlite');
    await store.close();
  });

  it('keeps its data across a restart, and migrating an existing file is harmless', async () => {
    const file = path.join(root, 'reopen', 'nested', 'dockhand.db');
    const spec = parseJobSpec({ queue: 'q', steps: [{ run: 'true' }] });
    if (!spec.ok) throw new Error('bad spec');
    const first = new SqliteStore(file);
    await first.migrate();
    const job = await first.jobs.enqueue(spec.value, 1_000);
    await first.accounts.createToken(
      (await first.accounts.createUser('admin', true, 1_000))!.id,
      'admin',
      'hash',
      1_000,
    );
    await first.close();

    const second = new SqliteStore(file);
    await second.migrate();
    expect(await second.jobs.getJob(job.id)).toEqual(job);
    expect(await second.accounts.countTokens()).toBe(1);
    const next = await second.jobs.enqueue(spec.value, 2_000);
    expect(next.id).toBeGreaterThan(job.id);
    await second.close();
  });
});

describe('SqliteStore upgrade to users', () => {
  it('gives API tokens made before users existed to a site admin named admin', async () => {
    const { MIGRATIONS } = await import('../../src/store/sqlite/migrations.js');
    const Database = (await import('better-sqlite3')).default;
    const file = path.join(root, 'upgrade', 'dockhand.db');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(path.dirname(file), { recursive: true });
    const old = new Database(file);
    old.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (const m of MIGRATIONS.filter((m) => m.version <= 3)) {
      old.exec(m.sql);
      old.prepare('INSERT INTO schema_migrations VALUES (?, 0)').run(m.version);
    }
    old
      .prepare(
        "INSERT INTO api_tokens (name, token_hash, created_at) VALUES ('admin', 'h-old-1', 500), ('ci', 'h-old-2', 700)",
      )
      .run();
    old.close();

    const store = new SqliteStore(file);
    await store.migrate();
    const found = await store.accounts.findToken('h-old-2', 1_000);
    expect(found?.user).toEqual({ id: expect.any(Number), name: 'admin', siteAdmin: true, createdAt: 500 });
    expect((await store.accounts.listTokens()).map((t) => [t.name, t.user])).toEqual([
      ['admin', 'admin'],
      ['ci', 'admin'],
    ]);
    await store.close();
  });
});

describe('SqliteStore upgrade to disk limits', () => {
  it('keeps an executor recorded before disk limits, with no disk limit known', async () => {
    const { MIGRATIONS } = await import('../../src/store/sqlite/migrations.js');
    const file = path.join(root, 'upgrade-disk', 'dockhand.db');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(path.dirname(file), { recursive: true });
    const old = new Database(file);
    old.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    // The schema before disk limits, with an executor row in it.
    for (const m of MIGRATIONS.filter((m) => m.version <= 8)) {
      old.exec(m.sql);
      old.prepare('INSERT INTO schema_migrations VALUES (?, 0)').run(m.version);
    }
    old
      .prepare(
        `INSERT INTO executors (name, hostname, os, arch, version, runtime, runtime_version, queues, max_jobs, running_jobs,
      job_cpus, job_memory_bytes, first_seen_at, last_seen_at) VALUES ('old', 'h', 'linux', 'x64', '0.2.0', 'docker', null, '["q"]', 1, 0, 2, 1073741824, 5, 6)`,
      )
      .run();
    old.close();

    const store = new SqliteStore(file);
    await store.migrate();
    expect(await store.executors.listExecutors()).toEqual([
      expect.objectContaining({ name: 'old', jobCpus: 2, jobMemoryBytes: 2 ** 30, jobDiskBytes: null }),
    ]);
    await store.close();
  });
});

describe('SQLite storage faults', () => {
  it('a full database and a read-only one are told apart from other errors', async () => {
    const store = await freshStore();
    const file = path.join(root, `db-${counter}`, 'dockhand.db');
    // The page limit makes SQLite answer exactly as on a full disk.
    const capped = new Database(file);
    const pages = capped.pragma('page_count', { simple: true }) as number;
    capped.pragma(`max_page_count = ${pages}`);
    const full = (() => {
      try {
        capped.exec(
          `INSERT INTO storage_probe (id, written_at) SELECT value, 0 FROM json_each('[${Array.from({ length: 5000 }, (_, i) => i + 10).join(',')}]')`,
        );
      } catch (err) {
        return err;
      }
    })();
    capped.close();
    expect(store.storageFault(full)).toEqual({ kind: 'disk-full', detail: 'SQLITE_FULL: database or disk is full' });

    const readOnly = new Database(file, { readonly: true });
    const refused = (() => {
      try {
        readOnly.exec('INSERT INTO storage_probe (id, written_at) VALUES (2, 0)');
      } catch (err) {
        return err;
      }
    })();
    readOnly.close();
    expect(store.storageFault(refused)).toMatchObject({
      kind: 'read-only',
      detail: expect.stringMatching(/^SQLITE_READONLY/),
    });
    await store.close();
  });
});
