// The build manager's settings, in the shape of Quay's BUILD_MANAGER config (upper-case keys, an EXECUTORS list
// tried in order), so a Quay operator recognises them. Durations are seconds, as in Quay; sizes take Kubernetes
// quantities (2Gi, 1000m).
import { z } from 'zod';
import { parseSize } from '../../core/units.js';
import { VERSION } from '../../core/version.js';

const seconds = (what: string, min: number, max: number) =>
  z
    .number({ error: `must be a number of seconds (${what})` })
    .min(min, `must be at least ${min} seconds`)
    .max(max, `must be at most ${max} seconds`);

const memoryQuantity = z
  .string()
  .regex(/^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$/, 'must be a memory quantity such as 512Mi or 2Gi')
  .refine((v) => (parseSize(v) ?? 0) >= 64 * 1024 * 1024, 'must be at least 64Mi (buildah needs room)');
const cpuQuantity = z
  .string()
  .regex(/^(\d+m|\d+(\.\d+)?)$/, 'must be a CPU quantity such as 1000m or 1.5')
  .refine((v) => cpuMillis(v) >= 100, 'must be at least 100m');

export function cpuMillis(quantity: string): number {
  return quantity.endsWith('m') ? Number(quantity.slice(0, -1)) : Math.round(Number(quantity) * 1000);
}

const planeName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'must be a short name: lower-case letters, digits and "-"');

const common = {
  NAME: planeName,
  /** The worker must register within this long after it is started (Quay's SETUP_TIME). */
  SETUP_TIME: seconds('how long a worker may take to register', 1, 3600).default(180),
  /** Tries the build must have left to use this plane (Quay's "number of tries remaining the job needs"). */
  MINIMUM_RETRY_THRESHOLD: z.number().int().min(0).max(10).default(0),
  /** How the worker reaches this server; default: the address the plane's workers can see it on. */
  SERVER_URL: z.url({ error: 'must be an http(s) URL' }).optional(),
};

const imageKeys = {
  WORKER_IMAGE: z.string().min(1).max(255).default('dockhand/build-worker'),
  WORKER_TAG: z
    .string()
    .regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/, 'must be an image tag')
    .default('latest'),
  CONTAINER_MEMORY_LIMITS: memoryQuantity.default('2Gi'),
  CONTAINER_CPU_LIMITS: cpuQuantity.default('1000m'),
};

export const processPlaneConfig = z.strictObject({
  EXECUTOR: z.literal('process'),
  ...common,
  /** The buildah the worker runs; the worker itself is this same dockhand program. */
  BUILDAH: z.string().min(1).default('buildah'),
});

export const dockerPlaneConfig = z.strictObject({
  EXECUTOR: z.literal('docker'),
  ...common,
  ...imageKeys,
  /** The OCI runtime as registered with dockerd: runc, or runsc for gVisor (needs a network-capable registration). */
  DOCKER_RUNTIME: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/, 'must be the name of a runtime registered with dockerd')
    .optional(),
  /** Docker engine socket; default /var/run/docker.sock or DOCKER_HOST. */
  DOCKER_SOCKET: z.string().min(1).optional(),
  /** A seccomp profile (JSON file) for the worker, or "unconfined"; default podman's, when installed, else none. */
  SECCOMP_PROFILE: z.string().min(1).optional(),
  /** The network the worker joins; default the engine's bridge. */
  NETWORK: z.string().min(1).default('bridge'),
});

export const kubernetesPlaneConfig = z.strictObject({
  EXECUTOR: z.literal('kubernetes'),
  ...common,
  ...imageKeys,
  // No default: a bare name would be pulled from Docker Hub, where nobody vouches for it, and the worker gets tokens.
  WORKER_IMAGE: z
    .string({ error: 'name the worker image in your registry, e.g. registry.example.com/dockhand/build-worker' })
    .min(1)
    .max(255),
  /** A kubeconfig file; default in-cluster (the service account) or KUBECONFIG. */
  KUBECONFIG: z.string().min(1).optional(),
  BUILDER_NAMESPACE: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a Kubernetes namespace name')
    .default('builder'),
  CONTAINER_MEMORY_REQUEST: memoryQuantity.optional(),
  CONTAINER_CPU_REQUEST: cpuQuantity.optional(),
  NODE_SELECTOR_LABEL_KEY: z.string().min(1).max(317).optional(),
  NODE_SELECTOR_LABEL_VALUE: z.string().max(63).optional(),
  /** Seconds a finished worker Job is kept (Quay's RETENTION_AFTER_FINISHED). */
  RETENTION_AFTER_FINISHED: seconds('how long a finished Job stays', 0, 86_400).default(120),
  /** A seccomp profile on the nodes (Localhost, relative to the kubelet's seccomp folder); default Unconfined. */
  SECCOMP_PROFILE: z.string().min(1).max(255).optional(),
  /** The worker pod's service account (give it no permissions). */
  SERVICE_ACCOUNT_NAME: z.string().min(1).max(253).optional(),
});

const commandLine = z.string().min(1).max(4096);
export const commandPlaneConfig = z.strictObject({
  EXECUTOR: z.literal('command'),
  ...common,
  /** Starts a worker; the registration token comes on its stdin, the rest in DOCKHAND_* variables (docs). */
  START_COMMAND: commandLine,
  /** Stops the worker DOCKHAND_EXECUTION_ID (also called for one that already ended). */
  STOP_COMMAND: commandLine,
  /** Prints how many workers of this plane are running; optional. */
  COUNT_COMMAND: commandLine.optional(),
  /** How long a command may take before it counts as failed. */
  COMMAND_TIMEOUT: seconds('how long a start or stop command may take', 1, 3600).default(60),
});

export const planeConfig = z.discriminatedUnion('EXECUTOR', [
  processPlaneConfig,
  dockerPlaneConfig,
  kubernetesPlaneConfig,
  commandPlaneConfig,
]);
export type PlaneConfig = z.output<typeof planeConfig>;
export type ProcessPlaneConfig = z.output<typeof processPlaneConfig>;
export type DockerPlaneConfig = z.output<typeof dockerPlaneConfig>;
export type KubernetesPlaneConfig = z.output<typeof kubernetesPlaneConfig>;
export type CommandPlaneConfig = z.output<typeof commandPlaneConfig>;

export const buildsConfig = z
  .strictObject({
    /** Builds running at once over all planes (Quay's ALLOWED_WORKER_COUNT). */
    ALLOWED_WORKER_COUNT: z.number().int().min(1).max(1000).default(1),
    /** Workers a build may use before it ends in internalerror (Quay queues builds with 3). */
    MAX_TRIES: z.number().int().min(1).max(10).default(3),
    /** A registered worker silent this long has expired: its try is spent and the build retried. */
    HEARTBEAT_TIMEOUT: seconds('worker silence before it expires', 2, 3600).default(60),
    /** The most one try of a build may run (Quay's MACHINE_MAX_TIME); also the kubernetes worker's deadline. */
    MACHINE_MAX_TIME: seconds('the longest a build may run', 10, 86_400).default(7200),
    /** Seconds before an expired or failed-to-start build is tried again (Quay: 30). */
    RETRY_AFTER: seconds('the pause before a retry', 0, 3600).default(30),
    /** Builds a namespace may have waiting at once (Quay's maximum_queued_builds_count). */
    MAXIMUM_QUEUED_BUILDS_COUNT: z.number().int().min(1).max(100_000).default(100),
    /** Largest uploaded context, e.g. 64Mi. */
    MAXIMUM_CONTEXT_SIZE: z
      .string()
      .refine((v) => (parseSize(v) ?? 0) >= 1024, 'must be a size of at least 1Ki, such as 64Mi')
      .refine((v) => (parseSize(v) ?? 0) <= 4 * 1024 ** 3, 'must be at most 4Gi (contexts are kept in the database)')
      .default('64Mi'),
    /**
     * Reuse the layers of a repository's earlier builds: workers push their intermediate layers to
     * REPOSITORY/buildcache and pull what matches from there. Costs every build those pushes (BENCHMARKS.md).
     */
    LAYER_CACHE: z.boolean().default(true),
    /** Entries a build's log keeps; past it the output is dropped, with a note. */
    MAXIMUM_LOG_LINES: z.number().int().min(100).max(10_000_000).default(100_000),
    /** Development only: let builds fetch file:// git URLs, which are paths on the worker's host. */
    ALLOW_LOCAL_REPOSITORIES: z.boolean().default(false),
    /** Registries pushed to and pulled from over plain HTTP besides loopback ones, as host:port. */
    INSECURE_REGISTRIES: z
      .array(z.string().regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$/, 'must be host or host:port'))
      .default([]),
    EXECUTORS: z
      .array(planeConfig)
      .max(20)
      .default([])
      .superRefine((planes, ctx) => {
        const seen = new Set<string>();
        planes.forEach((p, i) => {
          if (seen.has(p.NAME))
            ctx.addIssue({ code: 'custom', path: [i, 'NAME'], message: `${p.NAME} is used twice: names must differ` });
          seen.add(p.NAME);
        });
      }),
  })
  .default({
    ALLOWED_WORKER_COUNT: 1,
    MAX_TRIES: 3,
    HEARTBEAT_TIMEOUT: 60,
    MACHINE_MAX_TIME: 7200,
    RETRY_AFTER: 30,
    MAXIMUM_QUEUED_BUILDS_COUNT: 100,
    MAXIMUM_CONTEXT_SIZE: '64Mi',
    LAYER_CACHE: true,
    MAXIMUM_LOG_LINES: 100_000,
    ALLOW_LOCAL_REPOSITORIES: false,
    INSECURE_REGISTRIES: [],
    EXECUTORS: [],
  });
export type BuildsConfig = z.output<typeof buildsConfig>;
