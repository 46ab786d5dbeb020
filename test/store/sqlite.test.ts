import { afterAll, describe, it, expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseJobSpec } from '../../src/core/jobSpec.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
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
    const job = await first.enqueue(spec.value, 1_000);
    await first.createApiToken('admin', 'hash', 1_000);
    await first.close();

    const second = new SqliteStore(file);
    await second.migrate();
    expect(await second.getJob(job.id)).toEqual(job);
    expect(await second.countApiTokens()).toBe(1);
    const next = await second.enqueue(spec.value, 2_000);
    expect(next.id).toBeGreaterThan(job.id);
    await second.close();
  });
});
