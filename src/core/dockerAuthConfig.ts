// Registry credentials in Docker's config.json `auths` format, as Sourcegraph's DOCKER_AUTH_CONFIG and
// EXECUTOR_DOCKER_AUTH_CONFIG carry them. One schema for the job spec, the executor's environment and
// ~/.docker/config.json, so all three are read the same way.
import { z } from 'zod';

const registryCredential = z
  .object({
    auth: z.string().optional().describe('base64 of "user:password"'),
    username: z.string().optional(),
    password: z.string().optional(),
    identitytoken: z.string().optional(),
    registrytoken: z.string().optional(),
  })
  .refine(
    (c) => c.auth || c.username || c.identitytoken || c.registrytoken,
    'needs "auth" (base64 of user:password), or "username" and "password", or "identitytoken"',
  );

export const dockerAuthConfig = z.object({
  auths: z.record(z.string().min(1, 'registry host must not be empty'), registryCredential).optional(),
  /** Credential helpers: only honoured from the executor user's own ~/.docker/config.json. */
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});
export type DockerAuthConfig = z.infer<typeof dockerAuthConfig>;

/** Accepts the config as an object or as its JSON text (what people paste from a config.json). */
export const dockerAuthConfigInput = z
  .union([z.string(), z.record(z.string(), z.unknown())])
  .transform((value, ctx) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value) as unknown;
    } catch {
      ctx.addIssue({
        code: 'custom',
        message: 'is not valid JSON; expected {"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}',
      });
      return z.NEVER;
    }
  })
  .pipe(dockerAuthConfig);

/** The credential Docker's engine API takes in X-Registry-Auth. */
export interface EngineAuth {
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
  serveraddress: string;
}

const DOCKER_HUB = 'docker.io';

/** The registry an image reference pulls from: "127.0.0.1:5000/app:1" → "127.0.0.1:5000"; "alpine" → "docker.io". */
export function registryOf(image: string): string {
  const slash = image.indexOf('/');
  if (slash < 0) return DOCKER_HUB;
  const first = image.slice(0, slash);
  // Docker's own rule: the first part is a registry only if it looks like a host.
  if (first.includes('.') || first.includes(':') || first === 'localhost') return normalizeRegistry(first);
  return DOCKER_HUB;
}

/** Keys in `auths` are written many ways: "https://index.docker.io/v1/", "registry:5000", "http://host/". */
export function normalizeRegistry(key: string): string {
  const host = key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/.*$/, '')
    .toLowerCase();
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? DOCKER_HUB : host;
}

/** Credentials a job or the executor's environment may carry: static ones only, never helper programs to run. */
export const staticDockerAuthConfigInput = dockerAuthConfigInput.refine(
  (c) => !c.credHelpers && !c.credsStore,
  'may hold only "auths"; credential helpers (credHelpers, credsStore) work only from the executor user\'s ~/.docker/config.json',
);

/** The engine credential for `registry` in `config`'s auths, or undefined when it has none for that registry. */
export function credentialFor(config: DockerAuthConfig | undefined, registry: string): EngineAuth | undefined {
  for (const [key, cred] of Object.entries(config?.auths ?? {})) {
    if (normalizeRegistry(key) !== registry) continue;
    const serveraddress = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
    if (cred.identitytoken) return { identitytoken: cred.identitytoken, serveraddress };
    if (cred.registrytoken) return { registrytoken: cred.registrytoken, serveraddress };
    if (cred.auth) {
      const decoded = Buffer.from(cred.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) continue;
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), serveraddress };
    }
    return { username: cred.username, password: cred.password, serveraddress };
  }
  return undefined;
}

/**
 * What to mask of a DOCKER_AUTH_CONFIG value given as JSON text: the text itself and every secret string in it
 * (text that is not a config is masked whole).
 */
export function loginSecrets(json: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return [json];
  }
  const config = dockerAuthConfig.safeParse(parsed);
  return [json, ...secretsOf(config.success ? config.data : undefined)];
}

/** Every secret string in a config, for redaction from logs. */
export function secretsOf(config: DockerAuthConfig | undefined): string[] {
  const out: string[] = [];
  for (const cred of Object.values(config?.auths ?? {})) {
    for (const value of [cred.auth, cred.password, cred.identitytoken, cred.registrytoken]) if (value) out.push(value);
    const auth = cred.auth ? Buffer.from(cred.auth, 'base64').toString('utf8') : '';
    const colon = auth.indexOf(':');
    if (colon >= 0 && colon < auth.length - 1) out.push(auth.slice(colon + 1));
  }
  return out;
}
