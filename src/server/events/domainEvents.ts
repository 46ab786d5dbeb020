// Domain events: what changed, typed. The JobLedger (jobs/jobLedger.ts) emits them as each change is stored, so no
// caller can change a job and forget to say so; wake-ups (wakeups.ts) and any subsystem that reacts to jobs (builds,
// rollouts) subscribe here. They are this replica's own: other replicas hear of changes through the wake-ups they
// relay (relay.ts), and a subsystem that must not miss one keeps its state in the store, not in these.
import type { FailureReason } from '../../core/failureReasons.js';

export type FinishedState = 'completed' | 'failed' | 'canceled';

export type DomainEvent =
  | { type: 'job.submitted'; jobId: number; queue: string; namespace: string }
  /** An executor claimed the job: attempt `attempt` runs. */
  | { type: 'job.started'; jobId: number; queue: string; attempt: number; executorName: string }
  /** The running attempt stored more output. */
  | { type: 'job.output'; jobId: number; attempt: number }
  /** A user asked to stop a running job; its executor stops it and reports (a queued job is finished at once). */
  | { type: 'job.cancelRequested'; jobId: number; queue: string; attempt: number }
  /**
   * Queued again: after a retryable error (`error`), its executor's silence (`reset`: the attempt is void) or a
   * user's retry (`retry`).
   */
  | {
      type: 'job.requeued';
      jobId: number;
      queue: string;
      attempt: number;
      cause: 'error' | 'reset' | 'retry';
      availableAt: number;
    }
  /**
   * Reached a final state: by its executor's report (`report`), a user's cancel of a queued job (`cancel`), too many
   * resets (`stalled`), or secrets that could not be had when it was claimed (`unrunnable`).
   */
  | {
      type: 'job.finished';
      jobId: number;
      queue: string;
      attempt: number;
      state: FinishedState;
      reason: FailureReason | null;
      cause: 'report' | 'cancel' | 'stalled' | 'unrunnable';
    }
  /** A build changed phase, or was queued again (builds/buildManager.ts). */
  | { type: 'build.changed'; buildId: number; phase: string; final: boolean }
  /** A build's log grew. */
  | { type: 'build.output'; buildId: number }
  /** A build pushed a tag: the rollout watcher's input. */
  | {
      type: 'image.pushed';
      id: number;
      image: string;
      tag: string;
      digest: string;
      repository: string;
      commit: string | null;
      buildId: number | null;
    }
  /** An executor's heartbeat was recorded. */
  | { type: 'executor.seen'; name: string; hostname: string; runningJobs: number };

export type DomainEventType = DomainEvent['type'];

export type EventHandler = (event: DomainEvent) => void;

/**
 * The coordinator's event bus. Handlers run synchronously, in the order they subscribed, right after the change is
 * stored; one that throws is reported to `onError` and does not stop the others, nor the change's caller.
 */
export class DomainEvents {
  private readonly handlers = new Set<EventHandler>();

  constructor(private readonly onError: (err: unknown, event: DomainEvent) => void = () => {}) {}

  /** Calls `handler` for every event from now on; returns the unsubscribe. */
  subscribe(handler: EventHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  emit(event: DomainEvent): void {
    for (const handler of this.handlers) {
      try {
        handler(event);
      } catch (err) {
        this.onError(err, event);
      }
    }
  }
}
