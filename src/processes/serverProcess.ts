// `dockhand server`: a coordinator on a socket (server/server.ts) until a signal, with what to do next printed.
import { loadPino, onSignals } from './lifecycle.js';

/** Runs a coordinator configured by flags and DOCKHAND_* variables until a signal stops it. */
export async function runServer(opts: {
  port?: string;
  host?: string;
  dataDir?: string;
  tlsCert?: string;
  tlsKey?: string;
  config?: string;
}): Promise<void> {
  const [pino, { logRedact }, { loadServerConfig }, { startServer }, { describeStore }] = await Promise.all([
    loadPino(),
    import('../core/logRedact.js'),
    import('../server/config.js'),
    import('../server/server.js'),
    import('../store/open.js'),
  ]);
  const config = loadServerConfig(opts);
  const log = pino({ level: config.logLevel, base: { component: 'server' }, ...logRedact });
  const stopper = onSignals(log, 'stopping: held requests are answered and the database closed');
  const server = await startServer(config, log);
  stopper.started(
    () => server.close(),
    () => server.close(),
  );
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
}
