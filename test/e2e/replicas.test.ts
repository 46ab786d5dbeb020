// Two server replicas on one PostgreSQL: a job submitted through one wakes an executor waiting on the other at
// once, and a cancel sent to one reaches an executor held on the other.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startExecutor, startServer, type ExecutorHandle, type ServerHandle } from '../support/processes.js';

let database: TestDatabase;
let replicas: ServerHandle[] = [];
let executor: ExecutorHandle;

beforeAll(async () => {
  database = await createTestDatabase('replicas');
  // A password in the URL (the test server trusts every connection) shows that it never reaches the output.
  const url = database.url.replace('postgres://postgres@', 'postgres://postgres:s3cret-db-password@');
  replicas = await Promise.all(
    ['a', 'b'].map((name) => startServer({ name: `replica-${name}`, env: { DOCKHAND_DATABASE_URL: url } })),
  );
  executor = await startExecutor(replicas[1].url, { name: 'replica-exec', queues: ['shared'] });
});

afterAll(async () => {
  await executor?.stop();
  await Promise.all(replicas.map((r) => r.stop()));
  await database?.drop();
});

describe('two replicas on one PostgreSQL', () => {
  it('say where their data is without the database password', () => {
    for (const replica of replicas) {
      expect(replica.proc.output).toContain('data in postgres://postgres:***@127.0.0.1:');
      expect(replica.proc.output).not.toContain('s3cret-db-password');
    }
  });

  it('wake an executor held on replica B for a job submitted through replica A, without waiting for a poll', async () => {
    const a = new TestClient(replicas[0].url);
    // Let the executor's dequeue settle into its long poll on B.
    await new Promise((r) => setTimeout(r, 500));
    const job = await a.submit({ queue: 'shared', steps: [{ run: 'echo hello from B' }] });
    const done = await a.waitForState(job.id, 'completed', 20_000);
    // Replicas also look again every 5 s in case a notification is lost; this must be far quicker than that.
    expect(done.startedAt! - done.createdAt).toBeLessThan(1_000);
    expect((await new TestClient(replicas[1].url).logs(job.id)).entries[0].out).toContain('stdout: hello from B');
  });

  it('deliver a cancel sent to replica A to the executor whose heartbeat is held on replica B', async () => {
    const a = new TestClient(replicas[0].url);
    const job = await a.submit({ queue: 'shared', steps: [{ run: 'echo started; sleep 60' }] });
    await a.waitFor(job.id, (j) => j.state === 'processing');
    await new Promise((r) => setTimeout(r, 300));
    const asked = Date.now();
    expect((await a.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
    const done = await a.waitForState(job.id, 'canceled', 10_000);
    expect(done.finishedAt! - asked).toBeLessThan(2_000);
  });
});
