// Prometheus metrics. Gauges that describe stored state are read from the store at scrape time.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueStats, Store } from '../store/store.js';

/** An executor counts as online when it was heard from this recently (three missed 5 s heartbeats). */
export const EXECUTOR_ONLINE_WINDOW_MS = 15_000;

export class ServerMetrics {
  readonly registry = new Registry();
  readonly jobDuration: Histogram<'queue' | 'outcome'>;
  readonly queueWait: Histogram<'queue'>;
  readonly dequeueWait: Histogram<'result'>;
  readonly resets: Counter<'queue'>;
  readonly storageHealthy: Gauge;

  constructor(store: Store) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'dockhand_server_' });
    // prom-client collects all metrics of a scrape at once: the per-queue gauges share one query.
    let inFlight: Promise<QueueStats[]> | undefined;
    const queueStats = (): Promise<QueueStats[]> =>
      (inFlight ??= store.jobs.queueStats(Date.now()).finally(() => {
        inFlight = undefined;
      }));
    const perQueue = (name: string, help: string, value: (q: QueueStats, now: number) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['queue'],
        registers,
        async collect() {
          this.reset();
          const now = Date.now();
          for (const q of await queueStats()) this.set({ queue: q.queue }, value(q, now));
        },
      });
    };
    perQueue('dockhand_queue_depth', 'Jobs waiting in each queue', (q) => q.queued);
    perQueue('dockhand_queue_oldest_age_seconds', 'Age of the oldest waiting job in each queue', (q, now) =>
      q.oldestQueuedAt === null ? 0 : (now - q.oldestQueuedAt) / 1000,
    );
    perQueue('dockhand_jobs_processing', 'Jobs being run by executors, per queue', (q) => q.processing);
    new Gauge({
      name: 'dockhand_executors_online',
      help: `Executors heard from in the last ${EXECUTOR_ONLINE_WINDOW_MS / 1000}s`,
      registers,
      async collect() {
        const since = Date.now() - EXECUTOR_ONLINE_WINDOW_MS;
        this.set((await store.executors.listExecutors()).filter((e) => e.lastSeenAt >= since).length);
      },
    });
    this.jobDuration = new Histogram({
      name: 'dockhand_job_duration_seconds',
      help: 'Run time of finished jobs, from dequeue to the final report, by outcome',
      labelNames: ['queue', 'outcome'],
      registers,
      buckets: [0.1, 0.5, 1, 5, 15, 30, 60, 150, 300, 600, 1800, 3600],
    });
    this.queueWait = new Histogram({
      name: 'dockhand_job_queue_wait_seconds',
      help: 'Time from a job becoming available to an executor taking it',
      labelNames: ['queue'],
      registers,
      buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600],
    });
    this.dequeueWait = new Histogram({
      name: 'dockhand_dequeue_wait_seconds',
      help: 'How long dequeue requests were held, by result (job or empty)',
      labelNames: ['result'],
      registers,
      buckets: [0.001, 0.01, 0.1, 1, 5, 10, 20, 30],
    });
    this.storageHealthy = new Gauge({
      name: 'dockhand_storage_healthy',
      help: '1 while the database takes writes; 0 while new work is refused (see /healthz for why)',
      registers,
    });
    this.resets = new Counter({
      name: 'dockhand_job_resets_total',
      help: 'Jobs queued again because their executor stopped heartbeating',
      labelNames: ['queue'],
      registers,
    });
  }
}
