// Starts real `dockhand server` and `dockhand executor` processes from the built CLI, as a user would.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, readFile, realpath } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';
import { ROOT } from './root.js';
import { request } from './request.js';
import { until } from './wait.js';

export { ROOT };
export const CLI = path.join(ROOT, 'dist/cli/main.js');
export const OUTPUT_DIR = path.join(ROOT, 'test-output');

export const EXECUTORS_TOKEN = 'test-executors-token-0123456789abcdef';
export const ADMIN_TOKEN = 'dha_test_admin_token_0123456789abcdef';

if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the end-to-end tests`);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the `dockhand` CLI to its end; stdin gets `input`, or is closed at once (so nothing waits on a terminal). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input = ''): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ...env }, cwd: ROOT, timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
    child.stdin!.end(input);
  });
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `dockhand-test-${prefix}-`));
}

/** A child process whose output is kept (and written under test-output/ for post-mortems). */
export class Proc {
  readonly child: ChildProcess;
  output = '';
  /** Undoes what a killed process could not (an executor's mounted job disks). */
  afterKill?: () => Promise<void>;
  private readonly exited: Promise<number | null>;
  private readonly closed: Promise<void>;

  /** `prefix` runs the CLI through another command (e.g. onHost's), which must exec it in the same process. */
  constructor(args: string[], env: NodeJS.ProcessEnv, logName: string, prefix: string[] = []) {
    mkdirSync(OUTPUT_DIR, { recursive: true });
    const file = createWriteStream(path.join(OUTPUT_DIR, `${logName}.log`), { flags: 'a' });
    const [command, ...commandArgs] = [...prefix, process.execPath, CLI, ...args];
    this.child = spawn(command, commandArgs, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer): void => {
      this.output += d.toString();
      file.write(d);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.closed = new Promise((resolve) => this.child.once('close', () => resolve()));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code) => {
        file.end();
        resolve(code);
      }),
    );
  }

  /** All the output, once the process has exited and its pipes are drained; what there is so far while it runs. */
  async outputSoFar(): Promise<string> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) await this.closed;
    return this.output;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Waits until the output matches `pattern`; fails with the output so far after `timeoutMs`. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.match(pattern);
      if (match) return match;
      if (this.child.exitCode !== null)
        throw new Error(`process exited (${this.child.exitCode}) before printing ${pattern}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}:\n${this.output.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  async exit(): Promise<number | null> {
    return this.exited;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
    await this.afterKill?.();
  }
}

export interface ServerHandle {
  url: string;
  port: number;
  dataDir: string;
  proc: Proc;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startServer(
  opts: {
    env?: NodeJS.ProcessEnv;
    name?: string;
    port?: number;
    dataDir?: string;
    /** The address to listen on (default 127.0.0.1); containers reach a server on 0.0.0.0 through their gateway. */
    host?: string;
    /** More arguments for `dockhand server`, e.g. ['--config', FILE]. */
    args?: string[];
  } = {},
): Promise<ServerHandle> {
  const dataDir = opts.dataDir ?? (await tempDir('server'));
  const env = {
    DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
    DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
    DOCKHAND_LOG_LEVEL: 'info',
    ...opts.env,
  };
  const launch = async (port: number): Promise<{ proc: Proc; port: number }> => {
    const proc = new Proc(
      [
        'server',
        '--host',
        opts.host ?? '127.0.0.1',
        '--port',
        String(port),
        '--data-dir',
        dataDir,
        ...(opts.args ?? []),
      ],
      env,
      opts.name ?? 'server',
    );
    await serving(proc, `http://127.0.0.1:${port}`);
    return { proc, port };
  };
  // A port of our choosing, so that readiness is the server answering on it; one taken meanwhile is tried again.
  let first: { proc: Proc; port: number } | undefined;
  for (let tries = 1; !first; tries++) {
    try {
      first = await launch(opts.port ?? (await freePort()));
    } catch (err) {
      if (opts.port !== undefined || tries >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
  const handle: ServerHandle = {
    url: `http://127.0.0.1:${first.port}`,
    port: first.port,
    dataDir,
    proc: first.proc,
    async restart() {
      await handle.proc.stop();
      handle.proc = (await launch(handle.port)).proc;
    },
    async stop() {
      await handle.proc.stop();
    },
  };
  return handle;
}

export interface ExecutorHandle {
  name: string;
  proc: Proc;
  stop(): Promise<void>;
}

export interface ExecutorOptions {
  name: string;
  queues: string[];
  env?: NodeJS.ProcessEnv;
  /** Runs the executor through this command, e.g. onHost's. */
  prefix?: string[];
}

/** An executor process, not waited for: see startExecutor. */
export function spawnExecutor(url: string, opts: ExecutorOptions): Proc {
  const proc = new Proc(
    ['executor'],
    {
      EXECUTOR_FRONTEND_URL: url,
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAMES: opts.queues.join(','),
      EXECUTOR_NAME: opts.name,
      EXECUTOR_MAXIMUM_NUM_JOBS: '4',
      EXECUTOR_HEARTBEAT_INTERVAL: '1s',
      ...opts.env,
    },
    opts.name,
    opts.prefix,
  );
  // A killed docker executor leaves its spare job disk mounted (its next start would remove it); loop devices are
  // few, and a suite that leaks one per killed executor runs out of them.
  proc.afterKill = () =>
    unmountUnder(path.join(opts.env?.EXECUTOR_WORKSPACE_ROOT ?? os.tmpdir(), `dockhand-${opts.name}`));
  return proc;
}

/** Unmounts whatever is mounted under `dir`, deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const root = await realpath(dir).catch(() => undefined);
  if (!root) return;
  const points = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((line) =>
      line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8))),
    )
    .filter((point): point is string => !!point && point.startsWith(root + path.sep))
    .sort((a, b) => b.length - a.length);
  for (const point of points) spawnSync('umount', [point], { stdio: 'ignore' });
}

/**
 * An executor process, once the server has accepted it: the server's list shows its name held by this very process
 * (its pid), not by an earlier one under the name (a frozen one's last heartbeat may land after this one started).
 * An HTTPS server is trusted through the executor's NODE_EXTRA_CA_CERTS, as the executor trusts it.
 */
export async function startExecutor(url: string, opts: ExecutorOptions): Promise<ExecutorHandle> {
  const proc = spawnExecutor(url, opts);
  const caFile = opts.env?.NODE_EXTRA_CA_CERTS;
  const ca = caFile ? await readFile(caFile) : undefined;
  await until(
    `executor ${opts.name} (pid ${proc.pid}) is registered`,
    async () => {
      const answer = await request(`${url}/api/v1/executors`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        ca,
        timeoutMs: 5_000,
      }).catch(() => undefined);
      const executors = (answer?.status === 200 ? answer.json.executors : []) as { name: string; pid: number | null }[];
      return executors.some((e) => e.name === opts.name && e.pid === proc.pid);
    },
    60_000,
    50,
    () => exitedWith(proc),
  );
  return { name: opts.name, proc, stop: () => proc.stop() };
}

/** Why the process can no longer become ready, if it has exited. */
function exitedWith(proc: Proc): string | undefined {
  const { exitCode, signalCode } = proc.child;
  return exitCode !== null || signalCode !== null ? `the process exited (${exitCode ?? signalCode})` : undefined;
}

/** Waits until the server answers on `url` (any status: an unhealthy server is up too); fails if it exits first. */
async function serving(proc: Proc, url: string): Promise<void> {
  await until(
    `a server answers on ${url}`,
    async () => (await fetch(`${url}/healthz`).catch(() => undefined)) !== undefined,
    20_000,
    25,
    () => exitedWith(proc),
  ).catch(async (err: Error) => {
    throw new Error(`${err.message}\n${(await proc.outputSoFar()).slice(-4000)}`);
  });
}

let hostPrefix: ((hostname: string) => string[]) | null | undefined;

/**
 * A command prefix that runs a process as if on another host: in a UTS namespace of its own, with `hostname`, then
 * exec'ing the command (so its pid is the process's). Needs root, or user namespaces; null where neither works.
 */
export function onHost(hostname: string): string[] | null {
  if (hostPrefix === undefined) {
    hostPrefix = null;
    for (const unshare of [
      ['unshare', '--uts'],
      ['unshare', '--user', '--map-root-user', '--uts'],
    ]) {
      if (
        spawnSync(unshare[0], [...unshare.slice(1), '--', 'sh', '-c', 'hostname dockhand-probe'], { stdio: 'ignore' })
          .status === 0
      ) {
        hostPrefix = (name) => [...unshare, '--', 'sh', '-c', 'hostname "$0" && exec "$@"', name];
        break;
      }
    }
  }
  return hostPrefix && hostPrefix(hostname);
}
