// A private registry on loopback (Debian's docker-registry, CNCF distribution 2.8) with htpasswd auth,
// for tests that pull images with credentials. 127.0.0.0/8 registries need no insecure-registry setting.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { docker, removeImage } from './docker.js';
import { OUTPUT_DIR } from './processes.js';
import { freePort } from './ports.js';

export interface RegistryHandle {
  /** '127.0.0.1:PORT' */
  host: string;
  port: number;
  /** Pushes a local image as host/repoTag and returns that full reference; the engine keeps no copy of it. */
  push(localImage: string, repoTag: string): Promise<string>;
  /** Sends the registry process a signal: SIGSTOP freezes it mid-pull, SIGCONT lets it go on. */
  signal(sig: NodeJS.Signals): void;
  stop(): Promise<void>;
}

export async function startRegistry(opts: {
  user: string;
  password: string;
  /** The address to listen on (default 127.0.0.1); 0.0.0.0 lets containers reach it through their gateway. */
  listen?: string;
}): Promise<RegistryHandle> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-test-registry-'));
  try {
    await writeFile(path.join(dir, 'htpasswd'), await htpasswdLine(opts.user, opts.password));
    // The port is found free and then given to the registry, so another process can take it in between: retry.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const { child, spawnError } = await launch(dir, port, opts.listen ?? '127.0.0.1');
      const host = `127.0.0.1:${port}`;
      try {
        await waitForAuth(host, child, spawnError);
      } catch (e) {
        // Exited by itself: most likely the port was taken meanwhile. Anything else is not worth a retry.
        const exitedEarly = child.exitCode !== null || child.signalCode !== null;
        await kill(child);
        if (exitedEarly && attempt < 3) continue;
        throw e;
      }
      return handle(host, port, dir, child, opts);
    }
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

function handle(
  host: string,
  port: number,
  dir: string,
  child: ChildProcess,
  creds: { user: string; password: string },
): RegistryHandle {
  let pushes = 0;
  return {
    host,
    port,
    async push(localImage, repoTag) {
      const ref = `${host}/${repoTag}`;
      // A client config of its own: the login never touches the user's ~/.docker or credential helpers.
      const clientConfig = path.join(dir, `client-${++pushes}`);
      mkdirSync(clientConfig);
      await docker(['tag', localImage, ref]);
      try {
        await docker(['--config', clientConfig, 'login', '--username', creds.user, '--password-stdin', host], {
          input: creds.password,
        });
        await docker(['--config', clientConfig, 'push', ref]);
      } finally {
        // So a later pull of `ref` really goes to the registry.
        await removeImage(ref);
      }
      return ref;
    },
    signal(sig) {
      child.kill(sig);
    },
    async stop() {
      await kill(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function launch(
  dir: string,
  port: number,
  listen: string,
): Promise<{ child: ChildProcess; spawnError: () => Error | undefined }> {
  const config = [
    'version: 0.1',
    'log: {level: info}',
    `storage: {filesystem: {rootdirectory: ${JSON.stringify(path.join(dir, 'data'))}}, delete: {enabled: true}}`,
    // A secret of its own, or the registry warns that it made one up.
    `http: {addr: "${listen}:${port}", secret: ${randomBytes(16).toString('hex')}}`,
    `auth: {htpasswd: {realm: dockhand-test, path: ${JSON.stringify(path.join(dir, 'htpasswd'))}}}`,
    '',
  ].join('\n');
  await writeFile(path.join(dir, 'config.yml'), config);
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const log = openSync(path.join(OUTPUT_DIR, `registry-${port}.log`), 'a');
  try {
    const child = spawn('docker-registry', ['serve', 'config.yml'], { cwd: dir, stdio: ['ignore', log, log] });
    // Listened to at once: an unheard 'error' (docker-registry not installed) would crash the test process.
    let failed: Error | undefined;
    child.on('error', (e) => (failed = e));
    return { child, spawnError: () => failed };
  } finally {
    // The child has its own copy of the descriptor.
    closeSync(log);
  }
}

/** Waits until GET /v2/ answers 401: the registry is up and asks for credentials. */
async function waitForAuth(
  host: string,
  child: ChildProcess,
  spawnError: () => Error | undefined,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    const failed = spawnError();
    if (failed) throw new Error(`cannot start docker-registry (run scripts/provision.sh as root): ${failed.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `docker-registry on ${host} exited (${child.exitCode ?? child.signalCode}); see ${path.join(OUTPUT_DIR, `registry-${host.split(':')[1]}.log`)}`,
      );
    }
    try {
      const res = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 401) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline)
      throw new Error(`docker-registry on ${host} did not answer /v2/ with 401 within ${timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** A bcrypt htpasswd line (the only hash distribution accepts); the password goes on stdin, not argv. */
function htpasswdLine(user: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('htpasswd', ['-B', '-i', '-n', user], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', (e) =>
      reject(new Error(`htpasswd: ${e.message} (run scripts/provision.sh as root; it installs apache2-utils)`)),
    );
    child.once('close', (code) =>
      code === 0 ? resolve(out.trim() + '\n') : reject(new Error(`htpasswd exited with ${code}: ${err.trim()}`)),
    );
    child.stdin.end(password);
  });
}
