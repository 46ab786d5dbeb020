// The runtime contract on the kubernetes runtime, against the Kubernetes API test double (which runs each pod in
// Docker), with the executor held to exactly the Role deploy/kubernetes installs.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/core/jobSpec.js';
import { jobView } from '../../src/executor/jobRunner.js';
import { create } from '../../src/executor/runtimes/kubernetes/index.js';
import type { Runtime } from '../../src/executor/runtimes/runtime.js';
import type { KubernetesOptions } from '../../src/executor/runtimes/kubernetes/options.js';
import { loadRuntimeSettings } from '../../src/executor/runtimes/settings.js';
import { docker, ensureGitTestImage } from '../support/docker.js';
import { executorRole } from '../support/kubernetes/deployRole.js';
import { kubernetesExecutorEnv } from '../support/kubernetes/executorEnv.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import { tempDir } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { until } from '../support/wait.js';
import { runtimeContract } from './contract.js';

const log = pino({ level: 'silent' });
let cluster: KubeDouble;
let registry: RegistryHandle;
let kubeconfig: string;

/** An image with one file and nothing to run a script with. */
const NO_SHELL_IMAGE = 'local/no-shell:1';

beforeAll(async () => {
  await ensureGitTestImage();
  const dir = await tempDir('no-shell');
  await writeFile(path.join(dir, 'README'), 'nothing to run here\n');
  const tar = await new Promise<Buffer>((resolve, reject) =>
    execFile('tar', ['-C', dir, '-c', '.'], { encoding: 'buffer' }, (err, out) => (err ? reject(err) : resolve(out))),
  );
  await docker(['import', '-', NO_SHELL_IMAGE], { input: tar });
  registry = await startRegistry({ user: 'contract', password: 'contract-password' });
  cluster = await startKubeDouble({ executorRules: await executorRole(), housekeepingIntervalMs: 500 });
  kubeconfig = await cluster.writeKubeconfig(await tempDir('kubeconfig'), 'executor', 'dockhand');
}, 120_000);
afterAll(async () => {
  await Promise.all([cluster?.close(), registry?.stop()]);
});

/** The Jobs, pods, Secrets and claims of an executor, and the containers of its pods. */
async function leftovers(executorName: string): Promise<string[]> {
  const mine = (o: { metadata?: { labels?: Record<string, string> } }) =>
    o.metadata?.labels?.['dockhand.dev/executor'] === executorName;
  const objects = (['jobs', 'pods', 'secrets', 'persistentvolumeclaims'] as const).flatMap((kind) =>
    cluster
      .objects(kind, 'dockhand')
      .filter(mine)
      .map((o: { metadata: { name: string } }) => `${kind}/${o.metadata.name}`),
  );
  return objects;
}

async function makeRuntime(env: NodeJS.ProcessEnv = {}) {
  const settings = loadRuntimeSettings({
    ...kubernetesExecutorEnv(kubeconfig, 'dockhand'),
    EXECUTOR_NAME: 'contract-kubernetes',
    ...env,
  });
  return create(settings, settings.options as KubernetesOptions, log);
}

runtimeContract('kubernetes (API double)', {
  make: makeRuntime,
  hostAddress: async () => cluster.hostAddress,
  startErrors: [
    {
      name: 'an image a registry refuses',
      step: () => ({ image: `${registry.host}/team/private:1` }),
      reason: 'image_pull_denied',
    },
    {
      name: 'an image without /bin/sh',
      step: () => ({ image: NO_SHELL_IMAGE }),
      reason: 'invalid_step',
    },
    {
      name: 'a registry that does not answer',
      step: () => ({ image: '127.0.0.1:1/team/app:1' }),
      reason: 'image_pull_failure',
    },
  ],
  leftovers,
  platform: { mergedStreams: true, noLocalRepositories: true, diskFullAfterMs: 3_000 },
});

/** A one-step job opened on `runtime`, its step running `run` with its output collected; `stop` aborts it. */
async function runningStep(runtime: Runtime, id: number, run: string) {
  const parsed = parseJobSpec({ queue: 'kubernetes', steps: [{ run }] });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const job = jobView(
    { id, attempt: 1, token: 'dhj_unused', queue: 'kubernetes', namespace: 'default', spec: parsed.value },
    runtime.limits!(),
  );
  const session = await runtime.open(job, new AbortController().signal);
  const stop = new AbortController();
  const output = { text: '' };
  const result = session.runStep(
    { index: 0, step: parsed.value.steps[0], env: {} },
    {
      output: (_s, text) => ((output.text += text), true),
      outputWritable: async () => undefined,
      note: () => undefined,
      signal: stop.signal,
    },
  );
  await until('the step runs', () => output.text.includes('started'));
  return { session, stop, result, output };
}

describe('kubernetes runtime, when the cluster takes the pod', () => {
  it('reports a pod deleted under a running step (a drain, a scale-down) as system_failure, which is retried', async () => {
    const runtime = await makeRuntime({ EXECUTOR_NAME: 'drained' });
    const step = await runningStep(runtime, 7002, 'echo started; sleep 120');
    const pod = cluster
      .objects('pods', 'dockhand')
      .find(
        (p: { metadata: { labels: Record<string, string> } }) =>
          p.metadata.labels['dockhand.dev/executor'] === 'drained',
      );
    const deleted = await fetch(`${cluster.url}/api/v1/namespaces/dockhand/pods/${pod.metadata.name}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${cluster.adminToken}` },
    });
    expect(deleted.status).toBe(200);
    const result = await step.result;
    expect(result.failure).toBe('system_failure');
    expect(result.reason).toMatch(/the pod was (deleted|disrupted)/);
    await step.session.close();
    await runtime.close?.();
  });
});

describe('kubernetes runtime with EXECUTOR_KUBERNETES_KEEP_JOBS', () => {
  it('stops a step by suspending its Job: the pod goes, the Job and its Secret stay for a look', async () => {
    const runtime = await makeRuntime({ EXECUTOR_NAME: 'keep-jobs', EXECUTOR_KUBERNETES_KEEP_JOBS: 'true' });
    const { session, stop, result } = await runningStep(runtime, 7001, "trap '' TERM; echo started; sleep 120");
    stop.abort();
    expect((await result).exitCode).not.toBe(0);
    await session.close();
    await runtime.close?.();
    await until('its pod is gone', async () => (await leftovers('keep-jobs')).every((o) => !o.startsWith('pods/')));
    const kept = await leftovers('keep-jobs');
    expect(kept.filter((o) => o.startsWith('jobs/'))).toHaveLength(1);
    expect(kept.filter((o) => o.startsWith('secrets/'))).toHaveLength(1);
  });
});
