// The double's etcd + watch cache: stored objects, one global resourceVersion counter, and a bounded history of
// change events that watches replay from.
import { clone, type KubeObject } from './util.js';

export type Resource = 'jobs' | 'pods' | 'secrets' | 'persistentvolumeclaims' | 'events';
export const RESOURCES: readonly Resource[] = ['jobs', 'pods', 'secrets', 'persistentvolumeclaims', 'events'];

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  type: EventType;
  resource: Resource;
  /** The object as stored by this change (for DELETED: its last state, with the deletion's resourceVersion). */
  object: KubeObject;
  /** The object before this change (MODIFIED and DELETED), so selector watches can tell "stopped matching". */
  previous?: KubeObject;
  rv: number;
}

export type StoreListener = (event: StoreEvent) => void;

export class ObjectStore {
  private rv: number;
  private readonly objects = new Map<Resource, Map<string, KubeObject>>();
  private readonly history: StoreEvent[] = [];
  /** Events up to and including this resourceVersion may have left the history: older watches are expired. */
  private compactedThrough: number;
  private readonly listeners = new Set<StoreListener>();
  private readonly undelivered: StoreEvent[] = [];
  private delivering = false;

  constructor(
    private readonly historyLimit: number,
    firstResourceVersion = 1000,
  ) {
    this.rv = firstResourceVersion;
    this.compactedThrough = firstResourceVersion;
    for (const r of RESOURCES) this.objects.set(r, new Map());
  }

  get resourceVersion(): number {
    return this.rv;
  }

  /** The oldest resourceVersion a watch may still start from. */
  get oldestWatchable(): number {
    return this.compactedThrough;
  }

  get(resource: Resource, namespace: string, name: string): KubeObject | undefined {
    const obj = this.objects.get(resource)!.get(key(namespace, name));
    return obj && clone(obj);
  }

  /** Read-only view without copying; callers must not change it. */
  peek(resource: Resource, namespace: string, name: string): Readonly<KubeObject> | undefined {
    return this.objects.get(resource)!.get(key(namespace, name));
  }

  /** Objects in key order (namespace/name), as etcd lists them; copies unless `readOnly`. */
  list(resource: Resource, namespace?: string, readOnly = false): KubeObject[] {
    const out: KubeObject[] = [];
    const keys = [...this.objects.get(resource)!.keys()].sort();
    for (const k of keys) {
      const obj = this.objects.get(resource)!.get(k)!;
      if (namespace !== undefined && obj.metadata.namespace !== namespace) continue;
      out.push(readOnly ? obj : clone(obj));
    }
    return out;
  }

  findByUid(uid: string): { resource: Resource; object: Readonly<KubeObject> } | undefined {
    for (const [resource, objects] of this.objects) {
      for (const obj of objects.values()) if (obj.metadata.uid === uid) return { resource, object: obj };
    }
    return undefined;
  }

  create(resource: Resource, object: KubeObject): KubeObject {
    const k = key(object.metadata.namespace, object.metadata.name);
    if (this.objects.get(resource)!.has(k)) throw new Error(`store: ${resource} ${k} exists`);
    const stored = this.stamp(object);
    this.objects.get(resource)!.set(k, stored);
    this.record({ type: 'ADDED', resource, object: stored, rv: this.rv });
    return clone(stored);
  }

  /**
   * Replaces a stored object. An object that is being deleted, has no finalizers left and no grace period left is
   * removed instead (what the apiserver does when the last finalizer goes).
   */
  update(resource: Resource, object: KubeObject): { object: KubeObject; removed: boolean } {
    const k = key(object.metadata.namespace, object.metadata.name);
    const previous = this.objects.get(resource)!.get(k);
    if (!previous) throw new Error(`store: ${resource} ${k} does not exist`);
    const meta = object.metadata;
    if (meta.deletionTimestamp && (meta.finalizers ?? []).length === 0 && !(meta.deletionGracePeriodSeconds > 0)) {
      return { object: this.remove(resource, meta.namespace, meta.name, object)!, removed: true };
    }
    const stored = this.stamp(object);
    this.objects.get(resource)!.set(k, stored);
    this.record({ type: 'MODIFIED', resource, object: stored, previous, rv: this.rv });
    return { object: clone(stored), removed: false };
  }

  /** Removes an object now; `lastState` is what the DELETED event carries (default: the stored object). */
  remove(resource: Resource, namespace: string, name: string, lastState?: KubeObject): KubeObject | undefined {
    const k = key(namespace, name);
    const previous = this.objects.get(resource)!.get(k);
    if (!previous) return undefined;
    this.objects.get(resource)!.delete(k);
    const gone = this.stamp(lastState ?? previous);
    this.record({ type: 'DELETED', resource, object: gone, previous, rv: this.rv });
    return clone(gone);
  }

  /** The events after `rv`, or undefined when some of them have left the history (the watch is expired). */
  eventsSince(rv: number): StoreEvent[] | undefined {
    if (rv < this.compactedThrough) return undefined;
    return this.history.filter((e) => e.rv > rv);
  }

  /** Listeners run synchronously after each change, one change at a time and in resourceVersion order. */
  subscribe(listener: StoreListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private stamp(object: KubeObject): KubeObject {
    const copy = clone(object);
    copy.metadata.resourceVersion = String(++this.rv);
    return copy;
  }

  private record(event: StoreEvent): void {
    this.history.push(event);
    while (this.history.length > this.historyLimit) this.compactedThrough = this.history.shift()!.rv;
    this.undelivered.push(event);
    // A listener that changes the store while being told about a change gets that news after this one.
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.undelivered.length > 0) {
        const next = this.undelivered.shift()!;
        for (const listener of [...this.listeners]) {
          try {
            listener(next);
          } catch (err) {
            console.error('kube double: store listener failed', err);
          }
        }
      }
    } finally {
      this.delivering = false;
    }
  }
}

function key(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
