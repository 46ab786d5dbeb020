// `dockhand build-worker` on its own: what the process plane starts. It loads only the worker's modules, not every
// command of the CLI, which takes a build's start-up a quarter of a second (BENCHMARKS.md, builds).
import { Command, CommanderError } from 'commander';
import { readRegistrationToken, runBuildWorker } from './buildWorker.js';

/** The command's action: read the token, run the worker, exit with its code. */
export async function runWorkerCommand(opts: { server: string; tokenFile?: string }): Promise<void> {
  const registrationToken = await readRegistrationToken(opts.tokenFile);
  if (!registrationToken) {
    process.stderr.write('build-worker: no registration token (give it on stdin or with --token-file)\n');
    process.exitCode = 2;
    return;
  }
  process.exitCode = await runBuildWorker({
    server: opts.server,
    registrationToken,
    workDir: process.env.DOCKHAND_BUILD_WORK_DIR,
    buildah: process.env.DOCKHAND_BUILD_BUILDAH,
  });
}

// Run as a program (not imported by the CLI).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const program = new Command()
    .name('build-worker')
    .requiredOption('--server <url>', 'the Dockhand server')
    .option(
      '--token-file <file>',
      'read the registration token from this file (removed after reading) instead of stdin',
    )
    .action(runWorkerCommand)
    .exitOverride();
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    throw err;
  }
}
