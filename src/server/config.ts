import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { z } from 'zod';
import { ConfigError, envDuration, envInt, envSize, readEnv } from '../core/envConfig.js';
import { DEFAULT_AUTH_FAILURE_LIMIT, DEFAULT_AUTH_FAILURE_WINDOW_MS } from './authLimiter.js';
import { MIN_EXECUTOR_TOKEN_LENGTH } from '../core/tokens.js';
import type { BuildsConfig } from './builds/buildsConfig.js';
import { loadConfigFile, withFileSettings } from './configFile.js';

/** Room for the logs and results of the jobs already running when new work stops being taken. */
export const DEFAULT_MIN_FREE_DISK = 64 * 1024 * 1024;

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** PostgreSQL connection URL (DOCKHAND_DATABASE_URL); without it, SQLite in dataDir. */
  databaseUrl?: string;
  executorsAccessToken: string;
  adminToken?: string;
  /** DOCKHAND_ENCRYPTION_KEY: comma-separated keys, the first one encrypting; without it, a key file in dataDir. */
  encryptionKey?: string;
  stalledJobTimeoutMs: number;
  maxJobResets: number;
  retryBackoffMs: number;
  /** SQLite: below this many free bytes in dataDir the server takes no new work (DOCKHAND_MIN_FREE_DISK; 0: never). */
  minFreeDiskBytes: number;
  logLevel: string;
  /** HTTPS instead of HTTP, from --tls-cert/--tls-key (DOCKHAND_TLS_CERT/DOCKHAND_TLS_KEY). */
  tls?: TlsFiles;
  /** 401 answers one address may get per window before it is refused with 429 (DOCKHAND_AUTH_FAILURE_LIMIT; 0: off). */
  authFailureLimit: number;
  authFailureWindowMs: number;
  /** Which proxies' X-Forwarded-For to believe (DOCKHAND_TRUST_PROXY); false: none, the peer address counts. */
  trustProxy: boolean | number | string[];
  /** The build manager's settings, from the config file's `builds:` (no planes without one). */
  builds: BuildsConfig;
  /** The config file read, if any. */
  configFile?: string;
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

/** Both files or neither; each readable, and together a usable certificate and key. Errors name the flag or variable. */
export function loadTls(
  flags: { tlsCert?: string; tlsKey?: string },
  env: NodeJS.ProcessEnv = process.env,
): TlsFiles | undefined {
  const pick = (
    flag: string | undefined,
    flagName: string,
    envName: string,
  ): { file: string; from: string } | undefined => {
    if (flag) return { file: flag, from: flagName };
    const value = env[envName]?.trim();
    return value ? { file: value, from: envName } : undefined;
  };
  const cert = pick(flags.tlsCert, '--tls-cert', 'DOCKHAND_TLS_CERT');
  const key = pick(flags.tlsKey, '--tls-key', 'DOCKHAND_TLS_KEY');
  if (!cert && !key) return undefined;
  if (!cert)
    throw new ConfigError(
      `${key!.from} is set but --tls-cert (DOCKHAND_TLS_CERT) is missing: HTTPS needs both the certificate (PEM) and its private key.`,
    );
  if (!key)
    throw new ConfigError(
      `${cert.from} is set but --tls-key (DOCKHAND_TLS_KEY) is missing: HTTPS needs both the certificate (PEM) and its private key.`,
    );
  const read = (which: { file: string; from: string }, what: string): Buffer => {
    const file = path.resolve(which.file);
    try {
      return readFileSync(file);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ConfigError(
        `${which.from} ${which.file}: cannot read the ${what} (${reason}); give a readable PEM file.`,
      );
    }
  };
  const files: TlsFiles = {
    certFile: path.resolve(cert.file),
    keyFile: path.resolve(key.file),
    cert: read(cert, 'certificate'),
    key: read(key, 'private key'),
  };
  try {
    tls.createSecureContext({ cert: files.cert, key: files.key });
  } catch (err) {
    // The key is never repeated: only what OpenSSL says is wrong.
    throw new ConfigError(
      `${cert.from} ${cert.file} and ${key.from} ${key.file} are not a usable PEM certificate and matching private key: ${(err as Error).message}`,
    );
  }
  return files;
}

/** DOCKHAND_TRUST_PROXY: "true" (any proxy), a number of proxy hops, or addresses/CIDRs of the proxies, comma-separated. */
export function trustProxySetting(env: NodeJS.ProcessEnv): boolean | number | string[] {
  const raw = env.DOCKHAND_TRUST_PROXY?.trim();
  if (!raw || ['false', 'no', 'off'].includes(raw.toLowerCase())) return false;
  if (['true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
  // A number is a count of proxy hops ("1": the one proxy in front), never "trust everything".
  if (/^\d+$/.test(raw)) return Number(raw) || false;
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of list) {
    if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(item) && !['loopback', 'linklocal', 'uniquelocal'].includes(item)) {
      throw new ConfigError(
        `DOCKHAND_TRUST_PROXY=${JSON.stringify(raw)}: ${JSON.stringify(item)} is not an address or CIDR; use "true", a number of proxy hops, or the proxies' addresses (e.g. "10.0.0.0/8,loopback").`,
      );
    }
  }
  return list;
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

/** DOCKHAND_DATABASE_URL, checked; undefined means SQLite. */
export function readDatabaseUrl(env: NodeJS.ProcessEnv): string | undefined {
  const url = env.DOCKHAND_DATABASE_URL?.trim();
  if (!url) return undefined;
  if (!/^postgres(ql)?:\/\/\S+$/.test(url)) {
    // Never repeat the value: it usually holds a password.
    throw new ConfigError(
      'DOCKHAND_DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (or unset for SQLite).',
    );
  }
  return url;
}

export function loadServerConfig(
  flags: { port?: string; host?: string; dataDir?: string; tlsCert?: string; tlsKey?: string; config?: string },
  processEnv: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const file = loadConfigFile(flags.config, processEnv);
  const env = withFileSettings(processEnv, file);
  const executorsAccessToken = env.DOCKHAND_EXECUTORS_ACCESS_TOKEN ?? '';
  if (executorsAccessToken.length < MIN_EXECUTOR_TOKEN_LENGTH) {
    const why = executorsAccessToken ? `is only ${executorsAccessToken.length} characters long` : 'is not set';
    throw new ConfigError(`DOCKHAND_EXECUTORS_ACCESS_TOKEN ${why}. ${EXECUTOR_TOKEN_HELP}`);
  }
  const adminToken = env.DOCKHAND_ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && adminToken.length < MIN_EXECUTOR_TOKEN_LENGTH) {
    throw new ConfigError(
      `DOCKHAND_ADMIN_TOKEN must be at least ${MIN_EXECUTOR_TOKEN_LENGTH} characters long, or unset to have one generated.`,
    );
  }
  const port = flags.port ?? env.DOCKHAND_PORT;
  return {
    host: flags.host ?? env.DOCKHAND_HOST ?? '0.0.0.0',
    port: port === undefined ? 7070 : readEnv({ PORT: port }, 'PORT', envInt('--port', 0, 65535), 7070),
    dataDir: path.resolve(flags.dataDir ?? defaultDataDir(env)),
    databaseUrl: readDatabaseUrl(env),
    executorsAccessToken,
    adminToken,
    encryptionKey: env.DOCKHAND_ENCRYPTION_KEY?.trim() || undefined,
    stalledJobTimeoutMs: readEnv(
      env,
      'DOCKHAND_STALLED_JOB_TIMEOUT',
      envDuration('DOCKHAND_STALLED_JOB_TIMEOUT', { min: 200 }),
      25_000,
    ),
    maxJobResets: readEnv(env, 'DOCKHAND_MAX_JOB_RESETS', envInt('DOCKHAND_MAX_JOB_RESETS', 0, 100), 3),
    retryBackoffMs: readEnv(env, 'DOCKHAND_RETRY_BACKOFF', envDuration('DOCKHAND_RETRY_BACKOFF', { min: 10 }), 5_000),
    minFreeDiskBytes: readEnv(env, 'DOCKHAND_MIN_FREE_DISK', envSize('DOCKHAND_MIN_FREE_DISK'), DEFAULT_MIN_FREE_DISK),
    logLevel: readEnv(
      env,
      'DOCKHAND_LOG_LEVEL',
      z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
      'info',
    ),
    tls: loadTls(flags, env),
    authFailureLimit: readEnv(
      env,
      'DOCKHAND_AUTH_FAILURE_LIMIT',
      envInt('DOCKHAND_AUTH_FAILURE_LIMIT', 0, 1_000_000),
      DEFAULT_AUTH_FAILURE_LIMIT,
    ),
    authFailureWindowMs: readEnv(
      env,
      'DOCKHAND_AUTH_FAILURE_WINDOW',
      envDuration('DOCKHAND_AUTH_FAILURE_WINDOW', { min: 1_000, max: 24 * 3600_000 }),
      DEFAULT_AUTH_FAILURE_WINDOW_MS,
    ),
    trustProxy: trustProxySetting(env),
    builds: file.builds,
    configFile: file.file,
  };
}
