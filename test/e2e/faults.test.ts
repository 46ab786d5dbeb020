// End to end under faults: executors killed or frozen mid-job, the server restarted mid-job, graceful and hard stops.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { RawExecutor, TestClient } from '../support/api.js';
import { until } from '../support/wait.js';
import { startServerOn, type StoreKind } from '../support/storeServer.js';
import {
  ADMIN_TOKEN,
  Proc,
  startExecutor,
  tempDir,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';

const STALL = { DOCKHAND_STALLED_JOB_TIMEOUT: '2s' };
let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  // In reverse: a test database is dropped only after the server using it has stopped.
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

function server(name: string, env: NodeJS.ProcessEnv = STALL, store: StoreKind = 'sqlite'): Promise<ServerHandle> {
  return startServerOn(store, name, env, cleanup);
}

async function executor(url: string, name: string, env: NodeJS.ProcessEnv = {}): Promise<ExecutorHandle> {
  const e = await startExecutor(url, { name, queues: ['work'], env: { EXECUTOR_MAXIMUM_NUM_JOBS: '1', ...env } });
  cleanup.push(() => e.stop());
  return e;
}

function fileHas(file: string, text: string): boolean {
  try {
    return readFileSync(file, 'utf8').includes(text);
  } catch {
    return false;
  }
}

/** A step that records which executor ran it, then waits for a file the test creates. */
function gatedStep(dir: string, gate: string) {
  return {
    key: 'gated',
    run: `echo "attempt $DOCKHAND_JOB_ATTEMPT started" \necho "$DOCKHAND_JOB_ATTEMPT" >> ${dir}/runs\nwhile [ ! -f ${gate} ]; do sleep 0.05; done\necho "attempt $DOCKHAND_JOB_ATTEMPT done"`,
  };
}

// The reset and the fencing are the store's work: both stores.
describe.each(['sqlite', 'postgres'] as const)('executor faults, on %s', (store) => {
  it('resets a job whose executor was killed with -9 and finishes it on the other executor', async () => {
    const dir = await tempDir('kill9');
    const s = await server('kill9-server', STALL, store);
    const client = new TestClient(s.url);
    const doomed = await executor(s.url, 'kill9-doomed');
    const job = await client.submit({ queue: 'work', steps: [gatedStep(dir, path.join(dir, 'gate'))] });
    await client.waitFor(job.id, (j) => j.state === 'processing' && j.executorName === 'kill9-doomed');
    await client.waitFor(job.id, () => fileHas(path.join(dir, 'runs'), '1'));
    doomed.proc.signal('SIGKILL');
    // The step's own process keeps running, but nobody reports for attempt 1 any more.
    const survivor = await executor(s.url, 'kill9-survivor');
    await client.waitFor(job.id, (j) => j.attempt === 2 && j.state === 'processing', 20_000);
    writeFileSync(path.join(dir, 'gate'), '');
    const done = await client.waitForState(job.id, 'completed', 20_000);
    expect(done.executorName).toBe(survivor.name);
    const { attempts } = await client.job(job.id);
    expect(attempts.map((a) => [a.executorName, a.outcome])).toEqual([
      ['kill9-doomed', 'reset'],
      ['kill9-survivor', 'completed'],
    ]);
    expect(attempts[0].message).toMatch(/no heartbeat from executor kill9-doomed/);
    expect((await client.logs(job.id)).entries[0].out).toBe('stdout: attempt 2 started\nstdout: attempt 2 done\n');
  });

  it("refuses a reset attempt's late calls (fencing), from a raw client and from a frozen executor", async () => {
    const dir = await tempDir('fence');
    const s = await server('fence-server', STALL, store);
    const client = new TestClient(s.url);

    // 1. A raw protocol client takes a job and goes silent; a real executor takes over after the reset.
    const raw = new RawExecutor(s.url, 'fence-raw');
    const job = await client.submit({ queue: 'work', steps: [{ run: 'echo real run' }] });
    const taken = await raw.dequeue(['work']);
    expect(taken.status).toBe(200);
    expect((await raw.appendLog(taken.body, 'stdout: early line\n')).status).toBe(200);
    const real = await executor(s.url, 'fence-real');
    await client.waitForState(job.id, 'completed', 20_000);
    const lateLog = await raw.appendLog(taken.body, 'stdout: late line\n', 18);
    expect(lateLog.status).toBe(409);
    expect(lateLog.body.code).toBe('stale_attempt');
    const lateComplete = await raw.jobCall(taken.body, 'complete', {});
    expect(lateComplete.status).toBe(409);
    const lateFail = await raw.jobCall(taken.body, 'fail', { message: 'late' });
    expect(lateFail.status).toBe(409);
    expect((await raw.heartbeat([{ id: job.id, attempt: 1 }])).body).toEqual({ knownIds: [], cancelIds: [] });
    const after = await client.job(job.id);
    expect(after.job.state).toBe('completed');
    expect(after.attempts.map((a) => a.outcome)).toEqual(['reset', 'completed']);
    expect((await client.logs(job.id, 1)).entries[0].out).toBe('stdout: early line\n');
    await real.stop();

    // 2. A real executor is frozen (SIGSTOP) mid-job, the job moves on, then it is thawed (SIGCONT).
    const frozen = await executor(s.url, 'fence-frozen');
    const gate = path.join(dir, 'gate');
    const job2 = await client.submit({ queue: 'work', steps: [gatedStep(dir, gate)] });
    await client.waitFor(job2.id, (j) => j.state === 'processing' && j.executorName === 'fence-frozen');
    await client.waitFor(job2.id, () => fileHas(path.join(dir, 'runs'), '1'));
    frozen.proc.signal('SIGSTOP');
    const other = await executor(s.url, 'fence-other');
    await client.waitFor(job2.id, (j) => j.attempt === 2 && j.state === 'processing', 20_000);
    writeFileSync(gate, '');
    await client.waitForState(job2.id, 'completed', 20_000);
    frozen.proc.signal('SIGCONT');
    // The thawed executor's attempt-1 step has finished too; its report must be refused and it must let go.
    // Refused, or abandoned (it then sends nothing more): either way its attempt is over.
    await frozen.proc.waitFor(/refused this attempt's result|abandoning job/, 20_000);
    const final = await client.job(job2.id);
    expect(final.job.state).toBe('completed');
    expect(final.job.executorName).toBe(other.name);
    expect(final.attempts.map((a) => [a.executorName, a.outcome])).toEqual([
      ['fence-frozen', 'reset'],
      ['fence-other', 'completed'],
    ]);
    expect((await client.logs(job2.id)).entries[0].out).toBe('stdout: attempt 2 started\nstdout: attempt 2 done\n');
  });
});

describe('faults', () => {
  it('keeps running through a server restart and delivers the logs and result afterwards', async () => {
    const dir = await tempDir('restart');
    const s = await server('restart-server', { DOCKHAND_STALLED_JOB_TIMEOUT: '3s' });
    const client = new TestClient(s.url);
    const ex = await executor(s.url, 'restart-exec');
    const gate = path.join(dir, 'gate');
    const job = await client.submit({
      queue: 'work',
      steps: [
        {
          run: `echo before\nwhile [ ! -f ${gate} ]; do sleep 0.05; done\ni=1; while [ $i -le 100 ]; do echo "during $i"; i=$((i+1)); done\necho after`,
        },
      ],
    });
    // A user follows the job with the CLI across the restart: it reconnects without repeating lines.
    const follower = new Proc(
      ['job', 'logs', String(job.id), '--follow'],
      { DOCKHAND_URL: s.url, DOCKHAND_TOKEN: ADMIN_TOKEN },
      'restart-follow',
    );
    await follower.waitFor(/^before$/m);
    await s.proc.stop(); // kill -9
    writeFileSync(gate, '');
    // The step finishes while the server is down, for longer than the stall timeout; the executor must keep the
    // output and the result, and the restarted server must not count its own downtime against the job.
    await sleep(4_000);
    await s.restart();
    const done = await client.waitForState(job.id, 'completed', 30_000);
    expect(done.attempt).toBe(1);
    const expected = [
      'stdout: before',
      ...Array.from({ length: 100 }, (_, i) => `stdout: during ${i + 1}`),
      'stdout: after',
      '',
    ].join('\n');
    expect((await client.logs(job.id)).entries[0].out).toBe(expected);
    expect(ex.proc.output).toMatch(/cannot deliver the result yet/);
    expect(await follower.exit()).toBe(0);
    const followed = follower.output
      .split('\n')
      .filter((l) => !l.startsWith('==>') && !l.startsWith('<==') && !l.startsWith('job '));
    expect(followed.join('\n')).toBe(expected.replace(/stdout: /g, ''));
  });

  it('drains on SIGTERM (running job finishes, nothing new is taken) and aborts on a second SIGTERM', async () => {
    const dir = await tempDir('drain');
    const s = await server('drain-server');
    const client = new TestClient(s.url);
    const ex = await executor(s.url, 'drain-exec');
    const gate = path.join(dir, 'gate');
    const job = await client.submit({ queue: 'work', steps: [gatedStep(dir, gate)] });
    await client.waitFor(job.id, (j) => j.state === 'processing');
    ex.proc.signal('SIGTERM');
    await ex.proc.waitFor(/stopping gracefully/);
    const waiting = await client.submit({ queue: 'work', steps: [{ run: 'true' }] });
    writeFileSync(gate, '');
    await client.waitForState(job.id, 'completed');
    expect(await ex.proc.exit()).toBe(0);
    expect((await client.job(waiting.id)).job.state).toBe('queued');

    const ex2 = await executor(s.url, 'drain-exec-2');
    await client.waitForState(waiting.id, 'completed');
    const stuck = await client.submit({ queue: 'work', steps: [{ run: 'sleep 60' }] });
    await client.waitFor(stuck.id, (j) => j.state === 'processing');
    // Its step runs: the entry is stored.
    await until(
      'the step starts',
      async () => (await client.logs(stuck.id)).entries.some((e) => e.key.startsWith('step')),
      20_000,
    );
    ex2.proc.signal('SIGTERM');
    await ex2.proc.waitFor(/stopping gracefully/);
    ex2.proc.signal('SIGTERM');
    expect(await ex2.proc.exit()).toBe(1);
    const requeued = await client.waitFor(stuck.id, (j) => j.state === 'queued');
    expect(requeued.numFailures).toBe(1);
    expect(requeued.failureMessage).toBe('the executor was shut down while the job was running');
    expect(requeued.failureReason).toBe('executor_shutdown');
  });

  it('fails a job after it was reset too many times, saying why', async () => {
    const s = await server('resets-server', { DOCKHAND_STALLED_JOB_TIMEOUT: '500ms', DOCKHAND_MAX_JOB_RESETS: '2' });
    const client = new TestClient(s.url);
    const raw = new RawExecutor(s.url, 'resets-raw');
    const job = await client.submit({ queue: 'work', steps: [{ run: 'true' }] });
    for (let i = 0; i < 3; i++) {
      // Dequeue, then go silent; the reaper takes it back each time.
      for (;;) {
        const answer = await raw.dequeue(['work'], 5_000);
        if (answer.status === 200) break;
      }
    }
    const failed = await client.waitForState(job.id, 'failed', 10_000);
    expect(failed.numResets).toBe(2);
    expect(failed.failureMessage).toMatch(/reset 2 times because its executor stopped sending heartbeats/);
    expect(failed.failureReason).toBe('executor_lost');
    expect((await client.job(job.id)).attempts.map((a) => [a.outcome, a.failureReason])).toEqual(
      Array(3).fill(['reset', 'executor_lost']),
    );
  });
});
