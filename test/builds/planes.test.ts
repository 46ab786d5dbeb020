// Every control plane held to one contract (planeContract.ts): process and command planes on this host, the docker
// plane under runc and gVisor (runsc-net), the kubernetes plane on the Kubernetes API double, which runs its pods in
// Docker and holds the plane to the Role it needs (KUBERNETES_PLANE_RULES). Workers are the real one (dist/ on this
// host, the worker image in containers).
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  commandPlaneConfig,
  dockerPlaneConfig,
  kubernetesPlaneConfig,
  processPlaneConfig,
} from '../../src/server/builds/buildsConfig.js';
import { CommandPlane } from '../../src/server/builds/planes/commandPlane.js';
import { DockerPlane } from '../../src/server/builds/planes/dockerPlane.js';
import { KubernetesPlane, workerJobManifest } from '../../src/server/builds/planes/kubernetesPlane.js';
import { ProcessPlane } from '../../src/server/builds/planes/processPlane.js';
import { docker, ensureBuildWorkerImage } from '../support/docker.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import { validateKubernetesObject } from '../support/kubernetes/validate.js';
import { CLI, tempDir } from '../support/processes.js';
import { KUBERNETES_PLANE_RULES, planeContract, type PlaneUnderTest } from './planeContract.js';

/** The processes whose command line or environment names `executionId`: their pid, cmdline and environ. */
function processesOf(executionId: string): string {
  const seen: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    let cmdline: string;
    let environ: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    if (!`${cmdline}\0${environ}`.includes(executionId)) continue;
    seen.push(`pid ${pid}\ncmdline: ${cmdline.split('\0').join(' ')}\nenviron:\n${environ.split('\0').join('\n')}`);
  }
  return seen.join('\n\n');
}

/** docker inspect's JSON of a container, or '' when there is none. */
async function dockerInspect(...names: string[]): Promise<string> {
  if (!names.length) return '';
  const r = await docker(['inspect', ...names], { allowFail: true });
  return r.code === 0 ? r.stdout : '';
}

const suffix = () => randomBytes(3).toString('hex');

planeContract('process', async () => {
  const plane = new ProcessPlane(processPlaneConfig.parse({ EXECUTOR: 'process', NAME: 'contract-process' }));
  return { plane, inspect: async (id) => processesOf(id), cleanup: () => plane.close() };
});

// Operator scripts: START_COMMAND runs the real worker in the background (its own session, so STOP_COMMAND kills
// its group) with the token from its stdin; COUNT_COMMAND counts the started workers still alive.
async function commandPlane(overrides: Record<string, unknown> = {}): Promise<PlaneUnderTest> {
  const dir = await tempDir('command-plane');
  const script = (name: string, lines: string[]) => {
    const file = path.join(dir, name);
    writeFileSync(file, ['#!/bin/sh', ...lines, ''].join('\n'), { mode: 0o755 });
    return file;
  };
  const start = script('start.sh', [
    'set -e',
    'token=$(cat)',
    `printf '%s\\n' "$token" | setsid ${process.execPath} ${CLI} build-worker --server "$DOCKHAND_SERVER_URL" > "${dir}/worker-$DOCKHAND_EXECUTION_ID.log" 2>&1 &`,
    `echo $! > "${dir}/pid-$DOCKHAND_EXECUTION_ID"`,
  ]);
  const stop = script('stop.sh', [
    `f="${dir}/pid-$DOCKHAND_EXECUTION_ID"`,
    '[ -f "$f" ] && kill -KILL -"$(cat "$f")" 2>/dev/null',
    'rm -f "$f"',
    'exit 0',
  ]);
  // A zombie (an exited worker nobody has reaped yet) is not running.
  const count = script('count.sh', [
    'n=0',
    `for f in "${dir}"/pid-*; do`,
    '  [ -f "$f" ] || continue',
    '  read -r _ _ state _ < "/proc/$(cat "$f")/stat" 2>/dev/null || continue',
    '  [ "$state" = Z ] || n=$((n + 1))',
    'done',
    'echo $n',
  ]);
  const plane = new CommandPlane(
    commandPlaneConfig.parse({
      EXECUTOR: 'command',
      NAME: 'contract-command',
      START_COMMAND: start,
      STOP_COMMAND: stop,
      COUNT_COMMAND: count,
      ...overrides,
    }),
  );
  return { plane, inspect: async (id) => processesOf(id), cleanup: () => plane.close() };
}

planeContract('command', () => commandPlane(), {
  cannotStart: [
    {
      name: 'a START_COMMAND that fails (and echoes its stdin)',
      make: () => commandPlane({ START_COMMAND: 'cat >&2; echo "no capacity left" >&2; exit 3' }),
      message: /^START_COMMAND exited 3: \[redacted\] \| no capacity left$/,
    },
    {
      name: 'a START_COMMAND that hangs',
      make: () => commandPlane({ START_COMMAND: 'exec sleep 30', COMMAND_TIMEOUT: 1 }),
      message: /^START_COMMAND was killed \(SIGKILL; COMMAND_TIMEOUT is 1s\)$/,
    },
  ],
});

async function dockerPlane(runtime: string, overrides: Record<string, unknown> = {}): Promise<PlaneUnderTest> {
  const [image, tag] = (await ensureBuildWorkerImage()).split(':');
  const plane = new DockerPlane(
    dockerPlaneConfig.parse({
      EXECUTOR: 'docker',
      NAME: `contract-${runtime}-${suffix()}`,
      DOCKER_RUNTIME: runtime,
      WORKER_IMAGE: image,
      WORKER_TAG: tag,
      CONTAINER_MEMORY_LIMITS: '512Mi',
      ...overrides,
    }),
  );
  return {
    plane,
    serverHost: await plane.gateway(),
    inspect: (id) => dockerInspect(id),
    cleanup: () => plane.close(),
  };
}

for (const runtime of ['runc', 'runsc-net']) {
  planeContract(`docker (${runtime})`, () => dockerPlane(runtime), {
    registerWithinMs: 60_000,
    cannotStart: [
      {
        name: 'a worker image the engine does not have',
        make: () => dockerPlane(runtime, { WORKER_TAG: 'no-such-tag' }),
        message:
          /^cannot create the worker container: image dockhand\/build-worker:no-such-tag not found on the engine$/,
      },
      {
        name: 'an OCI runtime the engine does not know',
        make: () => dockerPlane(runtime, { DOCKER_RUNTIME: 'no-such-runtime' }),
        message: /^DOCKER_RUNTIME no-such-runtime is not registered with the engine \(it has .*runc/,
      },
    ],
  });
}

const NAMESPACE = 'builder';

/** The Job, its pods and their containers: what `kubectl get -o json` and `docker inspect` on the node show. */
async function kubernetesInspect(cluster: KubeDouble, id: string): Promise<string> {
  const jobs = cluster.objects('jobs', NAMESPACE).filter((j: { metadata: { name: string } }) => j.metadata.name === id);
  const pods = cluster
    .objects('pods', NAMESPACE)
    .filter((p: { metadata: { labels?: Record<string, string> } }) => p.metadata.labels?.['job-name'] === id);
  const listed = await docker([
    'ps',
    '--all',
    '--no-trunc',
    '--filter',
    `label=io.kubernetes.pod.namespace=${NAMESPACE}`,
    '--format',
    '{{.ID}} {{.Label "io.kubernetes.pod.name"}}',
  ]);
  const containers = listed.stdout
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, pod]) => pod?.startsWith(`${id}-`))
    .map(([cid]) => cid);
  if (!jobs.length && !pods.length && !containers.length) return '';
  return [JSON.stringify({ jobs, pods }, null, 2), await dockerInspect(...containers)].join('\n');
}

async function kubernetesPlane(
  cluster: KubeDouble,
  overrides: Record<string, unknown> = {},
  cleanup = async () => {},
): Promise<PlaneUnderTest> {
  const [image, tag] = (await ensureBuildWorkerImage()).split(':');
  const plane = new KubernetesPlane(
    kubernetesPlaneConfig.parse({
      EXECUTOR: 'kubernetes',
      NAME: 'contract-kubernetes',
      KUBECONFIG: await cluster.writeKubeconfig(await tempDir('kubeconfig'), 'executor', NAMESPACE),
      BUILDER_NAMESPACE: NAMESPACE,
      WORKER_IMAGE: image,
      WORKER_TAG: tag,
      CONTAINER_MEMORY_LIMITS: '512Mi',
      ...overrides,
    }),
  );
  return {
    plane,
    serverHost: cluster.hostAddress,
    inspect: (id) => kubernetesInspect(cluster, id),
    cleanup: async () => {
      await plane.close();
      await cleanup();
    },
  };
}

planeContract(
  'kubernetes (API double)',
  async () => {
    const cluster = await startKubeDouble({ namespaces: [NAMESPACE], executorRules: KUBERNETES_PLANE_RULES });
    return kubernetesPlane(cluster, {}, () => cluster.close());
  },
  {
    registerWithinMs: 60_000,
    cannotStart: [
      {
        name: 'an API server that does not answer',
        make: async () => {
          const dir = await tempDir('kubeconfig');
          const file = path.join(dir, 'unreachable.json');
          writeFileSync(
            file,
            JSON.stringify({
              apiVersion: 'v1',
              kind: 'Config',
              clusters: [
                { name: 'gone', cluster: { server: 'https://127.0.0.1:1', 'insecure-skip-tls-verify': true } },
              ],
              users: [{ name: 'u', user: { token: 'x' } }],
              contexts: [{ name: 'c', context: { cluster: 'gone', user: 'u', namespace: NAMESPACE } }],
              'current-context': 'c',
            }),
          );
          const plane = new KubernetesPlane(
            kubernetesPlaneConfig.parse({
              EXECUTOR: 'kubernetes',
              NAME: 'unreachable',
              KUBECONFIG: file,
              WORKER_IMAGE: 'registry.example.com/dockhand/build-worker',
            }),
          );
          return { plane, inspect: async () => '', cleanup: () => plane.close() };
        },
        message: /^creating Job dockhand-build-.*ECONNREFUSED/,
      },
      {
        // The Job is made before its Secret: the plane must delete it again.
        name: 'a Role that does not grant creating Secrets',
        make: async () => {
          const narrower = await startKubeDouble({
            namespaces: [NAMESPACE],
            executorRules: KUBERNETES_PLANE_RULES.filter((r) => !r.resources.includes('secrets')),
          });
          return kubernetesPlane(narrower, {}, () => narrower.close());
        },
        message:
          /^creating Secret dockhand-build-[\w-]+-token: secrets is forbidden: User "system:serviceaccount:builder:executor" cannot create resource "secrets" in API group "" in the namespace "builder"$/,
      },
    ],
  },
);

describe('the kubernetes worker Job', () => {
  const launch = {
    buildId: 12,
    tryNumber: 2,
    executionId: 'dockhand-build-12-2-abcdef',
    registrationToken: 'header.claims.signature-of-the-registration-token',
    serverUrl: 'https://dockhand.example.com',
    maxBuildS: 7200,
  };

  it('is valid for the API with every setting, and never holds the token', () => {
    for (const settings of [
      {},
      {
        CONTAINER_MEMORY_REQUEST: '1Gi',
        CONTAINER_CPU_REQUEST: '500m',
        NODE_SELECTOR_LABEL_KEY: 'dockhand.dev/builders',
        NODE_SELECTOR_LABEL_VALUE: 'true',
        SECCOMP_PROFILE: 'profiles/buildah.json',
        SERVICE_ACCOUNT_NAME: 'build-worker',
        RETENTION_AFTER_FINISHED: 0,
      },
    ]) {
      const config = kubernetesPlaneConfig.parse({
        EXECUTOR: 'kubernetes',
        NAME: 'k8s',
        WORKER_IMAGE: 'registry.example.com/dockhand/build-worker',
        ...settings,
      });
      const job = workerJobManifest(config, launch);
      expect(validateKubernetesObject(job), JSON.stringify(settings)).toEqual([]);
      expect(JSON.stringify(job)).not.toContain('signature-of-the-registration-token');
      expect(job.spec?.suspend).toBe(true);
      expect(job.spec?.template.spec?.automountServiceAccountToken).toBe(false);
      // pause as PID 1: the worker dies of stop()'s SIGTERM even before it installs a handler.
      expect(job.spec?.template.spec?.shareProcessNamespace).toBe(true);
    }
  });
});
