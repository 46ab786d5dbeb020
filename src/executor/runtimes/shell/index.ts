// The shell runtime's entry point for the runtime table.
import type { Logger } from 'pino';
import type { RuntimeSettings } from '../settings.js';
import { SHELL_RUNTIME_WARNING, ShellRuntime } from './shellRuntime.js';

export async function create(settings: RuntimeSettings, _options: unknown, log: Logger): Promise<ShellRuntime> {
  log.warn(SHELL_RUNTIME_WARNING);
  process.stderr.write(`WARNING: ${SHELL_RUNTIME_WARNING}\n`);
  return new ShellRuntime(settings, log);
}
