// The table of runtimes: a name, what it is, how it reads its own settings, and its implementation, loaded only
// when chosen (the docker one brings dockerode and ssh2's native addons, about 28 MB of resident memory an executor
// of another runtime need not pay). Adding a runtime touches this table and its own folder, nothing else.
import type { Logger } from 'pino';
import { dockerOptions } from './docker/options.js';
import { kubernetesOptions } from './kubernetes/options.js';
import type { Runtime } from './runtime.js';

/** The settings every runtime gets (settings.ts reads them from the environment), its own among them. */
export interface RuntimeSettings {
  runtime: RuntimeName;
  /** EXECUTOR_NAME: labels what the runtime makes, so a restarted executor finds its own leftovers. */
  executorName: string;
  /** What one job may use (EXECUTOR_JOB_NUM_CPUS, EXECUTOR_JOB_MEMORY, EXECUTOR_JOB_DISK); 0 = unbounded. */
  jobCpus: number;
  jobMemoryBytes: number;
  jobDiskBytes: number;
  keepWorkspaces: boolean;
  workspaceRoot: string;
  /** How often the janitor looks for leftovers (EXECUTOR_CLEANUP_TASK_INTERVAL). */
  cleanupIntervalMs: number;
  /** file:// repositories are checked out only with this on (a development setting). */
  allowLocalRepositories: boolean;
  /** The runtime's own settings, as its table entry read them. */
  options: unknown;
}

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
  kubernetes: entry({
    summary: 'one batch/v1 Job per job on a Kubernetes cluster: a setup container, one init container per step',
    options: kubernetesOptions,
    load: () => import('./kubernetes/index.js'),
    describe: (options) => ` (namespace ${options.namespace})`,
  }),
};

export type RuntimeName = keyof typeof RUNTIMES;
export const RUNTIME_NAMES = Object.keys(RUNTIMES) as RuntimeName[];

export async function createRuntime(settings: RuntimeSettings, log: Logger): Promise<Runtime> {
  const chosen = RUNTIMES[settings.runtime] as RuntimeEntry<unknown>;
  return (await chosen.load()).create(settings, settings.options, log);
}
