// The network between an executor and its server fails on purpose. Through a chaos proxy (test/support/chaosProxy.ts:
// every chunk delayed, connections reset every few hundred milliseconds, stalls that end in a reset) jobs must still
// finish, each completed by exactly one attempt, with every line of its log stored once and in order. Through a cut
// (test/support/tcpBalancer.ts): a short one changes nothing for a running job; one longer than the stall timeout
// gets the job reset and run elsewhere, and the cut-off executor stops its attempt's processes once it hears so.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { ChaosProxy } from '../support/chaosProxy.js';
import { startServerOn, type StoreKind } from '../support/storeServer.js';
import { startExecutor, tempDir, type ServerHandle } from '../support/processes.js';
import { startBalancer } from '../support/tcpBalancer.js';
import { until } from '../support/wait.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

/** A server on SQLite, or on a fresh PostgreSQL database, that resets a job after `stallTimeout` of silence. */
function serverOn(store: StoreKind, name: string, stallTimeout: string): Promise<ServerHandle> {
  return startServerOn(store, `${name}-server`, { DOCKHAND_STALLED_JOB_TIMEOUT: stallTimeout }, cleanup);
}

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
  it(
    'finishes every job once, every log line once and in order, through delays, resets and stalls',
    { timeout: 240_000 },
    async () => {
      // Short enough that a job whose dequeue answer was lost is handed out again within the test.
      const server = await serverOn(store, 'netfault', '5s');
      const proxy = new ChaosProxy({ host: '127.0.0.1', port: server.port });
      const url = await proxy.start();
      cleanup.push(() => proxy.stop());
      proxy.delayMs = [0, 15];
      const executor = await startExecutor(url, {
        name: `netfault-${store}-exec`,
        queues: ['net'],
        env: { EXECUTOR_MAXIMUM_NUM_JOBS: '6', EXECUTOR_HEARTBEAT_INTERVAL: '1s' },
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
    },
  );
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.each(['sqlite', 'postgres'] as const)('a network cut between an executor and the server, on %s', (store) => {
  it(
    'a short cut changes nothing; a cut past the stall timeout resets the job, and the cut-off executor stops its attempt',
    { timeout: 120_000 },
    async () => {
      const server = await serverOn(store, 'netcut', '4s');
      const link = await startBalancer([{ host: '127.0.0.1', port: server.port }]);
      cleanup.push(() => link.close());
      const cutOff = await startExecutor(link.url, {
        name: `netcut-${store}-a`,
        queues: ['cut'],
        env: { EXECUTOR_MAXIMUM_NUM_JOBS: '1', EXECUTOR_HEARTBEAT_INTERVAL: '500ms' },
      });
      cleanup.push(() => cutOff.stop());
      const client = new TestClient(server.url);
      const dir = await tempDir('netcut');
      // The step writes its pid, then waits for its attempt's gate file.
      const gated = {
        key: 'gated',
        run: `echo $$ > ${dir}/pid-$DOCKHAND_JOB_ID-$DOCKHAND_JOB_ATTEMPT\nwhile [ ! -f ${dir}/gate-$DOCKHAND_JOB_ID-$DOCKHAND_JOB_ATTEMPT ]; do sleep 0.05; done\necho "attempt $DOCKHAND_JOB_ATTEMPT done"`,
      };
      const file = (kind: 'pid' | 'gate', job: number, attempt: number): string =>
        path.join(dir, `${kind}-${job}-${attempt}`);

      // A short cut, under the stall timeout: heartbeats fail, nothing is canceled or reset.
      const first = await client.submit({ queue: 'cut', steps: [gated] });
      await until('the first job runs', () => existsSync(file('pid', first.id, 1)));
      await link.cut();
      await sleep(1_500);
      await link.start();
      writeFileSync(file('gate', first.id, 1), '');
      await client.waitForState(first.id, 'completed', 30_000);
      expect((await client.job(first.id)).attempts.map((a) => a.outcome)).toEqual(['completed']);

      // A long cut: the server resets the job and another executor runs attempt 2; once the cut-off executor hears
      // that its attempt is gone, it stops the step's process, and only attempt 2 reports.
      const second = await client.submit({ queue: 'cut', steps: [gated] });
      await until('the second job runs', () => existsSync(file('pid', second.id, 1)));
      const stranded = Number(readFileSync(file('pid', second.id, 1), 'utf8'));
      await link.cut();
      await client.waitFor(second.id, (j) => j.state === 'queued' && j.numResets === 1, 30_000);
      const other = await startExecutor(server.url, {
        name: `netcut-${store}-b`,
        queues: ['cut'],
        env: { EXECUTOR_MAXIMUM_NUM_JOBS: '1' },
      });
      cleanup.push(() => other.stop());
      await until('attempt 2 runs', () => existsSync(file('pid', second.id, 2)));
      expect(alive(stranded)).toBe(true);
      await link.start();
      await until("the cut-off executor stops attempt 1's process", () => !alive(stranded), 20_000);
      writeFileSync(file('gate', second.id, 2), '');
      const done = await client.waitForState(second.id, 'completed', 30_000);
      expect(done.executorName).toBe(other.name);
      const { attempts } = await client.job(second.id);
      expect(attempts.map((a) => [a.executorName, a.outcome])).toEqual([
        [cutOff.name, 'reset'],
        [other.name, 'completed'],
      ]);
      expect((await client.logs(second.id)).entries[0].out).toBe('stdout: attempt 2 done\n');
    },
  );
});
