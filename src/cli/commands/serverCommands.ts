// `dockhand server`, `dockhand executor` and `dockhand up`: the long-running processes. Only their flags are
// here; each process is started by its module in src/processes/, loaded when its command runs (an executor then
// loads no server, store or web module: most of its memory, BENCHMARKS.md, bench:memory).
import type { Command } from 'commander';
import type { UpFlags } from '../../processes/upProcess.js';

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
    .option(
      '--config <file>',
      'a YAML config file: build planes (builds:) and DOCKHAND_* settings (env DOCKHAND_CONFIG)',
    )
    .action(
      async (opts: {
        port?: string;
        host?: string;
        dataDir?: string;
        tlsCert?: string;
        tlsKey?: string;
        config?: string;
      }) => {
        await (await import('../../processes/serverProcess.js')).runServer(opts);
      },
    );

  program
    .command('executor')
    .description('Run an executor: take jobs from the coordinator and run them (configured by EXECUTOR_* variables)')
    .option(
      '--check',
      'check the runtime (engine, OCI runtime, metadata block, a test container), print what is wrong and exit',
    )
    .action(async (opts: { check?: boolean }) => {
      await (await import('../../processes/executorProcess.js')).runExecutor(opts);
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
    .option(
      '--config <file>',
      'a YAML config file: build planes (builds:) and DOCKHAND_* settings (env DOCKHAND_CONFIG)',
    )
    .action(async (opts: UpFlags) => {
      await (await import('../../processes/upProcess.js')).runUp(opts);
    });
}
