// What every long-running command shares: its logger's loader, its signals, and how a setup error ends it.
import type { Logger } from 'pino';
import { ConfigError } from '../core/envConfig.js';

// Everything else is imported where it is needed: an executor then loads no server, store or web module (fastify,
// pg, better-sqlite3, …), which is most of its memory (BENCHMARKS.md, bench:memory).
export const loadPino = async (): Promise<typeof import('pino')> => (await import('pino')).default;

export const DRAIN_MESSAGE = 'stopping gracefully: no new jobs, running jobs finish (signal again to abort them)';

/** First SIGTERM or SIGINT: graceful stop, saying what that means; second: hard stop. Both exit the process. */
export function onSignals(
  graceful: () => Promise<void>,
  hard: () => Promise<void>,
  log: Logger,
  gracefulMessage = DRAIN_MESSAGE,
): void {
  let count = 0;
  const handle = (signal: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      log.info({ signal }, gracefulMessage);
      // Once a second signal has come, the drain settling first (its jobs just aborted) must not report success.
      void graceful().then(
        () => process.exit(count > 1 ? 1 : 0),
        (err) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    } else if (count === 2) {
      log.warn({ signal }, 'aborting running jobs');
      void hard().finally(() => process.exit(1));
    }
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}

/** Setup problems are the user's to fix: say what and how, without a stack trace. */
export async function exitOnSetupError(err: unknown): Promise<never> {
  const [{ RuntimeSetupError }, { ExecutorNameInUseError }] = await Promise.all([
    import('../executor/runtimes/runtime.js'),
    import('../executor/agent.js'),
  ]);
  if (err instanceof RuntimeSetupError || err instanceof ConfigError || err instanceof ExecutorNameInUseError) {
    process.stderr.write(`dockhand: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
