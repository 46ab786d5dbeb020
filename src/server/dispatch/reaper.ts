// The reaper: jobs whose executor went silent are queued again (or failed after too many resets). The ledger
// emits the events that tell waiting executors and followers.
import type { ServerContext } from '../context.js';

export function startReaper(ctx: Omit<ServerContext, 'closing'>, startedAt: number): { stop(): void } {
  const { ledger, metrics, config, log } = ctx;
  const interval = Math.max(200, Math.min(5_000, Math.floor(config.stalledJobTimeoutMs / 5)));
  let running = false;
  // Silence while this server was down, or while its database was unreachable (heartbeats could not be stored),
  // is not the executors' fault: it counts only from when the server could hear them again.
  let notBefore = startedAt;
  let databaseFailed = false;
  const sweep = async (): Promise<void> => {
    if (running) return;
    running = true;
    try {
      // Heartbeats may not have been stored meanwhile: no sweep until the database takes writes again.
      if (ctx.storage.current) {
        databaseFailed = true;
        return;
      }
      if (databaseFailed) {
        notBefore = Date.now();
        databaseFailed = false;
      }
      const result = await ledger.resetStalled({
        now: Date.now(),
        timeoutMs: config.stalledJobTimeoutMs,
        maxResets: config.maxJobResets,
        notBefore,
      });
      for (const job of result.reset) {
        metrics.resets.inc({ queue: job.queue });
        log.warn(
          { jobId: job.id, attempt: job.attempt, executor: job.executorName },
          'job reset: its executor stopped sending heartbeats',
        );
      }
      for (const job of result.failed) {
        log.warn(
          { jobId: job.id, state: job.state, reason: job.failureReason, message: job.failureMessage },
          'stalled job finished',
        );
      }
    } catch (err) {
      databaseFailed = true;
      log.error({ err }, 'reaper sweep failed');
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void sweep(), interval);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
