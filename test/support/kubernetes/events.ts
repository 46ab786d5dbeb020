// core/v1 Events, as the controllers and the kubelet record them: repeats of the same event bump `count`.
import type { ObjectStore } from './objectStore.js';
import { newUid, timestamp, type KubeObject } from './util.js';

export interface EventSource {
  component: string;
  host?: string;
}

export class EventRecorder {
  private readonly byKey = new Map<string, string>();
  private lastNanos = 0n;

  constructor(private readonly store: ObjectStore) {}

  record(
    involved: KubeObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
    source: EventSource,
    fieldPath?: string,
  ): void {
    const namespace = involved.metadata.namespace as string;
    const key = [involved.metadata.uid, fieldPath ?? '', reason, message, source.component].join('\u0000');
    const now = timestamp();
    const existing = this.byKey.get(key);
    const current = existing ? this.store.get('events', namespace, existing) : undefined;
    if (current) {
      current.count = (current.count ?? 1) + 1;
      current.lastTimestamp = now;
      this.store.update('events', current);
      return;
    }
    // client-go's recorder names events `<object>.<unix nanoseconds in hex>`, so names sort by time.
    let nanos = BigInt(Date.now()) * 1_000_000n;
    if (nanos <= this.lastNanos) nanos = this.lastNanos + 1n;
    this.lastNanos = nanos;
    const name = `${involved.metadata.name}.${nanos.toString(16)}`;
    this.byKey.set(key, name);
    this.store.create('events', {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace, uid: newUid(), creationTimestamp: now },
      involvedObject: {
        kind: involved.kind,
        namespace,
        name: involved.metadata.name,
        uid: involved.metadata.uid,
        apiVersion: involved.apiVersion,
        resourceVersion: involved.metadata.resourceVersion,
        ...(fieldPath ? { fieldPath } : {}),
      },
      reason,
      message,
      source: source.host ? { component: source.component, host: source.host } : { component: source.component },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      type,
      eventTime: null,
      reportingComponent: source.component,
      reportingInstance: source.host ?? '',
    });
  }
}
