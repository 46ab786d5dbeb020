// Key rotation over a real store: every secret and job credential ends up under the new key, the old key leaves
// the key file, and credentials stored in plain JSON before encryption existed get encrypted too.
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/core/jobSpec.js';
import { KEY_FILE_NAME, Keyring, generateKey } from '../../src/server/secrets/keyring.js';
import { rotateKey } from '../../src/server/secrets/rotation.js';
import { Secrets } from '../../src/server/secrets/secrets.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';

async function setup(keyring: (dir: string) => Keyring) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dockhand-rotation-'));
  const store = new SqliteStore(path.join(dir, 'dockhand.db'));
  await store.migrate();
  const secrets = new Secrets(store.accounts, keyring(dir));
  await secrets.set({ namespace: 'global', name: 'API_KEY', value: 'global-api-key-1', updatedBy: 'admin' });
  await store.accounts.createOrg('acme', undefined, 0);
  await secrets.set({ namespace: 'org:acme', name: 'API_KEY', value: 'acme-api-key-1', updatedBy: 'admin' });
  const spec = parseJobSpec({ queue: 'q', namespace: 'org:acme', secrets: ['API_KEY'], steps: [{ run: 'true' }] });
  if (!spec.ok) throw new Error('bad spec');
  const auth = JSON.stringify({ auths: { 'registry.example.com': { auth: 'dXNlcjpwYXNzd29yZA==' } } });
  const sealed = await store.jobs.enqueue(spec.value, 0, { dockerAuthConfig: secrets.sealJobCredentials(auth) });
  const legacy = await store.jobs.enqueue(spec.value, 0, { dockerAuthConfig: auth });
  return { dir, store, secrets, jobs: [sealed, legacy] };
}

describe('dockhand secret rotate-key', () => {
  it('with the key file: makes a new key, re-encrypts everything, and drops the old key from the file', async () => {
    const { dir, store, secrets, jobs } = await setup((d) => Keyring.load({}, d));
    const oldId = secrets.keyring.primaryId;
    const report = await rotateKey(store.accounts, Keyring.load({}, dir));
    expect(report).toEqual({
      keyId: expect.any(String),
      secrets: 2,
      jobs: 2,
      retired: [oldId],
      file: path.join(dir, KEY_FILE_NAME),
    });
    expect(report.keyId).not.toBe(oldId);
    expect(await store.accounts.ciphertextPrefixes(13)).toEqual([`dh1:${report.keyId}:`]);
    expect(
      readFileSync(path.join(dir, KEY_FILE_NAME), 'utf8')
        .split('\n')
        .filter((l) => l && !l.startsWith('#')),
    ).toHaveLength(1);
    // The running server's keyring (loaded before) still resolves everything: it rereads the file.
    for (const job of jobs) {
      const resolved = await secrets.resolveForJob(job, 'exec', await store.jobs.getDockerAuthConfig(job.id));
      expect(resolved.env).toEqual({ API_KEY: 'acme-api-key-1' });
      expect(resolved.dockerAuthConfig?.auths?.['registry.example.com']?.auth).toBe('dXNlcjpwYXNzd29yZA==');
    }
    // Nothing stored is readable in plain text any more.
    expect(await store.jobs.getDockerAuthConfig(jobs[1].id)).toMatch(/^dh1:/);
    await store.close();
  });

  it('with DOCKHAND_ENCRYPTION_KEY: re-encrypts with the first key and names the keys no longer used', async () => {
    const oldKey = generateKey();
    const { store, jobs } = await setup(() => Keyring.load({ DOCKHAND_ENCRYPTION_KEY: oldKey }, ''));
    const newKey = generateKey();
    const both = Keyring.load({ DOCKHAND_ENCRYPTION_KEY: `${newKey},${oldKey}` }, '');
    const report = await rotateKey(store.accounts, both);
    expect(report).toMatchObject({ keyId: both.primaryId, secrets: 2, jobs: 2, retired: [both.ids[1]] });
    expect(report.file).toBeUndefined();
    const onlyNew = new Secrets(store.accounts, Keyring.load({ DOCKHAND_ENCRYPTION_KEY: newKey }, ''));
    expect(await onlyNew.missingKeys()).toEqual([]);
    expect(
      (await onlyNew.resolveForJob(jobs[0], 'exec', await store.jobs.getDockerAuthConfig(jobs[0].id))).env.API_KEY,
    ).toBe('acme-api-key-1');
    // Running it again changes nothing.
    expect(await rotateKey(store.accounts, both)).toMatchObject({ secrets: 0, jobs: 0 });
    await store.close();
  });
});
