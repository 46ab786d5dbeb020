// The garbage collector: deletes objects whose owners (ownerReferences) are gone, and carries out the
// "orphan" and "foregroundDeletion" finalizers that DELETE's propagationPolicy puts on an owner.
import type { ObjectStore, Resource } from './objectStore.js';
import { RESOURCES } from './objectStore.js';
import type { Registry } from './registry.js';
import { ApiError } from './status.js';
import type { KubeObject } from './util.js';
import { WorkQueue } from './controllerQueue.js';

const RESOURCE_BY_KIND: Record<string, Resource> = {
  Job: 'jobs',
  Pod: 'pods',
  Secret: 'secrets',
  PersistentVolumeClaim: 'persistentvolumeclaims',
};

type OwnerState = 'present' | 'absent' | 'deletingInForeground' | 'unknown';

export class GarbageCollector {
  private readonly queue = new WorkQueue('garbage collector', (key) => this.process(key));
  private unsubscribe = () => {};

  constructor(
    private readonly registry: Registry,
    private readonly store: ObjectStore,
  ) {}

  start(): void {
    this.unsubscribe = this.store.subscribe((e) => {
      const { namespace, name, uid } = e.object.metadata;
      const here = `${e.resource}/${namespace}/${name}`;
      if (e.type !== 'DELETED' && (e.object.metadata.ownerReferences ?? []).length > 0)
        this.queue.add(`dependent:${here}`);
      if (e.type !== 'DELETED' && e.object.metadata.deletionTimestamp) this.queue.add(`owner:${here}`);
      // An owner waiting for its dependents (foreground deletion) looks again when one of them changes or goes.
      for (const ref of (e.object.metadata.ownerReferences ?? []) as KubeObject[]) {
        const ownerResource = RESOURCE_BY_KIND[ref.kind];
        if (ownerResource) this.queue.add(`owner:${ownerResource}/${namespace}/${ref.name}`);
      }
      // Whatever pointed at the object that changed may now have an owner gone or being deleted.
      if (e.type === 'DELETED' || e.object.metadata.deletionTimestamp) {
        for (const dep of this.dependentsOf(uid, namespace)) {
          this.queue.add(`dependent:${dep.resource}/${namespace}/${dep.object.metadata.name}`);
        }
      }
    });
  }

  stop(): void {
    this.unsubscribe();
    this.queue.close();
  }

  private process(key: string): void {
    const [role, resource, namespace, name] = key.split(/[:/]/) as [string, Resource, string, string];
    const obj = this.store.peek(resource, namespace, name);
    if (!obj) return;
    if (role === 'dependent') this.processDependent(resource, obj);
    else if (obj.metadata.deletionTimestamp) this.processOwner(resource, obj);
  }

  /** All owners gone: delete (in the background; pods gracefully). Some gone: drop those references. */
  private processDependent(resource: Resource, obj: Readonly<KubeObject>): void {
    const refs = (obj.metadata.ownerReferences ?? []) as KubeObject[];
    if (refs.length === 0) return;
    const states = refs.map((r) => this.ownerState(r, obj.metadata.namespace));
    const { namespace, name } = obj.metadata;
    if (states.every((s) => s === 'absent') || states.some((s) => s === 'deletingInForeground')) {
      if (!obj.metadata.deletionTimestamp) this.delete(resource, namespace, name, { propagationPolicy: 'Background' });
      return;
    }
    if (states.some((s) => s === 'absent')) {
      this.registry.mutate(resource, namespace, name, (o) => {
        o.metadata.ownerReferences = refs.filter((_, i) => states[i] !== 'absent');
      });
    }
  }

  private processOwner(resource: Resource, owner: Readonly<KubeObject>): void {
    const finalizers = (owner.metadata.finalizers ?? []) as string[];
    const { namespace, name, uid } = owner.metadata;
    if (finalizers.includes('orphan')) {
      for (const dep of this.dependentsOf(uid, namespace)) {
        this.registry.mutate(dep.resource, namespace, dep.object.metadata.name, (o) => {
          const rest = ((o.metadata.ownerReferences ?? []) as KubeObject[]).filter((r) => r.uid !== uid);
          if (rest.length) o.metadata.ownerReferences = rest;
          else delete o.metadata.ownerReferences;
        });
      }
      this.registry.removeFinalizer(resource, namespace, name, 'orphan');
      return;
    }
    if (finalizers.includes('foregroundDeletion')) {
      const dependents = this.dependentsOf(uid, namespace);
      for (const dep of dependents) {
        if (!dep.object.metadata.deletionTimestamp)
          this.delete(dep.resource, namespace, dep.object.metadata.name, { propagationPolicy: 'Background' });
      }
      // The owner waits only for dependents that block its deletion.
      const blocking = this.dependentsOf(uid, namespace).filter((d) =>
        ((d.object.metadata.ownerReferences ?? []) as KubeObject[]).some((r) => r.uid === uid && r.blockOwnerDeletion),
      );
      if (blocking.length === 0) this.registry.removeFinalizer(resource, namespace, name, 'foregroundDeletion');
    }
  }

  private ownerState(ref: KubeObject, namespace: string): OwnerState {
    const resource = RESOURCE_BY_KIND[ref.kind];
    // Kinds this API does not serve cannot be looked up; a real collector would not delete on that basis either.
    if (!resource) return 'unknown';
    const owner = this.store.peek(resource, namespace, ref.name);
    if (!owner || owner.metadata.uid !== ref.uid) return 'absent';
    if (owner.metadata.deletionTimestamp && (owner.metadata.finalizers ?? []).includes('foregroundDeletion')) {
      return 'deletingInForeground';
    }
    return 'present';
  }

  private dependentsOf(uid: string, namespace: string): { resource: Resource; object: Readonly<KubeObject> }[] {
    const out: { resource: Resource; object: Readonly<KubeObject> }[] = [];
    for (const resource of RESOURCES) {
      for (const object of this.store.list(resource, namespace, true)) {
        if (((object.metadata.ownerReferences ?? []) as KubeObject[]).some((r) => r.uid === uid))
          out.push({ resource, object });
      }
    }
    return out;
  }

  private delete(resource: Resource, namespace: string, name: string, options: { propagationPolicy: string }): void {
    try {
      this.registry.delete(resource, namespace, name, options);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }
}
