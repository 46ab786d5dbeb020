// The runtime contract on the docker runtime, under runc and under gVisor (runsc), on a real engine.
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { create } from '../../src/executor/runtimes/docker/index.js';
import type { DockerOptions } from '../../src/executor/runtimes/docker/options.js';
import { loadRuntimeSettings } from '../../src/executor/runtimes/settings.js';
import { DOCKER_TEST_IMAGE, DOCKER_TEST_USER_IMAGE, containersWithLabel, docker } from '../support/docker.js';
import { tempDir } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { runtimeContract } from './contract.js';

const root = await tempDir('runtime-docker');
const log = pino({ level: 'silent' });
let registry: RegistryHandle;

beforeAll(async () => {
  registry = await startRegistry({ user: 'contract', password: 'contract-password' });
});
afterAll(async () => {
  await registry?.stop();
});

/** Containers, mounts and directories an executor of this name has. */
async function leftovers(executorName: string): Promise<string[]> {
  const dir = path.join(root, `dockhand-${executorName}`);
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m) => m?.startsWith(dir + '/'));
  const dirs = (await readdir(dir).catch(() => [])).map((n) => path.join(dir, n));
  return [...(await containersWithLabel(`dev.dockhand.executor=${executorName}`)), ...mounts, ...dirs];
}

for (const oci of ['runc', 'runsc']) {
  runtimeContract(`docker (${oci})`, {
    make: async (env = {}) => {
      const settings = loadRuntimeSettings({
        EXECUTOR_RUNTIME: 'docker',
        EXECUTOR_NAME: `contract-docker-${oci}`,
        EXECUTOR_WORKSPACE_ROOT: root,
        EXECUTOR_DOCKER_RUNTIME: oci,
        EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE,
        EXECUTOR_JOB_NUM_CPUS: '1',
        EXECUTOR_JOB_MEMORY: '256M',
        EXECUTOR_JOB_DISK: '256M',
        ...env,
      });
      return create(settings, settings.options as DockerOptions, log);
    },
    // The dockhand bridge's gateway: where a container on the job's network finds this host.
    hostAddress: async () =>
      (
        await docker(['network', 'inspect', 'dockhand', '--format', '{{(index .IPAM.Config 0).Gateway}}'])
      ).stdout.trim(),
    startErrors: [
      {
        name: 'a user its image lacks',
        step: () => ({ image: DOCKER_TEST_USER_IMAGE, user: 'nobody-here' }),
        reason: 'invalid_step',
      },
      {
        name: 'an image a registry refuses',
        step: () => ({ image: `${registry.host}/team/private:1` }),
        reason: 'image_pull_denied',
      },
      {
        name: 'a registry that does not answer',
        step: () => ({ image: '127.0.0.1:1/team/app:1' }),
        reason: 'image_pull_failure',
      },
    ],
    leftovers,
  });
}
