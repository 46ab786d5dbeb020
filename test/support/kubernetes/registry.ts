// The apiserver's registry: per-resource create/update/delete strategies (defaults, validation, generated names,
// finalizers, graceful deletion) on top of the object store.
import { admitPod, defaultPodSpec, qosClass } from './defaults.js';
import type { ObjectStore, Resource } from './objectStore.js';
import { applyPatch, JsonPatchError } from './patch.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import {
  alreadyExists,
  ApiError,
  badRequest,
  conflict,
  fieldErrors as fe,
  invalid,
  notFound,
  success,
  type FieldError,
  type StatusBody,
} from './status.js';
import { clone, isPlainObject, newUid, randomNameSuffix, sameJson, timestamp, type KubeObject } from './util.js';
import { validateJob, validatePod, validatePvc, validateSecret } from './validation.js';

export interface ResourceDef {
  resource: Resource;
  group: string;
  apiVersion: string;
  kind: string;
  singular: string;
  shortNames: string[];
  verbs: string[];
  /** Pods and PVCs answer DELETE with the object, the others with a Status once the object is gone. */
  returnDeletedObject: boolean;
  /** What DELETE does to dependents without a propagationPolicy: batch/v1 Jobs orphan them. */
  defaultPropagation: 'Orphan' | 'Background';
  fieldSelectors: readonly string[];
  fields(obj: KubeObject): Record<string, string>;
}

const meta = (o: KubeObject) => ({ 'metadata.name': o.metadata.name, 'metadata.namespace': o.metadata.namespace });

export const RESOURCE_DEFS: Record<Resource, ResourceDef> = {
  jobs: {
    resource: 'jobs',
    group: 'batch',
    apiVersion: 'batch/v1',
    kind: 'Job',
    singular: 'job',
    shortNames: [],
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    returnDeletedObject: false,
    defaultPropagation: 'Orphan',
    fieldSelectors: ['metadata.name', 'metadata.namespace', 'status.successful'],
    fields: (o) => ({ ...meta(o), 'status.successful': String(o.status?.succeeded ?? 0) }),
  },
  pods: {
    resource: 'pods',
    group: '',
    apiVersion: 'v1',
    kind: 'Pod',
    singular: 'pod',
    shortNames: ['po'],
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    returnDeletedObject: true,
    defaultPropagation: 'Background',
    fieldSelectors: [
      'metadata.name',
      'metadata.namespace',
      'spec.nodeName',
      'spec.restartPolicy',
      'spec.schedulerName',
      'spec.serviceAccountName',
      'spec.hostNetwork',
      'status.phase',
      'status.podIP',
      'status.nominatedNodeName',
    ],
    fields: (o) => ({
      ...meta(o),
      'spec.nodeName': o.spec?.nodeName ?? '',
      'spec.restartPolicy': o.spec?.restartPolicy ?? '',
      'spec.schedulerName': o.spec?.schedulerName ?? '',
      'spec.serviceAccountName': o.spec?.serviceAccountName ?? '',
      'spec.hostNetwork': String(o.spec?.hostNetwork ?? false),
      'status.phase': o.status?.phase ?? '',
      'status.podIP': o.status?.podIP ?? '',
      'status.nominatedNodeName': o.status?.nominatedNodeName ?? '',
    }),
  },
  secrets: {
    resource: 'secrets',
    group: '',
    apiVersion: 'v1',
    kind: 'Secret',
    singular: 'secret',
    shortNames: [],
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    returnDeletedObject: false,
    defaultPropagation: 'Background',
    fieldSelectors: ['metadata.name', 'metadata.namespace', 'type'],
    fields: (o) => ({ ...meta(o), type: o.type ?? '' }),
  },
  persistentvolumeclaims: {
    resource: 'persistentvolumeclaims',
    group: '',
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    singular: 'persistentvolumeclaim',
    shortNames: ['pvc'],
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    returnDeletedObject: true,
    defaultPropagation: 'Background',
    fieldSelectors: ['metadata.name', 'metadata.namespace'],
    fields: meta,
  },
  events: {
    resource: 'events',
    group: '',
    apiVersion: 'v1',
    kind: 'Event',
    singular: 'event',
    shortNames: ['ev'],
    verbs: ['create', 'delete', 'get', 'list', 'watch'],
    returnDeletedObject: false,
    defaultPropagation: 'Background',
    fieldSelectors: [
      'metadata.name',
      'metadata.namespace',
      'involvedObject.kind',
      'involvedObject.namespace',
      'involvedObject.name',
      'involvedObject.uid',
      'involvedObject.apiVersion',
      'involvedObject.fieldPath',
      'reason',
      'type',
    ],
    fields: (o) => ({
      ...meta(o),
      'involvedObject.kind': o.involvedObject?.kind ?? '',
      'involvedObject.namespace': o.involvedObject?.namespace ?? '',
      'involvedObject.name': o.involvedObject?.name ?? '',
      'involvedObject.uid': o.involvedObject?.uid ?? '',
      'involvedObject.apiVersion': o.involvedObject?.apiVersion ?? '',
      'involvedObject.fieldPath': o.involvedObject?.fieldPath ?? '',
      reason: o.reason ?? '',
      type: o.type ?? '',
    }),
  },
};

export const JOB_TRACKING_FINALIZER = 'batch.kubernetes.io/job-tracking';
export const PVC_PROTECTION_FINALIZER = 'kubernetes.io/pvc-protection';
export const JOB_DELETE_WARNING =
  'child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning';

export interface DeleteOptions {
  propagationPolicy?: string;
  gracePeriodSeconds?: number;
  orphanDependents?: boolean;
  preconditions?: { uid?: string; resourceVersion?: string };
}

export interface DeleteResult {
  body: KubeObject | StatusBody;
  warning?: string;
}

export class Registry {
  constructor(
    readonly store: ObjectStore,
    readonly namespaces: ReadonlySet<string>,
  ) {}

  def(resource: Resource): ResourceDef {
    return RESOURCE_DEFS[resource];
  }

  get(resource: Resource, namespace: string, name: string): KubeObject {
    const obj = this.store.get(resource, namespace, name);
    if (!obj) throw notFound(this.def(resource).group, resource, name);
    return obj;
  }

  /** A predicate for `labelSelector` and `fieldSelector` query values (400 when they do not parse). */
  matcher(resource: Resource, labelSelector?: string, fieldSelector?: string): (obj: KubeObject) => boolean {
    const def = this.def(resource);
    const labels = parseLabelSelector(labelSelector);
    const fields = parseFieldSelector(fieldSelector, def.fieldSelectors);
    return (obj) => labels(obj.metadata.labels ?? {}) && fields(def.fields(obj));
  }

  list(resource: Resource, namespace: string | undefined, matches: (obj: KubeObject) => boolean) {
    return {
      resourceVersion: String(this.store.resourceVersion),
      items: this.store.list(resource, namespace).filter(matches),
    };
  }

  create(resource: Resource, namespace: string, body: unknown): KubeObject {
    const def = this.def(resource);
    const obj = this.decode(def, body);
    const metadata = obj.metadata;
    if (metadata.namespace && metadata.namespace !== namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    if (!this.namespaces.has(namespace)) throw notFound('', 'namespaces', namespace);
    if (metadata.resourceVersion) throw badRequest('resourceVersion should not be set on objects to be created');
    for (const f of [
      'uid',
      'creationTimestamp',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'generation',
      'managedFields',
      'selfLink',
    ]) {
      delete metadata[f];
    }
    metadata.namespace = namespace;
    if (!metadata.name && metadata.generateName)
      metadata.name = this.generatedName(resource, namespace, metadata.generateName);
    metadata.uid = newUid();
    metadata.creationTimestamp = timestamp();
    const errors = this.prepareForCreate(resource, obj);
    if (errors.length) throw invalid(def.group, def.kind, metadata.name ?? '', errors);
    if (this.store.peek(resource, namespace, metadata.name)) throw alreadyExists(def.group, resource, metadata.name);
    return this.store.create(resource, obj);
  }

  /** PUT: replaces the object (not its status), with the resourceVersion as an optimistic-concurrency check. */
  replace(resource: Resource, namespace: string, name: string, body: unknown): KubeObject {
    const def = this.def(resource);
    const next = this.decode(def, body);
    if (next.metadata.name && next.metadata.name !== name) {
      throw badRequest(
        'the name of the object (' + next.metadata.name + ') does not match the name on the URL (' + name + ')',
      );
    }
    return this.updateFrom(resource, namespace, name, next);
  }

  patch(resource: Resource, namespace: string, name: string, contentType: string, patch: unknown): KubeObject {
    const current = this.get(resource, namespace, name);
    let next: KubeObject;
    try {
      next = applyPatch(current, contentType, patch);
    } catch (err) {
      if (err instanceof JsonPatchError) {
        throw new ApiError({
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `the server rejected our request due to an error in our request`,
          reason: 'Invalid',
          details: { causes: [{ reason: 'FieldValueInvalid', message: err.message }] },
          code: 422,
        });
      }
      throw err;
    }
    return this.updateFrom(resource, namespace, name, next);
  }

  private updateFrom(resource: Resource, namespace: string, name: string, next: KubeObject): KubeObject {
    const def = this.def(resource);
    const current = this.get(resource, namespace, name);
    const rv = next.metadata?.resourceVersion;
    if (rv && rv !== current.metadata.resourceVersion) {
      throw conflict(
        def.group,
        resource,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    }
    // Identity and server-owned metadata cannot change through an update.
    next.metadata = {
      ...next.metadata,
      name,
      namespace,
      uid: current.metadata.uid,
      creationTimestamp: current.metadata.creationTimestamp,
      ...(current.metadata.deletionTimestamp
        ? {
            deletionTimestamp: current.metadata.deletionTimestamp,
            deletionGracePeriodSeconds: current.metadata.deletionGracePeriodSeconds,
          }
        : {}),
    };
    if (!current.metadata.deletionTimestamp) {
      delete next.metadata.deletionTimestamp;
      delete next.metadata.deletionGracePeriodSeconds;
    }
    if ('status' in current) next.status = current.status;
    const errors = this.validateUpdate(resource, current, next);
    if (errors.length) throw invalid(def.group, def.kind, name, errors);
    if (resource === 'jobs' && !sameJson(current.spec, next.spec))
      next.metadata.generation = (current.metadata.generation ?? 1) + 1;
    if (
      sameJson(current, { ...next, metadata: { ...next.metadata, resourceVersion: current.metadata.resourceVersion } })
    ) {
      return current; // a no-op update writes nothing and keeps the resourceVersion
    }
    return this.store.update(resource, next).object;
  }

  /**
   * DELETE, per registry/generic/registry/store.go: dependents' propagation via finalizers (orphan /
   * foregroundDeletion), graceful deletion for pods, immediate removal otherwise.
   */
  delete(resource: Resource, namespace: string, name: string, options: DeleteOptions = {}): DeleteResult {
    const def = this.def(resource);
    const current = this.get(resource, namespace, name);
    const pre = options.preconditions ?? {};
    if (pre.uid && pre.uid !== current.metadata.uid) {
      throw conflict(
        def.group,
        resource,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    }
    if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion) {
      throw conflict(
        def.group,
        resource,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`,
      );
    }
    let policy = options.propagationPolicy;
    if (policy && !['Orphan', 'Background', 'Foreground'].includes(policy)) {
      throw invalid('meta.k8s.io', 'DeleteOptions', '', [
        fe.notSupported('propagationPolicy', policy, ['Foreground', 'Background', 'Orphan', 'nil']),
      ]);
    }
    if (!policy && options.orphanDependents !== undefined) policy = options.orphanDependents ? 'Orphan' : 'Background';
    const warning =
      !policy && resource === 'jobs' && !current.metadata.deletionTimestamp ? JOB_DELETE_WARNING : undefined;
    // Without a policy, an object already being deleted keeps its finalizers; a new deletion gets the default.
    if (!policy && !current.metadata.deletionTimestamp) policy = def.defaultPropagation;

    const next = clone(current);
    const finalizers = new Set<string>(next.metadata.finalizers ?? []);
    if (policy === 'Orphan') {
      finalizers.add('orphan');
      finalizers.delete('foregroundDeletion');
    }
    if (policy === 'Foreground') {
      finalizers.add('foregroundDeletion');
      finalizers.delete('orphan');
    }
    if (policy === 'Background') {
      finalizers.delete('orphan');
      finalizers.delete('foregroundDeletion');
    }
    next.metadata.finalizers = [...finalizers];
    if (next.metadata.finalizers.length === 0) delete next.metadata.finalizers;

    const grace = resource === 'pods' ? this.podGracePeriod(current, options.gracePeriodSeconds) : 0;
    const now = Date.now();
    if (current.metadata.deletionTimestamp) {
      // Already being deleted: a shorter grace period may replace the remaining one; grace 0 ends it now.
      const remaining = Math.max(0, Math.ceil((Date.parse(current.metadata.deletionTimestamp) - now) / 1000));
      if (resource === 'pods' && (grace < remaining || grace === 0)) {
        next.metadata.deletionTimestamp = timestamp(new Date(now + grace * 1000));
        next.metadata.deletionGracePeriodSeconds = grace;
      }
      if (sameJson(next, current)) return { body: current, warning };
      const { object } = this.store.update(resource, next);
      return { body: object, warning };
    }
    if (grace > 0 || finalizers.size > 0) {
      next.metadata.deletionTimestamp = timestamp(new Date(now + grace * 1000));
      next.metadata.deletionGracePeriodSeconds = grace;
      const { object, removed } = this.store.update(resource, next);
      if (!removed || def.returnDeletedObject) return { body: object, warning };
      return { body: success(def.group, resource, name, current.metadata.uid), warning };
    }
    const gone = this.store.remove(resource, namespace, name)!;
    return {
      body: def.returnDeletedObject ? gone : success(def.group, resource, name, current.metadata.uid),
      warning,
    };
  }

  /** Pods that never reached a node, or already finished, go at once (pod strategy CheckGracefulDelete). */
  private podGracePeriod(pod: KubeObject, requested: number | undefined): number {
    if (!pod.spec?.nodeName) return 0;
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return 0;
    const grace = requested ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
    return Math.max(0, grace);
  }

  /**
   * Read-modify-write for the double's controllers: `fn` changes a copy (or returns a replacement); nothing is
   * written when it changes nothing. Returns the stored object, or undefined when it does not exist (any more).
   */
  mutate(
    resource: Resource,
    namespace: string,
    name: string,
    fn: (obj: KubeObject) => KubeObject | void,
  ): KubeObject | undefined {
    const current = this.store.get(resource, namespace, name);
    if (!current) return undefined;
    const copy = clone(current);
    const next = fn(copy) ?? copy;
    if (sameJson(next, current)) return current;
    const { object, removed } = this.store.update(resource, next);
    return removed ? undefined : object;
  }

  /** Removes a finalizer; the object goes if it was being deleted and that was the last one. */
  removeFinalizer(resource: Resource, namespace: string, name: string, finalizer: string): void {
    this.mutate(resource, namespace, name, (obj) => {
      const rest = ((obj.metadata.finalizers ?? []) as string[]).filter((f) => f !== finalizer);
      if (rest.length) obj.metadata.finalizers = rest;
      else delete obj.metadata.finalizers;
    });
  }

  private decode(def: ResourceDef, body: unknown): KubeObject {
    if (!isPlainObject(body))
      throw badRequest(`${def.kind} in version "v1" cannot be handled as a ${def.kind}: the body is not a JSON object`);
    const obj = clone(body);
    if (obj.apiVersion !== undefined && obj.apiVersion !== def.apiVersion) {
      throw badRequest(
        `the API version in the data (${obj.apiVersion}) does not match the expected API version (${def.apiVersion})`,
      );
    }
    if (obj.kind !== undefined && obj.kind !== def.kind) {
      throw badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${def.kind})`);
    }
    obj.apiVersion = def.apiVersion;
    obj.kind = def.kind;
    if (!isPlainObject(obj.metadata)) obj.metadata = {};
    return obj;
  }

  private generatedName(resource: Resource, namespace: string, prefix: string): string {
    // generateName keeps at most 58 characters of the prefix so the name stays a valid label (63).
    const base = prefix.length > 58 ? prefix.slice(0, 58) : prefix;
    for (;;) {
      const name = base + randomNameSuffix();
      if (!this.store.peek(resource, namespace, name)) return name;
    }
  }

  private prepareForCreate(resource: Resource, obj: KubeObject): FieldError[] {
    switch (resource) {
      case 'jobs':
        return prepareJob(obj);
      case 'pods': {
        obj.spec ??= {};
        defaultPodSpec(obj.spec, 'Always');
        const errors = validatePod(obj);
        if (errors.length) return errors;
        admitPod(obj);
        obj.status = { phase: 'Pending', qosClass: qosClass(obj.spec) };
        return [];
      }
      case 'secrets':
        return prepareSecret(obj);
      case 'persistentvolumeclaims': {
        obj.spec ??= {};
        obj.spec.volumeMode ??= 'Filesystem';
        if (obj.spec.storageClassName === undefined) obj.spec.storageClassName = 'standard';
        const errors = validatePvc(obj);
        if (errors.length) return errors;
        obj.metadata.finalizers = [...new Set([...(obj.metadata.finalizers ?? []), PVC_PROTECTION_FINALIZER])];
        obj.status = { phase: 'Pending' };
        return [];
      }
      case 'events':
        return [];
    }
  }

  private validateUpdate(resource: Resource, current: KubeObject, next: KubeObject): FieldError[] {
    switch (resource) {
      case 'jobs': {
        const errors = validateJob(next, false);
        if (!sameJson(current.spec.selector, next.spec?.selector))
          errors.push(fe.invalid('spec.selector', next.spec?.selector, 'field is immutable'));
        if (!sameJson(current.spec.template, next.spec?.template)) {
          errors.push(fe.invalid('spec.template', next.spec?.template, 'field is immutable'));
        }
        for (const f of ['completions', 'completionMode', 'podReplacementPolicy']) {
          if (!sameJson(current.spec[f], next.spec?.[f]))
            errors.push(fe.invalid(`spec.${f}`, next.spec?.[f], 'field is immutable'));
        }
        return errors;
      }
      case 'pods': {
        // Pod updates may change images, activeDeadlineSeconds and tolerations (additions), nothing else.
        const scrub = (spec: KubeObject) => ({
          ...spec,
          containers: (spec.containers ?? []).map((c: KubeObject) => ({ ...c, image: '' })),
          initContainers: (spec.initContainers ?? []).map((c: KubeObject) => ({ ...c, image: '' })),
          activeDeadlineSeconds: undefined,
          tolerations: undefined,
        });
        if (!sameJson(scrub(current.spec), scrub(next.spec ?? {}))) {
          return [
            fe.forbidden(
              'spec',
              'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
            ),
          ];
        }
        return [];
      }
      case 'secrets': {
        if (current.immutable && (!sameJson(current.data, next.data) || !next.immutable)) {
          return [fe.forbidden('data', 'field is immutable when `immutable` is set')];
        }
        const errors = prepareSecretData(next);
        return errors.length ? errors : validateSecret(next);
      }
      case 'persistentvolumeclaims':
        if (!sameJson(current.spec, next.spec)) {
          return [
            fe.forbidden(
              'spec',
              'spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims',
            ),
          ];
        }
        return [];
      case 'events':
        return [];
    }
  }
}

/** Job defaults (strategy.go generateSelector and SetDefaults_Job) and validation. */
function prepareJob(job: KubeObject): FieldError[] {
  const uid = job.metadata.uid;
  const name = job.metadata.name ?? '';
  const ownLabelsWereEmpty = !job.metadata.labels || Object.keys(job.metadata.labels).length === 0;
  const spec = (job.spec ??= {});
  spec.parallelism ??= 1;
  spec.completions ??= 1;
  spec.backoffLimit ??= 6;
  spec.completionMode ??= 'NonIndexed';
  spec.suspend ??= false;
  spec.manualSelector ??= false;
  spec.podReplacementPolicy ??= 'TerminatingOrFailed';
  if (isPlainObject(spec.template)) {
    const tmeta = (spec.template.metadata ??= {});
    tmeta.labels = {
      ...(tmeta.labels ?? {}),
      'controller-uid': uid,
      'batch.kubernetes.io/controller-uid': uid,
      'job-name': name,
      'batch.kubernetes.io/job-name': name,
    };
    spec.selector = { matchLabels: { 'batch.kubernetes.io/controller-uid': uid } };
    if (ownLabelsWereEmpty) job.metadata.labels = { ...tmeta.labels };
    if (isPlainObject(spec.template.spec)) defaultPodSpec(spec.template.spec);
  }
  job.metadata.generation = 1;
  job.status = {};
  return validateJob(job, ownLabelsWereEmpty);
}

function prepareSecret(secret: KubeObject): FieldError[] {
  secret.type ??= 'Opaque';
  const errors = prepareSecretData(secret);
  return errors.length ? errors : validateSecret(secret);
}

/** stringData is write-only: merged into data (base64) over existing keys, never stored or echoed. */
function prepareSecretData(secret: KubeObject): FieldError[] {
  const data: Record<string, string> = { ...(secret.data ?? {}) };
  for (const [key, value] of Object.entries(data)) {
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 === 1) {
      throw badRequest(
        `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0 (key ${key})`,
      );
    }
  }
  for (const [key, value] of Object.entries((secret.stringData ?? {}) as Record<string, string>)) {
    data[key] = Buffer.from(String(value), 'utf8').toString('base64');
  }
  delete secret.stringData;
  if (Object.keys(data).length) secret.data = data;
  else delete secret.data;
  return [];
}
