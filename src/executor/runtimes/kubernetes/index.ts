// The kubernetes runtime's entry point for the runtime table.
import type { Logger } from 'pino';
import type { RuntimeSettings } from '../settings.js';
import { KubernetesRuntime } from './kubernetesRuntime.js';
import type { KubernetesOptions } from './options.js';

export function create(settings: RuntimeSettings, options: KubernetesOptions, log: Logger): Promise<KubernetesRuntime> {
  return KubernetesRuntime.connect(settings, options, log);
}
