// The server killed with -9 in the middle of 500 jobs, then started again on the same data: every job ends in exactly
// one terminal state, no completed job runs again, and the executors keep running their jobs through the outage and
// deliver their logs and results afterwards.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { createTestDatabase } from '../support/postgres.js';
import { startExecutor, startServer, tempDir } from '../support/processes.js';
import { until } from '../support/wait.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

const JOBS = 500;

describe.each(['sqlite', 'postgres'] as const)('the server killed with -9 during a run, on %s', (store) => {
  it(
    `ends each of ${JOBS} jobs once, runs no completed job again, and loses no log or result`,
    { timeout: 240_000 },
    async () => {
      const env: NodeJS.ProcessEnv = { DOCKHAND_STALLED_JOB_TIMEOUT: '5s' };
      if (store === 'postgres') {
        const database = await createTestDatabase('servercrash');
        cleanup.push(() => database.drop());
        env.DOCKHAND_DATABASE_URL = database.url;
      }
      const server = await startServer({ name: `crash-${store}-server`, env });
      cleanup.push(() => server.stop());
      for (const name of ['a', 'b']) {
        const executor = await startExecutor(server.url, {
          name: `crash-${store}-${name}`,
          queues: ['crash'],
          env: { EXECUTOR_MAXIMUM_NUM_JOBS: '8' },
        });
        cleanup.push(() => executor.stop());
      }
      const client = new TestClient(server.url);
      const dir = await tempDir('servercrash');
      // Each run of a job leaves a line in the job's own file: how many times it ran, whatever the server recorded.
      const step = {
        key: 'work',
        run: `echo "$DOCKHAND_JOB_ATTEMPT" >> ${dir}/runs-$DOCKHAND_JOB_ID\necho "job $DOCKHAND_JOB_ID"\nsleep 0.1\necho done`,
      };
      const answer = await client.call('POST', '/jobs/batch', {
        jobs: Array.from({ length: JOBS }, () => ({ queue: 'crash', steps: [step] })),
      });
      expect(answer.status).toBe(201);
      const ids = (answer.body as { jobs: { id: number }[] }).jobs.map((j) => j.id);

      const completedCount = async (): Promise<number> =>
        (
          (await client.call('GET', '/queues')).body as { queues: { queue: string; completedLastHour: number }[] }
        ).queues.find((q) => q.queue === 'crash')?.completedLastHour ?? 0;
      await until('a quarter of the jobs complete', async () => (await completedCount()) >= JOBS / 4, 60_000);
      server.proc.signal('SIGKILL');
      // Down for a while: steps finish meanwhile, their results wait in the executors.
      await sleep(2_000);
      await server.restart();

      for (const id of ids)
        await client.waitFor(id, (j) => ['completed', 'failed', 'canceled'].includes(j.state), 120_000);
      for (const id of ids) {
        const { job, attempts } = await client.job(id);
        expect(job.state, `job ${id}: ${JSON.stringify(attempts)}`).toBe('completed');
        // Exactly one attempt completed, the last one; an attempt reset meanwhile may have run too (at least once).
        expect(attempts.filter((a) => a.outcome === 'completed').map((a) => a.attempt)).toEqual([attempts.length]);
        const runs = readFileSync(path.join(dir, `runs-${id}`), 'utf8')
          .trim()
          .split('\n')
          .map(Number);
        // No run after the completed one, and none the server does not know of.
        expect(
          runs.every((r) => r <= job.attempt),
          `job ${id} ran as attempts ${runs}`,
        ).toBe(true);
        expect((await client.logs(id)).entries[0].out).toBe(`stdout: job ${id}\nstdout: done\n`);
      }
    },
  );
});
