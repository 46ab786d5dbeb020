// Wake-ups: a submitted job wakes waiting dequeues at once, a log append wakes log followers, a cancel wakes the
// executor's held heartbeat. In one process they are events; across PostgreSQL replicas each event is also relayed
// (NOTIFY, see cluster.ts) and replayed on the other replicas' buses, and waits are capped (`maxWaitMs`) so a
// notification lost while a connection was down costs a few seconds, not a held request's whole wait.
import { EventEmitter } from 'node:events';

export interface Waiter {
  /** Resolves on the first event, after `timeoutMs`, or when `signal` aborts; true when an event came. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  cancel(): void;
}

/** One wake-up, as relayed between replicas. */
export type BusEvent =
  { type: 'queue'; queue: string } | { type: 'job'; id: number } | { type: 'interrupt'; id: number };

const WAKE_ALL = 'wake-all';

export class EventBus {
  private readonly emitter = new EventEmitter();
  /** Set by the cluster relay: called for every event published here. */
  relay?: (event: BusEvent) => void;

  constructor(private readonly opts: { maxWaitMs?: number } = {}) {
    this.emitter.setMaxListeners(0);
  }

  queueChanged(queue: string): void {
    this.publish({ type: 'queue', queue });
  }

  jobChanged(jobId: number): void {
    this.publish({ type: 'job', id: jobId });
  }

  /** A running job was canceled or taken back (reset): its executor should hear of it now. */
  jobInterrupted(jobId: number): void {
    this.publish({ type: 'interrupt', id: jobId });
    this.jobChanged(jobId);
  }

  /** An event from another replica: wake local waiters, relay nothing. */
  receive(event: BusEvent): void {
    this.emitter.emit(nameOf(event));
  }

  /** Wakes every waiter, e.g. after events may have been missed; each looks at the store again. */
  wakeAll(): void {
    this.emitter.emit(WAKE_ALL);
  }

  private publish(event: BusEvent): void {
    this.emitter.emit(nameOf(event));
    this.relay?.(event);
  }

  /** Subscribe before looking at the store, then wait: an event between the two is not lost. */
  watchQueues(queues: string[]): Waiter {
    return this.watch(queues.map((q) => `queue:${q}`));
  }

  watchJobs(jobIds: number[]): Waiter {
    return this.watch(jobIds.map((id) => `job:${id}`));
  }

  watchInterruptions(jobIds: number[]): Waiter {
    return this.watch(jobIds.map((id) => `interrupt:${id}`));
  }

  private watch(names: string[]): Waiter {
    let fired = false;
    let wake: (() => void) | undefined;
    const onEvent = (): void => {
      fired = true;
      wake?.();
    };
    const all = [...names, WAKE_ALL];
    for (const name of all) this.emitter.on(name, onEvent);
    const cancel = (): void => {
      for (const name of all) this.emitter.off(name, onEvent);
    };
    return {
      cancel,
      wait: (timeoutMs, signal) =>
        new Promise<boolean>((resolve) => {
          if (fired || signal?.aborted) {
            cancel();
            resolve(fired);
            return;
          }
          const finish = (): void => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', finish);
            cancel();
            resolve(fired);
          };
          const timer = setTimeout(finish, Math.max(0, Math.min(timeoutMs, this.opts.maxWaitMs ?? Infinity)));
          signal?.addEventListener('abort', finish, { once: true });
          wake = finish;
        }),
    };
  }
}

function nameOf(event: BusEvent): string {
  return event.type === 'queue' ? `queue:${event.queue}` : `${event.type}:${event.id}`;
}
