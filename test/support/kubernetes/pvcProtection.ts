// The PVC protection controller: a claim being deleted keeps its kubernetes.io/pvc-protection finalizer (and so
// lingers) while any pod that has not finished uses it.
import type { ObjectStore } from './objectStore.js';
import { PVC_PROTECTION_FINALIZER, type Registry } from './registry.js';
import { claimNames } from './scheduler.js';
import { WorkQueue } from './controllerQueue.js';

export class PvcProtectionController {
  private readonly queue = new WorkQueue('pvc protection', (key) => this.check(key));
  private unsubscribe = () => {};

  constructor(
    private readonly registry: Registry,
    private readonly store: ObjectStore,
  ) {}

  start(): void {
    this.unsubscribe = this.store.subscribe((e) => {
      if (e.resource === 'persistentvolumeclaims' && e.type !== 'DELETED' && e.object.metadata.deletionTimestamp) {
        this.queue.add(`${e.object.metadata.namespace}/${e.object.metadata.name}`);
      }
      if (e.resource === 'pods') {
        for (const claim of claimNames(e.object)) this.queue.add(`${e.object.metadata.namespace}/${claim}`);
      }
    });
  }

  stop(): void {
    this.unsubscribe();
    this.queue.close();
  }

  private check(key: string): void {
    const [namespace, name] = key.split('/');
    const pvc = this.store.peek('persistentvolumeclaims', namespace, name);
    if (!pvc?.metadata.deletionTimestamp || !pvc.metadata.finalizers?.includes(PVC_PROTECTION_FINALIZER)) return;
    const inUse = this.store
      .list('pods', namespace, true)
      .some((p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed' && claimNames(p).includes(name));
    if (!inUse) this.registry.removeFinalizer('persistentvolumeclaims', namespace, name, PVC_PROTECTION_FINALIZER);
  }
}
