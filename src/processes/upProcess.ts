// `dockhand up`: a coordinator and one local executor in one process, for trying Dockhand on one machine.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../core/envConfig.js';
import type { Runtime } from '../executor/runtimes/runtime.js';
import type { PlaneConfig } from '../server/builds/buildsConfig.js';
import { exitOnNameLost, startAgent } from './executorProcess.js';
import { exitOnSetupError, loadPino, onSignals } from './lifecycle.js';

/** `dockhand up` runs steps in Docker when an engine answers (unless EXECUTOR_RUNTIME says otherwise). */
async function upRuntime(env: NodeJS.ProcessEnv, log: Logger): Promise<{ runtime: Runtime; note: string }> {
  const [{ createRuntime }, { loadRuntimeSettings }, { RuntimeSetupError }] = await Promise.all([
    import('../executor/runtimes/index.js'),
    import('../executor/runtimes/settings.js'),
    import('../executor/runtimes/runtime.js'),
  ]);
  if (env.EXECUTOR_RUNTIME)
    return { runtime: await createRuntime(loadRuntimeSettings(env), log), note: 'chosen by EXECUTOR_RUNTIME' };
  try {
    return {
      runtime: await createRuntime(loadRuntimeSettings({ ...env, EXECUTOR_RUNTIME: 'docker' }), log),
      note: 'a Docker engine answered',
    };
  } catch (err) {
    if (!(err instanceof RuntimeSetupError)) throw err;
    const why = err.message.split('\n')[0];
    return {
      runtime: await createRuntime(loadRuntimeSettings({ ...env, EXECUTOR_RUNTIME: 'shell' }), log),
      note: `no usable Docker engine (${why})`,
    };
  }
}

/** `dockhand up`'s flags. */
export interface UpFlags {
  port: string;
  host: string;
  dataDir?: string;
  queues: string;
  jobs: string;
  tlsCert?: string;
  tlsKey?: string;
  config?: string;
}

/** Runs a coordinator and a local executor until a signal stops them. */
export async function runUp(opts: UpFlags): Promise<void> {
  const [
    pino,
    { logRedact },
    { API_TOKEN_PREFIX, hashToken, newToken },
    { loadExecutorConfig },
    { executorLogHooks },
    { defaultDataDir, loadServerConfig },
    { bootstrapAdminUser, startServer },
    { describeStore },
    { saveCredentials },
  ] = await Promise.all([
    loadPino(),
    import('../core/logRedact.js'),
    import('../core/tokens.js'),
    import('../executor/config.js'),
    import('../executor/redactor.js'),
    import('../server/config.js'),
    import('../server/server.js'),
    import('../store/open.js'),
    import('../cli/client.js'),
  ]);
  const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
  const env = {
    ...process.env,
    DOCKHAND_EXECUTORS_ACCESS_TOKEN: process.env.DOCKHAND_EXECUTORS_ACCESS_TOKEN || localExecutorToken(dataDir),
  };
  const config = loadServerConfig(
    { port: opts.port, host: opts.host, dataDir, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, config: opts.config },
    env,
  );
  const buildPlane = config.builds.EXECUTORS.length
    ? {
        note: `from ${config.configFile}: ${config.builds.EXECUTORS.map((p) => `${p.NAME} (${p.EXECUTOR})`).join(', ')}`,
      }
    : await localBuildPlane();
  if ('plane' in buildPlane && buildPlane.plane) config.builds = { ...config.builds, EXECUTORS: [buildPlane.plane] };
  // One logger for both halves: the executor's masking (its token, jobs' tokens and secrets) covers all of it.
  const log = pino({
    level: process.env.DOCKHAND_LOG_LEVEL ?? 'warn',
    ...logRedact,
    hooks: executorLogHooks(env.DOCKHAND_EXECUTORS_ACCESS_TOKEN),
  });
  const stopper = onSignals(log);
  const server = await startServer(config, log.child({ component: 'server' }));
  if (config.tls) await ensureTrusted(server);
  // A fresh token for this machine's CLI at every start: the old one cannot be shown again (stored hashed).
  let token = server.bootstrapToken;
  if (!token) {
    token = newToken(API_TOKEN_PREFIX);
    const admin = await bootstrapAdminUser(server.store.accounts);
    await server.store.accounts.deleteTokensNamed(admin.id, 'up');
    await server.store.accounts.createToken(admin.id, 'up', hashToken(token), Date.now());
  }
  const saved = saveCredentials(server.url, token);
  const executorEnv = {
    ...process.env,
    EXECUTOR_FRONTEND_URL: server.url,
    EXECUTOR_FRONTEND_PASSWORD: env.DOCKHAND_EXECUTORS_ACCESS_TOKEN,
    EXECUTOR_QUEUE_NAME: undefined,
    EXECUTOR_QUEUE_NAMES: opts.queues,
    EXECUTOR_MAXIMUM_NUM_JOBS: process.env.EXECUTOR_MAXIMUM_NUM_JOBS ?? opts.jobs,
    // Apart from a standalone executor on the same host, whose containers its janitor must not take for its own.
    EXECUTOR_NAME: process.env.EXECUTOR_NAME || `${os.hostname()}-local`,
  };
  const executorConfig = loadExecutorConfig(executorEnv);
  const executorLog = log.child({ component: 'executor' });
  const chosen = await upRuntime(executorEnv, executorLog).catch(exitOnSetupError);
  const agent = await startAgent(executorConfig, executorLog, chosen.runtime).catch(async (err: unknown) => {
    await server.close();
    return exitOnSetupError(err);
  });
  exitOnNameLost(agent, () => server.close());
  process.stdout.write(
    [
      `Dockhand is up: ${server.url}`,
      `  web UI:    ${server.url}/ (sign in with the API token below)`,
      `  data:      ${describeStore(config)}`,
      `  executor:  ${agent.name} (queues ${executorConfig.queues.join(', ')})`,
      `  runtime:   ${chosen.runtime.name}: ${chosen.note}`,
      `  builds:    ${buildPlane.note}`,
      `  API token: ${token}`,
      `             (saved to ${saved}; the CLI on this machine uses it)`,
      '',
      'Try:  npx dockhand job submit examples/hello.yaml --follow',
      '      npx dockhand build submit --context examples/image --tag 127.0.0.1:5000/demo/hello:1 --follow',
      '',
    ].join('\n'),
  );
  stopper.started(
    async () => {
      await agent.drain();
      await server.close();
    },
    async () => {
      await agent.abort(3_000);
      await server.close();
    },
  );
}

/**
 * `dockhand up`'s image builds, when no config file names planes: a worker container when the worker image is on a
 * Docker engine here (apart from this host's processes and files, though on its network, to reach the loopback
 * server), else buildah on this host when it is installed and this is root (trusted Dockerfiles only), else none,
 * with what would make one.
 */
async function localBuildPlane(): Promise<{ plane?: PlaneConfig; note: string }> {
  const [{ planeConfig }, { VERSION }, { default: Docker }] = await Promise.all([
    import('../server/builds/buildsConfig.js'),
    import('../core/version.js'),
    import('dockerode'),
  ]);
  const image = 'dockhand/build-worker';
  try {
    await new Docker().getImage(`${image}:${VERSION}`).inspect();
    // The container needs podman's seccomp profile (docs/build-workers.md); without it, try buildah here.
    if (!existsSync('/usr/share/containers/seccomp.json')) throw new Error('no seccomp profile');
    return {
      // `up` listens on loopback: the worker shares this host's network to reach it (and a registry on 127.0.0.1).
      plane: planeConfig.parse({
        EXECUTOR: 'docker',
        NAME: 'local-docker',
        WORKER_IMAGE: image,
        WORKER_TAG: VERSION,
        NETWORK: 'host',
      }),
      note: `docker plane local-docker (worker image ${image}:${VERSION}, on this host's network)`,
    };
  } catch {
    // no engine, or no image: try buildah here
  }
  const buildah = process.env.PATH?.split(':').some((dir) => dir && existsSync(path.join(dir, 'buildah')));
  if (buildah && process.getuid?.() === 0)
    return {
      plane: planeConfig.parse({ EXECUTOR: 'process', NAME: 'local' }),
      note: 'process plane local: buildah on this host, as root; for Dockerfiles you trust (docs/builds.md)',
    };
  return {
    note: `none: make the worker image (sudo scripts/build-worker-image.sh), or run as root with buildah installed, or give --config (docs/builds.md)`,
  };
}

/**
 * Over HTTPS the local executor and CLI must trust the server's certificate. A self-signed one is trusted only
 * through NODE_EXTRA_CA_CERTS (read once at process start), so say that rather than let the executor fail forever.
 */
async function ensureTrusted(server: { url: string; close(): Promise<void> }): Promise<void> {
  try {
    await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    await server.close();
    throw new ConfigError(
      `the local executor cannot verify ${server.url}: ${cause?.message ?? (err as Error).message}. For a self-signed certificate, start ` +
        'with NODE_EXTRA_CA_CERTS=<the certificate or its CA, PEM> (the CLI needs the same); the certificate must name the ' +
        'address in the URL (e.g. subjectAltName IP:127.0.0.1).',
    );
  }
}

/** `dockhand up` keeps its executors' shared secret in the data dir, so restarts keep working. */
function localExecutorToken(dataDir: string): string {
  const file = path.join(dataDir, 'executors-access-token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const token = randomBytes(32).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}
