// Wake-ups: held requests wait on these instead of polling the store. A submitted job wakes waiting dequeues at
// once, stored output wakes log followers, a cancel wakes the executor's held heartbeat. They follow this replica's
// domain events and are relayed to the other replicas (relay.ts); waits are capped (`maxWaitMs`) so a wake-up lost
// while a replica's connection was down costs a few seconds, not a held request's whole wait.
import { EventEmitter } from 'node:events';
import type { DomainEvent, DomainEvents } from './domainEvents.js';

export interface Waiter {
  /** Resolves on the first event, after `timeoutMs`, or when `signal` aborts; true when an event came. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  cancel(): void;
}

/** One wake-up: a queue has a job to hand out, a job changed, a running job must stop (canceled or reset). */
export type Wakeup =
  | { type: 'queue'; queue: string }
  | { type: 'job'; id: number }
  | { type: 'interrupt'; id: number }
  /** A build changed or its log grew: its followers look again. */
  | { type: 'build'; id: number };

/** Whom an event wakes. */
export function wakeupsOf(event: DomainEvent): Wakeup[] {
  switch (event.type) {
    case 'job.submitted':
      return [{ type: 'queue', queue: event.queue }];
    case 'job.started':
    case 'job.output':
      return [{ type: 'job', id: event.jobId }];
    case 'job.cancelRequested':
      return [
        { type: 'interrupt', id: event.jobId },
        { type: 'job', id: event.jobId },
      ];
    case 'job.requeued':
      return [
        { type: 'queue', queue: event.queue },
        ...(event.cause === 'reset' ? [{ type: 'interrupt' as const, id: event.jobId }] : []),
        { type: 'job', id: event.jobId },
      ];
    case 'job.finished':
      // Finished by anything but its executor's own report: the executor, if any, must hear of it now.
      return [
        ...(event.cause !== 'report' ? [{ type: 'interrupt' as const, id: event.jobId }] : []),
        { type: 'job', id: event.jobId },
      ];
    case 'build.changed':
    case 'build.output':
      return [{ type: 'build', id: event.buildId }];
    case 'image.pushed':
    case 'executor.seen':
      return [];
  }
}

const WAKE_ALL = 'wake-all';

export class Wakeups {
  private readonly emitter = new EventEmitter();

  constructor(private readonly opts: { maxWaitMs?: number } = {}) {
    this.emitter.setMaxListeners(0);
  }

  /** Set by the replica relay: given each turn's wake-ups of this replica's events, once that turn is done. */
  relay?: (wakeups: Wakeup[]) => void;

  /** Wake-ups of this turn of the event loop, by name, to go out once it is done (see follow). */
  private pending = new Map<string, Wakeup>();

  /**
   * Wakes whom each of `events`' events concerns, here and (relay) on the other replicas, once the change's own
   * request has had its turn: a woken dequeue claims the job synchronously on SQLite, and would otherwise hold up the
   * answer to the submit that woke it. Repeats within one turn wake once, and a dequeue or a batch of reports that
   * changes hundreds of jobs costs the relay a few notifications, not one per job.
   */
  follow(events: DomainEvents): () => void {
    return events.subscribe((event) => {
      for (const wakeup of wakeupsOf(event)) {
        if (this.pending.size === 0) setImmediate(() => this.wakePending());
        this.pending.set(nameOf(wakeup), wakeup);
      }
    });
  }

  private wakePending(): void {
    const wakeups = [...this.pending.values()];
    this.pending = new Map();
    for (const wakeup of wakeups) this.wake(wakeup);
    this.relay?.(wakeups);
  }

  /** Wakes this replica's waiters (for a wake-up relayed from another replica, nothing is relayed back). */
  wake(wakeup: Wakeup): void {
    this.emitter.emit(nameOf(wakeup));
  }

  /** Wakes every waiter, e.g. after events may have been missed; each looks at the store again. */
  wakeAll(): void {
    this.emitter.emit(WAKE_ALL);
  }

  /** Subscribe before looking at the store, then wait: an event between the two is not lost. */
  watchQueues(queues: string[]): Waiter {
    return this.watch(queues.map((q) => `queue:${q}`));
  }

  watchJobs(jobIds: number[]): Waiter {
    return this.watch(jobIds.map((id) => `job:${id}`));
  }

  watchBuild(buildId: number): Waiter {
    return this.watch([`build:${buildId}`]);
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

function nameOf(wakeup: Wakeup): string {
  return wakeup.type === 'queue' ? `queue:${wakeup.queue}` : `${wakeup.type}:${wakeup.id}`;
}
