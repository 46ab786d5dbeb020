// `dockhand executor`: an agent on the configured runtime, until a signal; and `--check`, the runtime's self-test.
import type { Logger } from 'pino';
import { preciseClock } from '../core/preciseClock.js';
import type { Agent } from '../executor/agent.js';
import type { ExecutorConfig } from '../executor/config.js';
import type { CheckResult, Runtime } from '../executor/runtimes/runtime.js';
import { exitOnSetupError, loadPino, onSignals } from './lifecycle.js';

export async function startAgent(
  config: ExecutorConfig,
  log: Logger,
  runtime?: Runtime,
  signal?: AbortSignal,
): Promise<Agent> {
  const [{ Agent }, { createRuntime }] = await Promise.all([
    import('../executor/agent.js'),
    import('../executor/runtimes/index.js'),
  ]);
  const agent = new Agent(config, runtime ?? (await createRuntime(config.runtime, log)), log);
  await agent.start(signal);
  return agent;
}

/**
 * The server gave the executor's name to another process while this one was cut off: stop its jobs (reported as
 * errors, so they run again) and exit as a setup error does, with the server's message.
 */
export function exitOnNameLost(agent: Agent, alsoStop: () => Promise<void> = async () => undefined): void {
  void agent.nameLost.then(async (err) => {
    await agent.abort(10_000);
    await alsoStop();
    await exitOnSetupError(err);
  });
}

/** `dockhand executor --check`: the runtime's self-test, one line per check; exit 1 when any fails. */
async function checkRuntime(): Promise<never> {
  const [pino, { loadRuntimeSettings }, { RUNTIMES, createRuntime }, { RuntimeSetupError }] = await Promise.all([
    loadPino(),
    import('../executor/runtimes/settings.js'),
    import('../executor/runtimes/index.js'),
    import('../executor/runtimes/runtime.js'),
  ]);
  // Only the runtime's settings: the coordinator's may be absent on a machine being set up.
  const settings = loadRuntimeSettings(process.env);
  const log = pino({ level: 'silent' });
  let results: CheckResult[];
  try {
    const runtime = await createRuntime(settings, log);
    results = runtime.check
      ? await runtime.check()
      : [
          {
            name: settings.runtime,
            ok: true,
            detail: 'nothing to check: steps run as host processes, without isolation',
          },
        ];
    await runtime.close?.();
  } catch (err) {
    if (!(err instanceof RuntimeSetupError)) throw err;
    results = [{ name: 'setup', ok: false, detail: err.message }];
  }
  const entry = RUNTIMES[settings.runtime] as { describe?(options: unknown): string };
  process.stdout.write(`Runtime ${settings.runtime}${entry.describe?.(settings.options) ?? ''}:\n`);
  for (const r of results)
    process.stdout.write(
      `  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}: ${r.detail}${r.fix ? `\n       fix: ${r.fix}` : ''}\n`,
    );
  const failed = results.filter((r) => !r.ok).length;
  process.stdout.write(failed ? `${failed} check${failed > 1 ? 's' : ''} failed\n` : 'all checks passed\n');
  process.exit(failed ? 1 : 0);
}

/**
 * The executor's log times: milliseconds since the epoch to the microsecond (pino's default is whole milliseconds),
 * so that "job started" can be set against a submit time measured elsewhere (bench/latency.ts).
 */
function preciseTime(): () => string {
  const now = preciseClock();
  return () => `,"time":${now().toFixed(3)}`;
}

/** Runs an executor configured by EXECUTOR_* variables until a signal stops it. */
export async function runExecutor(opts: { check?: boolean }): Promise<void> {
  if (opts.check) await checkRuntime().catch(exitOnSetupError);
  const [pino, { logRedact }, { loadExecutorConfig }, { executorLogHooks }] = await Promise.all([
    loadPino(),
    import('../core/logRedact.js'),
    import('../executor/config.js'),
    import('../executor/redactor.js'),
  ]);
  const config = loadExecutorConfig();
  // hooks: every line passes through the executor's log redactor (its token, each running job's token and secrets).
  const log = pino({
    level: process.env.EXECUTOR_LOG_LEVEL ?? 'info',
    base: { component: 'executor', executor: config.name },
    ...logRedact,
    hooks: executorLogHooks(config.frontendPassword),
    timestamp: preciseTime(),
  });
  const stopper = onSignals(log);
  // Stopped while it waits for its server: it has taken nothing, so there is nothing to drain.
  const agent = await startAgent(config, log, undefined, stopper.startup).catch((err: unknown) =>
    stopper.startup.aborted ? process.exit(0) : exitOnSetupError(err),
  );
  exitOnNameLost(agent);
  stopper.started(
    () => agent.drain(),
    () => agent.abort(),
  );
}
