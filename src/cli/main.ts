#!/usr/bin/env node
// The `dockhand` command.
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../core/envConfig.js';
import { VERSION } from '../core/version.js';
import { CliError } from './client.js';
import { registerAccountCommands } from './commands/accountCommands.js';
import { registerBuildCommands } from './commands/buildCommands.js';
import { registerDbCommands } from './commands/dbCommands.js';
import { registerJobCommands } from './commands/jobCommands.js';
import { addKeyCommands } from './commands/keyCommands.js';
import { registerSecretCommands } from './commands/secretCommands.js';
import { registerServerCommands } from './commands/serverCommands.js';

const program = new Command()
  .name('dockhand')
  .description('Run untrusted or heavy jobs away from your application, in sandboxes, on executors you run.')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

registerServerCommands(program);
registerJobCommands(program);
registerBuildCommands(program);
registerAccountCommands(program);
addKeyCommands(registerSecretCommands(program));
registerDbCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof CliError || err instanceof ConfigError) {
    process.stderr.write(`dockhand: ${err.message}\n`);
    process.exit(err instanceof CliError ? err.exitCode : 2);
  }
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE') {
    process.stderr.write(`dockhand: ${e.message}: another process uses that port; pick another with --port\n`);
    process.exit(2);
  }
  process.stderr.write(`dockhand: ${e.stack ?? e.message}\n`);
  process.exit(1);
}
