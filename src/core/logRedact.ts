// Secrets that must never reach a log line, whatever object a log call is handed: credentials in request headers,
// tokens in job payloads, and the shared secrets in configuration objects. Used by every pino logger the CLI makes.
import type { LoggerOptions } from 'pino';

export const REDACTED = '[redacted]';

const SECRET_KEYS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'token',
  'executorsAccessToken',
  'adminToken',
  'frontendPassword',
  'password',
]);
/** Levels below the log object searched: a secret key at the top, one or two levels down (req.headers.authorization). */
const DEPTH = 2;
/** Keys of objects passed to a log call that hold secrets elsewhere than under a SECRET_KEYS name. */
const SECRET_PATHS = [['config', 'tls', 'key']];

const isPlain = (value: unknown): value is Record<string, unknown> => {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

/**
 * The log object with every SECRET_KEYS value at most DEPTH levels down replaced by REDACTED. Objects on the way are
 * copied, never changed (a log call may be handed live request headers); without secrets the object itself comes
 * back. Plain objects are searched; class instances (requests, errors) go to pino's serializers, which pick fields
 * without credentials.
 */
function scrub(obj: Record<string, unknown>, depth: number): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key in obj) {
    const value = obj[key];
    let next = value;
    if (SECRET_KEYS.has(key) && value !== undefined) next = REDACTED;
    else if (depth < DEPTH && isPlain(value)) next = scrub(value, depth + 1);
    if (next !== value) (copy ??= { ...obj })[key] = next;
  }
  return copy ?? obj;
}

function redactSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  let out = scrub(obj, 0);
  for (const path of SECRET_PATHS) {
    const [a, b, c] = path;
    const inner = out[a] as Record<string, Record<string, unknown>> | undefined;
    if (isPlain(inner) && isPlain(inner[b]) && inner[b][c] !== undefined) {
      out = { ...out, [a]: { ...inner, [b]: { ...inner[b], [c]: REDACTED } } };
    }
  }
  return out;
}

/**
 * pino options that redact: a `log` formatter that looks only at the keys of the log object (and two levels down),
 * which costs a fraction of pino's `redact` paths with wildcards on every line (BENCHMARKS.md, bench:throughput).
 */
export const logRedact: Pick<LoggerOptions, 'formatters'> = { formatters: { log: redactSecrets } };
