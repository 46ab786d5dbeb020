// Offline validation of Kubernetes objects, for the tests: what an API server would refuse on create, without a
// cluster. Two layers:
//
// 1. The OpenAPI schema of the object's kind, through the kubernetes-models package (Kubernetes 1.34 schemas,
//    compiled to validators): types, required properties, enums, quantity formats.
// 2. What the schema does not say and the API server checks in code: unknown fields (strict field validation, as
//    `kubectl apply --validate=strict` asks for), names and label syntax, a pod's containers and volumes, a Job's
//    restart policy, a Deployment's selector, RBAC rules and references, NetworkPolicy CIDRs, Secret and ConfigMap
//    keys and sizes.
//
// Unknown fields: kubernetes-models ships its schemas only as compiled validator code, not as JSON, so there is no
// schema to walk. Instead the object is handed to the validator behind a Proxy that records which properties the
// validator reads: the compiled code reads every property its schema declares (and enumerates maps), so a
// property the validator never read is one the schema does not know. An object the validator read nothing of is
// free-form in the schema (such as metadata.managedFields[].fieldsV1) or was never reached because its parent is
// of the wrong type (reported as such), and is not checked. The unit test checks this against every field that
// @kubernetes/client-node's models (generated from the same API version) know for each kind.
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Secret } from 'kubernetes-models/v1/Secret';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';

interface ModelClass {
  new (data: never): { validate(): void };
}

/** The kinds this validator knows, by `apiVersion/kind`. Anything else is refused. */
const MODELS: Record<string, ModelClass> = {
  'batch/v1/Job': Job,
  'v1/Pod': Pod,
  'v1/Secret': Secret,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'apps/v1/Deployment': Deployment,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

/** The kinds validateKubernetesObject knows, as `apiVersion/kind`. */
export const KNOWN_KINDS: readonly string[] = Object.keys(MODELS);

type Path = (string | number)[];
type Obj = Record<string, unknown>;

/**
 * What an API server would refuse in `obj` on create, one message per problem as `field.path: what is wrong`;
 * an empty list when it is valid. An object of a kind this validator does not know is an error.
 */
export function validateKubernetesObject(obj: unknown): string[] {
  if (!isObj(obj)) return [`the object must be a JSON object, not ${describe(obj)}`];
  const { apiVersion, kind } = obj;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string')
    return ['apiVersion and kind must be strings: the kind decides how the object is validated'];
  const Model = MODELS[`${apiVersion}/${kind}`];
  if (!Model)
    return [
      `kind ${kind} in apiVersion ${apiVersion} is not known to this validator (it knows ${KNOWN_KINDS.join(', ')}); ` +
        'add its model to test/support/kubernetes/validate.ts rather than let it through unchecked',
    ];
  const errors = [...schemaAndUnknownFields(Model, obj)];
  errors.push(...metadataErrors(kind, obj.metadata));
  const spec = obj.spec;
  switch (kind) {
    case 'Pod':
      if (isObj(spec)) errors.push(...podSpecErrors(spec, ['spec'], 'pod'));
      break;
    case 'Job':
      if (isObj(spec)) errors.push(...jobSpecErrors(spec));
      break;
    case 'Deployment':
      if (isObj(spec)) errors.push(...deploymentSpecErrors(spec));
      break;
    case 'Secret':
      errors.push(...secretErrors(obj));
      break;
    case 'ConfigMap':
      errors.push(...configMapErrors(obj));
      break;
    case 'PersistentVolumeClaim':
      errors.push(...claimErrors(spec));
      break;
    case 'Role':
      errors.push(...roleErrors(obj.rules));
      break;
    case 'RoleBinding':
      errors.push(...roleBindingErrors(obj));
      break;
    case 'NetworkPolicy':
      if (isObj(spec)) errors.push(...networkPolicyErrors(spec));
      break;
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Layer 1 and unknown fields

interface Reads {
  value: object;
  path: Path;
  read: Set<string>;
  listed: boolean;
}

/** `target` behind a Proxy that records, for it and every object reached through it, which properties were read. */
function recorded<T extends object>(target: T, path: Path, all: Reads[]): T {
  const reads: Reads = { value: target, path, read: new Set(), listed: false };
  all.push(reads);
  const children = new Map<string, object>();
  return new Proxy(target, {
    get(t, key, receiver) {
      const value: unknown = Reflect.get(t, key, receiver);
      if (typeof key !== 'string') return value;
      reads.read.add(key);
      if (value === null || typeof value !== 'object' || !Object.hasOwn(t, key)) return value;
      let child = children.get(key);
      if (!child) {
        child = recorded(value, [...path, Array.isArray(t) ? Number(key) : key], all);
        children.set(key, child);
      }
      return child;
    },
    has(t, key) {
      if (typeof key === 'string') reads.read.add(key);
      return Reflect.has(t, key);
    },
    ownKeys(t) {
      reads.listed = true;
      return Reflect.ownKeys(t);
    },
  });
}

function schemaAndUnknownFields(Model: ModelClass, obj: Obj): string[] {
  const all: Reads[] = [];
  // The model copies the object (dropping undefined values, as JSON would); its validate() runs the schema.
  const model = recorded(new Model(obj as never), [], all);
  const errors: string[] = [];
  try {
    model.validate();
  } catch (err) {
    const found = (err as { errors?: { instancePath?: string; message?: string }[] }).errors;
    if (!Array.isArray(found)) throw err;
    for (const e of found) {
      const path = (e.instancePath ?? '')
        .split('/')
        .slice(1)
        .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
        .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
      errors.push(`${fieldPath(path)}: ${e.message ?? 'is invalid'}`);
    }
  }
  for (const { value, path, read, listed } of all) {
    // Arrays are checked element by element; a map (enumerated by the validator) has no fixed keys; an object the
    // validator read nothing of is free-form in the schema, or sits under a value already reported as mistyped.
    if (Array.isArray(value) || listed || read.size === 0) continue;
    for (const key of Object.keys(value)) {
      if (!read.has(key)) errors.push(`${fieldPath([...path, key])}: unknown field "${key}"`);
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Names and labels

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

type NameRule = (name: string) => string | undefined;

const dnsLabel: NameRule = (name) =>
  name.length > 63
    ? `must be no more than 63 characters (it has ${name.length})`
    : DNS_LABEL.test(name)
      ? undefined
      : 'must be a lowercase RFC 1123 label: a-z, 0-9 and "-", starting and ending with a letter or digit';

const dnsSubdomain: NameRule = (name) =>
  name.length > 253
    ? `must be no more than 253 characters (it has ${name.length})`
    : DNS_SUBDOMAIN.test(name)
      ? undefined
      : 'must be a lowercase RFC 1123 subdomain: a-z, 0-9, "-" and ".", starting and ending with a letter or digit';

/** RBAC objects' names only have to be usable as one segment of a URL path. */
const pathSegment: NameRule = (name) =>
  name === '.' || name === '..'
    ? 'may not be "." or ".."'
    : /[/%]/.test(name)
      ? 'may not contain "/" or "%"'
      : undefined;

/** A Job's name also becomes the value of its pods' job-name label, so it must fit in one. */
const jobName: NameRule = (name) => dnsSubdomain(name) ?? (name.length > 63 ? labelValue(name) : undefined);

const NAME_RULES: Record<string, NameRule> = {
  Namespace: dnsLabel,
  Job: jobName,
  Role: pathSegment,
  RoleBinding: pathSegment,
};

function labelValue(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63) return `must be no more than 63 characters (it has ${value.length})`;
  return LABEL_NAME.test(value)
    ? undefined
    : 'must be empty or consist of letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
}

/** A label or annotation key: an optional DNS subdomain prefix and "/", then a name of at most 63 characters. */
function qualifiedName(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const [prefix, name] = slash < 0 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)];
  if (prefix !== undefined) {
    if (prefix === '') return 'has an empty prefix before "/"';
    const bad = dnsSubdomain(prefix);
    if (bad) return `has a prefix that ${bad}`;
  }
  if (name === '') return 'has an empty name';
  if (name.length > 63) return `has a name longer than 63 characters (${name.length})`;
  return LABEL_NAME.test(name)
    ? undefined
    : 'must be a name of letters, digits, "-", "_" and ".", starting and ending with a letter or digit, with an optional DNS subdomain prefix and "/"';
}

function labelsErrors(labels: unknown, path: Path): string[] {
  if (!isObj(labels)) return [];
  const errors: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    const badKey = qualifiedName(key);
    if (badKey) errors.push(`${fieldPath(path)}: label key ${JSON.stringify(key)} ${badKey}`);
    if (typeof value !== 'string') continue; // reported by the schema
    const badValue = labelValue(value);
    if (badValue) errors.push(`${fieldPath([...path, key])}: label value ${JSON.stringify(value)} ${badValue}`);
  }
  return errors;
}

const MAX_ANNOTATIONS_BYTES = 256 * 1024;

function metadataErrors(kind: string, metadata: unknown): string[] {
  const errors: string[] = [];
  if (!isObj(metadata)) return ['metadata.name: required (or metadata.generateName)'];
  const rule = NAME_RULES[kind] ?? dnsSubdomain;
  const { name, generateName, namespace } = metadata;
  if (typeof name === 'string' && name !== '') {
    const bad = rule(name);
    if (bad) errors.push(`metadata.name: ${JSON.stringify(name)} ${bad}`);
  } else if (typeof generateName === 'string' && generateName !== '') {
    // The server appends five characters; a trailing "-" before them is allowed.
    const bad = rule(generateName.replace(/-$/, 'a'));
    if (bad) errors.push(`metadata.generateName: ${JSON.stringify(generateName)} ${bad}`);
  } else {
    errors.push('metadata.name: required (or metadata.generateName)');
  }
  if (namespace !== undefined) {
    if (kind === 'Namespace') errors.push('metadata.namespace: not allowed on a cluster-scoped object');
    else if (typeof namespace === 'string') {
      const bad = dnsLabel(namespace);
      if (bad) errors.push(`metadata.namespace: ${JSON.stringify(namespace)} ${bad}`);
    }
  }
  errors.push(...objectMetaErrors(metadata, ['metadata']));
  return errors;
}

/** Labels and annotations, for an object's metadata and a pod template's. */
function objectMetaErrors(metadata: unknown, path: Path): string[] {
  if (!isObj(metadata)) return [];
  const errors = labelsErrors(metadata.labels, [...path, 'labels']);
  if (isObj(metadata.annotations)) {
    let bytes = 0;
    for (const [key, value] of Object.entries(metadata.annotations)) {
      const bad = qualifiedName(key);
      if (bad) errors.push(`${fieldPath([...path, 'annotations'])}: annotation key ${JSON.stringify(key)} ${bad}`);
      bytes += Buffer.byteLength(key) + (typeof value === 'string' ? Buffer.byteLength(value) : 0);
    }
    if (bytes > MAX_ANNOTATIONS_BYTES)
      errors.push(`${fieldPath([...path, 'annotations'])}: ${bytes} bytes, more than the 256 KiB annotations may hold`);
  }
  return errors;
}

function selectorErrors(selector: unknown, path: Path): string[] {
  if (!isObj(selector)) return [];
  const errors = labelsErrors(selector.matchLabels, [...path, 'matchLabels']);
  list(selector.matchExpressions).forEach((expr, i) => {
    if (!isObj(expr)) return;
    const at = [...path, 'matchExpressions', i];
    if (typeof expr.key === 'string') {
      const bad = qualifiedName(expr.key);
      if (bad) errors.push(`${fieldPath([...at, 'key'])}: ${JSON.stringify(expr.key)} ${bad}`);
    }
    const values = list(expr.values);
    if ((expr.operator === 'In' || expr.operator === 'NotIn') && values.length === 0)
      errors.push(`${fieldPath([...at, 'values'])}: required for operator ${expr.operator}`);
    else if ((expr.operator === 'Exists' || expr.operator === 'DoesNotExist') && values.length > 0)
      errors.push(`${fieldPath([...at, 'values'])}: must be empty for operator ${expr.operator}`);
    else if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(String(expr.operator)))
      errors.push(`${fieldPath([...at, 'operator'])}: must be In, NotIn, Exists or DoesNotExist`);
  });
  return errors;
}

function selectorMatches(selector: Obj, labels: Obj): boolean {
  const matchLabels = isObj(selector.matchLabels) ? selector.matchLabels : {};
  for (const [key, value] of Object.entries(matchLabels)) if (labels[key] !== value) return false;
  for (const expr of list(selector.matchExpressions)) {
    if (!isObj(expr) || typeof expr.key !== 'string') continue;
    const has = Object.hasOwn(labels, expr.key);
    const inValues = has && list(expr.values).includes(labels[expr.key]);
    const ok =
      expr.operator === 'In'
        ? inValues
        : expr.operator === 'NotIn'
          ? !inValues
          : expr.operator === 'Exists'
            ? has
            : expr.operator === 'DoesNotExist'
              ? !has
              : false;
    if (!ok) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Pods

/** A Kubernetes quantity as a number ("500m" is 0.5, "1Ki" 1024, "1e3" 1000); undefined when it is not one. */
export function parseQuantity(text: string): number | undefined {
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([numkMGTPE])|[eE]([+-]?\d+))?$/.exec(text);
  if (!match) return undefined;
  const [, number, binary, decimal, exponent] = match;
  const factor = binary
    ? 2 ** (10 * (['Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'].indexOf(binary) + 1))
    : decimal
      ? 10 ** { n: -9, u: -6, m: -3, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 }[decimal]!
      : exponent
        ? 10 ** Number(exponent)
        : 1;
  return Number(number) * factor;
}

type PodKind = 'pod' | 'job' | 'deployment';

function podSpecErrors(spec: Obj, path: Path, owner: PodKind): string[] {
  const errors: string[] = [];
  const at = (...rest: Path) => fieldPath([...path, ...rest]);

  // Volumes: named once each, with exactly one source.
  const volumes = new Set<string>();
  list(spec.volumes).forEach((volume, i) => {
    if (!isObj(volume) || typeof volume.name !== 'string') return;
    const bad = dnsLabel(volume.name);
    if (bad) errors.push(`${at('volumes', i, 'name')}: ${JSON.stringify(volume.name)} ${bad}`);
    if (volumes.has(volume.name)) errors.push(`${at('volumes', i, 'name')}: duplicate volume ${volume.name}`);
    volumes.add(volume.name);
    const sources = Object.keys(volume).filter((k) => k !== 'name');
    if (sources.length !== 1)
      errors.push(
        `${at('volumes', i)}: must have exactly one volume source (has ${sources.length ? sources.join(', ') : 'none'})`,
      );
  });

  // Containers: at least one regular container; every name a DNS label, unique across all kinds of container.
  const containerLists = ['initContainers', 'containers', 'ephemeralContainers'] as const;
  if (list(spec.containers).length === 0) errors.push(`${at('containers')}: at least one container is required`);
  const names = new Map<string, string>();
  for (const field of containerLists) {
    list(spec[field]).forEach((container, i) => {
      if (!isObj(container)) return;
      errors.push(...containerErrors(container, [...path, field, i], volumes, field !== 'ephemeralContainers'));
      if (typeof container.name !== 'string') return;
      const first = names.get(container.name);
      if (first) errors.push(`${at(field, i, 'name')}: duplicate container name ${container.name} (also ${first})`);
      else names.set(container.name, at(field, i));
    });
  }

  const restart = spec.restartPolicy;
  if (owner === 'job' && restart !== 'Never' && restart !== 'OnFailure')
    errors.push(
      `${at('restartPolicy')}: ${restart === undefined ? 'required' : JSON.stringify(restart)}: ` +
        "a Job's pod must have restartPolicy Never or OnFailure",
    );
  if (owner === 'deployment' && restart !== undefined && restart !== 'Always')
    errors.push(
      `${at('restartPolicy')}: ${JSON.stringify(restart)}: a Deployment's pod must have restartPolicy Always`,
    );
  if (typeof spec.activeDeadlineSeconds === 'number' && spec.activeDeadlineSeconds < 1)
    errors.push(`${at('activeDeadlineSeconds')}: must be at least 1`);
  if (typeof spec.terminationGracePeriodSeconds === 'number' && spec.terminationGracePeriodSeconds < 0)
    errors.push(`${at('terminationGracePeriodSeconds')}: must not be negative`);
  return errors;
}

function containerErrors(container: Obj, path: Path, volumes: Set<string>, needsImage: boolean): string[] {
  const errors: string[] = [];
  const at = (...rest: Path) => fieldPath([...path, ...rest]);
  if (typeof container.name === 'string') {
    const bad = dnsLabel(container.name);
    if (bad) errors.push(`${at('name')}: ${JSON.stringify(container.name)} ${bad}`);
  }
  if (needsImage && (typeof container.image !== 'string' || container.image.trim() === ''))
    errors.push(`${at('image')}: required`);

  const mountPaths = new Set<string>();
  list(container.volumeMounts).forEach((mount, i) => {
    if (!isObj(mount)) return;
    if (typeof mount.name === 'string' && !volumes.has(mount.name))
      errors.push(
        `${at('volumeMounts', i, 'name')}: volume ${JSON.stringify(mount.name)} is not among the pod's volumes`,
      );
    if (typeof mount.mountPath !== 'string') return;
    if (mountPaths.has(mount.mountPath))
      errors.push(`${at('volumeMounts', i, 'mountPath')}: ${mount.mountPath} is mounted twice`);
    mountPaths.add(mount.mountPath);
  });

  list(container.env).forEach((env, i) => {
    if (!isObj(env) || typeof env.name !== 'string') return;
    if (env.name === '' || env.name.includes('=') || !/^[\x20-\x7e]+$/.test(env.name))
      errors.push(`${at('env', i, 'name')}: ${JSON.stringify(env.name)} must be printable ASCII without "="`);
    if (env.value !== undefined && env.valueFrom !== undefined)
      errors.push(`${at('env', i)}: may not have both value and valueFrom`);
  });

  list(container.ports).forEach((port, i) => {
    if (!isObj(port) || typeof port.containerPort !== 'number') return;
    if (port.containerPort < 1 || port.containerPort > 65535)
      errors.push(`${at('ports', i, 'containerPort')}: ${port.containerPort} is not between 1 and 65535`);
  });

  // Each request at most its limit (a request without a limit is fine).
  const resources = isObj(container.resources) ? container.resources : {};
  const limits = isObj(resources.limits) ? resources.limits : {};
  const requests = isObj(resources.requests) ? resources.requests : {};
  for (const [resource, request] of Object.entries(requests)) {
    const limit = limits[resource];
    if (typeof request !== 'string' || typeof limit !== 'string') continue;
    const [r, l] = [parseQuantity(request), parseQuantity(limit)];
    if (r !== undefined && l !== undefined && r > l)
      errors.push(`${at('resources', 'requests', resource)}: ${request} is more than its limit ${limit}`);
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Workloads

function nonNegative(spec: Obj, path: Path, fields: string[], min = 0): string[] {
  return fields
    .filter((f) => typeof spec[f] === 'number' && (spec[f] as number) < min)
    .map((f) => `${fieldPath([...path, f])}: must be at least ${min}`);
}

function jobSpecErrors(spec: Obj): string[] {
  const errors = [
    ...nonNegative(spec, ['spec'], ['backoffLimit', 'parallelism', 'completions', 'ttlSecondsAfterFinished']),
    ...nonNegative(spec, ['spec'], ['activeDeadlineSeconds'], 1),
  ];
  if (spec.selector !== undefined && spec.manualSelector !== true)
    errors.push('spec.selector: the server makes a Job\'s selector; set it only with "manualSelector: true"');
  const template = isObj(spec.template) ? spec.template : {};
  errors.push(...objectMetaErrors(template.metadata, ['spec', 'template', 'metadata']));
  if (isObj(template.spec)) errors.push(...podSpecErrors(template.spec, ['spec', 'template', 'spec'], 'job'));
  return errors;
}

function deploymentSpecErrors(spec: Obj): string[] {
  const errors = [
    ...nonNegative(spec, ['spec'], ['replicas', 'minReadySeconds', 'revisionHistoryLimit']),
    ...selectorErrors(spec.selector, ['spec', 'selector']),
  ];
  const template = isObj(spec.template) ? spec.template : {};
  const metadata = isObj(template.metadata) ? template.metadata : {};
  const labels = isObj(metadata.labels) ? metadata.labels : {};
  if (isObj(spec.selector)) {
    const terms =
      (isObj(spec.selector.matchLabels) ? Object.keys(spec.selector.matchLabels).length : 0) +
      list(spec.selector.matchExpressions).length;
    if (terms === 0) errors.push('spec.selector: must not be empty');
    else if (!selectorMatches(spec.selector, labels))
      errors.push("spec.template.metadata.labels: do not match the Deployment's spec.selector");
  }
  if (isObj(spec.strategy) && spec.strategy.type === 'Recreate' && spec.strategy.rollingUpdate !== undefined)
    errors.push('spec.strategy.rollingUpdate: may not be set with strategy type Recreate');
  errors.push(...objectMetaErrors(template.metadata, ['spec', 'template', 'metadata']));
  if (isObj(template.spec)) errors.push(...podSpecErrors(template.spec, ['spec', 'template', 'spec'], 'deployment'));
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets, ConfigMaps, claims

const MAX_DATA_BYTES = 2 ** 20;

function keyErrors(map: unknown, path: Path): string[] {
  if (!isObj(map)) return [];
  return Object.keys(map)
    .filter((key) => key.length > 253 || !CONFIG_KEY.test(key) || key === '.' || key === '..')
    .map(
      (key) =>
        `${fieldPath(path)}: key ${JSON.stringify(key)} must be letters, digits, "-", "_" and "." (not "." or "..")`,
    );
}

function stringBytes(map: unknown, decode: (s: string) => number): number {
  if (!isObj(map)) return 0;
  return Object.values(map).reduce<number>((sum, v) => sum + (typeof v === 'string' ? decode(v) : 0), 0);
}

function secretErrors(secret: Obj): string[] {
  const errors = [...keyErrors(secret.data, ['data']), ...keyErrors(secret.stringData, ['stringData'])];
  const bytes =
    stringBytes(secret.data, (s) => Buffer.from(s, 'base64').length) +
    stringBytes(secret.stringData, (s) => Buffer.byteLength(s));
  if (bytes > MAX_DATA_BYTES) errors.push(`data: ${bytes} bytes, more than the 1 MiB a Secret may hold`);
  const keys = new Set([
    ...Object.keys(isObj(secret.data) ? secret.data : {}),
    ...Object.keys(isObj(secret.stringData) ? secret.stringData : {}),
  ]);
  const required: Record<string, string> = {
    'kubernetes.io/dockerconfigjson': '.dockerconfigjson',
    'kubernetes.io/dockercfg': '.dockercfg',
    'kubernetes.io/tls': 'tls.crt',
  };
  const key = typeof secret.type === 'string' ? required[secret.type] : undefined;
  if (key && !keys.has(key)) errors.push(`data[${key}]: required for a Secret of type ${String(secret.type)}`);
  return errors;
}

function configMapErrors(map: Obj): string[] {
  const errors = [...keyErrors(map.data, ['data']), ...keyErrors(map.binaryData, ['binaryData'])];
  if (isObj(map.data) && isObj(map.binaryData)) {
    for (const key of Object.keys(map.data))
      if (Object.hasOwn(map.binaryData, key)) errors.push(`data[${key}]: also in binaryData; a key may be in only one`);
  }
  const bytes =
    stringBytes(map.data, (s) => Buffer.byteLength(s)) +
    stringBytes(map.binaryData, (s) => Buffer.from(s, 'base64').length);
  if (bytes > MAX_DATA_BYTES) errors.push(`data: ${bytes} bytes, more than the 1 MiB a ConfigMap may hold`);
  return errors;
}

function claimErrors(spec: unknown): string[] {
  if (!isObj(spec)) return ['spec: required'];
  const errors: string[] = [];
  if (list(spec.accessModes).length === 0) errors.push('spec.accessModes: at least one access mode is required');
  const resources = isObj(spec.resources) ? spec.resources : {};
  const requests = isObj(resources.requests) ? resources.requests : {};
  if (typeof requests.storage !== 'string' && typeof requests.storage !== 'number')
    errors.push('spec.resources.requests.storage: required');
  else if ((parseQuantity(String(requests.storage)) ?? 0) <= 0)
    errors.push('spec.resources.requests.storage: must be more than zero');
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC

function roleErrors(rules: unknown): string[] {
  const errors: string[] = [];
  list(rules).forEach((rule, i) => {
    if (!isObj(rule)) return;
    const at = (field: string) => fieldPath(['rules', i, field]);
    if (list(rule.verbs).length === 0) errors.push(`${at('verbs')}: at least one verb is required`);
    if (rule.nonResourceURLs !== undefined) errors.push(`${at('nonResourceURLs')}: not allowed in a namespaced Role`);
    if (rule.apiGroups === undefined || list(rule.apiGroups).length === 0)
      errors.push(`${at('apiGroups')}: resource rules must name at least one API group ("" is the core group)`);
    if (list(rule.resources).length === 0) errors.push(`${at('resources')}: at least one resource is required`);
  });
  return errors;
}

function roleBindingErrors(binding: Obj): string[] {
  const errors: string[] = [];
  const ref = binding.roleRef;
  // A missing roleRef is the schema's to report.
  if (isObj(ref)) {
    if (ref.apiGroup !== 'rbac.authorization.k8s.io')
      errors.push('roleRef.apiGroup: must be rbac.authorization.k8s.io');
    if (ref.kind !== 'Role' && ref.kind !== 'ClusterRole') errors.push('roleRef.kind: must be Role or ClusterRole');
    if (typeof ref.name === 'string') {
      const bad = ref.name === '' ? 'is required' : pathSegment(ref.name);
      if (bad) errors.push(`roleRef.name: ${bad}`);
    }
  }
  list(binding.subjects).forEach((subject, i) => {
    if (!isObj(subject)) return;
    const at = (field: string) => fieldPath(['subjects', i, field]);
    if (subject.kind === 'ServiceAccount') {
      if (subject.apiGroup !== undefined && subject.apiGroup !== '')
        errors.push(`${at('apiGroup')}: must be "" for a ServiceAccount`);
      const bad = typeof subject.name === 'string' ? dnsSubdomain(subject.name) : undefined;
      if (bad) errors.push(`${at('name')}: ${JSON.stringify(subject.name)} ${bad}`);
    } else if (subject.kind === 'User' || subject.kind === 'Group') {
      if (subject.apiGroup !== 'rbac.authorization.k8s.io')
        errors.push(`${at('apiGroup')}: must be rbac.authorization.k8s.io for a ${subject.kind}`);
    } else {
      errors.push(`${at('kind')}: must be ServiceAccount, User or Group`);
    }
  });
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// NetworkPolicy

/** A CIDR as [address, prefix, family], or undefined when it is not one. */
function parseCidr(text: string): [string, number, 'ipv4' | 'ipv6'] | undefined {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!match) return undefined;
  const [, address, bits] = match;
  const prefix = Number(bits);
  if (isIPv4(address) && prefix <= 32) return [address, prefix, 'ipv4'];
  if (isIPv6(address) && prefix <= 128) return [address, prefix, 'ipv6'];
  return undefined;
}

function ipBlockErrors(block: unknown, path: Path): string[] {
  if (!isObj(block) || typeof block.cidr !== 'string') return [];
  const outer = parseCidr(block.cidr);
  if (!outer) return [`${fieldPath([...path, 'cidr'])}: ${JSON.stringify(block.cidr)} is not a CIDR`];
  const within = new BlockList();
  within.addSubnet(...outer);
  const errors: string[] = [];
  list(block.except).forEach((text, i) => {
    const inner = typeof text === 'string' ? parseCidr(text) : undefined;
    if (!inner) errors.push(`${fieldPath([...path, 'except', i])}: ${JSON.stringify(text)} is not a CIDR`);
    else if (inner[2] !== outer[2] || inner[1] < outer[1] || !within.check(inner[0], inner[2]))
      errors.push(`${fieldPath([...path, 'except', i])}: ${String(text)} is not inside ${block.cidr}`);
  });
  return errors;
}

function networkPolicyErrors(spec: Obj): string[] {
  const errors = selectorErrors(spec.podSelector, ['spec', 'podSelector']);
  if (spec.podSelector === undefined) errors.push('spec.podSelector: required ({} selects every pod)');
  list(spec.policyTypes).forEach((type, i) => {
    if (type !== 'Ingress' && type !== 'Egress')
      errors.push(`${fieldPath(['spec', 'policyTypes', i])}: ${JSON.stringify(type)} must be Ingress or Egress`);
  });
  for (const [direction, peersField] of [
    ['ingress', 'from'],
    ['egress', 'to'],
  ] as const) {
    list(spec[direction]).forEach((rule, i) => {
      if (!isObj(rule)) return;
      list(rule[peersField]).forEach((peer, j) => {
        if (!isObj(peer)) return;
        const at: Path = ['spec', direction, i, peersField, j];
        if (peer.ipBlock !== undefined && (peer.podSelector !== undefined || peer.namespaceSelector !== undefined))
          errors.push(`${fieldPath(at)}: ipBlock may not be combined with podSelector or namespaceSelector`);
        if (peer.ipBlock === undefined && peer.podSelector === undefined && peer.namespaceSelector === undefined)
          errors.push(`${fieldPath(at)}: must have an ipBlock, a podSelector or a namespaceSelector`);
        errors.push(...ipBlockErrors(peer.ipBlock, [...at, 'ipBlock']));
        errors.push(...selectorErrors(peer.podSelector, [...at, 'podSelector']));
        errors.push(...selectorErrors(peer.namespaceSelector, [...at, 'namespaceSelector']));
      });
      list(rule.ports).forEach((port, j) => {
        if (!isObj(port) || port.protocol === undefined) return;
        if (!['TCP', 'UDP', 'SCTP'].includes(String(port.protocol)))
          errors.push(`${fieldPath(['spec', direction, i, 'ports', j, 'protocol'])}: must be TCP, UDP or SCTP`);
      });
    });
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function isObj(value: unknown): value is Obj {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
}

/** A path as Kubernetes writes field paths: spec.containers[0].name, metadata.labels[example.com/x]. */
function fieldPath(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(part)) out += out ? `.${part}` : part;
    else out += `[${part}]`;
  }
  return out || '(the object)';
}
