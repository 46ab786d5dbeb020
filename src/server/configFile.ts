// The server's config file (`dockhand server --config FILE`, or DOCKHAND_CONFIG): YAML, checked in full at start.
// It holds the build manager's settings (`builds:`, in Quay's shape) and, optionally, any DOCKHAND_* setting by its
// variable's name; a variable set in the environment wins over the file. Errors name the key and the fix.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../core/envConfig.js';
import { buildsConfig, type BuildsConfig } from './builds/buildsConfig.js';

/** DOCKHAND_* settings a file may hold (not the shared secrets: those belong in the environment or a secret store). */
const FILE_SETTINGS = [
  'DOCKHAND_PORT',
  'DOCKHAND_HOST',
  'DOCKHAND_DATA_DIR',
  'DOCKHAND_DATABASE_URL',
  'DOCKHAND_STALLED_JOB_TIMEOUT',
  'DOCKHAND_MAX_JOB_RESETS',
  'DOCKHAND_RETRY_BACKOFF',
  'DOCKHAND_MIN_FREE_DISK',
  'DOCKHAND_LOG_LEVEL',
  'DOCKHAND_TLS_CERT',
  'DOCKHAND_TLS_KEY',
  'DOCKHAND_AUTH_FAILURE_LIMIT',
  'DOCKHAND_AUTH_FAILURE_WINDOW',
  'DOCKHAND_TRUST_PROXY',
] as const;

const settingValue = z.union([z.string(), z.number(), z.boolean()]).transform(String);

const fileSchema = z.strictObject({
  builds: buildsConfig,
  ...Object.fromEntries(FILE_SETTINGS.map((name) => [name, settingValue.optional()])),
});

export interface ServerFileConfig {
  /** The file, resolved; undefined when none was given. */
  file?: string;
  builds: BuildsConfig;
  /** DOCKHAND_* settings from the file, for those the environment does not set. */
  env: Record<string, string>;
}

const SECRET_KEYS = new Set(['DOCKHAND_EXECUTORS_ACCESS_TOKEN', 'DOCKHAND_ADMIN_TOKEN', 'DOCKHAND_ENCRYPTION_KEY']);

/** Reads and checks the file named by `flag` or DOCKHAND_CONFIG; without one, the defaults (no build planes). */
export function loadConfigFile(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): ServerFileConfig {
  const given = flag ?? (env.DOCKHAND_CONFIG?.trim() || undefined);
  if (!given) return { builds: buildsConfig.parse(undefined), env: {} };
  const file = path.resolve(given);
  const from = flag ? `--config ${given}` : `DOCKHAND_CONFIG=${given}`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `${from}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  let raw: unknown;
  try {
    const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length) throw new Error(doc.errors[0].message.split('\n')[0]);
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigError(`${file}: must be a mapping of settings, e.g. "builds:" with its keys`);
  for (const key of Object.keys(raw)) {
    if (SECRET_KEYS.has(key))
      throw new ConfigError(
        `${file}: ${key} may not be set in the config file: give it in the environment, where secrets belong`,
      );
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.slice(0, 10).map((issue) => {
      const key = issue.path
        .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
        .join('')
        .replace(/^\./, '');
      const known =
        issue.code === 'unrecognized_keys'
          ? ` (unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}; check the spelling against docs/builds.md#configuration and the README's configuration table)`
          : '';
      return `  ${key || '(top level)'}: ${issue.message}${known}`;
    });
    throw new ConfigError(`${file}: invalid settings:\n${lines.join('\n')}`);
  }
  const { builds, ...settings } = parsed.data;
  const fileEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(settings)) if (typeof v === 'string') fileEnv[k] = v;
  if (builds.EXECUTORS.some((p) => p.EXECUTOR === 'kubernetes' && !p.SERVER_URL))
    throw new ConfigError(
      `${file}: builds.EXECUTORS: a kubernetes plane needs SERVER_URL, the address its pods reach this server at (e.g. http://dockhand.dockhand.svc:7070)`,
    );
  return { file, builds, env: fileEnv };
}

/** The environment with the file's settings under it: a variable set in the environment wins. */
export function withFileSettings(env: NodeJS.ProcessEnv, file: ServerFileConfig): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...env };
  for (const [k, v] of Object.entries(file.env)) if (merged[k] === undefined || merged[k] === '') merged[k] = v;
  return merged;
}
