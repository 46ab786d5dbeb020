// Picks the runtime an executor was configured with. Runtimes are loaded only when chosen: the docker one brings
// dockerode and ssh2's native addons, about 28 MB of resident memory an executor of another runtime need not pay.
import type { Logger } from 'pino';
import type { ExecutorConfig } from '../config.js';
import type { Runtime } from './runtime.js';
import { SHELL_RUNTIME_WARNING, ShellRuntime } from './shell/shellRuntime.js';

export async function createRuntime(config: ExecutorConfig, log: Logger): Promise<Runtime> {
  switch (config.runtime) {
    case 'shell':
      log.warn(SHELL_RUNTIME_WARNING);
      process.stderr.write(`WARNING: ${SHELL_RUNTIME_WARNING}\n`);
      return new ShellRuntime();
    case 'docker': {
      const { DockerRuntime } = await import('./docker/dockerRuntime.js');
      return DockerRuntime.connect(config, log);
    }
  }
}
