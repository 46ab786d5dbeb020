// The agent's configuration from the environment (the runtime's own is in runtimes/settings.ts). Names follow
// Sourcegraph's executors where the meaning is the same.
import { ConfigError, envDuration, envInt, envSize, readEnv } from '../core/envConfig.js';
import { MAX_DURATION_MS, NAME_PATTERN } from '../core/jobSpec.js';
import { MIN_EXECUTOR_TOKEN_LENGTH } from '../core/tokens.js';
import { loadRuntimeSettings, type RuntimeSettings } from './runtimes/settings.js';

/** The agent's settings: how it talks to the coordinator and how many jobs it takes. */
export interface ExecutorConfig {
  frontendUrl: string;
  frontendPassword: string;
  queues: string[];
  /** Relative share of each queue when several have jobs (EXECUTOR_QUEUE_WEIGHTS); unnamed queues weigh 1. */
  weights: Record<string, number>;
  name: string;
  maxJobs: number;
  maxRuntimePerJobMs: number;
  heartbeatIntervalMs: number;
  logFlushIntervalMs: number;
  maxLogSize: number;
  /** The runtime's settings, which need no coordinator (`dockhand executor --check` reads only these). */
  runtime: RuntimeSettings;
}

/** EXECUTOR_QUEUE_WEIGHTS=builds=3,tests=1 */
function queueWeights(text: string | undefined, queues: string[]): Record<string, number> {
  const weights: Record<string, number> = {};
  for (const part of (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
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
    throw new ConfigError(
      'Name the queues to work on: EXECUTOR_QUEUE_NAME=default, or EXECUTOR_QUEUE_NAMES=builds,tests for several.',
    );
  }
  for (const q of queues) {
    if (!NAME_PATTERN.test(q))
      throw new ConfigError(
        `Queue name ${JSON.stringify(q)} in EXECUTOR_QUEUE_NAME(S) must be letters, digits, ".", "_" or "-".`,
      );
  }
  const weights = queueWeights(env.EXECUTOR_QUEUE_WEIGHTS, queues);
  const runtime = loadRuntimeSettings(env);
  return {
    frontendUrl: frontendUrl.replace(/\/$/, ''),
    frontendPassword,
    queues,
    weights,
    name: runtime.executorName,
    maxJobs: readEnv(env, 'EXECUTOR_MAXIMUM_NUM_JOBS', envInt('EXECUTOR_MAXIMUM_NUM_JOBS', 1, 1000), 1),
    maxRuntimePerJobMs: readEnv(
      env,
      'EXECUTOR_MAXIMUM_RUNTIME_PER_JOB',
      envDuration('EXECUTOR_MAXIMUM_RUNTIME_PER_JOB', { min: 1_000, max: MAX_DURATION_MS }),
      30 * 60_000,
    ),
    // Well under the server's stall timeout (25 s by default), or running jobs would be reset.
    heartbeatIntervalMs: readEnv(
      env,
      'EXECUTOR_HEARTBEAT_INTERVAL',
      envDuration('EXECUTOR_HEARTBEAT_INTERVAL', { min: 100, max: 20_000 }),
      5_000,
    ),
    logFlushIntervalMs: readEnv(
      env,
      'EXECUTOR_LOG_FLUSH_INTERVAL',
      envDuration('EXECUTOR_LOG_FLUSH_INTERVAL', { min: 10, max: 10_000 }),
      200,
    ),
    maxLogSize: readEnv(env, 'EXECUTOR_MAX_LOG_SIZE', envSize('EXECUTOR_MAX_LOG_SIZE'), 100 * 2 ** 20),
    runtime,
  };
}
