// Secrets at rest, with real processes: the database files never hold a value, `dockhand secret rotate-key`
// re-encrypts with a new key that a restarted server and a running job use, and a server missing the key that
// stored values were encrypted with refuses to start, saying what to do.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, writeKeyFile } from '../../src/server/secrets/keyring.js';
import { TestClient } from '../support/api.js';
import {
  EXECUTORS_TOKEN,
  startExecutor,
  startServer,
  type ExecutorHandle,
  type ServerHandle,
  runCli,
} from '../support/processes.js';

const VALUE = 'rotate-me-please-0123456789';

/** Every byte the server keeps in its data directory (database, WAL, key file). */
function dataDirBytes(dir: string): string {
  return readdirSync(dir)
    .map((f) => readFileSync(path.join(dir, f)).toString('latin1'))
    .join('\n');
}

let server: ServerHandle;
let executor: ExecutorHandle | undefined;
let client: TestClient;

beforeAll(async () => {
  server = await startServer({ name: 'encryption-server' });
  client = new TestClient(server.url);
  await client.setSecret('API_KEY', VALUE);
});

afterAll(async () => {
  await executor?.stop();
  await server?.stop();
});

async function runJobChecking(expected: string): Promise<void> {
  const job = await client.submit({
    queue: 'encryption',
    namespace: 'global',
    secrets: ['API_KEY'],
    steps: [{ run: `[ "$API_KEY" = '${expected}' ]` }],
  });
  const done = await client.waitFor(job.id, (j) => j.state === 'completed' || j.state === 'failed', 30_000);
  expect(done.state, JSON.stringify(done)).toBe('completed');
}

describe('secrets at rest', () => {
  it('keeps values out of the database files, with a key file only its owner can read', async () => {
    const keyFile = path.join(server.dataDir, 'encryption.key');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(dataDirBytes(server.dataDir)).not.toContain(VALUE);
    expect(dataDirBytes(server.dataDir)).not.toContain(Buffer.from(VALUE).toString('base64'));
  });

  it('rotates the key: the old key leaves the file and a restarted server still gives jobs the value', async () => {
    const keyFile = path.join(server.dataDir, 'encryption.key');
    const before = readFileSync(keyFile, 'utf8');
    await server.proc.stop();
    const rotated = await runCli(['secret', 'rotate-key', '--data-dir', server.dataDir]);
    expect(rotated.stderr).toBe('');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toMatch(
      /^re-encrypted 1 secret\(s\) and 0 job credential\(s\); every stored value now uses key [0-9a-f]{8}\n/,
    );
    const after = readFileSync(keyFile, 'utf8');
    expect(after).not.toBe(before);
    const keyLines = (text: string): string[] => text.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(keyLines(after)).toHaveLength(1);
    expect(keyLines(after)).not.toContain(keyLines(before)[0]);

    await server.restart();
    executor = await startExecutor(server.url, { name: 'encryption-exec', queues: ['encryption'] });
    await runJobChecking(VALUE);
  });

  it('refuses to start without the key stored values were encrypted with, naming the fix', async () => {
    await server.proc.stop();
    const keyFile = path.join(server.dataDir, 'encryption.key');
    const kept = readFileSync(keyFile, 'utf8');
    writeKeyFile(keyFile, [generateKey()]);
    const refused = await runCli(['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', server.dataDir], {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
    });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(
      /stored secrets were encrypted with key [0-9a-f]{8}, which .*encryption\.key does not hold\. Give this server the same keys/,
    );
    // With its key back, the server starts and jobs get the value again.
    const envKey = kept.split('\n').filter((l) => l && !l.startsWith('#'))[0];
    writeKeyFile(keyFile, [envKey]);
    await server.restart();
    await runJobChecking(VALUE);
  });
});
