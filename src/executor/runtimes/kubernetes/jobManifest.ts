// A Dockhand job as Kubernetes objects, as plain data (golden-tested, validated against the API's schema in the
// tests): one batch/v1 Job whose pod runs a setup init container (checkout and files), one init container per step
// and a tiny main container, all on one workspace volume; a Secret, owned by the Job, that holds what must not
// appear in the Job's spec (the job's secrets, its repository credentials, its files and step scripts), mounted
// read-only at /dockhand; a PVC per job when the workspace is a claim. Nothing here talks to the API.
import { createHash } from 'node:crypto';
import path from 'node:path';
import type {
  V1Container,
  V1EnvVar,
  V1Job,
  V1OwnerReference,
  V1PersistentVolumeClaim,
  V1ResourceRequirements,
  V1Secret,
  V1Volume,
} from '@kubernetes/client-node';
import type { DockerAuthConfig } from '../../../core/dockerAuthConfig.js';
import { gitEnvironment, checkoutCommands } from '../../workspace/checkout.js';
import { stepEnv, type JobView } from '../runtime.js';
import type { KubernetesOptions } from './options.js';

export const WORKSPACE = '/data';
export const SCRIPTS = '/dockhand';
const WORKSPACE_VOLUME = 'workspace';
const SCRIPTS_VOLUME = 'dockhand';
/** git's home in the setup container: its own, empty, gone with the pod. */
const GIT_HOME = '/tmp/dockhand-git-home';

export const LABEL_EXECUTOR = 'dockhand.dev/executor';
export const LABEL_JOB = 'dockhand.dev/job-id';
export const LABEL_ATTEMPT = 'dockhand.dev/attempt';
/** On --check's probe Jobs, which the janitor of a live executor of the same name leaves alone. */
export const LABEL_PROBE = 'dockhand.dev/probe';
/** On every job pod, so a NetworkPolicy can select them (deploy/kubernetes blocks the metadata address). */
export const LABEL_ROLE = 'dockhand.dev/role';
/** The label the Job controller puts on its pods. */
export const JOB_NAME_LABEL = 'batch.kubernetes.io/job-name';

/** A Secret holds at most 1 MiB (the API server refuses more). */
export const MAX_SECRET_BYTES = 2 ** 20;

export const SETUP_CONTAINER = 'setup';
export const MAIN_CONTAINER = 'main';
export const stepContainer = (index: number): string => `step-${index + 1}`;

/** What the manifests are made from, beyond the job and the options. */
export interface ManifestContext {
  job: JobView;
  options: KubernetesOptions;
  executorName: string;
  /** The Job's name (names the Secret, the PVC and, through the Job controller, the pod). */
  name: string;
  /** Marks the setup log's entry boundaries; random per job, so a fetched repository cannot forge one. */
  nonce: string;
  /** The pod's deadline in seconds (the job's maximum runtime, capped by EXECUTOR_KUBERNETES_JOB_DEADLINE). */
  deadlineSeconds: number;
  /** A `dockhand executor --check` probe. */
  probe?: boolean;
}

/** A Job's name for a job attempt: unique per attempt and executor, at most 63 characters (it becomes a label). */
export function jobName(executorName: string, jobId: number, attempt: number, random: string): string {
  const executor = createHash('sha256').update(executorName).digest('hex').slice(0, 6);
  return `dockhand-${jobId}-${attempt}-${executor}${random}`.slice(0, 63).replace(/-+$/, '');
}

/** Single-quoted for sh: nothing inside is expanded. */
export const sq = (text: string): string => `'${text.replace(/'/g, `'\\''`)}'`;

function labels(ctx: ManifestContext): Record<string, string> {
  return {
    'app.kubernetes.io/managed-by': 'dockhand',
    [LABEL_EXECUTOR]: ctx.executorName,
    [LABEL_JOB]: String(ctx.job.id),
    [LABEL_ATTEMPT]: String(ctx.job.attempt),
    ...(ctx.probe ? { [LABEL_PROBE]: 'true' } : {}),
  };
}

/** A CPU count as millicores, memory as bytes in Mi when whole: quantities the API reads back unchanged. */
export const cpuQuantity = (cpus: number): string => `${Math.max(1, Math.round(cpus * 1000))}m`;
export const memoryQuantity = (bytes: number): string =>
  bytes % 2 ** 20 === 0 ? `${bytes / 2 ** 20}Mi` : String(Math.round(bytes));

/** A step's (and the setup's) requests and limits: the job's limits, with requests as configured or equal. */
function stepResources(ctx: ManifestContext): V1ResourceRequirements {
  const { limits } = ctx.job;
  const { requestCpus, requestMemoryBytes } = ctx.options;
  const out: { limits: Record<string, string>; requests: Record<string, string> } = { limits: {}, requests: {} };
  if (limits.cpus) {
    out.limits.cpu = cpuQuantity(limits.cpus);
    out.requests.cpu = cpuQuantity(Math.min(requestCpus ?? limits.cpus, limits.cpus));
  } else if (requestCpus) out.requests.cpu = cpuQuantity(requestCpus);
  if (limits.memoryBytes) {
    out.limits.memory = memoryQuantity(limits.memoryBytes);
    out.requests.memory = memoryQuantity(Math.min(requestMemoryBytes ?? limits.memoryBytes, limits.memoryBytes));
  } else if (requestMemoryBytes) out.requests.memory = memoryQuantity(requestMemoryBytes);
  return {
    ...(Object.keys(out.limits).length ? { limits: out.limits } : {}),
    ...(Object.keys(out.requests).length ? { requests: out.requests } : {}),
  };
}

/** No privilege: every capability dropped, no escalation through setuid binaries. */
const HARDENED = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } };

function mounts(ctx: ManifestContext) {
  return [
    { name: WORKSPACE_VOLUME, mountPath: WORKSPACE },
    { name: SCRIPTS_VOLUME, mountPath: SCRIPTS, readOnly: true },
    ...ctx.options.additionalVolumeMounts,
  ];
}

/** The Secret's keys: what the pod reads from /dockhand. */
export const secretKeys = {
  step: (index: number): string => `step-${index + 1}.sh`,
  file: (index: number): string => `file-${index + 1}`,
  gitEnv: 'git.env',
  secret: (name: string): string => `secret.${name}`,
};

/** Whether the job needs the setup container: a checkout or files to write. */
export const needsSetup = (job: JobView): boolean =>
  !!job.spec.repository || Object.keys(job.spec.files ?? {}).length > 0;

/**
 * `confine DIR` prints the real path of the workspace's directory DIR, made one part at a time where missing.
 * It returns 1 when a symlink leads it out of the workspace (or dangles), 2 when it cannot be made. Plain sh and
 * mkdir, which any step image has; the container's own working directory could not refuse a symlink.
 */
const CONFINE =
  `confine() { d=${WORKSPACE}; set -f; ifs=$IFS; IFS=/; for p in $1; do IFS=$ifs; case "$p" in ''|.) continue;; esac; ` +
  'n="$d/$p"; if [ -L "$n" ] && [ ! -e "$n" ]; then return 1; fi; [ -e "$n" ] || mkdir -- "$n" 2>/dev/null || return 2; ' +
  `d=$(cd -P -- "$n" 2>/dev/null && pwd -P) || return 2; case "$d" in ${WORKSPACE}|${WORKSPACE}/*) ;; *) return 1;; esac; done; ` +
  'IFS=$ifs; set +f; printf \'%s\' "$d"; }';

/**
 * The setup container's script: the checkout's git commands one by one, then the files, each part between two
 * marker lines (`<nonce> begin KEY`, `<nonce> end CODE`) that split its log into the entries the other runtimes
 * write. A failure ends the script with "<reason>: <message>" in its termination message.
 */
export function setupScript(ctx: ManifestContext): string {
  const { job, nonce } = ctx;
  const lines = ['set -u', `M=${sq(nonce)}`, `fail() { printf '%s' "$1" > /dev/termination-log; exit 1; }`, CONFINE];
  const repo = job.spec.repository;
  if (repo) {
    const dir = repo.dir ?? '.';
    lines.push(
      `d=$(confine ${sq(dir)}) || fail ${sq(`invalid_workspace: repository.dir ${dir} leads outside the workspace through a symlink`)}`,
      'cd "$d" || fail \'system_failure: cannot enter the checkout directory\'',
      `mkdir -p ${GIT_HOME} && chmod 700 ${GIT_HOME} || fail 'system_failure: cannot make git a home in /tmp'`,
      `. ${SCRIPTS}/${secretKeys.gitEnv}`,
    );
    for (const { key, args } of checkoutCommands(repo)) {
      // The URL may hold a password: the script takes it from the mounted Secret, never from the Job's spec.
      const words = args.map((a) => (a === repo.url ? '"$DOCKHAND_REPO_URL"' : sq(a))).join(' ');
      lines.push(
        `printf '%s begin %s\\n' "$M" ${sq(key)}`,
        `git ${words} 2>&1; s=$?`,
        `printf '%s end %s\\n' "$M" "$s"`,
        `[ "$s" -eq 0 ] || fail "checkout_failure: ${key} failed with exit code $s; see its log"`,
      );
    }
  }
  const files = Object.entries(job.spec.files ?? {});
  if (files.length) {
    lines.push(`printf '%s begin %s\\n' "$M" setup.files`);
    files.forEach(([rel, content], index) => {
      const dir = path.posix.dirname(rel);
      const refused = `refusing to write ${rel}: ${dir} leads outside the workspace through a symlink`;
      lines.push(
        `p=$(confine ${sq(dir)}) || { echo ${sq(refused)}; printf '%s end 1\\n' "$M"; fail ${sq(`invalid_workspace: ${refused}`)}; }`,
        // A symlink at the target itself would redirect the write: the file replaces it.
        `t="$p"/${sq(path.posix.basename(rel))}; rm -f -- "$t"`,
        `err=$(cat ${SCRIPTS}/${secretKeys.file(index)} 2>&1 > "$t" && chmod 755 "$t" 2>&1) || { echo "$err"; printf '%s end 1\\n' "$M"; ` +
          `case "$err" in *'No space left'*) fail ${sq(`out_of_disk: writing ${rel} failed: the job's disk is full`)};; esac; ` +
          `fail ${sq(`system_failure: writing ${rel} failed`)}; }`,
        `echo ${sq(`wrote ${rel} (${Buffer.byteLength(content)} bytes)`)}`,
      );
    });
    lines.push(`printf '%s end 0\\n' "$M"`);
  }
  return lines.join('\n') + '\n';
}

/**
 * How a step runs: in its dir, made and checked to be inside the workspace, then its script with `sh -e` like on
 * the other runtimes. $1 is the dir as the spec gives it, $2 the script.
 */
export const STEP_WRAPPER =
  `${CONFINE}; d=$(confine "$1"); case $? in 0) ;; ` +
  `1) printf 'invalid_workspace: dir %s leads outside the workspace through a symlink' "$1" > /dev/termination-log; exit 126;; ` +
  `*) echo "dockhand: cannot make the step's dir $1" >&2; exit 126;; esac; ` +
  'cd "$d" && exec /bin/sh -e "$2"';

/** A step's user ("1000" or "1000:1000"): Kubernetes runs containers as numeric ids only. */
function stepUser(user: string | undefined): { runAsUser?: number; runAsGroup?: number } | undefined {
  if (!user) return undefined;
  const [uid, gid] = user.split(':');
  if (!/^\d+$/.test(uid) || (gid !== undefined && !/^\d+$/.test(gid))) return undefined;
  return { runAsUser: Number(uid), ...(gid !== undefined ? { runAsGroup: Number(gid) } : {}) };
}

/** Whether every step's user can be given to Kubernetes (numeric); the runtime refuses the job otherwise. */
export function nonNumericUser(job: JobView): string | undefined {
  return job.spec.steps.find((s) => s.user && !stepUser(s.user))?.key;
}

function stepEnvVars(ctx: ManifestContext, index: number): V1EnvVar[] {
  const step = ctx.job.spec.steps[index];
  const secretNames = new Set(Object.keys(ctx.job.secrets));
  const env: V1EnvVar[] = Object.entries(stepEnv(ctx.job, step))
    .filter(([name]) => !secretNames.has(name))
    .map(([name, value]) => ({ name, value }));
  // The secrets' values stay in the Secret: the kubelet sets them, and the Job's spec only names them.
  for (const name of secretNames) {
    env.push({ name, valueFrom: { secretKeyRef: { name: secretName(ctx.name), key: secretKeys.secret(name) } } });
  }
  return env;
}

export const secretName = (job: string): string => `${job}-dockhand`;
export const pullSecretName = (job: string): string => `${job}-registry`;
export const claimName = (job: string): string => `${job}-workspace`;

function containers(ctx: ManifestContext): { init: V1Container[]; main: V1Container } {
  const { job, options } = ctx;
  const resources = stepResources(ctx);
  const init: V1Container[] = [];
  if (needsSetup(job)) {
    init.push({
      name: SETUP_CONTAINER,
      image: options.stepImage,
      imagePullPolicy: 'IfNotPresent',
      command: ['/bin/sh', '-c', setupScript(ctx)],
      workingDir: WORKSPACE,
      resources,
      securityContext: HARDENED,
      volumeMounts: mounts(ctx),
    });
  }
  job.spec.steps.forEach((step, index) => {
    const dir = step.dir ?? '.';
    init.push({
      name: stepContainer(index),
      image: step.image ?? options.defaultImage,
      imagePullPolicy: 'IfNotPresent',
      command: ['/bin/sh', '-c', STEP_WRAPPER, 'dockhand-step', dir, `${SCRIPTS}/${secretKeys.step(index)}`],
      // The wrapper enters `dir` once it is checked (see STEP_WRAPPER).
      workingDir: WORKSPACE,
      env: stepEnvVars(ctx, index),
      resources,
      securityContext: { ...HARDENED, ...stepUser(step.user) },
      volumeMounts: mounts(ctx),
    });
  });
  const last = job.spec.steps.at(-1);
  return {
    init,
    // The pod needs one regular container; this one starts from an image the node already has and exits at once.
    main: {
      name: MAIN_CONTAINER,
      image: last ? (last.image ?? options.defaultImage) : options.stepImage,
      imagePullPolicy: 'IfNotPresent',
      command: ['/bin/sh', '-c', 'exit 0'],
      resources: { limits: { cpu: '100m', memory: '32Mi' }, requests: { cpu: '10m', memory: '32Mi' } },
      securityContext: HARDENED,
    },
  };
}

function affinity(options: KubernetesOptions): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  if (options.nodeAffinityExpressions.length || options.nodeAffinityFields.length) {
    out.nodeAffinity = {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [
          {
            ...(options.nodeAffinityExpressions.length ? { matchExpressions: options.nodeAffinityExpressions } : {}),
            ...(options.nodeAffinityFields.length ? { matchFields: options.nodeAffinityFields } : {}),
          },
        ],
      },
    };
  }
  if (options.podAffinity.length)
    out.podAffinity = { requiredDuringSchedulingIgnoredDuringExecution: options.podAffinity };
  if (options.podAntiAffinity.length)
    out.podAntiAffinity = { requiredDuringSchedulingIgnoredDuringExecution: options.podAntiAffinity };
  return Object.keys(out).length ? out : undefined;
}

/** The Job, created suspended: its pod starts once the Secret (and PVC) it owns exist and it is resumed. */
export function jobManifest(ctx: ManifestContext): V1Job {
  const { job, options } = ctx;
  const { init, main } = containers(ctx);
  const diskBytes = job.limits.diskBytes;
  const workspace: V1Volume =
    options.volumeType === 'pvc'
      ? { name: WORKSPACE_VOLUME, persistentVolumeClaim: { claimName: claimName(ctx.name) } }
      : { name: WORKSPACE_VOLUME, emptyDir: diskBytes ? { sizeLimit: memoryQuantity(diskBytes) } : {} };
  const pullSecrets = [
    ...options.imagePullSecrets,
    ...(jobPullSecretConfig(job.dockerAuthConfig) ? [pullSecretName(ctx.name)] : []),
  ];
  const podSecurity = {
    ...(options.runAsUser !== undefined ? { runAsUser: options.runAsUser } : {}),
    ...(options.runAsGroup !== undefined ? { runAsGroup: options.runAsGroup } : {}),
    ...(options.fsGroup !== undefined ? { fsGroup: options.fsGroup } : {}),
    ...(options.runAsUser ? { runAsNonRoot: true } : {}),
    seccompProfile: { type: 'RuntimeDefault' },
  };
  const nodeAffinity = affinity(options);
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: ctx.name,
      labels: labels(ctx),
      ...(Object.keys(options.jobAnnotations).length ? { annotations: options.jobAnnotations } : {}),
    },
    spec: {
      // Dockhand decides about retries (failure reasons); Kubernetes must not run a job twice.
      backoffLimit: 0,
      suspend: true,
      // A backstop for a finished Job whose executor never came back to delete it.
      ...(options.keepJobs ? {} : { ttlSecondsAfterFinished: 3600 }),
      template: {
        metadata: {
          labels: { ...labels(ctx), [LABEL_ROLE]: 'job' },
          ...(Object.keys(options.podAnnotations).length ? { annotations: options.podAnnotations } : {}),
        },
        spec: {
          restartPolicy: 'Never',
          activeDeadlineSeconds: ctx.deadlineSeconds,
          terminationGracePeriodSeconds: options.terminationGracePeriodSeconds,
          // A job speaks to nothing of the cluster's: no token of a service account, no service variables.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(options.nodeName ? { nodeName: options.nodeName } : {}),
          ...(Object.keys(options.nodeSelector).length ? { nodeSelector: options.nodeSelector } : {}),
          ...(nodeAffinity ? { affinity: nodeAffinity } : {}),
          ...(options.tolerations.length ? { tolerations: options.tolerations } : {}),
          ...(pullSecrets.length ? { imagePullSecrets: pullSecrets.map((name) => ({ name })) } : {}),
          securityContext: podSecurity,
          initContainers: init,
          containers: [main],
          volumes: [
            workspace,
            // Readable by every user a step may run as: the pod is the job's alone.
            { name: SCRIPTS_VOLUME, secret: { secretName: secretName(ctx.name), defaultMode: 0o444 } },
            ...options.additionalVolumes,
          ],
        },
      },
    },
  } as V1Job;
}

/** The reference that makes the Job own an object: the garbage collector deletes it with the Job. */
export function ownedBy(job: V1Job): V1OwnerReference[] {
  return [
    {
      apiVersion: 'batch/v1',
      kind: 'Job',
      name: job.metadata!.name!,
      uid: job.metadata!.uid!,
      controller: true,
      blockOwnerDeletion: false,
    },
  ];
}

/** The job's registry credentials as a pull Secret's config, or undefined when it brought none. */
function jobPullSecretConfig(auth: DockerAuthConfig | undefined): string | undefined {
  if (!auth?.auths || Object.keys(auth.auths).length === 0) return undefined;
  return JSON.stringify({ auths: auth.auths });
}

/** The Secret: step scripts, files, the checkout's environment and the job's secrets, base64 as the API stores them. */
export function secretManifest(ctx: ManifestContext, owner: V1Job): V1Secret {
  const { job } = ctx;
  const data: Record<string, string> = {};
  const put = (key: string, value: string) => (data[key] = Buffer.from(value).toString('base64'));
  job.spec.steps.forEach((step, index) =>
    put(secretKeys.step(index), step.run.endsWith('\n') ? step.run : `${step.run}\n`),
  );
  Object.values(job.spec.files ?? {}).forEach((content, index) => put(secretKeys.file(index), content));
  if (job.spec.repository) put(secretKeys.gitEnv, gitEnvFile(job));
  for (const [name, value] of Object.entries(job.secrets)) put(secretKeys.secret(name), value);
  return ownedSecret(ctx, owner, secretName(ctx.name), 'Opaque', data);
}

/** An immutable Secret of the job's, labelled as its other objects and owned by its Job. */
function ownedSecret(
  ctx: ManifestContext,
  owner: V1Job,
  name: string,
  type: string,
  data: Record<string, string>,
): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, labels: labels(ctx), ownerReferences: ownedBy(owner) },
    type,
    immutable: true,
    data,
  };
}

/** The registry credentials the job brought, as a pull Secret owned by the Job; undefined when it brought none. */
export function pullSecretManifest(ctx: ManifestContext, owner: V1Job): V1Secret | undefined {
  const config = jobPullSecretConfig(ctx.job.dockerAuthConfig);
  if (!config) return undefined;
  return ownedSecret(ctx, owner, pullSecretName(ctx.name), 'kubernetes.io/dockerconfigjson', {
    '.dockerconfigjson': Buffer.from(config).toString('base64'),
  });
}

/** The job's own workspace claim (EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE=pvc), owned by the Job. */
export function claimManifest(ctx: ManifestContext, owner: V1Job): V1PersistentVolumeClaim {
  const size = ctx.job.limits.diskBytes || ctx.options.volumeSizeBytes || 10 * 2 ** 30;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: claimName(ctx.name), labels: labels(ctx), ownerReferences: ownedBy(owner) },
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: memoryQuantity(size) } },
      ...(ctx.options.storageClass ? { storageClassName: ctx.options.storageClass } : {}),
    },
  };
}

/** The checkout's environment as `export` lines the setup script sources: credentials included, so it is a Secret's. */
function gitEnvFile(job: JobView): string {
  const repo = job.spec.repository!;
  const env = {
    ...gitEnvironment({ home: GIT_HOME, path: '', allowLocal: false, repository: repo, secrets: job.secrets }),
    DOCKHAND_REPO_URL: repo.url,
  };
  return Object.entries(env)
    .filter(([name]) => name !== 'PATH')
    .map(([name, value]) => `export ${name}=${sq(value)}\n`)
    .join('');
}
