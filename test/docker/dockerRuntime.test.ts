// The docker runtime end to end: a real server, real executors with EXECUTOR_RUNTIME=docker, and a real Docker
// engine, under runc and under gVisor's runsc.
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobSpecInput } from '../../src/core/jobSpec.js';
import { TestClient } from '../support/api.js';
import { DOCKER_TEST_IMAGE, DOCKER_TEST_USER_IMAGE, docker, dockerExecutorEnv } from '../support/docker.js';
import { startFakeMetadataServer } from '../support/metadata.js';
import {
  spawnExecutor,
  startExecutor,
  startServer,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';
import { until } from '../support/wait.js';

const MiB = 2 ** 20;

/**
 * The step containers of a job, by label. Job ids restart at 1 on every test server, and test files run side by
 * side, so the executor's label is part of the match.
 */
async function jobContainers(executorName: string, jobId: number): Promise<string[]> {
  const { stdout } = await docker([
    'ps',
    '-aq',
    '--no-trunc',
    '--filter',
    `label=dev.dockhand.job=${jobId}`,
    '--filter',
    `label=dev.dockhand.executor=${executorName}`,
  ]);
  return stdout.split('\n').filter(Boolean);
}

async function waitForContainer(executorName: string, jobId: number, timeoutMs = 20_000): Promise<string> {
  return until(
    `a container of job ${jobId} runs`,
    async () => {
      const [id] = await jobContainers(executorName, jobId);
      return id &&
        (await docker(['inspect', '-f', '{{.State.Running}}', id], { allowFail: true })).stdout.trim() === 'true'
        ? id
        : undefined;
    },
    timeoutMs,
  );
}

async function waitUntilGone(executorName: string, jobId: number, timeoutMs = 10_000): Promise<void> {
  await until(
    `the containers of job ${jobId} are gone`,
    async () => (await jobContainers(executorName, jobId)).length === 0,
    timeoutMs,
    100,
  );
}

describe.each(['runc', 'runsc'])('docker runtime under %s', (oci) => {
  const queue = `docker-${oci}`;
  let server: ServerHandle;
  let executor: ExecutorHandle;
  let client: TestClient;
  const executorEnv = dockerExecutorEnv(oci);
  const submit = (spec: Omit<JobSpecInput, 'queue'>) => client.submit({ queue, maxAttempts: 1, ...spec });

  beforeAll(async () => {
    server = await startServer({ name: `docker-${oci}-server` });
    client = new TestClient(server.url);
    executor = await startExecutor(server.url, { name: `docker-${oci}-exec`, queues: [queue], env: executorEnv });
  });

  afterAll(async () => {
    await executor?.stop();
    await server?.stop();
  });

  it('runs each step in its own container; steps share the workspace; output streams stay apart', async () => {
    const job = await submit({
      files: { 'in.txt': 'from files\n' },
      steps: [
        {
          key: 'write',
          run: 'cat in.txt\necho "$HOSTNAME" > host1\necho made-by-step-1 > shared.txt\necho to-stderr >&2\npwd',
        },
        {
          key: 'read',
          image: DOCKER_TEST_IMAGE,
          dir: 'sub',
          run: 'pwd\ncat ../shared.txt\n[ "$(cat ../host1)" != "$HOSTNAME" ] && echo other-container',
        },
      ],
    });
    await client.waitForState(job.id, 'completed');
    const { entries } = await client.logs(job.id);
    const step1 = entries.find((e) => e.key === 'step.write')!.out;
    expect(step1).toContain('stdout: from files');
    expect(step1).toContain('stderr: to-stderr');
    expect(step1).toContain('stdout: /data');
    const step2 = entries.find((e) => e.key === 'step.read')!.out;
    expect(step2.split('\n').filter((l) => l.startsWith('stdout: '))).toEqual([
      'stdout: /data/sub',
      'stdout: made-by-step-1',
      'stdout: other-container',
    ]);
    await waitUntilGone(executor.name, job.id);
  });

  it('streams output while the step is still running', async () => {
    const job = await submit({
      steps: [{ key: 'live', run: 'echo first\nwhile [ ! -e go ]; do sleep 0.05; done\necho second' }],
    });
    const id = await waitForContainer(executor.name, job.id);
    // The step waits for a file that is made only once its first line has reached the server.
    await until(
      'the first line arrives while the step runs',
      async () =>
        ((await client.logs(job.id)).entries.find((e) => e.key === 'step.live')?.out ?? '').includes('stdout: first'),
      10_000,
      20,
    );
    const mounts = JSON.parse((await docker(['inspect', '-f', '{{json .Mounts}}', id])).stdout) as {
      Source: string;
      Destination: string;
    }[];
    writeFileSync(`${mounts.find((m) => m.Destination === '/data')!.Source}/go`, '');
    await client.waitForState(job.id, 'completed');
    expect((await client.logs(job.id)).entries[0].out).toContain('stdout: first\nstdout: second');
  });

  it('runs jobs side by side, each in its own containers, and leaves none behind', async () => {
    const jobs = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        submit({
          files: { 'n.txt': `${i}\n` },
          steps: [{ run: 'echo "job $(cat n.txt)" > out.txt' }, { run: 'cat out.txt; echo "$DOCKHAND_JOB_ID"' }],
        }),
      ),
    );
    for (const [i, job] of jobs.entries()) {
      await client.waitForState(job.id, 'completed');
      const out = (await client.logs(job.id)).entries.find((e) => e.key === 'step.step-2')!.out;
      expect(out).toBe(`stdout: job ${i}\nstdout: ${job.id}\n`);
    }
    for (const job of jobs) await waitUntilGone(executor.name, job.id);
  });

  it('propagates exit codes: the failing step fails the job and the rest do not run', async () => {
    const job = await submit({
      steps: [
        { key: 'boom', run: 'echo before\nexit 3' },
        { key: 'never', run: 'echo never' },
      ],
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.failureMessage).toBe('step boom failed with exit code 3');
    const { entries } = await client.logs(job.id);
    expect(entries.map((e) => [e.key, e.exitCode])).toEqual([['step.boom', 3]]);
  });

  it('reports a step that exceeds its memory as killed: out of memory', async () => {
    const job = await submit({
      resources: { memory: '32M' },
      steps: [
        { key: 'hog', run: 'echo start\nhead -c 200000000 /dev/zero | tail -c 150000000 > /dev/null\necho survived' },
      ],
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.failureMessage).toBe('step hog failed with exit code 137 (killed: out of memory)');
    const { entries } = await client.logs(job.id);
    expect(entries[0].out).toContain('[dockhand] killed: out of memory');
    expect(entries[0].out).not.toContain('survived');
  });

  it('applies the CPU and memory limits to the container (and shows them inside where the runtime can)', async () => {
    const job = await submit({
      resources: { cpus: 0.5, memory: '64M' },
      steps: [
        {
          key: 'limits',
          run:
            'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || echo no-cgroupfs\n' +
            'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || grep MemTotal /proc/meminfo\nsleep 3',
        },
      ],
    });
    const id = await waitForContainer(executor.name, job.id);
    // The host's view of the container's cgroup: what the kernel enforces, whatever the sandbox shows inside.
    const quota = readFileSync(`/sys/fs/cgroup/cpu/docker/${id}/cpu.cfs_quota_us`, 'utf8').trim();
    const period = readFileSync(`/sys/fs/cgroup/cpu/docker/${id}/cpu.cfs_period_us`, 'utf8').trim();
    expect(Number(quota) / Number(period)).toBe(0.5);
    expect(readFileSync(`/sys/fs/cgroup/memory/docker/${id}/memory.limit_in_bytes`, 'utf8').trim()).toBe(
      String(64 * MiB),
    );
    await client.waitForState(job.id, 'completed');
    const out = (await client.logs(job.id)).entries[0].out.split('\n').filter((l) => l.startsWith('stdout: '));
    if (oci === 'runc') {
      expect(out).toEqual(['stdout: 50000', `stdout: ${64 * MiB}`]);
    } else {
      // gVisor has no cgroupfs inside and keeps at least 2 vCPUs; its memory size is the limit.
      expect(out).toEqual(['stdout: no-cgroupfs', `stdout: MemTotal:          ${64 * 1024} kB`]);
    }
  });

  it('refuses at submit a job asking for more than the executors of its queue allow', async () => {
    const answer = await client.call('POST', '/jobs', {
      queue,
      resources: { cpus: 2, memory: '1G', disk: '1T' },
      steps: [{ run: 'true' }],
    });
    expect(answer.status).toBe(400);
    expect(answer.body.issues).toEqual([
      {
        field: 'resources.cpus',
        message: `asks for 2 CPUs but the executors of queue "${queue}" allow at most 1 per job (EXECUTOR_JOB_NUM_CPUS)`,
      },
      {
        field: 'resources.memory',
        message: `asks for 1Gi but the executors of queue "${queue}" allow at most 256Mi per job (EXECUTOR_JOB_MEMORY)`,
      },
      // The default EXECUTOR_JOB_DISK, as the executor's heartbeats report it.
      {
        field: 'resources.disk',
        message: `asks for 1Ti but the executors of queue "${queue}" allow at most 20Gi per job (EXECUTOR_JOB_DISK)`,
      },
    ]);
    // Disk alone is refused too, before any executor takes the job.
    const disk = await client.call('POST', '/jobs', { queue, resources: { disk: '1T' }, steps: [{ run: 'true' }] });
    expect(disk.status).toBe(400);
    expect(disk.body.issues.map((i: { field: string }) => i.field)).toEqual(['resources.disk']);
  });

  it('runs a step as the user it names, with a writable workspace', async () => {
    const job = await submit({
      files: { 'from-root.txt': 'x\n' },
      steps: [
        { key: 'numeric', user: '1000:1000', run: 'id -u\necho more >> from-root.txt\nmkdir made && echo ok > made/f' },
        { key: 'named', image: DOCKER_TEST_USER_IMAGE, user: 'app', run: 'id -un\necho again >> from-root.txt' },
      ],
    });
    await client.waitForState(job.id, 'completed');
    const { entries } = await client.logs(job.id);
    expect(entries.find((e) => e.key === 'step.numeric')!.out).toContain('stdout: 1000');
    expect(entries.find((e) => e.key === 'step.named')!.out).toContain('stdout: app');
  });

  it('fails a job whose step names a user the image lacks, without retrying it', async () => {
    const job = await client.submit({ queue, maxAttempts: 3, steps: [{ key: 'who', user: 'nosuchuser', run: 'id' }] });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.attempt).toBe(1);
    expect(done.failureMessage).toMatch(
      /^step who: could not run the step: cannot start the step container: .*nosuchuser/,
    );
  });

  it('keeps the cloud metadata address unreachable from a step', async () => {
    const metadata = await startFakeMetadataServer();
    try {
      // The host itself reaches it, so a step that cannot is blocked, not merely without a server to talk to.
      expect(await (await fetch(metadata.url)).text()).toBe('fake-metadata\n');
      const job = await submit({
        steps: [
          { key: 'probe', run: 'if echo | nc -w 3 169.254.169.254 80; then echo REACHABLE; else echo blocked; fi' },
        ],
      });
      await client.waitForState(job.id, 'completed');
      const out = (await client.logs(job.id)).entries[0].out;
      expect(out).toContain('stdout: blocked');
      expect(out).not.toContain('REACHABLE');
    } finally {
      await metadata.stop();
    }
  });

  it("fetches a repository on the job's network, so the checkout cannot reach the metadata address either", async () => {
    const metadata = await startFakeMetadataServer();
    try {
      // The executor's host reaches it: a checkout that ran there would be answered.
      expect(await (await fetch(`${metadata.url}/computeMetadata/v1/repo.git/info/refs`)).text()).toBe(
        'fake-metadata\n',
      );
      const seen = metadata.requests();
      const job = await submit({
        repository: { url: `${metadata.url}/computeMetadata/v1/repo.git` },
        steps: [{ run: 'true' }],
      });
      const done = await client.waitForState(job.id, 'failed');
      expect(done.failureReason).toBe('checkout_failure');
      const fetchLog = (await client.logs(job.id)).entries.find((e) => e.key === 'setup.git.fetch')!.out;
      expect(fetchLog).toMatch(/Failed to connect|Connection refused|Couldn't connect|No route to host/);
      expect(metadata.requests()).toBe(seen);
    } finally {
      await metadata.stop();
    }
  });

  it('runs a job with network: none without any network interface but loopback', async () => {
    const job = await submit({
      network: 'none',
      steps: [{ run: 'ls /sys/class/net 2>/dev/null || ip -o link | cut -d: -f2' }],
    });
    await client.waitForState(job.id, 'completed');
    const lines = (await client.logs(job.id)).entries[0].out.split('\n').filter((l) => l.startsWith('stdout: '));
    expect(lines.map((l) => l.replace('stdout: ', '').trim())).toEqual(['lo']);
  });

  it('stops and removes the container within 2 s of a cancel', async () => {
    const job = await submit({ steps: [{ key: 'wait', run: 'echo waiting\nsleep 60' }] });
    const id = await waitForContainer(executor.name, job.id);
    const asked = Date.now();
    expect((await client.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
    await client.waitForState(job.id, 'canceled', 10_000);
    await until(
      'the container stops',
      async () => {
        const state = await docker(['inspect', '-f', '{{.State.Running}}', id], { allowFail: true });
        return state.code !== 0 || state.stdout.trim() === 'false';
      },
      10_000,
      20,
    );
    expect(Date.now() - asked).toBeLessThan(2_000);
    await waitUntilGone(executor.name, job.id);
  });

  it('stops a step at its timeout and the job at its max runtime', async () => {
    const timed = await submit({ steps: [{ key: 'slow', timeout: '1s', run: 'sleep 30' }] });
    expect((await client.waitForState(timed.id, 'failed', 15_000)).failureMessage).toBe('step slow timed out after 1s');
    const long = await submit({ maxRuntime: '2s', steps: [{ run: 'sleep 1' }, { run: 'sleep 30' }] });
    expect((await client.waitForState(long.id, 'failed', 15_000)).failureMessage).toBe(
      'job exceeded its maximum runtime of 2s',
    );
    await waitUntilGone(executor.name, timed.id);
    await waitUntilGone(executor.name, long.id);
  });

  it("never writes a step's secret-like environment values to the executor's own log", async () => {
    const secret = `s3cr3t-${oci}-${Date.now()}`;
    const job = await submit({
      steps: [{ key: 'env', env: { API_TOKEN: secret }, run: 'echo "token has ${#API_TOKEN} characters"' }],
    });
    await client.waitForState(job.id, 'completed');
    expect((await client.logs(job.id)).entries[0].out).toContain(`stdout: token has ${secret.length} characters`);
    expect(executor.proc.output).toContain(`"jobId":${job.id}`);
    expect(executor.proc.output).not.toContain(secret);
  });

  it('removes its orphaned containers when restarted after kill -9, and leaves other containers alone', async () => {
    const name = `orphans-${oci}`;
    const orphanQueue = `orphans-${oci}`;
    const env = { ...executorEnv, EXECUTOR_CLEANUP_TASK_INTERVAL: '1s' };
    const first = await startExecutor(server.url, { name, queues: [orphanQueue], env });
    // A container that is not Dockhand's and one that belongs to another executor: neither may be touched.
    const foreign = (
      await docker(['run', '-d', '--network', 'none', '--runtime', oci, DOCKER_TEST_IMAGE, 'sleep', '120'])
    ).stdout.trim();
    const sibling = (
      await docker([
        'run',
        '-d',
        '--network',
        'none',
        '--label',
        'dev.dockhand.executor=someone-else',
        DOCKER_TEST_IMAGE,
        'sleep',
        '120',
      ])
    ).stdout.trim();
    try {
      const job = await client.submit({ queue: orphanQueue, maxAttempts: 1, steps: [{ run: 'sleep 120' }] });
      const orphan = await waitForContainer(name, job.id);
      first.proc.signal('SIGKILL');
      await first.proc.exit();
      expect(await jobContainers(name, job.id)).toEqual([orphan]);
      const second = await startExecutor(server.url, { name, queues: [orphanQueue], env });
      try {
        await waitUntilGone(name, job.id, 5_000);
        // A leftover of this executor's made after its start: once the janitor has removed it, a janitor round has
        // passed, and the containers that are not this executor's must still be running.
        const marker = (
          await docker([
            'run',
            '-d',
            '--network',
            'none',
            '--label',
            `dev.dockhand.executor=${name}`,
            DOCKER_TEST_IMAGE,
            'sleep',
            '120',
          ])
        ).stdout.trim();
        await until(
          'a janitor round removes the marker',
          async () => (await docker(['inspect', marker], { allowFail: true })).code !== 0,
          10_000,
          100,
        );
        const alive = await docker(['inspect', '-f', '{{.State.Running}}', foreign, sibling]);
        expect(alive.stdout.trim().split('\n')).toEqual(['true', 'true']);
      } finally {
        await second.stop();
      }
    } finally {
      await docker(['rm', '-f', foreign, sibling], { allowFail: true });
    }
  });

  it("refuses a second executor under a running one's name before its janitor runs: the first one's container lives on", async () => {
    const name = `twice-${oci}`;
    const twiceQueue = `twice-${oci}`;
    const env = { ...executorEnv, EXECUTOR_CLEANUP_TASK_INTERVAL: '1s' };
    const first = await startExecutor(server.url, { name, queues: [twiceQueue], env });
    try {
      const job = await client.submit({ queue: twiceQueue, maxAttempts: 1, steps: [{ run: 'sleep 120' }] });
      const running = await waitForContainer(name, job.id);
      // The same name, as two executors that default to one hostname would have.
      const second = spawnExecutor(server.url, { name, queues: [twiceQueue], env });
      expect(await second.exit()).toBe(2);
      expect(second.output).toContain(`dockhand: executor name "${name}" is in use by another executor`);
      expect(second.output).not.toMatch(/removed orphaned containers/);
      expect((await docker(['inspect', '-f', '{{.State.Running}}', running])).stdout.trim()).toBe('true');
      expect((await client.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
      await client.waitForState(job.id, 'canceled');
      await waitUntilGone(name, job.id);
    } finally {
      await first.stop();
    }
  });
});

describe('docker runtime limits without a known executor', () => {
  let server: ServerHandle;
  let executor: ExecutorHandle | undefined;

  afterAll(async () => {
    await executor?.stop();
    await server?.stop();
  });

  it('fails, saying why, a job that asks for more than the executor that takes it allows', async () => {
    server = await startServer({ name: 'docker-limits-server' });
    const client = new TestClient(server.url);
    // No executor has been heard from on this queue yet, so the server cannot refuse the job at submit.
    const job = await client.submit({
      queue: 'limits',
      maxAttempts: 3,
      resources: { cpus: 2 },
      steps: [{ run: 'true' }],
    });
    executor = await startExecutor(server.url, {
      name: 'docker-limits-exec',
      queues: ['limits'],
      env: { EXECUTOR_RUNTIME: 'docker', EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE, EXECUTOR_JOB_NUM_CPUS: '1' },
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.attempt).toBe(1);
    expect(done.failureMessage).toBe(
      "resources.cpus asks for 2 CPUs but this executor's limits allow at most 1 per job (EXECUTOR_JOB_NUM_CPUS)",
    );
  });
});
