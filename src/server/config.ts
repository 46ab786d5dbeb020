import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, envDuration, envInt, readEnv } from '../core/envConfig.js';
import { MIN_EXECUTOR_TOKEN_LENGTH } from '../core/tokens.js';

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** PostgreSQL connection URL (DOCKHAND_DATABASE_URL); without it, SQLite in dataDir. */
  databaseUrl?: string;
  executorsAccessToken: string;
  adminToken?: string;
  stalledJobTimeoutMs: number;
  maxJobResets: number;
  retryBackoffMs: number;
  logLevel: string;
}

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DOCKHAND_DATA_DIR) return env.DOCKHAND_DATA_DIR;
  const base = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'dockhand');
}

export const EXECUTOR_TOKEN_HELP =
  `Set DOCKHAND_EXECUTORS_ACCESS_TOKEN to a random secret of at least ${MIN_EXECUTOR_TOKEN_LENGTH} characters, ` +
  'e.g. export DOCKHAND_EXECUTORS_ACCESS_TOKEN=$(openssl rand -hex 32), and give executors the same value ' +
  'as EXECUTOR_FRONTEND_PASSWORD.';

function databaseUrl(env: NodeJS.ProcessEnv): string | undefined {
  const url = env.DOCKHAND_DATABASE_URL?.trim();
  if (!url) return undefined;
  if (!/^postgres(ql)?:\/\/\S+$/.test(url)) {
    // Never repeat the value: it usually holds a password.
    throw new ConfigError('DOCKHAND_DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (or unset for SQLite).');
  }
  return url;
}

/** The database URL with its password hidden, for logs and the startup line. */
export function redactDatabaseUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]+):[^@]*@/, '$1:***@');
}

export function loadServerConfig(
  flags: { port?: string; host?: string; dataDir?: string },
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const executorsAccessToken = env.DOCKHAND_EXECUTORS_ACCESS_TOKEN ?? '';
  if (executorsAccessToken.length < MIN_EXECUTOR_TOKEN_LENGTH) {
    const why = executorsAccessToken ? `is only ${executorsAccessToken.length} characters long` : 'is not set';
    throw new ConfigError(`DOCKHAND_EXECUTORS_ACCESS_TOKEN ${why}. ${EXECUTOR_TOKEN_HELP}`);
  }
  const adminToken = env.DOCKHAND_ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && adminToken.length < MIN_EXECUTOR_TOKEN_LENGTH) {
    throw new ConfigError(`DOCKHAND_ADMIN_TOKEN must be at least ${MIN_EXECUTOR_TOKEN_LENGTH} characters long, or unset to have one generated.`);
  }
  const port = flags.port ?? env.DOCKHAND_PORT;
  return {
    host: flags.host ?? env.DOCKHAND_HOST ?? '0.0.0.0',
    port: port === undefined ? 7070 : readEnv({ PORT: port }, 'PORT', envInt('--port', 0, 65535), 7070),
    dataDir: path.resolve(flags.dataDir ?? defaultDataDir(env)),
    databaseUrl: databaseUrl(env),
    executorsAccessToken,
    adminToken,
    stalledJobTimeoutMs: readEnv(env, 'DOCKHAND_STALLED_JOB_TIMEOUT', envDuration('DOCKHAND_STALLED_JOB_TIMEOUT', { min: 200 }), 25_000),
    maxJobResets: readEnv(env, 'DOCKHAND_MAX_JOB_RESETS', envInt('DOCKHAND_MAX_JOB_RESETS', 0, 100), 3),
    retryBackoffMs: readEnv(env, 'DOCKHAND_RETRY_BACKOFF', envDuration('DOCKHAND_RETRY_BACKOFF', { min: 10 }), 5_000),
    logLevel: readEnv(env, 'DOCKHAND_LOG_LEVEL', z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info'),
  };
}
