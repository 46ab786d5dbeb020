// Reading configuration from environment variables with zod, so a bad value names the variable and the fix.
import { z } from 'zod';
import { formatDuration, parseDuration, parseSize } from './units.js';

export class ConfigError extends Error {}

export const envDuration = (name: string, bounds: { min?: number; max?: number } = {}) =>
  z.string().transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(value)} is not a duration; use e.g. "25s", "5m" or "1h"`,
      });
      return z.NEVER;
    }
    const { min = 0, max = Infinity } = bounds;
    if (ms < min || ms > max) {
      const range =
        max === Infinity ? `at least ${formatDuration(min)}` : `from ${formatDuration(min)} to ${formatDuration(max)}`;
      ctx.addIssue({ code: 'custom', message: `${name}=${JSON.stringify(value)} must be ${range}` });
      return z.NEVER;
    }
    return ms;
  });

export const envSize = (name: string) =>
  z.string().transform((value, ctx) => {
    const bytes = parseSize(value);
    if (bytes === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(value)} is not a size; use e.g. "512M", "4G" or 0`,
      });
      return z.NEVER;
    }
    return bytes;
  });

export const envInt = (name: string, min: number, max: number) =>
  z.string().transform((value, ctx) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(value)} must be a whole number from ${min} to ${max}`,
      });
      return z.NEVER;
    }
    return n;
  });

export const envNumber = (name: string, min: number, max: number) =>
  z.string().transform((value, ctx) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(value)} must be a number from ${min} to ${max}`,
      });
      return z.NEVER;
    }
    return n;
  });

export const envBool = (name: string) =>
  z.string().transform((value, ctx) => {
    const v = value.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
    ctx.addIssue({ code: 'custom', message: `${name}=${JSON.stringify(value)} must be true or false` });
    return z.NEVER;
  });

/**
 * Reads `name` from `env` with `schema`, falling back to `fallback` when unset or empty. A `secret` value is never
 * repeated in the error (it would end up in logs); the error names the variable and the part that is wrong.
 */
export function readEnv<T>(
  env: NodeJS.ProcessEnv,
  name: string,
  schema: z.ZodType<T>,
  fallback: T,
  opts: { secret?: boolean } = {},
): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const result = schema.safeParse(raw);
  if (!result.success) {
    const named = (issue: z.core.$ZodIssue): string => {
      if (issue.message.includes(name)) return issue.message;
      const where = issue.path.length ? ` ${issue.path.map(String).join('.')}` : '';
      return opts.secret
        ? `${name}${where}: ${issue.message}`
        : `${name}=${JSON.stringify(raw)}${where}: ${issue.message}`;
    };
    throw new ConfigError(result.error.issues.map(named).join('; '));
  }
  return result.data;
}
