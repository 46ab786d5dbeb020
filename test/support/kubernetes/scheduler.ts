// The scheduler for the double's single node: binds pods whose nodeSelector / required node affinity match the
// node and whose PVCs exist, and marks the others Unschedulable with the scheduler's messages.
import type { EventRecorder } from './events.js';
import type { ObjectStore } from './objectStore.js';
import type { Registry } from './registry.js';
import { timestamp, type KubeObject } from './util.js';
import { WorkQueue } from './controllerQueue.js';

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
}

const PREEMPTION = 'preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.';

export class Scheduler {
  private readonly queue = new WorkQueue('scheduler', (key) => this.schedule(key));
  private unsubscribe = () => {};

  constructor(
    private readonly registry: Registry,
    private readonly store: ObjectStore,
    private readonly events: EventRecorder,
    private readonly node: NodeInfo,
  ) {}

  start(): void {
    this.unsubscribe = this.store.subscribe((e) => {
      if (e.resource === 'pods' && e.type !== 'DELETED' && this.needsScheduling(e.object)) {
        this.queue.add(`${e.object.metadata.namespace}/${e.object.metadata.name}`);
      }
      // A PVC appearing (or going) may change what fits: look at the waiting pods again.
      if (e.resource === 'persistentvolumeclaims') {
        for (const pod of this.store.list('pods', e.object.metadata.namespace, true)) {
          if (this.needsScheduling(pod)) this.queue.add(`${pod.metadata.namespace}/${pod.metadata.name}`);
        }
      }
    });
  }

  stop(): void {
    this.unsubscribe();
    this.queue.close();
  }

  private needsScheduling(pod: KubeObject): boolean {
    if (pod.metadata.deletionTimestamp || pod.status?.phase !== 'Pending') return false;
    // A pod bound to another node never leaves Pending: nothing here runs it.
    return !pod.spec?.nodeName || pod.spec.nodeName !== this.node.name;
  }

  private schedule(key: string): void {
    const [namespace, name] = key.split('/');
    const pod = this.store.peek('pods', namespace, name);
    if (!pod || !this.needsScheduling(pod)) return;
    const problem = this.unschedulable(pod);
    if (problem) {
      const message = `0/1 nodes are available: ${problem}. ${PREEMPTION}`;
      const updated = this.registry.mutate('pods', namespace, name, (p) => {
        setCondition(p, { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message });
      });
      if (updated && updated.metadata.resourceVersion !== pod.metadata.resourceVersion) {
        this.events.record(updated, 'Warning', 'FailedScheduling', message, { component: 'default-scheduler' });
      }
      return;
    }
    // Bind: the binding subresource sets spec.nodeName and PodScheduled=True in one write.
    const bound = this.registry.mutate('pods', namespace, name, (p) => {
      p.spec.nodeName = this.node.name;
      setCondition(p, { type: 'PodScheduled', status: 'True' });
    });
    if (!bound) return;
    for (const claim of claimNames(bound)) this.bindClaim(namespace, claim);
    this.events.record(
      bound,
      'Normal',
      'Scheduled',
      `Successfully assigned ${namespace}/${name} to ${this.node.name}`,
      {
        component: 'default-scheduler',
      },
    );
  }

  /** Why the pod cannot go on the node, in the scheduler's words; undefined when it fits. */
  private unschedulable(pod: KubeObject): string | undefined {
    for (const claim of claimNames(pod)) {
      const pvc = this.store.peek('persistentvolumeclaims', pod.metadata.namespace, claim);
      if (!pvc) return `persistentvolumeclaim "${claim}" not found`;
      if (pvc.metadata.deletionTimestamp) return `persistentvolumeclaim "${claim}" is being deleted`;
    }
    if (pod.spec.nodeName && pod.spec.nodeName !== this.node.name)
      return "1 node(s) didn't match the requested node name";
    if (!nodeMatches(pod.spec, this.node)) return "1 node(s) didn't match Pod's node affinity/selector";
    return undefined;
  }

  /** WaitForFirstConsumer: the claim binds when its first pod is scheduled. */
  private bindClaim(namespace: string, claim: string): void {
    this.registry.mutate('persistentvolumeclaims', namespace, claim, (pvc) => {
      if (pvc.status?.phase === 'Bound') return;
      pvc.spec.volumeName = `pvc-${pvc.metadata.uid}`;
      pvc.metadata.annotations = {
        ...(pvc.metadata.annotations ?? {}),
        'pv.kubernetes.io/bind-completed': 'yes',
        'pv.kubernetes.io/bound-by-controller': 'yes',
        'volume.kubernetes.io/selected-node': this.node.name,
      };
      pvc.status = {
        phase: 'Bound',
        accessModes: pvc.spec.accessModes,
        capacity: { storage: pvc.spec.resources?.requests?.storage },
      };
    });
  }
}

export function claimNames(pod: KubeObject): string[] {
  return ((pod.spec?.volumes ?? []) as KubeObject[])
    .map((v) => v.persistentVolumeClaim?.claimName as string | undefined)
    .filter((c): c is string => !!c);
}

/** nodeSelector (all labels equal) and required node affinity (terms ORed, expressions within a term ANDed). */
export function nodeMatches(spec: KubeObject, node: NodeInfo): boolean {
  for (const [key, value] of Object.entries((spec.nodeSelector ?? {}) as Record<string, string>)) {
    if (node.labels[key] !== value) return false;
  }
  const required = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
  if (!required) return true;
  const terms = (required.nodeSelectorTerms ?? []) as KubeObject[];
  return terms.some((term) => {
    const exprs = (term.matchExpressions ?? []) as KubeObject[];
    const fields = (term.matchFields ?? []) as KubeObject[];
    // An empty term matches nothing.
    if (exprs.length === 0 && fields.length === 0) return false;
    return (
      exprs.every((e) => requirementMatches(e, node.labels)) &&
      fields.every((f) => f.key === 'metadata.name' && requirementMatches(f, { 'metadata.name': node.name }))
    );
  });
}

function requirementMatches(req: KubeObject, values: Record<string, string>): boolean {
  const has = Object.prototype.hasOwnProperty.call(values, req.key);
  const value = values[req.key];
  const list = (req.values ?? []) as string[];
  switch (req.operator) {
    case 'In':
      return has && list.includes(value);
    case 'NotIn':
      return !has || !list.includes(value);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    case 'Gt':
    case 'Lt': {
      // Both sides are integers (strconv.ParseInt); anything else does not match.
      if (!has || !/^-?\d+$/.test(value) || !/^-?\d+$/.test(list[0] ?? '')) return false;
      return req.operator === 'Gt' ? Number(value) > Number(list[0]) : Number(value) < Number(list[0]);
    }
    default:
      return false;
  }
}

/** Sets a pod condition, keeping lastTransitionTime when the status does not change. */
export function setCondition(
  pod: KubeObject,
  condition: { type: string; status: string; reason?: string; message?: string },
): void {
  pod.status ??= {};
  const conditions = (pod.status.conditions ??= []) as KubeObject[];
  const at = conditions.findIndex((c) => c.type === condition.type);
  const previous = at === -1 ? undefined : conditions[at];
  const next = {
    type: condition.type,
    status: condition.status,
    lastProbeTime: null,
    lastTransitionTime: previous && previous.status === condition.status ? previous.lastTransitionTime : timestamp(),
    ...(condition.reason ? { reason: condition.reason } : {}),
    ...(condition.message ? { message: condition.message } : {}),
  };
  if (at === -1) conditions.push(next);
  else conditions[at] = next;
}
