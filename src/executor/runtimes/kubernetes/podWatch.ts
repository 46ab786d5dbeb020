// The pod of one Job, kept current by a list and a watch. A watch the server ends or the network drops is opened
// again from the last resourceVersion seen; one the server answers with 410 Gone (that version is compacted away)
// starts over with a fresh list. Readers wait for the next change with `changed()`.
import type { Logger } from 'pino';
import type { V1Pod } from '@kubernetes/client-node';
import type { Cluster } from './cluster.js';

/** How long to wait before watching again after a failure, growing to the last value. */
const RETRY_DELAYS_MS = [0, 250, 1_000, 2_000, 5_000];

export class PodWatch {
  private current?: V1Pod;
  /** The pod existed and was deleted (by a deadline, an eviction, the garbage collector, a person). */
  private deleted = false;
  private resourceVersion?: string;
  private relist = true;
  private failures = 0;
  private stopped = false;
  private controller?: AbortController;
  private waiters: (() => void)[] = [];
  private retryTimer?: NodeJS.Timeout;
  /** Watches opened after the first; the tests and the log read it. */
  reconnects = 0;

  constructor(
    private readonly cluster: Cluster,
    private readonly labelSelector: string,
    private readonly log: Logger,
  ) {}

  /** Lists once and starts watching; rejects when the first list fails (the API is unreachable or refuses). */
  async start(): Promise<void> {
    await this.list();
    void this.watch();
  }

  get pod(): V1Pod | undefined {
    return this.current;
  }

  get podDeleted(): boolean {
    return this.deleted;
  }

  /** Resolves at the next change of the pod (or of the watch's state), or when `signal` aborts. */
  changed(signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => done(), timeoutMs);
      // Whichever comes first: a waiter that timed out is taken off the list (a long step polls once a second).
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      if (signal?.aborted) return done();
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.push(done);
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.controller?.abort();
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private apply(pod: V1Pod): void {
    // A Job with backoffLimit 0 has one pod; should a second appear, the newest is the one that runs.
    if (this.current && pod.metadata?.name !== this.current.metadata?.name) {
      // A list gives Dates, a watch ISO strings: compare them as times.
      const time = (p: V1Pod) => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
      if (time(pod) < time(this.current)) return;
    }
    this.current = pod;
  }

  private async list(): Promise<void> {
    const list = await this.cluster.listPods(this.labelSelector);
    for (const pod of list.items) this.apply(pod);
    if (this.current && !list.items.some((p) => p.metadata?.name === this.current?.metadata?.name)) this.deleted = true;
    this.resourceVersion = list.metadata?.resourceVersion;
    this.relist = false;
    this.notify();
  }

  private async watch(): Promise<void> {
    if (this.stopped) return;
    try {
      if (this.relist) await this.list();
      if (this.stopped) return;
      let expired = false;
      const controller = await this.cluster.watchPods(
        { labelSelector: this.labelSelector, resourceVersion: this.resourceVersion },
        (type, object) => {
          if (type === 'ERROR') {
            // 410 Gone: the version we hold was compacted away; nothing after it can be replayed.
            if (object.code === 410) expired = true;
            else this.log.warn({ status: object.message }, 'pod watch: the server sent an error');
            return;
          }
          this.failures = 0;
          const rv = object.metadata?.resourceVersion;
          if (rv) this.resourceVersion = rv;
          if (type === 'BOOKMARK') return;
          if (type === 'DELETED') {
            if (object.metadata?.name === this.current?.metadata?.name) {
              this.current = object;
              this.deleted = true;
            }
          } else this.apply(object);
          this.notify();
        },
        (err: unknown) => {
          if (this.stopped) return;
          // After an error (a plain 410 among them) the list is taken again: what was missed is not replayed.
          if (expired || err) this.relist = true;
          if (err) this.failures++;
          this.reconnects++;
          const delay = RETRY_DELAYS_MS[Math.min(this.failures, RETRY_DELAYS_MS.length - 1)];
          if (err || expired)
            this.log.debug(
              { err: err ? String((err as Error).message ?? err) : undefined, expired, delay },
              'pod watch ended; watching again',
            );
          this.retryTimer = setTimeout(() => void this.watch(), delay);
        },
      );
      // Stopped while the watch was being opened: nothing else would end it.
      if (this.stopped) controller.abort();
      else this.controller = controller;
    } catch (err) {
      if (this.stopped) return;
      this.failures++;
      this.relist = true;
      this.log.warn({ err: (err as Error).message }, 'pod watch: could not list or watch; trying again');
      const delay = RETRY_DELAYS_MS[Math.min(this.failures, RETRY_DELAYS_MS.length - 1)];
      this.retryTimer = setTimeout(() => void this.watch(), delay);
    }
  }
}
