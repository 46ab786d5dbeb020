// Which registry credential an image pull uses, by Sourcegraph's precedence, decided per registry: the job's own
// DOCKER_AUTH_CONFIG, then EXECUTOR_DOCKER_AUTH_CONFIG, then the executor user's ~/.docker/config.json (the only
// source whose credential helpers are run). The first source with an entry for the image's registry wins.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  credentialFor,
  dockerAuthConfig,
  normalizeRegistry,
  registryOf,
  type DockerAuthConfig,
  type EngineAuth,
} from '../../../core/dockerAuthConfig.js';
import { JobFailure } from '../runtime.js';

export interface ChosenCredential {
  registry: string;
  /** Where the credential came from, in words for the step's log; never the credential itself. */
  source: string;
  auth?: EngineAuth;
}

export interface CredentialSources {
  job?: DockerAuthConfig;
  executor?: DockerAuthConfig;
  /** Directory holding the user's config.json; default $DOCKER_CONFIG or ~/.docker. */
  userConfigDir?: string;
}

export async function chooseCredential(image: string, sources: CredentialSources): Promise<ChosenCredential> {
  const registry = registryOf(image);
  const fromJob = credentialFor(sources.job, registry);
  if (fromJob) return { registry, source: "the job's DOCKER_AUTH_CONFIG", auth: fromJob };
  const fromExecutor = credentialFor(sources.executor, registry);
  if (fromExecutor) return { registry, source: 'EXECUTOR_DOCKER_AUTH_CONFIG', auth: fromExecutor };
  const dir = sources.userConfigDir || process.env.DOCKER_CONFIG || path.join(os.homedir(), '.docker');
  const file = path.join(dir, 'config.json');
  const user = await readUserConfig(file);
  if (user) {
    const helper = helperFor(user, registry);
    if (helper) {
      const auth = await runCredentialHelper(helper, registry);
      if (auth) return { registry, source: `${file} (credential helper docker-credential-${helper})`, auth };
    }
    const fromUser = credentialFor(user, registry);
    if (fromUser) return { registry, source: file, auth: fromUser };
  }
  return { registry, source: 'no credentials (anonymous pull)' };
}

async function readUserConfig(file: string): Promise<DockerAuthConfig | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new JobFailure('runtime_unavailable', `${file} is not valid JSON: fix or remove it`);
  }
  // Other keys (proxies, plugins) are the docker CLI's business; only the credential parts matter here.
  const parsed = dockerAuthConfig.safeParse(json);
  if (!parsed.success)
    throw new JobFailure(
      'runtime_unavailable',
      `${file} has registry credentials in a form Docker does not use: fix or remove its "auths"`,
    );
  return parsed.data;
}

function helperFor(config: DockerAuthConfig, registry: string): string | undefined {
  for (const [key, helper] of Object.entries(config.credHelpers ?? {}))
    if (normalizeRegistry(key) === registry) return helper;
  return config.credsStore || undefined;
}

/** Docker's credential-helper protocol: the server URL on stdin, `{ServerURL, Username, Secret}` on stdout. */
function runCredentialHelper(helper: string, registry: string): Promise<EngineAuth | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const child = execFile(`docker-credential-${helper}`, ['get'], { timeout: 10_000 }, (err, stdout) => {
      if (err) return resolve(undefined);
      try {
        const { Username, Secret } = JSON.parse(stdout) as { Username?: string; Secret?: string };
        if (!Secret) return resolve(undefined);
        // By the helpers' convention, "<token>" as the user name means the secret is an identity token.
        resolve(
          Username === '<token>'
            ? { identitytoken: Secret, serveraddress: registry }
            : { username: Username, password: Secret, serveraddress: registry },
        );
      } catch {
        resolve(undefined);
      }
    });
    child.stdin?.end(registry);
  });
}
