// The runtime contract on the kubernetes runtime, against the Kubernetes API test double (which runs each pod in
// Docker), with the executor held to exactly the Role deploy/kubernetes installs.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { create } from '../../src/executor/runtimes/kubernetes/index.js';
import type { KubernetesOptions } from '../../src/executor/runtimes/kubernetes/options.js';
import { loadRuntimeSettings } from '../../src/executor/runtimes/settings.js';
import { docker, ensureGitTestImage } from '../support/docker.js';
import { executorRole } from '../support/kubernetes/deployRole.js';
import { kubernetesExecutorEnv } from '../support/kubernetes/executorEnv.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import { tempDir } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
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

runtimeContract('kubernetes (API double)', {
  make: async (env = {}) => {
    const settings = loadRuntimeSettings({
      ...kubernetesExecutorEnv(kubeconfig, 'dockhand'),
      EXECUTOR_NAME: 'contract-kubernetes',
      ...env,
    });
    return create(settings, settings.options as KubernetesOptions, log);
  },
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
