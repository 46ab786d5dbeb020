// `dockhand server`, `dockhand executor` and `dockhand up`: the long-running processes.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { ConfigError } from '../../core/envConfig.js';
import type { Agent } from '../../executor/agent.js';
import type { ExecutorConfig } from '../../executor/config.js';
import type { CheckResult, Runtime } from '../../executor/runtimes/runtime.js';

// Everything else is imported inside the command that needs it: an executor then loads no server, store or web
// module (fastify, pg, better-sqlite3, …), which is most of its memory (BENCHMARKS.md, bench:memory).
const loadPino = async (): Promise<typeof import('pino')> => (await import('pino')).default;

const DRAIN_MESSAGE = 'stopping gracefully: no new jobs, running jobs finish (signal again to abort them)';

/** First SIGTERM or SIGINT: graceful stop, saying what that means; second: hard stop. Both exit the process. */
function onSignals(
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

async function startAgent(config: ExecutorConfig, log: Logger, runtime?: Runtime): Promise<Agent> {
  const [{ Agent }, { createRuntime }] = await Promise.all([
    import('../../executor/agent.js'),
    import('../../executor/runtimes/index.js'),
  ]);
  const agent = new Agent(config, runtime ?? (await createRuntime(config.runtime, log)), log);
  await agent.start();
  return agent;
}

/** Setup problems are the user's to fix: say what and how, without a stack trace. */
async function exitOnSetupError(err: unknown): Promise<never> {
  const [{ RuntimeSetupError }, { ExecutorNameInUseError }] = await Promise.all([
    import('../../executor/runtimes/runtime.js'),
    import('../../executor/agent.js'),
  ]);
  if (err instanceof RuntimeSetupError || err instanceof ConfigError || err instanceof ExecutorNameInUseError) {
    process.stderr.write(`dockhand: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

/**
 * The server gave the executor's name to another process while this one was cut off: stop its jobs (reported as
 * errors, so they run again) and exit as a setup error does, with the server's message.
 */
function exitOnNameLost(agent: Agent, alsoStop: () => Promise<void> = async () => undefined): void {
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
    import('../../executor/runtimes/settings.js'),
    import('../../executor/runtimes/index.js'),
    import('../../executor/runtimes/runtime.js'),
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
 * so that "job started" can be set against a submit time measured elsewhere (bench/latency.ts). The fraction comes
 * from the monotonic clock, re-anchored to the wall clock whenever the two drift apart by over a millisecond (a clock
 * step), so the times stay wall-clock times.
 */
function preciseTime(): () => string {
  let origin = performance.timeOrigin;
  return () => {
    const now = performance.now();
    const wall = Date.now(); // whole ms, truncated: the true time is in [wall, wall + 1)
    let t = origin + now;
    if (t < wall - 1 || t > wall + 2) {
      origin = wall + 0.5 - now;
      t = origin + now;
    }
    return `,"time":${t.toFixed(3)}`;
  };
}

/** `dockhand up` runs steps in Docker when an engine answers (unless EXECUTOR_RUNTIME says otherwise). */
async function upRuntime(env: NodeJS.ProcessEnv, log: Logger): Promise<{ runtime: Runtime; note: string }> {
  const [{ createRuntime }, { loadRuntimeSettings }, { RuntimeSetupError }] = await Promise.all([
    import('../../executor/runtimes/index.js'),
    import('../../executor/runtimes/settings.js'),
    import('../../executor/runtimes/runtime.js'),
  ]);
  if (env.EXECUTOR_RUNTIME)
    return { runtime: await createRuntime(loadRuntimeSettings(env), log), note: 'chosen by EXECUTOR_RUNTIME' };
  try {
    return {
      runtime: await createRuntime(loadRuntimeSettings({ ...env, EXECUTOR_RUNTIME: 'docker' }), log),
      note: 'a Docker engine answered',
    };
  } catch (err) {
    if (!(err instanceof RuntimeSetupError)) throw err;
    const why = err.message.split('\n')[0];
    return {
      runtime: await createRuntime(loadRuntimeSettings({ ...env, EXECUTOR_RUNTIME: 'shell' }), log),
      note: `no usable Docker engine (${why})`,
    };
  }
}

export function registerServerCommands(program: Command): void {
  program
    .command('server')
    .description('Run the coordinator: job queues, the executor and client APIs, metrics')
    .option('--port <port>', 'port to listen on (env DOCKHAND_PORT)', undefined)
    .option('--host <host>', 'address to listen on (env DOCKHAND_HOST)', undefined)
    .option('--data-dir <dir>', 'where the SQLite database lives (env DOCKHAND_DATA_DIR)')
    .option(
      '--tls-cert <file>',
      'serve HTTPS with this PEM certificate (chain); needs --tls-key (env DOCKHAND_TLS_CERT)',
    )
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (env DOCKHAND_TLS_KEY)')
    .action(async (opts: { port?: string; host?: string; dataDir?: string; tlsCert?: string; tlsKey?: string }) => {
      const [pino, { logRedact }, { loadServerConfig }, { describeStore, startServer }] = await Promise.all([
        loadPino(),
        import('../../core/logRedact.js'),
        import('../../server/config.js'),
        import('../../server/server.js'),
      ]);
      const config = loadServerConfig(opts);
      const log = pino({ level: config.logLevel, base: { component: 'server' }, ...logRedact });
      const server = await startServer(config, log);
      process.stdout.write(
        `Dockhand server listening on ${server.url} (data in ${describeStore(config)}; web UI at ${server.url}/)\n` +
          `Start executors with: EXECUTOR_FRONTEND_URL=${server.url} EXECUTOR_FRONTEND_PASSWORD=<DOCKHAND_EXECUTORS_ACCESS_TOKEN> ` +
          'EXECUTOR_QUEUE_NAME=default dockhand executor\n',
      );
      if (server.bootstrapToken) {
        process.stdout.write(
          `\nAdmin API token, for the site admin "admin" (shown once, stored hashed; keep it safe):\n\n  ${server.bootstrapToken}\n\n` +
            `Use it with: export DOCKHAND_URL=${server.url} DOCKHAND_TOKEN=${server.bootstrapToken}\n` +
            'then add users (dockhand user create NAME) and give them tokens (dockhand token create NAME --user NAME).\n\n',
        );
      }
      onSignals(
        () => server.close(),
        () => server.close(),
        log,
        'stopping: held requests are answered and the database closed',
      );
    });

  program
    .command('executor')
    .description('Run an executor: take jobs from the coordinator and run them (configured by EXECUTOR_* variables)')
    .option(
      '--check',
      'check the runtime (engine, OCI runtime, metadata block, a test container), print what is wrong and exit',
    )
    .action(async (opts: { check?: boolean }) => {
      if (opts.check) await checkRuntime().catch(exitOnSetupError);
      const [pino, { logRedact }, { loadExecutorConfig }, { executorLogHooks }] = await Promise.all([
        loadPino(),
        import('../../core/logRedact.js'),
        import('../../executor/config.js'),
        import('../../executor/redactor.js'),
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
      const agent = await startAgent(config, log).catch(exitOnSetupError);
      exitOnNameLost(agent);
      onSignals(
        () => agent.drain(),
        () => agent.abort(),
        log,
      );
    });

  program
    .command('up')
    .description('Run a coordinator and one local executor in one process, for trying Dockhand on one machine')
    .option('--port <port>', 'port to listen on', '7070')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--data-dir <dir>', 'where the SQLite database lives (env DOCKHAND_DATA_DIR)')
    .option('--queues <names>', 'queues the local executor works on, comma-separated', 'default')
    .option('--jobs <n>', 'jobs the local executor runs at once', '2')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate; needs --tls-key (env DOCKHAND_TLS_CERT)')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (env DOCKHAND_TLS_KEY)')
    .action(
      async (opts: {
        port: string;
        host: string;
        dataDir?: string;
        queues: string;
        jobs: string;
        tlsCert?: string;
        tlsKey?: string;
      }) => {
        const [
          pino,
          { logRedact },
          { API_TOKEN_PREFIX, hashToken, newToken },
          { loadExecutorConfig },
          { executorLogHooks },
          { defaultDataDir, loadServerConfig },
          { bootstrapAdminUser, describeStore, startServer },
          { saveCredentials },
        ] = await Promise.all([
          loadPino(),
          import('../../core/logRedact.js'),
          import('../../core/tokens.js'),
          import('../../executor/config.js'),
          import('../../executor/redactor.js'),
          import('../../server/config.js'),
          import('../../server/server.js'),
          import('../client.js'),
        ]);
        const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
        const env = {
          ...process.env,
          DOCKHAND_EXECUTORS_ACCESS_TOKEN: process.env.DOCKHAND_EXECUTORS_ACCESS_TOKEN || localExecutorToken(dataDir),
        };
        const config = loadServerConfig(
          { port: opts.port, host: opts.host, dataDir, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey },
          env,
        );
        // One logger for both halves: the executor's masking (its token, jobs' tokens and secrets) covers all of it.
        const log = pino({
          level: process.env.DOCKHAND_LOG_LEVEL ?? 'warn',
          ...logRedact,
          hooks: executorLogHooks(env.DOCKHAND_EXECUTORS_ACCESS_TOKEN),
        });
        const server = await startServer(config, log.child({ component: 'server' }));
        if (config.tls) await ensureTrusted(server);
        // A fresh token for this machine's CLI at every start: the old one cannot be shown again (stored hashed).
        let token = server.bootstrapToken;
        if (!token) {
          token = newToken(API_TOKEN_PREFIX);
          const admin = await bootstrapAdminUser(server.store.accounts);
          await server.store.accounts.deleteTokensNamed(admin.id, 'up');
          await server.store.accounts.createToken(admin.id, 'up', hashToken(token), Date.now());
        }
        const saved = saveCredentials(server.url, token);
        const executorEnv = {
          ...process.env,
          EXECUTOR_FRONTEND_URL: server.url,
          EXECUTOR_FRONTEND_PASSWORD: env.DOCKHAND_EXECUTORS_ACCESS_TOKEN,
          EXECUTOR_QUEUE_NAME: undefined,
          EXECUTOR_QUEUE_NAMES: opts.queues,
          EXECUTOR_MAXIMUM_NUM_JOBS: process.env.EXECUTOR_MAXIMUM_NUM_JOBS ?? opts.jobs,
          // Apart from a standalone executor on the same host, whose containers its janitor must not take for its own.
          EXECUTOR_NAME: process.env.EXECUTOR_NAME || `${os.hostname()}-local`,
        };
        const executorConfig = loadExecutorConfig(executorEnv);
        const executorLog = log.child({ component: 'executor' });
        const chosen = await upRuntime(executorEnv, executorLog).catch(exitOnSetupError);
        const agent = await startAgent(executorConfig, executorLog, chosen.runtime).catch(async (err: unknown) => {
          await server.close();
          return exitOnSetupError(err);
        });
        exitOnNameLost(agent, () => server.close());
        process.stdout.write(
          [
            `Dockhand is up: ${server.url}`,
            `  web UI:    ${server.url}/ (sign in with the API token below)`,
            `  data:      ${describeStore(config)}`,
            `  executor:  ${agent.name} (queues ${executorConfig.queues.join(', ')})`,
            `  runtime:   ${chosen.runtime.name}: ${chosen.note}`,
            `  API token: ${token}`,
            `             (saved to ${saved}; the CLI on this machine uses it)`,
            '',
            'Try:  npx dockhand job submit examples/hello.yaml --follow',
            '',
          ].join('\n'),
        );
        onSignals(
          async () => {
            await agent.drain();
            await server.close();
          },
          async () => {
            await agent.abort(3_000);
            await server.close();
          },
          log,
        );
      },
    );
}

/**
 * Over HTTPS the local executor and CLI must trust the server's certificate. A self-signed one is trusted only
 * through NODE_EXTRA_CA_CERTS (read once at process start), so say that rather than let the executor fail forever.
 */
async function ensureTrusted(server: { url: string; close(): Promise<void> }): Promise<void> {
  try {
    await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    await server.close();
    throw new ConfigError(
      `the local executor cannot verify ${server.url}: ${cause?.message ?? (err as Error).message}. For a self-signed certificate, start ` +
        'with NODE_EXTRA_CA_CERTS=<the certificate or its CA, PEM> (the CLI needs the same); the certificate must name the ' +
        'address in the URL (e.g. subjectAltName IP:127.0.0.1).',
    );
  }
}

/** `dockhand up` keeps its executors' shared secret in the data dir, so restarts keep working. */
function localExecutorToken(dataDir: string): string {
  const file = path.join(dataDir, 'executors-access-token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const token = randomBytes(32).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}
