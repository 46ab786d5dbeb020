// The runtime's settings from the environment: what every runtime shares (per-job limits, the workspace root,
// the executor's name its leftovers are labelled with) and, through its entry in the table, its own. Nothing here
// needs the coordinator's settings, so `dockhand executor --check` works on a machine being set up.
import os from 'node:os';
import { z } from 'zod';
import { ConfigError, envBool, envDuration, envNumber, envSize, readEnv } from '../../core/envConfig.js';
import { ALLOW_LOCAL_REPOSITORIES } from '../workspace/checkout.js';
import { RUNTIMES, RUNTIME_NAMES, type RuntimeName, type RuntimeSettings } from './index.js';

// The interface lives with the table (index.ts), which needs it and must not import this file back.
export type { RuntimeSettings } from './index.js';

/** The executor's name (EXECUTOR_NAME, default the hostname). */
export function executorName(env: NodeJS.ProcessEnv): string {
  const name = env.EXECUTOR_NAME || os.hostname();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name))
    throw new ConfigError(`EXECUTOR_NAME=${JSON.stringify(name)} must be letters, digits, ".", "_" or "-".`);
  return name;
}

export function loadRuntimeSettings(env: NodeJS.ProcessEnv = process.env): RuntimeSettings {
  const runtime = readEnv<RuntimeName>(
    env,
    'EXECUTOR_RUNTIME',
    z.enum(RUNTIME_NAMES as [RuntimeName, ...RuntimeName[]], {
      error: () => `EXECUTOR_RUNTIME must be one of: ${RUNTIME_NAMES.join(', ')}`,
    }),
    'shell',
  );
  return {
    runtime,
    executorName: executorName(env),
    jobCpus: readEnv(env, 'EXECUTOR_JOB_NUM_CPUS', envNumber('EXECUTOR_JOB_NUM_CPUS', 0, 1024), 4),
    jobMemoryBytes: readEnv(env, 'EXECUTOR_JOB_MEMORY', envSize('EXECUTOR_JOB_MEMORY'), 12 * 2 ** 30),
    jobDiskBytes: readEnv(env, 'EXECUTOR_JOB_DISK', envSize('EXECUTOR_JOB_DISK'), 20 * 2 ** 30),
    keepWorkspaces: readEnv(env, 'EXECUTOR_KEEP_WORKSPACES', envBool('EXECUTOR_KEEP_WORKSPACES'), false),
    workspaceRoot: env.EXECUTOR_WORKSPACE_ROOT || os.tmpdir(),
    cleanupIntervalMs: readEnv(
      env,
      'EXECUTOR_CLEANUP_TASK_INTERVAL',
      envDuration('EXECUTOR_CLEANUP_TASK_INTERVAL', { min: 1_000, max: 24 * 3_600_000 }),
      60_000,
    ),
    allowLocalRepositories: readEnv(env, ALLOW_LOCAL_REPOSITORIES, envBool(ALLOW_LOCAL_REPOSITORIES), false),
    options: RUNTIMES[runtime].options(env),
  };
}
