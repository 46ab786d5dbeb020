// Build manager tests' helpers: a server with control planes from a config file, contexts as tar.gz, waiting for a
// build's phase, and the registry's own view of a pushed manifest.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { TestClient } from './api.js';
import { ADMIN_TOKEN, startServer, tempDir, type ServerHandle } from './processes.js';
import { until } from './wait.js';

export interface BuildServer {
  server: ServerHandle;
  admin: TestClient;
  dir: string;
  stop(): Promise<void>;
}

/** A server (on 0.0.0.0 when containers must reach it; on `port` when its config must name it) whose config file holds `builds`. */
export async function startBuildServer(
  builds: Record<string, unknown>,
  opts: { host?: string; env?: NodeJS.ProcessEnv; port?: number } = {},
): Promise<BuildServer> {
  const dir = await tempDir('builds');
  const configFile = path.join(dir, 'dockhand.yaml');
  writeFileSync(configFile, YAML.stringify({ builds }));
  const server = await startServer({
    host: opts.host,
    port: opts.port,
    args: ['--config', configFile],
    env: opts.env,
    name: 'build-server',
  });
  return { server, admin: new TestClient(server.url, ADMIN_TOKEN), dir, stop: () => server.stop() };
}

/** DOCKER_AUTH_CONFIG for one registry. */
export function authConfig(registry: string, user: string, password: string): string {
  return JSON.stringify({ auths: { [registry]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } });
}

/** The files as a tar.gz, made by tar. */
export async function tarGz(files: Record<string, string>): Promise<Buffer> {
  const dir = await tempDir('context');
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), content);
  }
  return execFileSync('tar', ['-czf', '-', '-C', dir, '.'], { maxBuffer: 64 * 1024 * 1024 });
}

/** Uploads the files as a context and submits a build of them; returns the build. */
export async function submitUpload(
  client: TestClient,
  files: Record<string, string>,
  body: Record<string, unknown>,
  token = ADMIN_TOKEN,
): Promise<BuildAnswer> {
  const res = await fetch(`${client.url}/api/v1/builds/contexts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
    body: new Uint8Array(await tarGz(files)),
  });
  const uploaded = (await res.json()) as { id: string };
  if (res.status !== 201) throw new Error(`upload: ${res.status} ${JSON.stringify(uploaded)}`);
  const made = await client.call<{ build: BuildAnswer }>('POST', '/builds', {
    ...body,
    context: { upload: uploaded.id },
  });
  if (made.status !== 201) throw new Error(`submit: ${made.status} ${JSON.stringify(made.body)}`);
  return made.body.build;
}

export interface BuildAnswer {
  id: number;
  phase: string;
  final: boolean;
  digest: string | null;
  message: string | null;
  tries: number;
  triesRemaining: number;
  plane: string | null;
  phases: { phase: string; at: number }[];
}

export interface TryAnswer {
  number: number;
  plane: string;
  executionId: string | null;
  startedAt: number;
  registeredAt: number | null;
  endedAt: number | null;
  outcome: string | null;
  message: string | null;
}

export async function getBuild(client: TestClient, id: number): Promise<{ build: BuildAnswer; tries: TryAnswer[] }> {
  const answer = await client.call<{ build: BuildAnswer; tries: TryAnswer[] }>('GET', `/builds/${id}`);
  if (answer.status !== 200) throw new Error(`GET build ${id}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** Waits until the build is in one of `phases` (default: final), failing at once if it ends elsewhere. */
export async function waitForBuild(
  client: TestClient,
  id: number,
  phases?: string[],
  timeoutMs = 120_000,
): Promise<BuildAnswer> {
  let last: BuildAnswer | undefined;
  return until(
    `build ${id} is ${phases?.join(' or ') ?? 'final'}`,
    async () => {
      last = (await getBuild(client, id)).build;
      return (phases ? phases.includes(last.phase) : last.final) ? last : undefined;
    },
    timeoutMs,
    100,
    () =>
      phases && last?.final && !phases.includes(last.phase)
        ? `it ended ${last.phase}: ${last.message ?? ''}\n${''}`
        : undefined,
  );
}

export async function buildLog(client: TestClient, id: number): Promise<string> {
  const answer = await client.call<{ entries: { kind: string; text: string; phase?: string }[] }>(
    'GET',
    `/builds/${id}/logs`,
  );
  return answer.body.entries.map((e) => (e.kind === 'phase' ? `phase ${e.phase}` : e.text)).join('\n');
}

/** The digest the registry itself gives for REPO:TAG (with basic auth through its token-less htpasswd). */
export async function registryDigest(
  host: string,
  repo: string,
  tag: string,
  user: string,
  password: string,
): Promise<string> {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: {
      authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
      accept: [
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
        'application/vnd.oci.image.index.v1+json',
      ].join(', '),
    },
  });
  if (res.status !== 200) throw new Error(`registry HEAD ${repo}:${tag}: ${res.status}`);
  const digest = res.headers.get('docker-content-digest');
  if (!digest) throw new Error('the registry sent no Docker-Content-Digest');
  return digest;
}
