import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Prefixes make a leaked token recognisable (and greppable by secret scanners). */
export const API_TOKEN_PREFIX = 'dha_';
export const JOB_TOKEN_PREFIX = 'dhj_';
export const MIN_EXECUTOR_TOKEN_LENGTH = 20;

export function newToken(prefix: string): string {
  return prefix + randomBytes(24).toString('hex');
}

/** Tokens are stored as SHA-256 digests: they are random and long, so no slow hash is needed. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time comparison; hashing first makes the lengths equal, so the length is not leaked either. */
export function tokensEqual(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}
