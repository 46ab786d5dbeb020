// The table of runtimes: a name, what it is, how it reads its own settings, and its implementation, loaded only
// when chosen (the docker one brings dockerode and ssh2's native addons, about 28 MB of resident memory an executor
// of another runtime need not pay). Adding a runtime touches this table and its own folder, nothing else.
import type { Logger } from 'pino';
import { dockerOptions } from './docker/options.js';
import type { Runtime } from './runtime.js';
import type { RuntimeSettings } from './settings.js';

/** What a runtime's folder exports from its index.ts. */
export interface RuntimeModule<O> {
  /** Makes the runtime ready (connects to its engine); throws a RuntimeSetupError saying what to fix. */
  create(settings: RuntimeSettings, options: O, log: Logger): Promise<Runtime>;
}

interface RuntimeEntry<O> {
  summary: string;
  /** Reads and checks this runtime's own EXECUTOR_* variables; throws a ConfigError naming the variable. */
  options(env: NodeJS.ProcessEnv): O;
  load(): Promise<RuntimeModule<O>>;
  /** What `dockhand executor --check` adds to the runtime's name, e.g. " (OCI runtime runsc)". */
  describe?(options: O): string;
}

const entry = <O>(e: RuntimeEntry<O>): RuntimeEntry<O> => e;

export const RUNTIMES = {
  shell: entry({
    summary: 'steps run as processes on the executor host, with no isolation (development and trusted jobs)',
    options: () => ({}),
    load: () => import('./shell/index.js'),
  }),
  docker: entry({
    summary: 'each step in a fresh container (runc or gVisor), the workspace on a size-limited disk of its own',
    options: dockerOptions,
    load: () => import('./docker/index.js'),
    describe: (options) => (options.ociRuntime ? ` (OCI runtime ${options.ociRuntime})` : ''),
  }),
};

export type RuntimeName = keyof typeof RUNTIMES;
export const RUNTIME_NAMES = Object.keys(RUNTIMES) as RuntimeName[];

export async function createRuntime(settings: RuntimeSettings, log: Logger): Promise<Runtime> {
  const chosen = RUNTIMES[settings.runtime] as RuntimeEntry<unknown>;
  return (await chosen.load()).create(settings, settings.options, log);
}
