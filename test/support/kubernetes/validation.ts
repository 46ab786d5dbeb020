// The server-side validation that schemas miss (pkg/apis/*/validation), answered as 422 Invalid causes.
import { parseQuantity } from './quantity.js';
import { fieldErrors as fe, type FieldError } from './status.js';
import { isPlainObject, type KubeObject } from './util.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

const MSG_SUBDOMAIN =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const MSG_LABEL =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const MSG_LABEL_VALUE =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const MSG_ENV_NAME =
  "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
const MSG_CONFIG_KEY =
  "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

export function validateSubdomain(value: string, field: string): FieldError[] {
  const out: FieldError[] = [];
  if (value.length > 253) out.push(fe.invalid(field, value, 'must be no more than 253 characters'));
  if (!DNS1123_SUBDOMAIN.test(value)) out.push(fe.invalid(field, value, MSG_SUBDOMAIN));
  return out;
}

function validateDnsLabel(value: string, field: string): FieldError[] {
  const out: FieldError[] = [];
  if (value.length > 63) out.push(fe.invalid(field, value, 'must be no more than 63 characters'));
  if (!DNS1123_LABEL.test(value)) out.push(fe.invalid(field, value, MSG_LABEL));
  return out;
}

/** ValidateObjectMeta for namespaced objects named as DNS subdomains. */
export function validateObjectMeta(meta: KubeObject): FieldError[] {
  const out: FieldError[] = [];
  if (!meta.name) out.push(fe.required('metadata.name', 'name or generateName is required'));
  else out.push(...validateSubdomain(meta.name, 'metadata.name'));
  out.push(...validateLabels(meta.labels, 'metadata.labels'));
  return out;
}

export function validateLabels(labels: unknown, field: string): FieldError[] {
  const out: FieldError[] = [];
  if (labels === undefined || labels === null) return out;
  if (!isPlainObject(labels)) return [fe.invalid(field, labels, 'must be a map of strings')];
  for (const [key, value] of Object.entries(labels)) {
    const name = key.slice(key.lastIndexOf('/') + 1);
    if (!QUALIFIED_NAME.test(name) || name.length > 63) {
      out.push(
        fe.invalid(
          field,
          key,
          "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
      );
    }
    const v = String(value);
    if (v.length > 63) out.push(fe.invalid(field, v, 'must be no more than 63 characters'));
    if (!LABEL_VALUE.test(v)) out.push(fe.invalid(field, v, MSG_LABEL_VALUE));
  }
  return out;
}

const VOLUME_SOURCES = [
  'emptyDir',
  'secret',
  'persistentVolumeClaim',
  'hostPath',
  'configMap',
  'projected',
  'downwardAPI',
  'ephemeral',
];

/** ValidatePodSpec, the parts that matter here. `path` is where the spec sits ("spec" or "spec.template.spec"). */
export function validatePodSpec(spec: KubeObject | undefined, path: string, allowedRestartPolicies: string[]) {
  const out: FieldError[] = [];
  if (!isPlainObject(spec)) return [fe.required(path)];

  const volumeNames = new Set<string>();
  ((spec.volumes ?? []) as KubeObject[]).forEach((v, i) => {
    const field = `${path}.volumes[${i}]`;
    if (!v.name) out.push(fe.required(`${field}.name`));
    else {
      out.push(...validateDnsLabel(v.name, `${field}.name`));
      if (volumeNames.has(v.name)) out.push(fe.duplicate(`${field}.name`, v.name));
      volumeNames.add(v.name);
    }
    const sources = VOLUME_SOURCES.filter((s) => v[s] !== undefined);
    if (sources.length === 0) out.push(fe.required(field, 'must specify a volume type'));
    if (sources.length > 1) out.push(fe.forbidden(`${field}.${sources[1]}`, 'may not specify more than 1 volume type'));
    if (isPlainObject(v.secret) && !v.secret.secretName) out.push(fe.required(`${field}.secret.secretName`));
    if (isPlainObject(v.persistentVolumeClaim) && !v.persistentVolumeClaim.claimName) {
      out.push(fe.required(`${field}.persistentVolumeClaim.claimName`));
    }
    if (
      isPlainObject(v.emptyDir) &&
      v.emptyDir.sizeLimit !== undefined &&
      parseQuantity(v.emptyDir.sizeLimit) === undefined
    ) {
      out.push(
        fe.invalid(
          `${field}.emptyDir.sizeLimit`,
          v.emptyDir.sizeLimit,
          "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),
      );
    }
  });

  const restartPolicy = spec.restartPolicy;
  if (!restartPolicy)
    out.push(
      fe.required(`${path}.restartPolicy`, `valid values: ${allowedRestartPolicies.map((p) => `"${p}"`).join(', ')}`),
    );
  else if (!allowedRestartPolicies.includes(restartPolicy)) {
    out.push(fe.notSupported(`${path}.restartPolicy`, restartPolicy, allowedRestartPolicies));
  }

  const containerNames = new Set<string>();
  const checkContainers = (list: unknown, kind: 'initContainers' | 'containers') => {
    if (list === undefined && kind === 'initContainers') return;
    if (!Array.isArray(list) || (kind === 'containers' && list.length === 0)) {
      if (kind === 'containers') out.push(fe.required(`${path}.containers`));
      return;
    }
    (list as KubeObject[]).forEach((c, i) => {
      const field = `${path}.${kind}[${i}]`;
      out.push(...validateContainer(c, field, containerNames, volumeNames));
    });
  };
  checkContainers(spec.initContainers, 'initContainers');
  checkContainers(spec.containers, 'containers');

  for (const f of ['activeDeadlineSeconds'] as const) {
    if (spec[f] !== undefined && !(Number.isInteger(spec[f]) && spec[f] >= 1)) {
      out.push(fe.invalid(`${path}.${f}`, spec[f], 'must be between 1 and 2147483647, inclusive'));
    }
  }
  if (spec.terminationGracePeriodSeconds !== undefined && !(spec.terminationGracePeriodSeconds >= 0)) {
    out.push(
      fe.invalid(
        `${path}.terminationGracePeriodSeconds`,
        spec.terminationGracePeriodSeconds,
        'must be greater than or equal to 0',
      ),
    );
  }
  return out;
}

function validateContainer(c: KubeObject, field: string, names: Set<string>, volumes: Set<string>): FieldError[] {
  const out: FieldError[] = [];
  if (!c.name) out.push(fe.required(`${field}.name`));
  else {
    out.push(...validateDnsLabel(c.name, `${field}.name`));
    if (names.has(c.name)) out.push(fe.duplicate(`${field}.name`, c.name));
    names.add(c.name);
  }
  if (!c.image || String(c.image).trim() === '') out.push(fe.required(`${field}.image`));
  if (c.imagePullPolicy && !['Always', 'IfNotPresent', 'Never'].includes(c.imagePullPolicy)) {
    out.push(fe.notSupported(`${field}.imagePullPolicy`, c.imagePullPolicy, ['Always', 'IfNotPresent', 'Never']));
  }
  ((c.env ?? []) as KubeObject[]).forEach((e, i) => {
    if (!e.name) out.push(fe.required(`${field}.env[${i}].name`));
    else if (!ENV_NAME.test(e.name)) out.push(fe.invalid(`${field}.env[${i}].name`, e.name, MSG_ENV_NAME));
  });
  const mountPaths = new Set<string>();
  ((c.volumeMounts ?? []) as KubeObject[]).forEach((m, i) => {
    const mf = `${field}.volumeMounts[${i}]`;
    if (!m.name) out.push(fe.required(`${mf}.name`));
    else if (!volumes.has(m.name)) out.push(fe.notFound(`${mf}.name`, m.name));
    if (!m.mountPath) out.push(fe.required(`${mf}.mountPath`));
    else {
      if (mountPaths.has(m.mountPath)) out.push(fe.invalid(`${mf}.mountPath`, m.mountPath, 'must be unique'));
      mountPaths.add(m.mountPath);
    }
    if (typeof m.subPath === 'string' && (m.subPath.startsWith('/') || m.subPath.split('/').includes('..'))) {
      out.push(fe.invalid(`${mf}.subPath`, m.subPath, "must be a relative path without '..'"));
    }
  });
  for (const kind of ['limits', 'requests'] as const) {
    const values = (c.resources?.[kind] ?? {}) as Record<string, unknown>;
    for (const [r, q] of Object.entries(values)) {
      if (parseQuantity(q) === undefined) {
        out.push(
          fe.invalid(
            `${field}.resources.${kind}[${r}]`,
            q,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
          ),
        );
      }
    }
  }
  for (const r of ['cpu', 'memory']) {
    const req = parseQuantity(c.resources?.requests?.[r]);
    const lim = parseQuantity(c.resources?.limits?.[r]);
    if (req !== undefined && lim !== undefined && req > lim) {
      out.push(
        fe.invalid(
          `${field}.resources.requests`,
          String(c.resources.requests[r]),
          `must be less than or equal to ${r} limit of ${c.resources.limits[r]}`,
        ),
      );
    }
  }
  return out;
}

/** ValidateJob: object meta, the generated labels, the spec and its pod template. */
export function validateJob(job: KubeObject, ownLabelsWereEmpty: boolean): FieldError[] {
  const out = validateObjectMeta({ ...job.metadata, labels: ownLabelsWereEmpty ? undefined : job.metadata.labels });
  const spec = job.spec;
  if (!isPlainObject(spec)) return [...out, fe.required('spec')];
  for (const f of ['parallelism', 'completions', 'backoffLimit'] as const) {
    if (spec[f] !== undefined && !(Number.isInteger(spec[f]) && spec[f] >= 0)) {
      out.push(fe.invalid(`spec.${f}`, spec[f], 'must be greater than or equal to 0'));
    }
  }
  if (
    spec.activeDeadlineSeconds !== undefined &&
    !(Number.isInteger(spec.activeDeadlineSeconds) && spec.activeDeadlineSeconds >= 0)
  ) {
    out.push(
      fe.invalid('spec.activeDeadlineSeconds', spec.activeDeadlineSeconds, 'must be greater than or equal to 0'),
    );
  }
  if (
    spec.ttlSecondsAfterFinished !== undefined &&
    !(Number.isInteger(spec.ttlSecondsAfterFinished) && spec.ttlSecondsAfterFinished >= 0)
  ) {
    out.push(
      fe.invalid('spec.ttlSecondsAfterFinished', spec.ttlSecondsAfterFinished, 'must be greater than or equal to 0'),
    );
  }
  if (spec.completionMode && spec.completionMode !== 'NonIndexed') {
    out.push(fe.notSupported('spec.completionMode', spec.completionMode, ['NonIndexed']));
  }
  const template = spec.template;
  if (!isPlainObject(template)) return [...out, fe.required('spec.template')];
  // The job name is copied into the template's labels, whose values are capped at 63 characters.
  out.push(...validateLabels(template.metadata?.labels, 'spec.template.labels'));
  if (ownLabelsWereEmpty) out.push(...validateLabels(job.metadata.labels, 'metadata.labels'));
  out.push(...validatePodSpec(template.spec, 'spec.template.spec', ['OnFailure', 'Never']));
  return out;
}

export function validatePod(pod: KubeObject): FieldError[] {
  return [...validateObjectMeta(pod.metadata), ...validatePodSpec(pod.spec, 'spec', ['Always', 'OnFailure', 'Never'])];
}

export function validateSecret(secret: KubeObject): FieldError[] {
  const out = validateObjectMeta(secret.metadata);
  let total = 0;
  for (const [key, value] of Object.entries((secret.data ?? {}) as Record<string, string>)) {
    if (!CONFIG_KEY.test(key)) out.push(fe.invalid(`data[${key}]`, key, MSG_CONFIG_KEY));
    total += Buffer.from(value, 'base64').length;
  }
  if (total > 1024 * 1024) out.push(fe.tooLong('data', 1024 * 1024));
  return out;
}

export function validatePvc(pvc: KubeObject): FieldError[] {
  const out = validateObjectMeta(pvc.metadata);
  const spec = pvc.spec ?? {};
  const modes = ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'];
  if (!Array.isArray(spec.accessModes) || spec.accessModes.length === 0) {
    out.push(fe.required('spec.accessModes', 'at least 1 access mode is required'));
  } else {
    for (const m of spec.accessModes as string[])
      if (!modes.includes(m)) out.push(fe.notSupported('spec.accessModes', m, modes));
  }
  const storage = spec.resources?.requests?.storage;
  if (storage === undefined) out.push(fe.required('spec.resources[storage]'));
  else if (!(parseQuantity(storage)! > 0))
    out.push(fe.invalid('spec.resources[storage]', storage, 'must be greater than zero'));
  return out;
}
