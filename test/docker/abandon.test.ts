// A network cut between a docker-runtime executor and its server, under runc and gVisor's runsc (the shell-runtime
// version is in test/e2e/networkFaults.test.ts). A failed heartbeat never stops a step's container: a short cut
// changes nothing. A cut longer than the stall timeout gets the job reset and run by another executor; once the
// cut-off executor hears that its attempt is gone, it stops and removes that attempt's container and reports
// nothing for it. On SQLite only: the store plays no part in what the runtime does.
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { docker, dockerExecutorEnv } from '../support/docker.js';
import { startExecutor, startServer, type ExecutorHandle, type ServerHandle } from '../support/processes.js';
import { startBalancer } from '../support/tcpBalancer.js';
import { until } from '../support/wait.js';

let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

/**
 * The step marks that it runs, then waits for a gate file in its workspace that only the test makes, so what it
 * does while the network is cut depends on nothing but the test.
 */
const gated = {
  key: 'gated',
  run: 'touch started\nwhile [ ! -e go ]; do sleep 0.05; done\necho "attempt $DOCKHAND_JOB_ATTEMPT done"',
};

/**
 * The containers of one attempt of a job, stopped ones included. Job ids restart at 1 on every test server and
 * test files run side by side, so the executor's label is part of the match.
 */
async function containersOf(executorName: string, jobId: number, attempt: number): Promise<string[]> {
  const labels = [
    `dev.dockhand.executor=${executorName}`,
    `dev.dockhand.job=${jobId}`,
    `dev.dockhand.attempt=${attempt}`,
  ];
  const { stdout } = await docker([
    'ps',
    '--all',
    '--quiet',
    '--no-trunc',
    ...labels.flatMap((l) => ['--filter', `label=${l}`]),
  ]);
  return stdout.split('\n').filter(Boolean);
}

async function running(id: string): Promise<boolean> {
  return (await docker(['inspect', '-f', '{{.State.Running}}', id], { allowFail: true })).stdout.trim() === 'true';
}

/** Waits until the attempt's step runs in its container; returns the container and its workspace on this host. */
async function stepRunning(
  executorName: string,
  jobId: number,
  attempt: number,
): Promise<{ id: string; workspace: string }> {
  return until(`attempt ${attempt} of job ${jobId} runs on ${executorName}`, async () => {
    const [id] = await containersOf(executorName, jobId, attempt);
    if (!id || !(await running(id))) return undefined;
    const mounts = JSON.parse((await docker(['inspect', '-f', '{{json .Mounts}}', id])).stdout) as {
      Source: string;
      Destination: string;
    }[];
    const workspace = mounts.find((m) => m.Destination === '/data')!.Source;
    return existsSync(path.join(workspace, 'started')) ? { id, workspace } : undefined;
  });
}

const openGate = (workspace: string): void => writeFileSync(path.join(workspace, 'go'), '');

/** The executor's structured log lines about job `jobId` whose message starts with `msg`. */
function logged(executor: ExecutorHandle, msg: string, jobId: number): { attempt?: number }[] {
  return executor.proc.output
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as { msg?: string; jobId?: number; attempt?: number }];
      } catch {
        return [];
      }
    })
    .filter((e) => e.msg?.startsWith(msg) && e.jobId === jobId);
}

describe.each(['runc', 'runsc'])('a network cut between a docker executor and the server, under %s', (oci) => {
  const queue = `abandon-${oci}`;
  const executorEnv = { ...dockerExecutorEnv(oci), EXECUTOR_MAXIMUM_NUM_JOBS: '1' };

  /** A server that resets a job after 4 s without word of it, and an executor that reaches it only through a cuttable link. */
  async function setup(name: string) {
    const server: ServerHandle = await startServer({
      name: `${name}-server`,
      env: { DOCKHAND_STALLED_JOB_TIMEOUT: '4s' },
    });
    cleanup.push(() => server.stop());
    const link = await startBalancer([{ host: '127.0.0.1', port: server.port }]);
    cleanup.push(() => link.close());
    const start = async (exec: string, url: string, env: NodeJS.ProcessEnv = {}): Promise<ExecutorHandle> => {
      const executor = await startExecutor(url, { name: exec, queues: [queue], env: { ...executorEnv, ...env } });
      cleanup.push(async () => {
        await executor.stop();
        // A failed test must not leave its containers running.
        const { stdout } = await docker(['ps', '--all', '--quiet', '--filter', `label=dev.dockhand.executor=${exec}`]);
        const ids = stdout.split('\n').filter(Boolean);
        if (ids.length) await docker(['rm', '--force', ...ids], { allowFail: true });
      });
      return executor;
    };
    const cutOff = await start(`${name}-a`, link.url, { EXECUTOR_HEARTBEAT_INTERVAL: '500ms' });
    return { server, link, cutOff, start, client: new TestClient(server.url) };
  }

  it(
    'a short cut while a container step runs changes nothing: the same attempt runs to its end',
    { timeout: 90_000 },
    async () => {
      const { link, cutOff, client } = await setup(`abandon-short-${oci}`);
      const job = await client.submit({ queue, steps: [gated] });
      const step = await stepRunning(cutOff.name, job.id, 1);

      // Cut until the executor has felt it (two heartbeats failed), well within the stall timeout, then restore.
      const before = cutOff.proc.output.length;
      await link.cut();
      await until(
        'two heartbeats fail',
        async () => (cutOff.proc.output.slice(before).match(/heartbeat failed/g)?.length ?? 0) >= 2,
        10_000,
      );
      await link.start();

      expect(await running(step.id)).toBe(true);
      openGate(step.workspace);
      const done = await client.waitForState(job.id, 'completed', 30_000);
      expect(done.numResets).toBe(0);
      expect((await client.job(job.id)).attempts.map((a) => [a.attempt, a.executorName, a.outcome])).toEqual([
        [1, cutOff.name, 'completed'],
      ]);
      const { entries } = await client.logs(job.id);
      expect(entries.map((e) => [e.key, e.exitCode, e.out])).toEqual([['step.gated', 0, 'stdout: attempt 1 done\n']]);
      expect(logged(cutOff, 'abandoning job', job.id)).toEqual([]);
      await until(
        'the finished container is removed',
        async () => (await containersOf(cutOff.name, job.id, 1)).length === 0,
        10_000,
      );
    },
  );

  it(
    "a cut past the stall timeout: attempt 2 runs elsewhere; the cut-off executor stops and removes attempt 1's container and reports nothing for it",
    { timeout: 120_000 },
    async () => {
      const { server, link, cutOff, start, client } = await setup(`abandon-long-${oci}`);
      const job = await client.submit({ queue, steps: [gated] });
      const first = await stepRunning(cutOff.name, job.id, 1);

      await link.cut();
      await client.waitFor(job.id, (j) => j.state === 'queued' && j.numResets === 1, 30_000);
      const other = await start(`abandon-long-${oci}-b`, server.url);
      const second = await stepRunning(other.name, job.id, 2);
      // Cut off, the executor cannot know its attempt is gone, and failed heartbeats alone never stop a step.
      expect(await running(first.id)).toBe(true);

      await link.start();
      await until(
        "the cut-off executor removes attempt 1's container",
        async () => (await containersOf(cutOff.name, job.id, 1)).length === 0,
        30_000,
      );
      // Logged once the attempt's run has ended: past this line the executor has nothing left to send for it.
      await until(
        'the cut-off executor has let attempt 1 go',
        async () => logged(cutOff, 'job abandoned', job.id).length > 0,
        10_000,
      );
      expect(logged(cutOff, 'abandoning job', job.id).map((e) => e.attempt)).toEqual([1]);
      expect(logged(cutOff, 'job finished', job.id)).toEqual([]);

      openGate(second.workspace);
      const done = await client.waitForState(job.id, 'completed', 30_000);
      expect(done.executorName).toBe(other.name);
      const { attempts } = await client.job(job.id);
      expect(attempts.map((a) => [a.attempt, a.executorName, a.outcome])).toEqual([
        [1, cutOff.name, 'reset'],
        [2, other.name, 'completed'],
      ]);
      expect((await client.logs(job.id)).entries.map((e) => [e.key, e.exitCode, e.out])).toEqual([
        ['step.gated', 0, 'stdout: attempt 2 done\n'],
      ]);
      // Attempt 1's step never ended as far as the server knows.
      expect((await client.logs(job.id, 1)).entries.filter((e) => e.exitCode !== null)).toEqual([]);
      await until(
        "attempt 2's finished container is removed",
        async () => (await containersOf(other.name, job.id, 2)).length === 0,
        10_000,
      );
    },
  );
});
