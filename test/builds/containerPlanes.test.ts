// The build manager end to end on the container planes: a real server process, workers from the worker image in
// Docker (runc, and gVisor's runsc-net) and on the Kubernetes API double (pods in Docker), a real registry with
// htpasswd auth. Containers reach this host's server and registry (both on 0.0.0.0) at their network's gateway, so
// tags and the registry's credentials name GATEWAY:PORT, a plain-HTTP registry (INSECURE_REGISTRIES).
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  authConfig,
  buildLog,
  getBuild,
  registryDigest,
  startBuildServer,
  submitUpload,
  waitForBuild,
  type BuildServer,
} from '../support/builds.js';
import { DOCKER_TEST_IMAGE, containersWithLabel, docker, ensureBuildWorkerImage } from '../support/docker.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import { freePort } from '../support/ports.js';
import { tempDir } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { until } from '../support/wait.js';
import { KUBERNETES_PLANE_RULES } from './planeContract.js';

const USER = 'builder';
const PASSWORD = 'registry-password-5d1e8b40';
const PLANE_LABEL = 'dockhand.dev/build-plane';

let registry: RegistryHandle;
let gateway: string;
let workerImage: { WORKER_IMAGE: string; WORKER_TAG: string };

beforeAll(async () => {
  const [image, tag] = (await ensureBuildWorkerImage()).split(':');
  workerImage = { WORKER_IMAGE: image, WORKER_TAG: tag };
  registry = await startRegistry({ user: USER, password: PASSWORD, listen: '0.0.0.0' });
  await registry.push(DOCKER_TEST_IMAGE, 'base/busybox:1');
  gateway = (
    await docker(['network', 'inspect', 'bridge', '--format', '{{(index .IPAM.Config 0).Gateway}}'])
  ).stdout.trim();
}, 600_000);
afterAll(async () => registry?.stop());

/** The registry as containers whose gateway is `host` reach it. */
const registryAt = (host: string) => `${host}:${registry.port}`;

/** A server on 0.0.0.0 with one plane, pushing to the registry at `registryHost` with its credentials. */
async function serverWith(registryHost: string, plane: Record<string, unknown>, port?: number): Promise<BuildServer> {
  const s = await startBuildServer(
    {
      ALLOWED_WORKER_COUNT: 1,
      MAX_TRIES: 1,
      HEARTBEAT_TIMEOUT: 10,
      RETRY_AFTER: 0,
      INSECURE_REGISTRIES: [registryHost],
      EXECUTORS: [{ SETUP_TIME: 60, CONTAINER_MEMORY_LIMITS: '1Gi', ...workerImage, ...plane }],
    },
    { host: '0.0.0.0', port },
  );
  await s.admin.setSecret('DOCKER_AUTH_CONFIG', authConfig(registryHost, USER, PASSWORD), 'user:admin');
  return s;
}

/** A two-stage Dockerfile whose last RUN prints the capabilities the build's RUN steps have. */
const multiStage = (registryHost: string) =>
  [
    `FROM ${registryHost}/base/busybox:1 AS build`,
    'RUN echo compiled > /artifact',
    `FROM ${registryHost}/base/busybox:1`,
    'COPY --from=build /artifact /artifact',
    'RUN echo "capabilities of a RUN step:" && grep -i ^cap /proc/self/status && cat /proc/version',
  ].join('\n');

/** Builds multiStage as `repo`; checks the digest against the registry's and the RUN step's output in the log. */
async function buildsMultiStage(s: BuildServer, registryHost: string, repo: string): Promise<number> {
  const build = await submitUpload(
    s.admin,
    { Dockerfile: multiStage(registryHost) },
    { tags: [`${registryHost}/${repo}:1`] },
  );
  const done = await waitForBuild(s.admin, build.id);
  const log = await buildLog(s.admin, build.id);
  expect(done.phase, `${done.message ?? ''}\n${log}`).toBe('complete');
  expect(done.digest).toBe(await registryDigest(registry.host, repo, '1', USER, PASSWORD));
  expect(log).toContain('capabilities of a RUN step:');
  // buildah's default set for RUN steps (0x800405fb here): never CAP_SYS_ADMIN (bit 21).
  const effective = /CapEff:\s+([0-9a-f]{16})/.exec(log)?.[1];
  expect(effective, log).toBeDefined();
  expect(BigInt(`0x${effective}`) & (1n << 21n)).toBe(0n);
  return build.id;
}

describe('on the docker plane under runc', () => {
  let s: BuildServer;
  beforeAll(async () => {
    s = await serverWith(registryAt(gateway), { EXECUTOR: 'docker', NAME: 'docker-runc' });
  });
  afterAll(async () => s?.stop());

  it('builds a multi-stage Dockerfile from an uploaded context and pushes it; the worker container is removed', async () => {
    await buildsMultiStage(s, registryAt(gateway), 'team/docker-runc');
    await until(
      'the worker container is removed',
      async () => (await containersWithLabel(`${PLANE_LABEL}=docker-runc`)).length === 0,
    );
  });

  it('a cancel while building removes the worker container', async () => {
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${registryAt(gateway)}/base/busybox:1\nRUN echo started-slow && sleep 300\n` },
      { tags: [`${registryAt(gateway)}/team/slow:1`] },
    );
    await waitForBuild(s.admin, build.id, ['building']);
    await until('the RUN step prints', async () => (await buildLog(s.admin, build.id)).includes('started-slow'));
    const [{ executionId }] = (await getBuild(s.admin, build.id)).tries;
    expect((await docker(['inspect', '--format', '{{.State.Status}}', executionId!])).stdout.trim()).toBe('running');

    const cancelled = await s.admin.call<{ build: { phase: string } }>('POST', `/builds/${build.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.build.phase).toBe('cancelled');
    await until(
      'the worker container is gone',
      async () => (await docker(['inspect', executionId!], { allowFail: true })).code !== 0,
    );
  });
});

describe('on the docker plane under gVisor (runsc-net)', () => {
  let s: BuildServer;
  beforeAll(async () => {
    s = await serverWith(registryAt(gateway), {
      EXECUTOR: 'docker',
      NAME: 'docker-gvisor',
      DOCKER_RUNTIME: 'runsc-net',
    });
  });
  afterAll(async () => s?.stop());

  it("builds and pushes with the Dockerfile's RUN steps on gVisor's kernel, not the host's", async () => {
    const repo = 'team/gvisor';
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${registryAt(gateway)}/base/busybox:1\nRUN echo built-under-gvisor && cat /proc/version\n` },
      { tags: [`${registryAt(gateway)}/${repo}:1`] },
    );
    const done = await waitForBuild(s.admin, build.id);
    const log = await buildLog(s.admin, build.id);
    expect(done.phase, `${done.message ?? ''}\n${log}`).toBe('complete');
    expect(done.digest).toBe(await registryDigest(registry.host, repo, '1', USER, PASSWORD));
    expect(log).toContain('built-under-gvisor');
    // gVisor's kernel answers for itself; the host's release never shows.
    const version = /^Linux version (\S+)/m.exec(log)?.[1];
    expect(version, log).toBeDefined();
    expect(version).not.toBe(os.release());
    await until(
      'no worker container is left',
      async () => (await containersWithLabel(`${PLANE_LABEL}=docker-gvisor`)).length === 0,
    );
  });
});

describe('on the kubernetes plane (API double)', () => {
  const NAMESPACE = 'builder';
  let cluster: KubeDouble;
  let s: BuildServer;

  beforeAll(async () => {
    cluster = await startKubeDouble({ namespaces: [NAMESPACE], executorRules: KUBERNETES_PLANE_RULES });
    const port = await freePort();
    s = await serverWith(
      registryAt(cluster.hostAddress),
      {
        EXECUTOR: 'kubernetes',
        NAME: 'kubernetes',
        KUBECONFIG: await cluster.writeKubeconfig(await tempDir('kubeconfig'), 'executor', NAMESPACE),
        BUILDER_NAMESPACE: NAMESPACE,
        SERVER_URL: `http://${cluster.hostAddress}:${port}`,
      },
      port,
    );
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
    await cluster?.close();
  });

  it("builds the multi-stage Dockerfile; the manager's stop deletes the finished worker's Job, pod and Secret", async () => {
    const id = await buildsMultiStage(s, registryAt(cluster.hostAddress), 'team/kubernetes');
    const [{ executionId }] = (await getBuild(s.admin, id)).tries;
    const left = () =>
      (['jobs', 'pods', 'secrets'] as const).flatMap((kind) =>
        cluster
          .objects(kind, NAMESPACE)
          .filter((o: { metadata: { name: string } }) => o.metadata.name.startsWith(executionId!))
          .map((o: { metadata: { name: string } }) => `${kind}/${o.metadata.name}`),
      );
    // Sooner than RETENTION_AFTER_FINISHED (120 s), after which the Job's own TTL would have.
    await until(
      'nothing is left of the worker',
      async () => left().length === 0 && (await cluster.containers()).length === 0,
      30_000,
    );
    // Deleted by the plane's stop, not by the Job's TTL.
    expect(cluster.requests.filter((r) => r.method === 'DELETE' && r.path.endsWith(`/jobs/${executionId}`))).toEqual([
      expect.objectContaining({ user: 'executor' }),
    ]);
  });
});
