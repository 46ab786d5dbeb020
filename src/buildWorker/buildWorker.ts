// `dockhand build-worker`: one ephemeral worker, one try of one build. It registers with its token, heartbeats,
// fetches the context (git at a commit, or the uploaded archive), pulls the base images, builds with buildah
// (daemonless: vfs storage, chroot isolation, all inside this worker's own sandbox), pushes every tag, and reports the
// manifest digest. Its output goes to the build's log, with the build's secrets masked before it leaves.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { BuildPack, WorkerPhase } from '../core/builds.js';
import { Redactor } from '../executor/redactor.js';
import { loginSecrets } from '../core/dockerAuthConfig.js';
import { WorkerClient, WorkerRefused } from './workerClient.js';

export interface WorkerOptions {
  server: string;
  registrationToken: string;
  /** Where the context, buildah's storage and the credentials go; removed at the end. */
  workDir?: string;
  buildah?: string;
}

/** The build failed because of what it was given (the Dockerfile, the context): final. */
class BuildError extends Error {}
/** The worker could not do its part (network, registry, disk): the try is given back. */
class IncompleteError extends Error {}
class Stopped extends Error {}

const LOG_FLUSH_MS = 200;
const LOG_BATCH = 500;
const LOG_BATCH_BYTES = 1024 * 1024;
/** Longer lines are cut (the server cuts at the same length). */
const MAX_LINE = 8 * 1024;
const MAX_DOCKERFILE = 1024 * 1024;
/** Lines of a failing command kept for the build's message. */
const TAIL_LINES = 8;

export async function runBuildWorker(opts: WorkerOptions): Promise<number> {
  const client = new WorkerClient(opts.server.replace(/\/+$/, ''));
  let pack: BuildPack;
  // Stopped before it has a build (its plane gave up on it), it just ends: as PID 1 in a pod, a signal without a
  // handler would be ignored.
  const early = (): never => process.exit(143);
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  try {
    pack = await client.register(opts.registrationToken.trim());
  } catch (err) {
    process.stderr.write(`build-worker: cannot register: ${(err as Error).message}\n`);
    return 2;
  } finally {
    process.off('SIGTERM', early);
    process.off('SIGINT', early);
  }
  const base = opts.workDir ?? os.tmpdir();
  await mkdir(base, { recursive: true });
  const work = await mkdtemp(path.join(base, `build-${pack.buildId}-${pack.try}-`));
  const worker = new Worker(client, pack, work, opts.buildah ?? 'buildah');
  try {
    return await worker.run();
  } finally {
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

class Worker {
  private readonly redactor = new Redactor();
  private lines: string[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly stop = new AbortController();
  private readonly children = new Set<number>();

  constructor(
    private readonly client: WorkerClient,
    private readonly pack: BuildPack,
    private readonly work: string,
    private readonly buildah: string,
  ) {
    for (const [name, value] of Object.entries(pack.secrets)) this.redactor.add(value, `[${name}]`);
    for (const s of pack.dockerAuthConfig ? loginSecrets(pack.dockerAuthConfig) : [])
      this.redactor.add(s, '[DOCKER_AUTH_CONFIG]');
    this.redactor.add(pack.jobToken, '[JOB_TOKEN]');
  }

  async run(): Promise<number> {
    const heartbeats = this.heartbeat();
    const onSignal = () => this.abort('stopped by a signal');
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    try {
      const digest = await this.build();
      await this.flush();
      await this.client.complete({ outcome: 'complete', digest });
      return 0;
    } catch (err) {
      await this.flush().catch(() => undefined);
      if (err instanceof Stopped || this.stop.signal.aborted || err instanceof WorkerRefused) return 3;
      const message = (err as Error).message;
      const outcome = err instanceof BuildError ? 'error' : 'incomplete';
      await this.client.complete({ outcome, message }).catch(() => undefined);
      return outcome === 'error' ? 1 : 3;
    } finally {
      this.stop.abort();
      for (const pid of this.children) signalTree(pid, 'SIGKILL');
      await heartbeats;
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
  }

  /** Heartbeats until the build ends; told to stop (cancelled, try over) or out of touch too long, it stops the build. */
  private async heartbeat(): Promise<void> {
    const { heartbeatIntervalMs, heartbeatTimeoutMs } = this.pack;
    while (!this.stop.signal.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, heartbeatIntervalMs);
        this.stop.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
      });
      if (this.stop.signal.aborted) return;
      try {
        if ((await this.client.heartbeat(heartbeatTimeoutMs)).stop) this.abort('the server says this try is over');
      } catch (err) {
        this.abort(`no answer to heartbeats: ${(err as Error).message}`);
      }
    }
  }

  private abort(why: string): void {
    if (this.stop.signal.aborted) return;
    process.stderr.write(`build-worker: stopping: ${why}\n`);
    this.stop.abort();
    for (const pid of this.children) {
      signalTree(pid, 'SIGTERM');
      // buildah waits for its RUN step; what is still there after a moment is killed.
      setTimeout(() => signalTree(pid, 'SIGKILL'), 2_000).unref();
    }
  }

  private say(line: string): void {
    const text = line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)} [line cut]` : line;
    this.lines.push(this.redactor.redact(text));
    this.pendingBytes += text.length;
    if (this.lines.length >= LOG_BATCH || this.pendingBytes >= LOG_BATCH_BYTES) void this.flush();
    else this.flushTimer ??= setTimeout(() => void this.flush(), LOG_FLUSH_MS);
  }

  private flush(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flushing = this.flushing.then(async () => {
      this.pendingBytes = 0;
      while (this.lines.length) {
        // At most LOG_BATCH lines and about LOG_BATCH_BYTES characters a call: well inside the server's body limit.
        let n = 0;
        let bytes = 0;
        while (n < this.lines.length && n < LOG_BATCH && bytes < LOG_BATCH_BYTES) bytes += this.lines[n++].length;
        const batch = this.lines.splice(0, n);
        try {
          await this.client.log(batch);
        } catch (err) {
          if (err instanceof WorkerRefused) this.abort(err.message);
          return;
        }
      }
    });
    return this.flushing;
  }

  private async phase(phase: WorkerPhase, detail?: string): Promise<void> {
    if (this.stop.signal.aborted) throw new Stopped();
    await this.flush();
    await this.client.phase(phase, detail);
  }

  /** Runs a command, its output (both streams, line by line) into the log; throws with its last lines on failure. */
  private exec(
    argv: string[],
    opts: { cwd?: string; env?: NodeJS.ProcessEnv; quiet?: boolean } = {},
  ): Promise<string[]> {
    if (this.stop.signal.aborted) return Promise.reject(new Stopped());
    return new Promise((resolve, reject) => {
      const child = spawn(argv[0], argv.slice(1), {
        cwd: opts.cwd ?? this.work,
        env: opts.env ?? this.env(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      if (child.pid) this.children.add(child.pid);
      const tail: string[] = [];
      const onLine = (line: string) => {
        const clean = this.redactor.redact(line);
        tail.push(clean);
        if (tail.length > TAIL_LINES) tail.shift();
        if (!opts.quiet) this.say(clean);
      };
      for (const stream of [child.stdout, child.stderr]) {
        let rest = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => {
          // A progress meter redraws its line with bare carriage returns: each redraw is a line of its own.
          const parts = (rest + d).split(/\r\n|\r|\n/);
          rest = parts.pop() ?? '';
          // A line that never ends is cut, not held whole.
          while (rest.length > MAX_LINE) {
            onLine(`${rest.slice(0, MAX_LINE)} [line cut]`);
            rest = rest.slice(MAX_LINE);
          }
          for (const p of parts) onLine(p);
        });
        stream.on('end', () => rest && onLine(rest));
      }
      child.once('error', (err) => reject(new IncompleteError(`cannot run ${argv[0]}: ${err.message}`)));
      child.once('close', (code, signal) => {
        if (child.pid) this.children.delete(child.pid);
        if (this.stop.signal.aborted) return reject(new Stopped());
        if (code === 0) return resolve(tail);
        const err = new Error(
          `${path.basename(argv[0])} ${argv[1] ?? ''} ${signal ? `was killed (${signal})` : `exited ${code}`}: ${tail.join(' | ')}`,
        );
        reject(err);
      });
    });
  }

  private env(): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: this.work,
      TMPDIR: path.join(this.work, 'tmp'),
      GIT_TERMINAL_PROMPT: '0',
      CONTAINERS_REGISTRIES_CONF: path.join(this.work, 'registries.conf'),
      REGISTRY_AUTH_FILE: path.join(this.work, 'auth.json'),
      BUILDAH_ISOLATION: 'chroot',
    };
  }

  private buildahArgs(): string[] {
    return [
      this.buildah,
      '--root',
      path.join(this.work, 'storage'),
      '--runroot',
      path.join(this.work, 'run'),
      '--storage-driver',
      'vfs',
    ];
  }

  /** The Dockerfile, which must be a regular file inside the context (a symlink may not lead out of it). */
  private async dockerfileIn(context: string, name: string): Promise<string> {
    const given = path.join(context, name);
    let real: string;
    try {
      real = await realpath(given);
    } catch {
      throw new BuildError(`no ${name} in the context`);
    }
    const root = await realpath(context);
    if (!real.startsWith(`${root}${path.sep}`)) throw new BuildError(`${name} leads out of the context`);
    const info = await stat(real);
    if (!info.isFile()) throw new BuildError(`${name} is not a regular file`);
    if (info.size > MAX_DOCKERFILE) throw new BuildError(`${name} is larger than ${MAX_DOCKERFILE} bytes`);
    return real;
  }

  private async build(): Promise<string> {
    const { pack, work } = this;
    await mkdir(path.join(work, 'tmp'), { recursive: true });
    await writeFile(path.join(work, 'auth.json'), pack.dockerAuthConfig ?? '{"auths":{}}', { mode: 0o600 });
    // Plain-HTTP registries (loopback, and those the server's config names): buildah's registries.conf form.
    await writeFile(
      path.join(work, 'registries.conf'),
      pack.insecureRegistries.map((r) => `[[registry]]\nlocation = ${JSON.stringify(r)}\ninsecure = true\n`).join('\n'),
    );
    this.say(`build ${pack.buildId}, try ${pack.try}: ${pack.tags.join(', ')}`);

    await this.phase('unpacking');
    const context = path.join(work, 'context');
    await mkdir(context);
    if (pack.context.kind === 'git') {
      const { url, commit } = pack.context;
      this.say(`fetching ${url} at ${commit}`);
      await this.exec(['git', 'init', '-q', context]);
      try {
        await this.exec(['git', '-C', context, 'fetch', '-q', '--depth', '1', '--', url, commit]);
      } catch {
        // Servers that refuse to fetch a commit by its id (no allowReachableSHA1InWant): the whole history, then it.
        this.say('this server does not serve single commits; fetching the whole history');
        try {
          await this.exec(['git', '-C', context, 'fetch', '-q', '--', url, '+refs/heads/*:refs/remotes/origin/*']);
        } catch (err) {
          const message = (err as Error).message;
          // A repository that is not there, or not ours to read, is the build's fault; a network blip is not.
          if (
            /not found|does not appear to be a git repository|Authentication failed|could not read Username|Permission denied|403|401/i.test(
              message,
            )
          )
            throw new BuildError(`cannot fetch ${url}: ${message}`);
          throw new IncompleteError(`cannot fetch ${url}: ${message}`);
        }
      }
      try {
        await this.exec(['git', '-C', context, '-c', 'advice.detachedHead=false', 'checkout', '-q', commit]);
      } catch (err) {
        throw new BuildError(`commit ${commit} is not in ${url}: ${(err as Error).message}`);
      }
      await rm(path.join(context, '.git'), { recursive: true, force: true });
    } else {
      const data = await this.client.context();
      const sha = createHash('sha256').update(data).digest('hex');
      if (sha !== pack.context.sha256)
        throw new IncompleteError('the uploaded context arrived damaged (its sha256 differs)');
      const archive = path.join(work, 'context.tar.gz');
      await writeFile(archive, data);
      try {
        // GNU tar refuses members that climb out with "..", and strips leading "/".
        await this.exec(['tar', '-xzf', archive, '-C', context, '--no-same-owner'], { quiet: true });
      } catch (err) {
        throw new BuildError(`the uploaded context is not a readable tar.gz: ${(err as Error).message}`);
      }
      await rm(archive);
    }
    const dockerfile = await this.dockerfileIn(context, pack.dockerfile);

    const bases = baseImages(await readFile(dockerfile, 'utf8'), pack.buildArgs);
    await this.phase('pulling', bases.length ? `base images: ${bases.join(', ')}` : undefined);
    for (const image of bases) {
      try {
        await this.exec([...this.buildahArgs(), 'pull', '--quiet', image]);
      } catch (err) {
        if (err instanceof Stopped) throw err;
        const message = (err as Error).message;
        // A name that does not exist or is not ours is the Dockerfile's fault; anything else (the network, this
        // worker's sandbox) is not, and the try is given back.
        if (/unauthorized|denied|authentication required|manifest unknown|not found/i.test(message))
          throw new BuildError(`cannot pull ${image}: ${message}`);
        throw new IncompleteError(`cannot pull ${image}: ${message}`);
      }
    }

    await this.phase('building');
    const first = pack.tags[0];
    const secretFiles: string[] = [];
    for (const [name, value] of Object.entries(pack.secrets)) {
      const file = path.join(work, `secret-${name}`);
      await writeFile(file, value, { mode: 0o600 });
      secretFiles.push('--secret', `id=${name},src=${file}`);
    }
    const cache = pack.cacheRepository
      ? ['--layers', '--cache-from', pack.cacheRepository, '--cache-to', pack.cacheRepository]
      : [];
    try {
      await this.exec([
        ...this.buildahArgs(),
        'bud',
        '--isolation',
        'chroot',
        ...cache,
        '-f',
        dockerfile,
        '-t',
        first,
        ...Object.entries(pack.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
        ...secretFiles,
        context,
      ]);
    } catch (err) {
      if (err instanceof Stopped) throw err;
      throw new BuildError(`the build failed: ${(err as Error).message}`);
    }

    await this.phase('pushing');
    let digest = '';
    for (const tag of pack.tags) {
      const digestFile = path.join(work, 'digest');
      try {
        await this.exec([...this.buildahArgs(), 'push', '--digestfile', digestFile, first, `docker://${tag}`]);
      } catch (err) {
        if (err instanceof Stopped) throw err;
        const message = (err as Error).message;
        if (/unauthorized|denied|authentication required/i.test(message))
          throw new BuildError(`the registry refused the push of ${tag}: ${message}`);
        throw new IncompleteError(`cannot push ${tag}: ${message}`);
      }
      digest = (await readFile(digestFile, 'utf8')).trim();
      this.say(`pushed ${tag}@${digest}`);
    }
    if (!/^sha256:[0-9a-f]{64}$/.test(digest))
      throw new IncompleteError(`buildah reported no digest (${JSON.stringify(digest)})`);
    return digest;
  }
}

/** buildah makes itself a session leader: its group (its RUN steps) gets the signal, and it too. */
function signalTree(pid: number, signal: NodeJS.Signals): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, signal);
    } catch {
      // not a group leader, or gone
    }
  }
}

/**
 * The images a Dockerfile's FROM lines name that are not earlier stages nor scratch, with ARG defaults and build
 * arguments substituted; images still holding a variable are left to the builder.
 */
export function baseImages(dockerfile: string, buildArgs: Record<string, string>): string[] {
  const args: Record<string, string> = {};
  const stages = new Set<string>();
  const out: string[] = [];
  // Continuation lines joined, comments dropped.
  const lines = dockerfile.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  let seenFrom = false;
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const arg = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?/i.exec(line);
    if (arg && !seenFrom) {
      args[arg[1]] = buildArgs[arg[1]] ?? (arg[2] ?? '').replace(/^["']|["']$/g, '');
      continue;
    }
    const from = /^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (!from) continue;
    seenFrom = true;
    const image = from[1].replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (m, name: string) => args[name] ?? m);
    if (from[2]) stages.add(from[2].toLowerCase());
    if (image === 'scratch' || stages.has(image.toLowerCase()) || image.includes('$')) continue;
    if (!out.includes(image)) out.push(image);
  }
  return out;
}

/** Reads the registration token from a file (removed after reading where possible) or stdin. */
export async function readRegistrationToken(tokenFile: string | undefined): Promise<string> {
  if (tokenFile) {
    const token = (await readFile(tokenFile, 'utf8')).trim();
    await rm(tokenFile, { force: true }).catch(() => undefined);
    return token;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}
