// Secrets that must never reach a log line, whatever object a log call is handed: credentials in request headers,
// tokens in job payloads, and the shared secrets in configuration objects. Used by every pino logger the CLI makes.
import type { LoggerOptions } from 'pino';

export const REDACTED = '[redacted]';

const SECRET_KEYS = ['authorization', 'cookie', 'token', 'executorsAccessToken', 'adminToken', 'frontendPassword', 'password'];

/** pino `redact` paths: each secret key at the top of a log object and one or two levels down (req.headers.authorization). */
export const LOG_REDACT_PATHS: string[] = SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]).concat([
  'req.headers["proxy-authorization"]',
  'headers["proxy-authorization"]',
  'config.tls.key',
]);

export const logRedact: NonNullable<LoggerOptions['redact']> = { paths: LOG_REDACT_PATHS, censor: REDACTED };
