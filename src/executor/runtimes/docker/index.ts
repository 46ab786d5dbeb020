// The docker runtime's entry point for the runtime table.
import type { Logger } from 'pino';
import type { RuntimeSettings } from '../settings.js';
import { DockerRuntime } from './dockerRuntime.js';
import type { DockerOptions } from './options.js';

export function create(settings: RuntimeSettings, options: DockerOptions, log: Logger): Promise<DockerRuntime> {
  return DockerRuntime.connect(settings, options, log);
}
