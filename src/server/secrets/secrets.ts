// Executor secrets on the server: stored encrypted, resolved for a job in its namespace (a namespaced secret
// overrides a global one of the same name), each resolution written to the access log.
import { z } from 'zod';
import { dockerAuthConfig, staticDockerAuthConfigInput, type DockerAuthConfig } from '../../core/dockerAuthConfig.js';
import {
  JOB_CREDENTIALS_CONTEXT,
  secretContext,
  type Accounts,
  type SecretRecord,
  type StoredSecret,
} from '../../store/accounts.js';
import type { JobRecord } from '../../store/store.js';
import { CIPHERTEXT_PREFIX_LENGTH, type Keyring } from './keyring.js';

/** The secret that carries registry logins for the docker runtime instead of being set in the env. */
export const DOCKER_AUTH_CONFIG = 'DOCKER_AUTH_CONFIG';

/** Shorter values would mask ordinary words in every log (GitLab refuses masked variables under 8 too). */
export const MIN_SECRET_LENGTH = 8;
export const MAX_SECRET_LENGTH = 64 * 1024;

export const secretValue = z
  .string()
  .min(
    MIN_SECRET_LENGTH,
    `must be at least ${MIN_SECRET_LENGTH} characters: shorter values would be masked wherever they happen to appear in ordinary log text`,
  )
  .max(MAX_SECRET_LENGTH, `must be at most ${MAX_SECRET_LENGTH} characters`);

/** Checks a DOCKER_AUTH_CONFIG value; returns the problem, if any. */
export function dockerAuthConfigProblem(value: string): string | undefined {
  const parsed = staticDockerAuthConfigInput.safeParse(value);
  if (parsed.success)
    return parsed.data.auths && Object.keys(parsed.data.auths).length
      ? undefined
      : 'must hold at least one registry in "auths"';
  return `must be docker config.json JSON, {"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}: ${parsed.error.issues[0]?.message ?? 'invalid'}`;
}

export interface ResolvedSecrets {
  /** Secret values by name, for the steps' env (DOCKER_AUTH_CONFIG is not among them). */
  env: Record<string, string>;
  /** The job's registry credentials: those given with the job, overridden per registry by DOCKER_AUTH_CONFIG. */
  dockerAuthConfig?: DockerAuthConfig;
}

/** A job names a secret that exists neither in its namespace nor in global (deleted since it was submitted). */
export class MissingSecretError extends Error {}

export class Secrets {
  constructor(
    private readonly accounts: Accounts,
    readonly keyring: Keyring,
  ) {}

  async set(s: {
    namespace: string;
    name: string;
    value: string;
    updatedBy: string;
  }): Promise<{ created: boolean; secret: SecretRecord }> {
    const ciphertext = this.keyring.encrypt(s.value, secretContext(s.namespace, s.name));
    return this.accounts.putSecret({
      namespace: s.namespace,
      name: s.name,
      ciphertext,
      updatedBy: s.updatedBy,
      now: Date.now(),
    });
  }

  /** The names in `names` found neither in `namespace` nor in global. */
  async missing(namespace: string, names: string[]): Promise<string[]> {
    if (names.length === 0) return [];
    const found = new Set((await this.accounts.findSecrets(namespace, names)).map((s) => s.name));
    return names.filter((n) => !found.has(n));
  }

  /**
   * The secrets a job uses, decrypted, with one access-log row each: the names in its spec, and DOCKER_AUTH_CONFIG
   * whenever its namespace or global has one (as Sourcegraph does, so registry logins need no mention in specs).
   */
  async resolveForJob(
    job: JobRecord,
    executorName: string,
    storedCredentials: string | undefined,
    /** Lookups already made for other jobs of the same dequeue, by namespace and names: each is made once. */
    lookups = new Map<string, Promise<StoredSecret[]>>(),
  ): Promise<ResolvedSecrets> {
    const names = [...new Set([...(job.spec.secrets ?? []), DOCKER_AUTH_CONFIG])];
    const key = JSON.stringify([job.namespace, names]);
    let lookup = lookups.get(key);
    if (!lookup) lookups.set(key, (lookup = this.accounts.findSecrets(job.namespace, names)));
    const stored = await lookup;
    const chosen = new Map<string, StoredSecret>();
    for (const secret of stored) {
      if (!chosen.has(secret.name) || secret.namespace !== 'global') chosen.set(secret.name, secret);
    }
    const lost = (job.spec.secrets ?? []).filter((n) => !chosen.has(n));
    if (lost.length) {
      throw new MissingSecretError(
        `secret${lost.length > 1 ? 's' : ''} ${lost.join(', ')} no longer exist${lost.length > 1 ? '' : 's'} in ${job.namespace} or global (deleted after the job was submitted)`,
      );
    }
    const env: Record<string, string> = {};
    let fromSecret: DockerAuthConfig | undefined;
    for (const secret of chosen.values()) {
      const value = this.keyring.decrypt(secret.ciphertext, secretContext(secret.namespace, secret.name));
      if (secret.name === DOCKER_AUTH_CONFIG) fromSecret = dockerAuthConfig.parse(JSON.parse(value));
      else env[secret.name] = value;
    }
    const now = Date.now();
    await this.accounts.recordSecretAccess(
      [...chosen.values()].map((s) => ({
        namespace: s.namespace,
        name: s.name,
        jobId: job.id,
        attempt: job.attempt,
        executorName,
        accessedAt: now,
      })),
    );
    const given = this.openJobCredentials(storedCredentials);
    const auths = { ...given?.auths, ...fromSecret?.auths };
    return { env, dockerAuthConfig: Object.keys(auths).length ? { auths } : undefined };
  }

  /**
   * Secret values by name for a build of `namespace` (a namespaced secret overrides a global one); names found in
   * neither are left out, and the caller says which it needs.
   */
  async resolveNamed(namespace: string, names: string[]): Promise<Map<string, string>> {
    const chosen = new Map<string, StoredSecret>();
    for (const secret of await this.accounts.findSecrets(namespace, [...new Set(names)])) {
      if (!chosen.has(secret.name) || secret.namespace !== 'global') chosen.set(secret.name, secret);
    }
    return new Map(
      [...chosen].map(([name, s]) => [name, this.keyring.decrypt(s.ciphertext, secretContext(s.namespace, s.name))]),
    );
  }

  /** The value of `name` in `namespace` itself and in global, each decrypted if present (no fallback between them). */
  async resolveScopes(namespace: string, name: string): Promise<{ own?: string; global?: string }> {
    const out: { own?: string; global?: string } = {};
    for (const secret of await this.accounts.findSecrets(namespace, [name])) {
      const value = this.keyring.decrypt(secret.ciphertext, secretContext(secret.namespace, secret.name));
      if (secret.namespace === 'global' && namespace !== 'global') out.global = value;
      else out.own = value;
    }
    return out;
  }

  sealJobCredentials(json: string): string {
    return this.keyring.encrypt(json, JOB_CREDENTIALS_CONTEXT);
  }

  /** Jobs submitted before encryption existed hold their credentials as plain JSON; rotation encrypts them. */
  private openJobCredentials(stored: string | undefined): DockerAuthConfig | undefined {
    if (!stored) return undefined;
    const json = stored.startsWith('{') ? stored : this.keyring.decrypt(stored, JOB_CREDENTIALS_CONTEXT);
    return dockerAuthConfig.parse(JSON.parse(json));
  }

  /** Key ids that stored values were encrypted with and this server lacks. */
  async missingKeys(): Promise<string[]> {
    return this.keyring.missingKeys(await this.accounts.ciphertextPrefixes(CIPHERTEXT_PREFIX_LENGTH));
  }
}
