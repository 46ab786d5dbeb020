// `dockhand server`, `dockhand executor` and `dockhand up`: the long-running processes.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import pino, { type Logger } from 'pino';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../../core/tokens.js';
import { Agent } from '../../executor/agent.js';
import { loadExecutorConfig, type ExecutorConfig } from '../../executor/config.js';
import { createRuntime } from '../../executor/runtimes/index.js';
import { defaultDataDir, loadServerConfig } from '../../server/config.js';
import { startServer } from '../../server/server.js';
import { saveCredentials } from '../client.js';

const DRAIN_MESSAGE = 'stopping gracefully: no new jobs, running jobs finish (signal again to abort them)';

/** First SIGTERM or SIGINT: graceful stop, saying what that means; second: hard stop. Both exit the process. */
function onSignals(graceful: () => Promise<void>, hard: () => Promise<void>, log: Logger, gracefulMessage = DRAIN_MESSAGE): void {
  let count = 0;
  const handle = (signal: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      log.info({ signal }, gracefulMessage);
      void graceful().then(() => process.exit(0), (err) => { log.error({ err }, 'shutdown failed'); process.exit(1); });
    } else if (count === 2) {
      log.warn({ signal }, 'aborting running jobs');
      void hard().finally(() => process.exit(1));
    }
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}

async function startAgent(config: ExecutorConfig, log: Logger): Promise<Agent> {
  const runtime = await createRuntime(config, log);
  const agent = new Agent(config, runtime, log);
  await agent.start();
  return agent;
}

export function registerServerCommands(program: Command): void {
  program
    .command('server')
    .description('Run the coordinator: job queues, the executor and client APIs, metrics')
    .option('--port <port>', 'port to listen on (env DOCKHAND_PORT)', undefined)
    .option('--host <host>', 'address to listen on (env DOCKHAND_HOST)', undefined)
    .option('--data-dir <dir>', 'where the SQLite database lives (env DOCKHAND_DATA_DIR)')
    .action(async (opts: { port?: string; host?: string; dataDir?: string }) => {
      const config = loadServerConfig(opts);
      const log = pino({ level: config.logLevel, base: { component: 'server' } });
      const server = await startServer(config, log);
      process.stdout.write(
        `Dockhand server listening on ${server.url} (data in ${config.dataDir})\n` +
          `Start executors with: EXECUTOR_FRONTEND_URL=${server.url} EXECUTOR_FRONTEND_PASSWORD=<DOCKHAND_EXECUTORS_ACCESS_TOKEN> ` +
          'EXECUTOR_QUEUE_NAME=default dockhand executor\n',
      );
      if (server.bootstrapToken) {
        process.stdout.write(
          `\nAdmin API token (shown once, stored hashed; keep it safe):\n\n  ${server.bootstrapToken}\n\n` +
            `Use it with: export DOCKHAND_URL=${server.url} DOCKHAND_TOKEN=${server.bootstrapToken}\n\n`,
        );
      }
      onSignals(() => server.close(), () => server.close(), log, 'stopping: held requests are answered and the database closed');
    });

  program
    .command('executor')
    .description('Run an executor: take jobs from the coordinator and run them (configured by EXECUTOR_* variables)')
    .action(async () => {
      const config = loadExecutorConfig();
      const log = pino({ level: process.env.EXECUTOR_LOG_LEVEL ?? 'info', base: { component: 'executor', executor: config.name } });
      const agent = await startAgent(config, log);
      onSignals(() => agent.drain(), () => agent.abort(), log);
    });

  program
    .command('up')
    .description('Run a coordinator and one local executor in one process, for trying Dockhand on one machine')
    .option('--port <port>', 'port to listen on', '7070')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--data-dir <dir>', 'where the SQLite database lives (env DOCKHAND_DATA_DIR)')
    .option('--queues <names>', 'queues the local executor works on, comma-separated', 'default')
    .option('--jobs <n>', 'jobs the local executor runs at once', '2')
    .action(async (opts: { port: string; host: string; dataDir?: string; queues: string; jobs: string }) => {
      const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
      const env = { ...process.env, DOCKHAND_EXECUTORS_ACCESS_TOKEN: process.env.DOCKHAND_EXECUTORS_ACCESS_TOKEN || localExecutorToken(dataDir) };
      const config = loadServerConfig({ port: opts.port, host: opts.host, dataDir }, env);
      const log = pino({ level: process.env.DOCKHAND_LOG_LEVEL ?? 'warn' });
      const server = await startServer(config, log.child({ component: 'server' }));
      // A fresh token for this machine's CLI at every start: the old one cannot be shown again (stored hashed).
      let token = server.bootstrapToken;
      if (!token) {
        token = newToken(API_TOKEN_PREFIX);
        await server.store.deleteApiTokensNamed('up');
        await server.store.createApiToken('up', hashToken(token), Date.now());
      }
      const saved = saveCredentials(server.url, token);
      const executorConfig = loadExecutorConfig({
        ...process.env,
        EXECUTOR_FRONTEND_URL: server.url,
        EXECUTOR_FRONTEND_PASSWORD: env.DOCKHAND_EXECUTORS_ACCESS_TOKEN,
        EXECUTOR_QUEUE_NAME: undefined,
        EXECUTOR_QUEUE_NAMES: opts.queues,
        EXECUTOR_MAXIMUM_NUM_JOBS: process.env.EXECUTOR_MAXIMUM_NUM_JOBS ?? opts.jobs,
      });
      const agent = await startAgent(executorConfig, log.child({ component: 'executor' }));
      process.stdout.write(
        [
          `Dockhand is up: ${server.url}`,
          `  data:      ${config.dataDir}`,
          `  executor:  ${agent.name} (runtime ${executorConfig.runtime}, queues ${executorConfig.queues.join(', ')})`,
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
    });
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
