// The kubernetes runtime's own settings (EXECUTOR_KUBERNETES_*), with Sourcegraph's names and meanings where it has
// them. Every value is checked here, when the executor starts, against the API server's rules for its shape: a bad
// one stops it with the variable's name and the fix rather than failing every job later (what only the cluster can
// judge, such as whether a node has a label, the probe of --check shows). Reading them loads no Kubernetes client.
import { z } from 'zod';
import { ConfigError, envBool, envDuration, envInt, readEnv } from '../../../core/envConfig.js';

export interface KubernetesOptions {
  /** A kubeconfig file; undefined: in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG or ~/.kube/config. */
  configPath?: string;
  context?: string;
  namespace: string;
  nodeName?: string;
  nodeSelector: Record<string, string>;
  nodeAffinityExpressions: NodeSelectorRequirement[];
  nodeAffinityFields: NodeSelectorRequirement[];
  podAffinity: Record<string, unknown>[];
  podAntiAffinity: Record<string, unknown>[];
  tolerations: Record<string, unknown>[];
  /** CPUs and bytes of memory one job may use (Sourcegraph's RESOURCE_LIMIT_*); undefined: EXECUTOR_JOB_*. */
  limitCpus?: number;
  limitMemoryBytes?: number;
  /** What each job's containers request; undefined: equal to their limit. */
  requestCpus?: number;
  requestMemoryBytes?: number;
  imagePullSecrets: string[];
  jobAnnotations: Record<string, string>;
  podAnnotations: Record<string, string>;
  keepJobs: boolean;
  /** Upper bound of a pod's activeDeadlineSeconds; undefined: the job's maximum runtime alone. */
  jobDeadlineSeconds?: number;
  volumeType: 'emptyDir' | 'pvc';
  /** The workspace's size (Sourcegraph's JOB_VOLUME_SIZE); undefined: EXECUTOR_JOB_DISK. */
  volumeSizeBytes?: number;
  storageClass?: string;
  additionalVolumes: ({ name: string } & Record<string, unknown>)[];
  additionalVolumeMounts: ({ name: string; mountPath: string } & Record<string, unknown>)[];
  runAsUser?: number;
  runAsGroup?: number;
  fsGroup?: number;
  /** The setup container's image (sh and git) and the main container's when the job has no step. */
  stepImage: string;
  /** Image for steps that name none. */
  defaultImage: string;
  scheduleTimeoutMs: number;
  terminationGracePeriodSeconds: number;
}

export interface NodeSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist' | 'Gt' | 'Lt';
  values?: string[];
}

// Kubernetes' own name rules (a DNS-1123 label; a label's value; a qualified key with an optional DNS prefix).
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([a-z0-9.-]{1,253}\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** Whether `value` may be a label's value (the executor's name labels everything the runtime makes). */
export const isLabelValue = (value: string): boolean => LABEL_VALUE.test(value) && value.length <= 63;

const labelKey = z.string().regex(QUALIFIED_NAME, 'must be a label key such as "pool" or "example.com/pool"');

/** The API server's rules for a requirement's values, so a bad one stops the executor instead of every job. */
function requirementValues(r: { operator: string; values?: string[] }, ctx: z.RefinementCtx): void {
  const n = r.values?.length ?? 0;
  const say = (message: string) => ctx.addIssue({ code: 'custom', path: ['values'], message });
  if ((r.operator === 'In' || r.operator === 'NotIn') && n === 0) say(`${r.operator} needs at least one value`);
  if ((r.operator === 'Exists' || r.operator === 'DoesNotExist') && n > 0) say(`${r.operator} takes no values`);
  if ((r.operator === 'Gt' || r.operator === 'Lt') && (n !== 1 || !/^-?\d+$/.test(r.values![0])))
    say(`${r.operator} takes exactly one whole number`);
}

const requirementShape = z.strictObject({
  key: labelKey,
  operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt', 'Lt']),
  values: z.array(z.string()).optional(),
});
const nodeSelectorRequirement = requirementShape.superRefine(requirementValues);

const labelSelector = z.strictObject({
  matchLabels: z.record(labelKey, z.string().regex(LABEL_VALUE)).optional(),
  matchExpressions: z
    .array(
      z
        .strictObject({
          key: labelKey,
          operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
          values: z.array(z.string()).optional(),
        })
        .superRefine(requirementValues),
    )
    .optional(),
});

const podAffinityTerm = z.strictObject({
  labelSelector: labelSelector.optional(),
  namespaceSelector: labelSelector.optional(),
  namespaces: z.array(z.string().regex(DNS_LABEL)).optional(),
  topologyKey: labelKey.describe('required: e.g. "kubernetes.io/hostname"'),
  matchLabelKeys: z.array(labelKey).optional(),
  mismatchLabelKeys: z.array(labelKey).optional(),
});

const toleration = z
  .strictObject({
    key: labelKey.optional(),
    operator: z.enum(['Equal', 'Exists']).optional(),
    value: z.string().optional(),
    effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
    tolerationSeconds: z.number().int().optional(),
  })
  .superRefine((t, ctx) => {
    if (t.operator === 'Exists' && t.value)
      ctx.addIssue({ code: 'custom', path: ['value'], message: 'must be empty with operator Exists' });
    if (!t.key && t.operator !== 'Exists')
      ctx.addIssue({ code: 'custom', path: ['operator'], message: 'must be Exists when key is empty' });
    if (t.tolerationSeconds !== undefined && t.effect !== 'NoExecute')
      ctx.addIssue({ code: 'custom', path: ['tolerationSeconds'], message: 'applies only to effect NoExecute' });
  });

// A volume or mount is passed on as written; its name and shape are checked here, its source by the API server.
const volume = z
  .looseObject({ name: z.string().regex(DNS_LABEL, 'must be a DNS-1123 label') })
  .refine(
    (v) => Object.keys(v).filter((k) => k !== 'name').length === 1,
    'must have its name and exactly one source, e.g. {"name":"cache","persistentVolumeClaim":{"claimName":"ci-cache"}}',
  );
const volumeMount = z.looseObject({
  name: z.string().regex(DNS_LABEL, 'must be a DNS-1123 label'),
  mountPath: z
    .string()
    .regex(/^\/./, 'must be an absolute path')
    .refine((p) => !/^\/(data|dockhand)(\/|$)/.test(p), 'must not be /data or /dockhand, which the runtime uses'),
  readOnly: z.boolean().optional(),
  subPath: z.string().optional(),
});

/** JSON in a variable, read with `schema`; the error names the variable and shows an example. */
const json = <T>(name: string, schema: z.ZodType<T>, example: string) =>
  z.string().transform((text, ctx): T => {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: `${name} is not valid JSON; expected e.g. ${example}` });
      return z.NEVER;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue.path.length ? `[${issue.path.join('].[')}]` : '';
      ctx.addIssue({ code: 'custom', message: `${name}${where}: ${issue.message}; expected e.g. ${example}` });
      return z.NEVER;
    }
    return parsed.data;
  });

/** "k=v,k2=v2" as a map; keys and values as Kubernetes labels allow. */
const keyValues = (name: string) =>
  z.string().transform((text, ctx) => {
    const out: Record<string, string> = {};
    for (const part of text
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean)) {
      const eq = part.indexOf('=');
      const [key, value] = eq < 0 ? [part, undefined] : [part.slice(0, eq), part.slice(eq + 1)];
      if (value === undefined || !QUALIFIED_NAME.test(key) || !LABEL_VALUE.test(value)) {
        ctx.addIssue({
          code: 'custom',
          message: `${name}: ${JSON.stringify(part)} must be LABEL=VALUE, e.g. ${name}=pool=ci,kubernetes.io/os=linux`,
        });
        return z.NEVER;
      }
      out[key] = value;
    }
    return out;
  });

const QUANTITY = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/;
const QUANTITY_FACTOR: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** A Kubernetes quantity ("500m", "2", "512Mi", "1G") as a number; undefined when it is not one. */
export function parseQuantity(text: string): number | undefined {
  const match = QUANTITY.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * QUANTITY_FACTOR[match[2] ?? ''];
}

const quantity = (name: string, what: 'cpu' | 'memory') =>
  z.string().transform((text, ctx) => {
    const value = parseQuantity(text);
    if (value === undefined || value <= 0 || (what === 'memory' && text.trim().endsWith('m'))) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(text)} is not a Kubernetes ${what} quantity; use e.g. ${what === 'cpu' ? '"500m" or "2"' : '"512Mi" or "4Gi"'}`,
      });
      return z.NEVER;
    }
    return what === 'memory' ? Math.round(value) : value;
  });

const id = (name: string) => envInt(name, 0, 2 ** 31 - 1);

/** An image reference as the API server takes it: no spaces, no upper case in its repository. */
const image = (name: string) =>
  z
    .string()
    .regex(
      /^(?:[a-z0-9.-]+(?::\d+)?\/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/,
      `${name} must be an image reference such as alpine/git:v2.49.1 or registry.example.com/tools/git@sha256:…`,
    );

export function kubernetesOptions(env: NodeJS.ProcessEnv): KubernetesOptions {
  const read = <T>(name: string, schema: z.ZodType<T>, fallback: T): T => readEnv(env, name, schema, fallback);
  const opt = <T>(name: string, schema: z.ZodType<T>): T | undefined =>
    readEnv<T | undefined>(env, name, schema, undefined);
  const name = (variable: string) =>
    z
      .string()
      .regex(DNS_SUBDOMAIN, `${variable} must be a lower-case DNS name (letters, digits, "-" and "."), e.g. ci-jobs`);

  // One setting under two names (Sourcegraph's and Dockhand's own) would be two answers to one question.
  for (const [ours, theirs] of [
    ['EXECUTOR_JOB_NUM_CPUS', 'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU'],
    ['EXECUTOR_JOB_MEMORY', 'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY'],
    ['EXECUTOR_JOB_DISK', 'EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE'],
  ]) {
    if (env[ours] && env[theirs])
      throw new ConfigError(`${ours} and ${theirs} are the same setting on the kubernetes runtime; set only one.`);
  }

  const options: KubernetesOptions = {
    configPath: env.EXECUTOR_KUBERNETES_CONFIG_PATH || undefined,
    context: env.EXECUTOR_KUBERNETES_CONTEXT || undefined,
    namespace: read(
      'EXECUTOR_KUBERNETES_NAMESPACE',
      z
        .string()
        .regex(
          DNS_LABEL,
          'EXECUTOR_KUBERNETES_NAMESPACE must be a namespace name: at most 63 lower-case letters, digits and "-", e.g. ci-jobs',
        ),
      'default',
    ),
    nodeName: opt('EXECUTOR_KUBERNETES_NODE_NAME', name('EXECUTOR_KUBERNETES_NODE_NAME')),
    nodeSelector: read('EXECUTOR_KUBERNETES_NODE_SELECTOR', keyValues('EXECUTOR_KUBERNETES_NODE_SELECTOR'), {}),
    nodeAffinityExpressions: read(
      'EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS',
      json(
        'EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS',
        z.array(nodeSelectorRequirement),
        '[{"key":"pool","operator":"In","values":["ci"]}]',
      ),
      [],
    ),
    nodeAffinityFields: read(
      'EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_FIELDS',
      json(
        'EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_FIELDS',
        z.array(
          requirementShape
            .extend({
              key: z.literal('metadata.name', { error: () => 'only metadata.name is a node field to match' }),
            })
            .superRefine(requirementValues),
        ),
        '[{"key":"metadata.name","operator":"In","values":["node-a"]}]',
      ),
      [],
    ),
    podAffinity: read(
      'EXECUTOR_KUBERNETES_POD_AFFINITY',
      json(
        'EXECUTOR_KUBERNETES_POD_AFFINITY',
        z.array(podAffinityTerm),
        '[{"labelSelector":{"matchLabels":{"app":"cache"}},"topologyKey":"kubernetes.io/hostname"}]',
      ),
      [],
    ),
    podAntiAffinity: read(
      'EXECUTOR_KUBERNETES_POD_ANTI_AFFINITY',
      json(
        'EXECUTOR_KUBERNETES_POD_ANTI_AFFINITY',
        z.array(podAffinityTerm),
        '[{"labelSelector":{"matchLabels":{"dockhand.dev/role":"job"}},"topologyKey":"kubernetes.io/hostname"}]',
      ),
      [],
    ),
    tolerations: read(
      'EXECUTOR_KUBERNETES_NODE_TOLERATIONS',
      json(
        'EXECUTOR_KUBERNETES_NODE_TOLERATIONS',
        z.array(toleration),
        '[{"key":"dedicated","operator":"Equal","value":"ci","effect":"NoSchedule"}]',
      ),
      [],
    ),
    limitCpus: opt('EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU', quantity('EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU', 'cpu')),
    limitMemoryBytes: opt(
      'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY',
      quantity('EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY', 'memory').refine(
        (n) => n >= 16 * 2 ** 20,
        'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY must be at least 16Mi: below it no container starts',
      ),
    ),
    requestCpus: opt(
      'EXECUTOR_KUBERNETES_RESOURCE_REQUEST_CPU',
      quantity('EXECUTOR_KUBERNETES_RESOURCE_REQUEST_CPU', 'cpu'),
    ),
    requestMemoryBytes: opt(
      'EXECUTOR_KUBERNETES_RESOURCE_REQUEST_MEMORY',
      quantity('EXECUTOR_KUBERNETES_RESOURCE_REQUEST_MEMORY', 'memory'),
    ),
    imagePullSecrets: read(
      'EXECUTOR_KUBERNETES_IMAGE_PULL_SECRETS',
      z.string().transform((text, ctx) => {
        const names = text
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        const bad = names.find((n) => !DNS_SUBDOMAIN.test(n));
        if (bad) {
          ctx.addIssue({
            code: 'custom',
            message: `EXECUTOR_KUBERNETES_IMAGE_PULL_SECRETS: ${JSON.stringify(bad)} is not a Secret name; list names, e.g. regcred,mirror-cred`,
          });
          return z.NEVER;
        }
        return names;
      }),
      [],
    ),
    jobAnnotations: read(
      'EXECUTOR_KUBERNETES_JOB_ANNOTATIONS',
      json('EXECUTOR_KUBERNETES_JOB_ANNOTATIONS', z.record(labelKey, z.string()), '{"team":"ci"}'),
      {},
    ),
    podAnnotations: read(
      'EXECUTOR_KUBERNETES_JOB_POD_ANNOTATIONS',
      json(
        'EXECUTOR_KUBERNETES_JOB_POD_ANNOTATIONS',
        z.record(labelKey, z.string()),
        '{"cluster-autoscaler.kubernetes.io/safe-to-evict":"false"}',
      ),
      {},
    ),
    keepJobs: read('EXECUTOR_KUBERNETES_KEEP_JOBS', envBool('EXECUTOR_KUBERNETES_KEEP_JOBS'), false),
    jobDeadlineSeconds: opt(
      'EXECUTOR_KUBERNETES_JOB_DEADLINE',
      envDuration('EXECUTOR_KUBERNETES_JOB_DEADLINE', { min: 1_000, max: 30 * 86_400_000 }).transform((ms) =>
        Math.ceil(ms / 1000),
      ),
    ),
    volumeType: read(
      'EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE',
      z.enum(['emptyDir', 'pvc'], {
        error: () =>
          'EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE must be "emptyDir" (the node\'s disk) or "pvc" (a volume claim per job)',
      }),
      'emptyDir',
    ),
    volumeSizeBytes: opt(
      'EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE',
      quantity('EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE', 'memory').refine(
        (n) => n >= 2 ** 20,
        'EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE must be at least 1Mi',
      ),
    ),
    storageClass: opt('EXECUTOR_KUBERNETES_STORAGE_CLASS', name('EXECUTOR_KUBERNETES_STORAGE_CLASS')),
    additionalVolumes: read(
      'EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES',
      json(
        'EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES',
        z.array(volume),
        '[{"name":"cache","persistentVolumeClaim":{"claimName":"ci-cache"}}]',
      ),
      [],
    ),
    additionalVolumeMounts: read(
      'EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUME_MOUNTS',
      json(
        'EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUME_MOUNTS',
        z.array(volumeMount),
        '[{"name":"cache","mountPath":"/cache"}]',
      ),
      [],
    ),
    runAsUser: opt('EXECUTOR_KUBERNETES_RUN_AS_USER', id('EXECUTOR_KUBERNETES_RUN_AS_USER')),
    runAsGroup: opt('EXECUTOR_KUBERNETES_RUN_AS_GROUP', id('EXECUTOR_KUBERNETES_RUN_AS_GROUP')),
    fsGroup: opt('EXECUTOR_KUBERNETES_FS_GROUP', id('EXECUTOR_KUBERNETES_FS_GROUP')),
    stepImage: read(
      'EXECUTOR_KUBERNETES_JOB_STEP_IMAGE',
      image('EXECUTOR_KUBERNETES_JOB_STEP_IMAGE'),
      'alpine/git:latest',
    ),
    defaultImage: read(
      'EXECUTOR_KUBERNETES_DEFAULT_IMAGE',
      image('EXECUTOR_KUBERNETES_DEFAULT_IMAGE'),
      'busybox:latest',
    ),
    scheduleTimeoutMs: read(
      'EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT',
      envDuration('EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT', { min: 1_000, max: 86_400_000 }),
      5 * 60_000,
    ),
    terminationGracePeriodSeconds: read(
      'EXECUTOR_KUBERNETES_TERMINATION_GRACE_PERIOD',
      envDuration('EXECUTOR_KUBERNETES_TERMINATION_GRACE_PERIOD', { max: 3_600_000 }).transform((ms) =>
        Math.ceil(ms / 1000),
      ),
      10,
    ),
  };

  const volumes = new Set(options.additionalVolumes.map((v) => v.name));
  for (const mount of options.additionalVolumeMounts) {
    if (!volumes.has(mount.name))
      throw new ConfigError(
        `EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUME_MOUNTS names volume ${JSON.stringify(mount.name)}, which ` +
          'EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES does not define; add it there.',
      );
  }
  for (const v of volumes) {
    if (['workspace', 'dockhand'].includes(v))
      throw new ConfigError(
        `EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES: the name ${JSON.stringify(v)} is the runtime's own; choose another.`,
      );
  }
  if (options.requestCpus !== undefined && options.limitCpus !== undefined && options.requestCpus > options.limitCpus)
    throw new ConfigError(
      'EXECUTOR_KUBERNETES_RESOURCE_REQUEST_CPU is above EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU; a request cannot exceed its limit.',
    );
  if (
    options.requestMemoryBytes !== undefined &&
    options.limitMemoryBytes !== undefined &&
    options.requestMemoryBytes > options.limitMemoryBytes
  )
    throw new ConfigError(
      'EXECUTOR_KUBERNETES_RESOURCE_REQUEST_MEMORY is above EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY; a request cannot exceed its limit.',
    );
  return options;
}
