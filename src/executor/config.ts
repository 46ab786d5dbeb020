// Executor configuration from the environment. Names follow Sourcegraph's executors where the meaning is the same.
import os from 'node:os';
import { z } from 'zod';
import { staticDockerAuthConfigInput, type DockerAuthConfig } from '../core/dockerAuthConfig.js';
import { ConfigError, envBool, envDuration, envInt, envNumber, envSize, readEnv } from '../core/envConfig.js';
import { MAX_DURATION_MS, NAME_PATTERN } from '../core/jobSpec.js';
import { MIN_EXECUTOR_TOKEN_LENGTH } from '../core/tokens.js';

export const RUNTIME_NAMES = ['shell', 'docker'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

export interface ExecutorConfig {
  frontendUrl: string;
  frontendPassword: string;
  queues: string[];
  /** Relative share of each queue when several have jobs (EXECUTOR_QUEUE_WEIGHTS); unnamed queues weigh 1. */
  weights: Record<string, number>;
  name: string;
  maxJobs: number;
  maxRuntimePerJobMs: number;
  runtime: RuntimeName;
  heartbeatIntervalMs: number;
  logFlushIntervalMs: number;
  maxLogSize: number;
  keepWorkspaces: boolean;
  workspaceRoot: string;
  /** What one job may use (EXECUTOR_JOB_NUM_CPUS, EXECUTOR_JOB_MEMORY); 0 = unbounded. Enforced by docker. */
  jobCpus: number;
  jobMemoryBytes: number;
  /** How often the janitor looks for orphaned containers (EXECUTOR_CLEANUP_TASK_INTERVAL). */
  cleanupIntervalMs: number;
  docker: DockerConfig;
}

export interface DockerConfig {
  /** OCI runtime for step containers, as registered with dockerd (runc, runsc); empty = the engine's default. */
  ociRuntime: string;
  /** "bridge": Dockhand's own bridge network with the metadata block; "none": no network for any step. */
  network: 'bridge' | 'none';
  /** Registry credentials from EXECUTOR_DOCKER_AUTH_CONFIG; below a job's own, above ~/.docker/config.json. */
  authConfig?: DockerAuthConfig;
  /** Image for steps that name none. */
  defaultImage: string;
  pidsLimit: number;
}

/** EXECUTOR_QUEUE_WEIGHTS=builds=3,tests=1 */
function queueWeights(text: string | undefined, queues: string[]): Record<string, number> {
  const weights: Record<string, number> = {};
  for (const part of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const [queue, value] = part.split('=');
    const weight = Number(value);
    if (!queues.includes(queue) || !(weight > 0) || weight > 1_000_000) {
      throw new ConfigError(
        `EXECUTOR_QUEUE_WEIGHTS: ${JSON.stringify(part)} must be QUEUE=WEIGHT for one of this executor's queues (${queues.join(', ')}) ` +
          'and a positive number, e.g. EXECUTOR_QUEUE_WEIGHTS=builds=3,tests=1',
      );
    }
    weights[queue] = weight;
  }
  return weights;
}

export function loadExecutorConfig(env: NodeJS.ProcessEnv = process.env): ExecutorConfig {
  const frontendUrl = env.EXECUTOR_FRONTEND_URL ?? '';
  if (!/^https?:\/\/[^/\s]+\/?$/.test(frontendUrl)) {
    throw new ConfigError(
      `EXECUTOR_FRONTEND_URL ${frontendUrl ? `=${JSON.stringify(frontendUrl)} is not` : 'must be set to'} the coordinator's URL ` +
        'as scheme://host[:port], e.g. EXECUTOR_FRONTEND_URL=http://dockhand.internal:7070',
    );
  }
  const frontendPassword = env.EXECUTOR_FRONTEND_PASSWORD ?? '';
  if (frontendPassword.length < MIN_EXECUTOR_TOKEN_LENGTH) {
    throw new ConfigError(
      `EXECUTOR_FRONTEND_PASSWORD ${frontendPassword ? 'is too short' : 'is not set'}: set it to the server's DOCKHAND_EXECUTORS_ACCESS_TOKEN ` +
        `(at least ${MIN_EXECUTOR_TOKEN_LENGTH} characters).`,
    );
  }
  const single = env.EXECUTOR_QUEUE_NAME?.trim();
  const multiple = env.EXECUTOR_QUEUE_NAMES?.trim();
  if (single && multiple) throw new ConfigError('Set either EXECUTOR_QUEUE_NAME or EXECUTOR_QUEUE_NAMES, not both.');
  const queues = (multiple ? multiple.split(',') : single ? [single] : []).map((q) => q.trim()).filter(Boolean);
  if (queues.length === 0) {
    throw new ConfigError('Name the queues to work on: EXECUTOR_QUEUE_NAME=default, or EXECUTOR_QUEUE_NAMES=builds,tests for several.');
  }
  for (const q of queues) {
    if (!NAME_PATTERN.test(q)) throw new ConfigError(`Queue name ${JSON.stringify(q)} in EXECUTOR_QUEUE_NAME(S) must be letters, digits, ".", "_" or "-".`);
  }
  // Stable across restarts, so a restarted executor finds (and removes) what its predecessor left running.
  const weights = queueWeights(env.EXECUTOR_QUEUE_WEIGHTS, queues);
  const name = env.EXECUTOR_NAME || os.hostname();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) throw new ConfigError(`EXECUTOR_NAME=${JSON.stringify(name)} must be letters, digits, ".", "_" or "-".`);
  return {
    frontendUrl: frontendUrl.replace(/\/$/, ''),
    frontendPassword,
    queues,
    weights,
    name,
    maxJobs: readEnv(env, 'EXECUTOR_MAXIMUM_NUM_JOBS', envInt('EXECUTOR_MAXIMUM_NUM_JOBS', 1, 1000), 1),
    maxRuntimePerJobMs: readEnv(env, 'EXECUTOR_MAXIMUM_RUNTIME_PER_JOB', envDuration('EXECUTOR_MAXIMUM_RUNTIME_PER_JOB', { min: 1_000, max: MAX_DURATION_MS }), 30 * 60_000),
    runtime: readEnv(
      env, 'EXECUTOR_RUNTIME',
      z.enum(RUNTIME_NAMES, { error: () => `EXECUTOR_RUNTIME must be one of: ${RUNTIME_NAMES.join(', ')}` }),
      'shell',
    ),
    // Well under the server's stall timeout (25 s by default), or running jobs would be reset.
    heartbeatIntervalMs: readEnv(env, 'EXECUTOR_HEARTBEAT_INTERVAL', envDuration('EXECUTOR_HEARTBEAT_INTERVAL', { min: 100, max: 20_000 }), 5_000),
    logFlushIntervalMs: readEnv(env, 'EXECUTOR_LOG_FLUSH_INTERVAL', envDuration('EXECUTOR_LOG_FLUSH_INTERVAL', { min: 10, max: 10_000 }), 200),
    maxLogSize: readEnv(env, 'EXECUTOR_MAX_LOG_SIZE', envSize('EXECUTOR_MAX_LOG_SIZE'), 100 * 2 ** 20),
    keepWorkspaces: readEnv(env, 'EXECUTOR_KEEP_WORKSPACES', envBool('EXECUTOR_KEEP_WORKSPACES'), false),
    workspaceRoot: env.EXECUTOR_WORKSPACE_ROOT || os.tmpdir(),
    jobCpus: readEnv(env, 'EXECUTOR_JOB_NUM_CPUS', envNumber('EXECUTOR_JOB_NUM_CPUS', 0, 1024), 4),
    jobMemoryBytes: readEnv(env, 'EXECUTOR_JOB_MEMORY', envSize('EXECUTOR_JOB_MEMORY'), 12 * 2 ** 30),
    cleanupIntervalMs: readEnv(env, 'EXECUTOR_CLEANUP_TASK_INTERVAL', envDuration('EXECUTOR_CLEANUP_TASK_INTERVAL', { min: 1_000, max: 24 * 3_600_000 }), 60_000),
    docker: {
      ociRuntime: readEnv(env, 'EXECUTOR_DOCKER_RUNTIME', z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be the name of a runtime registered with dockerd, e.g. runc or runsc'), ''),
      network: readEnv(
        env, 'EXECUTOR_DOCKER_NETWORK',
        z.enum(['bridge', 'none'], { error: () => 'EXECUTOR_DOCKER_NETWORK must be "bridge" (network with the metadata address blocked) or "none"' }),
        'bridge',
      ),
      authConfig: readEnv<DockerAuthConfig | undefined>(env, 'EXECUTOR_DOCKER_AUTH_CONFIG', staticDockerAuthConfigInput, undefined, { secret: true }),
      defaultImage: env.EXECUTOR_DOCKER_DEFAULT_IMAGE || 'busybox:latest',
      pidsLimit: readEnv(env, 'EXECUTOR_DOCKER_PIDS_LIMIT', envInt('EXECUTOR_DOCKER_PIDS_LIMIT', 16, 1_000_000), 4096),
    },
  };
}
