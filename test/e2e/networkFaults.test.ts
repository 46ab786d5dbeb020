// The network between an executor and its server fails on purpose (test/support/chaosProxy.ts): every chunk
// delayed, connections reset every few hundred milliseconds, stalls that end in a reset. Jobs must still finish,
// each completed by exactly one attempt, with every line of its log stored once and in order.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { ChaosProxy } from '../support/chaosProxy.js';
import { createTestDatabase } from '../support/postgres.js';
import { startExecutor, startServer } from '../support/processes.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

const JOBS = 40;
const LINES = 300;

/** Numbered lines on both streams, in bursts, so that output is in flight whenever the network fails. */
const step = {
  key: 'lines',
  run: `i=0\nwhile [ $i -lt ${LINES} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; if [ $((i % 100)) -eq 0 ]; then sleep 0.2; fi; done`,
};

function expectLinesOnce(out: string, stream: 'stdout' | 'stderr', word: string): void {
  const lines = out.split('\n').filter((l) => l.startsWith(`${stream}: `));
  expect(lines).toEqual(Array.from({ length: LINES }, (_, i) => `${stream}: ${word} ${i + 1}`));
}

describe.each(['sqlite', 'postgres'] as const)('network faults between an executor and the server, on %s', (store) => {
  it('finishes every job once, every log line once and in order, through delays, resets and stalls', { timeout: 240_000 }, async () => {
    // Short enough that a job whose dequeue answer was lost is handed out again within the test.
    const env: NodeJS.ProcessEnv = { DOCKHAND_STALLED_JOB_TIMEOUT: '5s' };
    if (store === 'postgres') {
      const database = await createTestDatabase('netfaults');
      cleanup.push(() => database.drop());
      env.DOCKHAND_DATABASE_URL = database.url;
    }
    const server = await startServer({ name: `netfault-${store}-server`, env });
    cleanup.push(() => server.stop());
    const proxy = new ChaosProxy({ host: '127.0.0.1', port: server.port });
    const url = await proxy.start();
    cleanup.push(() => proxy.stop());
    proxy.delayMs = [0, 15];
    const executor = await startExecutor(url, {
      name: `netfault-${store}-exec`, queues: ['net'], env: { EXECUTOR_MAXIMUM_NUM_JOBS: '6', EXECUTOR_HEARTBEAT_INTERVAL: '1s' },
    });
    cleanup.push(() => executor.stop());
    const client = new TestClient(server.url);
    const jobs = [];
    for (let i = 0; i < JOBS; i++) jobs.push(await client.submit({ queue: 'net', steps: [step] }));

    let calm = false;
    let faults = 0;
    const chaos = (async () => {
      while (!calm) {
        await sleep(300 + Math.random() * 400);
        if (calm) break;
        faults++;
        if (Math.random() < 0.7) proxy.resetAll();
        else await proxy.stall(800);
      }
    })();
    try {
      for (const job of jobs) await client.waitForState(job.id, 'completed', 200_000);
    } finally {
      calm = true;
      await chaos;
    }

    expect(faults).toBeGreaterThan(5);
    expect(proxy.resets).toBeGreaterThan(faults);
    for (const job of jobs) {
      const { attempts } = await client.job(job.id);
      // At least once: an attempt whose dequeue answer was lost is reset and run again. Completed exactly once.
      const completed = attempts.filter((a) => a.outcome === 'completed');
      expect(completed, `job ${job.id}: ${JSON.stringify(attempts)}`).toHaveLength(1);
      expect(completed[0].attempt).toBe(attempts.length);
      const { entries } = await client.logs(job.id);
      expect(entries.map((e) => [e.key, e.exitCode])).toEqual([['step.lines', 0]]);
      expectLinesOnce(entries[0].out, 'stdout', 'out');
      expectLinesOnce(entries[0].out, 'stderr', 'err');
    }
  });
});
