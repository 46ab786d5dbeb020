// The build manager's Prometheus metrics, after Quay's (quay_build_fallback_total, quay_build_queue_duration_seconds,
// quay_build_duration_seconds, quay_build_ack_duration_seconds), on the server's registry.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Store } from '../../store/store.js';
import type { ControlPlane } from './planes/controlPlane.js';

export class BuildMetrics {
  readonly submitted: Counter;
  readonly started: Counter<'plane'>;
  readonly fallbacks: Counter<'plane' | 'reason'>;
  readonly expired: Counter<'plane'>;
  readonly finished: Counter<'outcome' | 'plane'>;
  readonly queueWait: Histogram;
  readonly registered: Histogram<'plane'>;
  readonly duration: Histogram<'outcome' | 'plane'>;

  constructor(registry: Registry, store: Store, planes: ControlPlane[] = []) {
    const registers = [registry];
    this.submitted = new Counter({ name: 'dockhand_builds_submitted_total', help: 'Builds submitted', registers });
    this.started = new Counter({
      name: 'dockhand_build_workers_started_total',
      help: 'Build workers started, by control plane',
      labelNames: ['plane'],
      registers,
    });
    this.fallbacks = new Counter({
      name: 'dockhand_build_fallbacks_total',
      help: 'Times a control plane was passed over for a try: it could not start a worker, or the try had too few tries left',
      labelNames: ['plane', 'reason'],
      registers,
    });
    this.expired = new Counter({
      name: 'dockhand_build_workers_expired_total',
      help: 'Workers that did not register in time or stopped heartbeating, by control plane',
      labelNames: ['plane'],
      registers,
    });
    this.finished = new Counter({
      name: 'dockhand_builds_finished_total',
      help: 'Builds that reached a final phase, by phase and the plane of their last worker',
      labelNames: ['outcome', 'plane'],
      registers,
    });
    this.queueWait = new Histogram({
      name: 'dockhand_build_queue_seconds',
      help: 'From submit to the claim that starts a worker',
      registers,
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    });
    this.registered = new Histogram({
      name: 'dockhand_build_worker_registration_seconds',
      help: 'From starting a worker to its registration, by control plane',
      labelNames: ['plane'],
      registers,
      buckets: [0.1, 0.5, 1, 2, 5, 15, 60, 300],
    });
    this.duration = new Histogram({
      name: 'dockhand_build_duration_seconds',
      help: 'From the first claim to the final phase, by phase and plane',
      labelNames: ['outcome', 'plane'],
      registers,
      buckets: [1, 5, 15, 30, 60, 150, 300, 600, 1800, 3600],
    });
    new Gauge({
      name: 'dockhand_build_plane_workers',
      help: 'Workers each control plane says it runs (containers, Jobs, processes, COUNT_COMMAND); -1 when it cannot say',
      labelNames: ['plane'],
      registers,
      async collect() {
        this.reset();
        await Promise.all(planes.map(async (p) => this.set({ plane: p.name }, await p.running().catch(() => -1))));
      },
    });
    new Gauge({
      name: 'dockhand_builds_running',
      help: 'Builds with a worker (what ALLOWED_WORKER_COUNT bounds)',
      registers,
      async collect() {
        this.set(await store.builds.activeCount());
      },
    });
  }
}
