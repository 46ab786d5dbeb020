// Picks the runtime an executor was configured with.
import type { Logger } from 'pino';
import type { ExecutorConfig } from '../config.js';
import { DockerRuntime } from './docker/dockerRuntime.js';
import type { Runtime } from './runtime.js';
import { SHELL_RUNTIME_WARNING, ShellRuntime } from './shell/shellRuntime.js';

export async function createRuntime(config: ExecutorConfig, log: Logger): Promise<Runtime> {
  switch (config.runtime) {
    case 'shell':
      log.warn(SHELL_RUNTIME_WARNING);
      process.stderr.write(`WARNING: ${SHELL_RUNTIME_WARNING}\n`);
      return new ShellRuntime();
    case 'docker':
      return DockerRuntime.connect(config, log);
  }
}
