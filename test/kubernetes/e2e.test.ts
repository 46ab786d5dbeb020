// End to end on the kubernetes runtime: a real server, real `dockhand executor` processes on EXECUTOR_RUNTIME=kubernetes,
// and the Kubernetes API test double running their pods in Docker, the executor held to deploy/kubernetes' Role.
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { ensureGitTestImage } from '../support/docker.js';
import { startGitServer, type GitServer } from '../support/gitServer.js';
import { executorRole } from '../support/kubernetes/deployRole.js';
import { kubernetesExecutorEnv } from '../support/kubernetes/executorEnv.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import {
  CLI,
  ROOT,
  startExecutor,
  startServer,
  tempDir,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';
import { until } from '../support/wait.js';

const NAMESPACE = 'dockhand';
let cluster: KubeDouble;
let kubeconfig: string;
let server: ServerHandle;
let client: TestClient;
let git: GitServer;
const executors = new Map<string, ExecutorHandle>();

/** An executor on the kubernetes runtime, named after its one queue, with these settings on top. */
function kubernetesEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...kubernetesExecutorEnv(kubeconfig, NAMESPACE), EXECUTOR_CLEANUP_TASK_INTERVAL: '2s', ...extra };
}

async function executor(queue: string, extra: NodeJS.ProcessEnv = {}): Promise<ExecutorHandle> {
  const handle = await startExecutor(server.url, { name: `k8s-${queue}`, queues: [queue], env: kubernetesEnv(extra) });
  executors.set(queue, handle);
  return handle;
}

/** The double's objects (Jobs, pods, Secrets) that an executor made. */
function objectsOf(executorName: string): string[] {
  return (['jobs', 'pods', 'secrets', 'persistentvolumeclaims'] as const).flatMap((kind) =>
    cluster
      .objects(kind, NAMESPACE)
      .filter(
        (o: { metadata: { labels?: Record<string, string> } }) =>
          o.metadata.labels?.['dockhand.dev/executor'] === executorName,
      )
      .map((o: { metadata: { name: string } }) => `${kind}/${o.metadata.name}`),
  );
}

const stdoutLines = (out: string): string[] =>
  out
    .split('\n')
    .filter((l) => l.startsWith('stdout: '))
    .map((l) => l.slice('stdout: '.length));

beforeAll(async () => {
  await ensureGitTestImage();
  cluster = await startKubeDouble({ namespaces: [NAMESPACE], executorRules: await executorRole() });
  kubeconfig = await cluster.writeKubeconfig(await tempDir('kubeconfig'), 'executor', NAMESPACE);
  git = await startGitServer();
  server = await startServer({ name: 'k8s-server', env: { DOCKHAND_RETRY_BACKOFF: '100ms' } });
  client = new TestClient(server.url);
  await Promise.all([
    executor('k8s'),
    executor('k8s-deadline', { EXECUTOR_KUBERNETES_JOB_DEADLINE: '3s' }),
    executor('k8s-nowhere', {
      EXECUTOR_KUBERNETES_NODE_SELECTOR: 'pool=nowhere',
      EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT: '2s',
    }),
  ]);
}, 180_000);

afterAll(async () => {
  await Promise.all([...executors.values()].map((e) => e.stop()));
  await server?.stop();
  await git?.close();
  await cluster?.close();
});

describe('kubernetes executor, end to end', () => {
  it('checks the repository out, streams each step live, and reports exit codes', async () => {
    git.makeRepo('k8s-app', [{ 'hello.txt': 'hello from git\n' }]);
    const job = await client.submit({
      queue: 'k8s',
      maxAttempts: 1,
      repository: { url: git.url('k8s-app', { host: cluster.hostAddress }) },
      steps: [
        { key: 'read', run: 'cat hello.txt' },
        { key: 'slow', run: 'echo first-line; sleep 3; echo second-line; exit 3' },
      ],
    });
    // The first line is in the job's log while its step still sleeps.
    await until('the first line arrives while the step runs', async () => {
      const logs = await client.logs(job.id);
      return logs.entries.some((e) => e.key === 'step.slow' && stdoutLines(e.out).includes('first-line'));
    });
    const running = await client.logs(job.id);
    expect(stdoutLines(running.entries.find((e) => e.key === 'step.slow')!.out)).not.toContain('second-line');
    expect((await client.job(job.id)).job.state).toBe('processing');

    const done = await client.waitFor(job.id, (j) => j.state === 'failed', 60_000);
    expect(done.failureReason).toBe('script_failure');
    const logs = await client.logs(job.id);
    expect(logs.entries.map((e) => [e.key, e.exitCode])).toEqual([
      ['setup.git.init', 0],
      ['setup.git.add-remote', 0],
      ['setup.git.fetch', 0],
      ['setup.git.checkout', 0],
      ['step.read', 0],
      ['step.slow', 3],
    ]);
    expect(stdoutLines(logs.entries[4].out)).toEqual(['hello from git']);
    expect(stdoutLines(logs.entries[5].out)).toEqual(['first-line', 'second-line']);
    await until('its Job is deleted', () => objectsOf('k8s-k8s').length === 0);
  });

  it('reports a step killed for memory as out_of_memory', async () => {
    const job = await client.submit({
      queue: 'k8s',
      maxAttempts: 1,
      resources: { memory: '32M' },
      steps: [{ run: 'head -c 200000000 /dev/zero | tail -c 150000000 > /dev/null; echo survived' }],
    });
    const done = await client.waitFor(job.id, (j) => j.state === 'failed', 60_000);
    expect(done.failureReason).toBe('out_of_memory');
  });

  it('fails a pod that outlives its deadline (EXECUTOR_KUBERNETES_JOB_DEADLINE) as job_timeout', async () => {
    const job = await client.submit({ queue: 'k8s-deadline', maxAttempts: 1, steps: [{ run: 'sleep 60' }] });
    const done = await client.waitFor(job.id, (j) => j.state === 'failed', 60_000);
    expect(done.failureReason).toBe('job_timeout');
    expect(done.failureMessage ?? JSON.stringify(done)).toMatch(/DeadlineExceeded/);
  });

  it("fails a pod no node takes within the schedule timeout, with the scheduler's message", async () => {
    const job = await client.submit({ queue: 'k8s-nowhere', maxAttempts: 1, steps: [{ run: 'true' }] });
    const done = await client.waitFor(job.id, (j) => j.state === 'failed', 60_000);
    expect(done.failureReason).toBe('unschedulable');
    expect(JSON.stringify(done)).toMatch(/didn't match Pod's node affinity\/selector/);
    await until('its Job is deleted', () => objectsOf('k8s-k8s-nowhere').length === 0);
  });

  it('stops a canceled step and deletes its Job', async () => {
    const job = await client.submit({ queue: 'k8s', steps: [{ run: "trap '' TERM; echo started; sleep 120" }] });
    await until('the step runs', async () =>
      (await client.logs(job.id)).entries.some((e) => stdoutLines(e.out).includes('started')),
    );
    expect((await client.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
    const done = await client.waitFor(job.id, (j) => j.state === 'canceled', 30_000);
    expect(done.failureReason).toBe('canceled');
    await until(
      'nothing is left of it',
      async () => objectsOf('k8s-k8s').length === 0 && (await cluster.containers()).length === 0,
    );
  });

  it('loses no line and repeats none when its watches and log streams drop, or a watch gets 410 Gone', async () => {
    const job = await client.submit({
      queue: 'k8s',
      maxAttempts: 1,
      steps: [{ run: 'i=1; while [ $i -le 40 ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done' }],
    });
    await until('the step runs', async () =>
      (await client.logs(job.id)).entries.some((e) => stdoutLines(e.out).includes('line 3')),
    );
    cluster.faults.expireNextWatches(1);
    cluster.faults.dropWatches();
    cluster.faults.dropLogStreams();
    await until('the step writes more', async () =>
      (await client.logs(job.id)).entries.some((e) => stdoutLines(e.out).includes('line 20')),
    );
    cluster.faults.dropLogStreams();
    cluster.faults.dropWatches();
    await client.waitFor(job.id, (j) => j.state === 'completed', 60_000);
    const logs = await client.logs(job.id);
    expect(stdoutLines(logs.entries[0].out)).toEqual(Array.from({ length: 40 }, (_, i) => `line ${i + 1}`));
  });

  it('leaves nothing behind when the executor is killed mid-job and started again', async () => {
    const name = 'k8s-k8s-crash';
    const crashing = await startExecutor(server.url, {
      name,
      queues: ['k8s-crash'],
      env: kubernetesEnv(),
    });
    const job = await client.submit({
      queue: 'k8s-crash',
      maxAttempts: 1,
      steps: [{ run: 'echo started; sleep 300' }],
    });
    await until('the step runs', async () =>
      (await client.logs(job.id)).entries.some((e) => stdoutLines(e.out).includes('started')),
    );
    expect(objectsOf(name)).not.toEqual([]);
    crashing.proc.child.kill('SIGKILL');
    await crashing.stop();
    // Its Job runs on without it, until its successor of the same name starts.
    expect(objectsOf(name).filter((o) => o.startsWith('jobs/'))).toHaveLength(1);
    const successor = await startExecutor(server.url, { name, queues: ['k8s-crash'], env: kubernetesEnv() });
    executors.set('k8s-crash', successor);
    await until('the janitor deleted what it left', async () => objectsOf(name).length === 0, 30_000);
  });

  it('`dockhand executor --check` proves API, namespace, each verb of the Role and a probe Job', async () => {
    const ok = await check(kubernetesEnv());
    expect(ok.stdout).toMatch(/ok {3}Kubernetes API: https:\/\/127\.0\.0\.1:\d+/);
    expect(ok.stdout).toContain('ok   access to jobs: allowed: create, get, list, patch, delete');
    expect(ok.stdout).toContain('ok   access to pods/log: allowed: get');
    expect(ok.stdout).toMatch(/ok {3}probe job: ran in [\d.]+m?s; deleted/);
    expect(ok.code).toBe(0);

    // The same identity without `patch` on Jobs: the check names the verb and where to grant it.
    const narrower = await startKubeDouble({
      namespaces: [NAMESPACE],
      executorRules: (await executorRole()).map((r) => ({ ...r, verbs: r.verbs.filter((v) => v !== 'patch') })),
    });
    try {
      const config = await narrower.writeKubeconfig(await tempDir('kubeconfig'), 'executor', NAMESPACE);
      const denied = await check(kubernetesEnv({ EXECUTOR_KUBERNETES_CONFIG_PATH: config }));
      expect(denied.stdout).toContain('FAIL access to jobs: not allowed: patch');
      expect(denied.stdout).toContain(
        "grant patch on batch/jobs in namespace dockhand to the executor's service account",
      );
      expect(denied.code).not.toBe(0);
    } finally {
      await narrower.close();
    }
  });
});

function check(env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'executor', '--check'],
      { cwd: ROOT, timeout: 120_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
