// In-process wake-ups: a submitted job wakes waiting dequeues at once, a log append wakes log followers,
// a cancel wakes the executor's held heartbeat. (Across PostgreSQL replicas, NOTIFY will feed the same bus.)
import { EventEmitter } from 'node:events';

export interface Waiter {
  /** Resolves on the first event, after `timeoutMs`, or when `signal` aborts; true when an event came. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  cancel(): void;
}

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  queueChanged(queue: string): void {
    this.emitter.emit(`queue:${queue}`);
  }

  jobChanged(jobId: number): void {
    this.emitter.emit(`job:${jobId}`);
  }

  /** A running job was canceled or taken back (reset): its executor should hear of it now. */
  jobInterrupted(jobId: number): void {
    this.emitter.emit(`interrupt:${jobId}`);
    this.jobChanged(jobId);
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
    for (const name of names) this.emitter.on(name, onEvent);
    const cancel = (): void => {
      for (const name of names) this.emitter.off(name, onEvent);
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
          const timer = setTimeout(finish, Math.max(0, timeoutMs));
          signal?.addEventListener('abort', finish, { once: true });
          wake = finish;
        }),
    };
  }
}
