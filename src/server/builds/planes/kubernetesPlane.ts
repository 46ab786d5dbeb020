// The kubernetes plane: each worker is a batch Job in BUILDER_NAMESPACE. The Job is created suspended, its
// registration token goes into a Secret the Job owns (mounted as a file, never an env var), then the Job is resumed;
// deleting the Job takes its pod and Secret with it (the garbage collector). Its deadline is the build's max time, and
// a finished Job stays RETENTION_AFTER_FINISHED seconds, as Quay's do. The worker pod mounts no service account token.
import type { V1Job, V1Secret } from '@kubernetes/client-node';
import { Cluster } from '../../../executor/runtimes/kubernetes/cluster.js';
import { ownedBy } from '../../../executor/runtimes/kubernetes/jobManifest.js';
import { RuntimeSetupError } from '../../../executor/runtimes/runtime.js';
import type { KubernetesPlaneConfig } from '../buildsConfig.js';
import { BUILD_LABEL, PLANE_LABEL, PlaneError, type ControlPlane, type WorkerLaunch } from './controlPlane.js';

const TOKEN_DIR = '/run/dockhand';
const TOKEN_FILE = 'registration-token';

/** The worker Job, suspended (the plane resumes it once its token Secret exists). */
export function workerJobManifest(config: KubernetesPlaneConfig, launch: WorkerLaunch): V1Job {
  const labels = {
    [PLANE_LABEL]: config.NAME,
    [BUILD_LABEL]: String(launch.buildId),
    'app.kubernetes.io/managed-by': 'dockhand',
    'app.kubernetes.io/component': 'build-worker',
  };
  const requests = {
    ...(config.CONTAINER_MEMORY_REQUEST ? { memory: config.CONTAINER_MEMORY_REQUEST } : {}),
    ...(config.CONTAINER_CPU_REQUEST ? { cpu: config.CONTAINER_CPU_REQUEST } : {}),
  };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: launch.executionId, labels },
    spec: {
      suspend: true,
      backoffLimit: 0,
      activeDeadlineSeconds: launch.maxBuildS,
      ttlSecondsAfterFinished: config.RETENTION_AFTER_FINISHED,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          // The pod's pause process is PID 1, as Docker's init is for the docker plane: the worker, not PID 1, then
          // dies of the SIGTERM that stop() sends before it has registered (PID 1 ignores signals it does not
          // handle), instead of living on through the grace period.
          shareProcessNamespace: true,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(config.SERVICE_ACCOUNT_NAME ? { serviceAccountName: config.SERVICE_ACCOUNT_NAME } : {}),
          ...(config.NODE_SELECTOR_LABEL_KEY
            ? { nodeSelector: { [config.NODE_SELECTOR_LABEL_KEY]: config.NODE_SELECTOR_LABEL_VALUE ?? '' } }
            : {}),
          containers: [
            {
              name: 'worker',
              image: `${config.WORKER_IMAGE}:${config.WORKER_TAG}`,
              args: ['build-worker', '--server', launch.serverUrl, '--token-file', `${TOKEN_DIR}/${TOKEN_FILE}`],
              env: [{ name: 'DOCKHAND_BUILD_WORK_DIR', value: '/var/lib/dockhand-build' }],
              resources: {
                limits: { memory: config.CONTAINER_MEMORY_LIMITS, cpu: config.CONTAINER_CPU_LIMITS },
                ...(Object.keys(requests).length ? { requests } : {}),
              },
              // buildah makes a user namespace inside the pod, which the runtime's default seccomp profile refuses
              // (docs/build-workers.md); with no CAP_SYS_ADMIN it needs only the default capabilities.
              securityContext: {
                allowPrivilegeEscalation: false,
                seccompProfile: config.SECCOMP_PROFILE
                  ? { type: 'Localhost', localhostProfile: config.SECCOMP_PROFILE }
                  : { type: 'Unconfined' },
              },
              volumeMounts: [
                { name: 'token', mountPath: TOKEN_DIR, readOnly: true },
                { name: 'work', mountPath: '/var/lib/dockhand-build' },
              ],
            },
          ],
          volumes: [
            { name: 'token', secret: { secretName: `${launch.executionId}-token`, defaultMode: 0o400 } },
            { name: 'work', emptyDir: {} },
          ],
        },
      },
    },
  };
}

export class KubernetesPlane implements ControlPlane {
  private cluster: Cluster | undefined;

  constructor(readonly config: KubernetesPlaneConfig) {}

  get name(): string {
    return this.config.NAME;
  }

  /** Connected on first use: a plane whose cluster is unreachable fails its starts, and the next plane is tried. */
  private connect(): Cluster {
    if (!this.cluster) {
      try {
        this.cluster = Cluster.load({ configPath: this.config.KUBECONFIG, namespace: this.config.BUILDER_NAMESPACE });
      } catch (err) {
        throw new PlaneError(err instanceof RuntimeSetupError ? `${err.message} (${err.fix})` : (err as Error).message);
      }
    }
    return this.cluster;
  }

  async start(launch: WorkerLaunch): Promise<void> {
    const cluster = this.connect();
    let job: V1Job;
    try {
      job = await cluster.createJob(workerJobManifest(this.config, launch));
    } catch (err) {
      throw new PlaneError((err as Error).message);
    }
    try {
      const secret: V1Secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: `${launch.executionId}-token`, labels: job.metadata?.labels, ownerReferences: ownedBy(job) },
        type: 'Opaque',
        immutable: true,
        data: { [TOKEN_FILE]: Buffer.from(`${launch.registrationToken}\n`).toString('base64') },
      };
      await cluster.createSecret(secret);
      await cluster.suspendJob(launch.executionId, false);
    } catch (err) {
      await cluster.deleteJob(launch.executionId).catch(() => undefined);
      throw new PlaneError((err as Error).message);
    }
  }

  async stop(executionId: string): Promise<void> {
    try {
      await this.connect().deleteJob(executionId);
    } catch (err) {
      throw new PlaneError((err as Error).message);
    }
  }

  async running(): Promise<number> {
    const jobs = await this.connect().listJobs(`${PLANE_LABEL}=${this.config.NAME}`);
    return jobs.filter(
      (j) =>
        !(j.status?.conditions ?? []).some(
          (c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True',
        ),
    ).length;
  }

  async close(): Promise<void> {}
}
