// Registration tokens: a short-lived JWT (HS256, a key derived from the server's encryption keys, so every replica
// can verify it) bound to one build and one try, handed to a worker out of band and exchanged once for a job token.
// The job token is random, stored hashed, and valid while its try is current (the store's fencing).
import { randomUUID } from 'node:crypto';
import { SignJWT, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import type { Keyring } from '../secrets/keyring.js';

const PURPOSE = 'build registration';
const ISSUER = 'dockhand';
const AUDIENCE = 'dockhand-build-worker';
const TOKEN_TYPE = 'build_job_registration';
/** Quay's JWT_CLOCK_SKEW_SECONDS. */
const CLOCK_TOLERANCE_S = 30;

export const BUILD_JOB_TOKEN_PREFIX = 'dhb_';

export interface Registration {
  buildId: number;
  tryNumber: number;
  jti: string;
}

export class BuildTokens {
  constructor(private readonly keyring: Keyring) {}

  /** A token for one try, valid for `lifetimeS` (the plane's setup time plus leeway). */
  async issue(buildId: number, tryNumber: number, lifetimeS: number): Promise<{ token: string; jti: string }> {
    const [{ id, key }] = this.keyring.signingKeys(PURPOSE);
    const jti = randomUUID();
    const token = await new SignJWT({ typ: TOKEN_TYPE, build: buildId, try: tryNumber })
      .setProtectedHeader({ alg: 'HS256', kid: id })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setNotBefore('0s')
      .setExpirationTime(`${Math.ceil(lifetimeS)}s`)
      .setJti(jti)
      .sign(key);
    return { token, jti };
  }

  /** The registration a token carries, or why it is refused (never the token itself). */
  async verify(token: string): Promise<Registration | { refused: string }> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return { refused: 'not a registration token' };
    }
    const key = this.keyring.signingKeys(PURPOSE).find((k) => k.id === kid)?.key;
    if (!key) return { refused: 'signed with a key this server does not hold' };
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['HS256'],
        issuer: ISSUER,
        audience: AUDIENCE,
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ['exp', 'jti'],
      });
      if (payload.typ !== TOKEN_TYPE || !Number.isInteger(payload.build) || !Number.isInteger(payload.try))
        return { refused: 'not a registration token' };
      return { buildId: payload.build as number, tryNumber: payload.try as number, jti: payload.jti! };
    } catch (err) {
      if (err instanceof errors.JWTExpired) return { refused: 'the registration token has expired' };
      return { refused: 'the registration token is not valid' };
    }
  }
}
