// What every long-running command shares: its logger's loader, its signals, and how a setup error ends it.
import type { Logger } from 'pino';
import { ConfigError } from '../core/envConfig.js';

// Everything else is imported where it is needed: an executor then loads no server, store or web module (fastify,
// pg, better-sqlite3, …), which is most of its memory (BENCHMARKS.md, bench:memory).
export const loadPino = async (): Promise<typeof import('pino')> => (await import('pino')).default;

export const DRAIN_MESSAGE = 'stopping gracefully: no new jobs, running jobs finish (signal again to abort them)';

export interface Stopper {
  /** Aborted by a signal that comes during start-up, for a start that may wait long (an executor on its server). */
  readonly startup: AbortSignal;
  /** What the process does to stop, once it has started; a signal that came during start-up takes effect now. */
  started(graceful: () => Promise<void>, hard: () => Promise<void>): void;
}

/**
 * Installs the signal handlers before start-up, so that no signal finds the process without them: a supervisor may
 * stop it as soon as it says it is up, and the line saying so can be read before the next statement runs. First
 * SIGTERM or SIGINT: graceful stop, saying what that means (one during start-up waits for it to end); second: hard
 * stop. Both exit the process.
 */
export function onSignals(log: Logger, gracefulMessage = DRAIN_MESSAGE): Stopper {
  let count = 0;
  let stop: { graceful: () => Promise<void>; hard: () => Promise<void> } | undefined;
  const startup = new AbortController();
  const beginGraceful = (): void => {
    // Once a second signal has come, the drain settling first (its jobs just aborted) must not report success.
    void stop!.graceful().then(
      () => process.exit(count > 1 ? 1 : 0),
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const handle = (signal: NodeJS.Signals): void => {
    count++;
    if (!stop) {
      if (count > 1) process.exit(1);
      log.info({ signal }, 'stopping once start-up has finished (signal again to exit now)');
      startup.abort();
    } else if (count === 1) {
      log.info({ signal }, gracefulMessage);
      beginGraceful();
    } else if (count === 2) {
      log.warn({ signal }, 'aborting running jobs');
      void stop.hard().finally(() => process.exit(1));
    }
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
  return {
    startup: startup.signal,
    started(graceful, hard) {
      stop = { graceful, hard };
      if (count === 1) beginGraceful();
    },
  };
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
