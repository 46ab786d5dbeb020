// The repository checkout of a docker job runs in a helper container, not on the executor's host: on the job's
// network (the dockhand bridge, metadata address blocked), with no capability, no host path but the workspace, and
// nothing of the executor's identity (no git config, credential helper, SSH key or agent). The helper idles while
// the job's git commands run in it one by one (`docker exec`, ~70 ms each), so each keeps its own log entry.
//
// Its image needs git, sh and sleep. No registry is assumed reachable, so when the engine lacks the default
// image Dockhand makes it from this host's own git (and ssh), their libraries and a static busybox.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type Docker from 'dockerode';
import type { Stream } from '../../jobLog.js';
import { gitEnvironment, type GitEnvironmentOptions, type GitRunner } from '../../workspace/checkout.js';
import { JobFailure } from '../runtime.js';
import { CONTAINER_WORKSPACE, LABEL_ATTEMPT, LABEL_EXECUTOR, LABEL_JOB, LABEL_STEP } from './containerSpec.js';

/**
 * The helper's own home inside its container (a tmpfs): git's and ssh's files go there. Not /tmp, where it would
 * hide a local repository mounted from the host's /tmp.
 */
const HELPER_HOME = '/dockhand-home';

export interface HelperSpec {
  name: string;
  image: string;
  executorName: string;
  jobId: number;
  attempt: number;
  /** Host path of the job's workspace, mounted at /data. */
  workspace: string;
  /** "none", or the network to attach to. */
  network: string;
  /** OCI runtime; empty = the engine's default. */
  ociRuntime: string;
  memoryBytes: number;
  pidsLimit: number;
  /** Host directories a job may fetch from (file:// repositories, only where the executor allows them), read-only. */
  localRepositories: string[];
}

/** The helper container as the Engine API's create body: it idles until removed. */
export function helperOptions(h: HelperSpec): Docker.ContainerCreateOptions {
  return {
    name: h.name,
    Image: h.image,
    Entrypoint: ['/bin/sh', '-c', 'while :; do sleep 3600; done'],
    Cmd: [],
    WorkingDir: CONTAINER_WORKSPACE,
    Labels: {
      [LABEL_EXECUTOR]: h.executorName,
      [LABEL_JOB]: String(h.jobId),
      [LABEL_ATTEMPT]: String(h.attempt),
      [LABEL_STEP]: 'setup.git',
    },
    HostConfig: {
      Mounts: [
        { Type: 'bind', Source: h.workspace, Target: CONTAINER_WORKSPACE },
        ...h.localRepositories.map((dir) => ({ Type: 'bind' as const, Source: dir, Target: dir, ReadOnly: true })),
      ],
      Tmpfs: { [HELPER_HOME]: 'rw,nosuid,nodev,size=64m' },
      ReadonlyRootfs: true,
      NetworkMode: h.network,
      Privileged: false,
      // git needs no privilege at all: it writes the workspace, which belongs to the same (root) user.
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      PidsLimit: h.pidsLimit,
      Memory: h.memoryBytes,
      MemorySwap: h.memoryBytes || 0,
      Init: true,
      LogConfig: { Type: 'none', Config: {} },
      ...(h.ociRuntime ? { Runtime: h.ociRuntime } : {}),
    },
  };
}

/** A running helper: git commands run in it until it is removed. */
export class CheckoutHelper {
  private constructor(
    private readonly container: Docker.Container,
    /** git's environment in the helper (gitEnvironment): the job's repository credentials included. */
    private readonly env: Record<string, string>,
  ) {}

  static async start(
    docker: Docker,
    spec: HelperSpec,
    git: Omit<GitEnvironmentOptions, 'home' | 'path'>,
  ): Promise<CheckoutHelper> {
    const env = gitEnvironment({ ...git, home: HELPER_HOME, path: '/usr/local/bin:/usr/bin:/bin' });
    let container: Docker.Container | undefined;
    try {
      container = await docker.createContainer(helperOptions(spec));
      await container.start();
      return new CheckoutHelper(container, env);
    } catch (err) {
      await container?.remove({ force: true }).catch(() => undefined);
      const message = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
      throw new JobFailure('runtime_unavailable', `cannot start the checkout helper container: ${message}`);
    }
  }

  /** Runs git in `dir` (a path inside the workspace, relative to it). */
  git(dir: string): GitRunner {
    const { env } = this;
    return async (args, io) => {
      if (io.signal.aborted) return 130;
      const exec = await this.container.exec({
        Cmd: ['git', ...args],
        Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
        WorkingDir: path.posix.join(CONTAINER_WORKSPACE, dir),
        AttachStdout: true,
        AttachStderr: true,
      });
      const stream = (await exec.start({ hijack: true, stdin: false })) as NodeJS.ReadableStream & { destroy(): void };
      // A stopped job removes the helper, which ends the exec's stream too.
      const onAbort = (): void => void this.remove();
      io.signal.addEventListener('abort', onAbort, { once: true });
      // An abort while the exec was being set up came before the listener.
      if (io.signal.aborted) onAbort();
      try {
        await new Promise<void>((resolve) => {
          const out = textSink('stdout', io.output);
          const err = textSink('stderr', io.output);
          this.container.modem.demuxStream(stream, out, err);
          const done = (): void => {
            out.end();
            err.end();
            resolve();
          };
          stream.once('end', done);
          stream.once('close', done);
          stream.once('error', done);
        });
      } finally {
        io.signal.removeEventListener('abort', onAbort);
      }
      if (io.signal.aborted) return 130;
      const { ExitCode } = await exec.inspect();
      return ExitCode ?? 128;
    };
  }

  async remove(): Promise<void> {
    await this.container.remove({ force: true }).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 404 && err.statusCode !== 409) throw err;
    });
  }
}

/** Decodes a stream of output as UTF-8, never splitting a character across writes. */
function textSink(
  stream: Stream,
  output: (stream: Stream, text: string) => void,
): { write(chunk: Buffer): boolean; end(): void } {
  const decoder = new StringDecoder('utf8');
  let ended = false;
  return {
    write(chunk: Buffer) {
      const text = decoder.write(chunk);
      if (text) output(stream, text);
      return true;
    },
    end() {
      if (ended) return;
      ended = true;
      const rest = decoder.end();
      if (rest) output(stream, rest);
    },
  };
}

/** The programs the helper image is made of, from this host. */
const HOST_PROGRAMS = ['/usr/bin/git', '/usr/lib/git-core/git-remote-http'];
const OPTIONAL_PROGRAMS = ['/usr/bin/ssh'];
const BUSYBOX = '/bin/busybox';
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

function output(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      // ldd exits non-zero for a static binary; what it printed still says so.
      if (err && !stdout && !stderr) reject(err);
      else resolve(`${stdout}${stderr}`);
    });
  });
}

/** The shared libraries `program` loads, by the paths the loader finds them at. */
async function librariesOf(program: string): Promise<string[]> {
  const text = await output('ldd', [program]);
  if (/not a dynamic executable|statically linked/.test(text)) return [];
  const libs: string[] = [];
  for (const line of text.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
    else if (/not found/.test(line)) throw new Error(`${program} needs a library this host lacks: ${line.trim()}`);
  }
  return libs;
}

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

/** Makes `ref` from this host's git (and ssh) with their libraries and a static busybox; throws saying what is missing. */
export async function makeHelperImage(docker: Docker, ref: string): Promise<void> {
  for (const program of [...HOST_PROGRAMS, BUSYBOX]) {
    if (!(await exists(program))) {
      throw new Error(
        `cannot make the checkout helper image ${ref}: ${program} is missing on this host (Debian: apt-get install git busybox-static)`,
      );
    }
  }
  const rootfs = await mkdtemp(path.join(os.tmpdir(), 'dockhand-helper-'));
  let tar: ChildProcess | undefined;
  try {
    const programs = [
      ...HOST_PROGRAMS,
      ...(await Promise.all(OPTIONAL_PROGRAMS.map(async (p) => ((await exists(p)) ? p : undefined)))).filter(
        (p): p is string => !!p,
      ),
    ];
    const files = new Set<string>([...programs, BUSYBOX]);
    for (const program of [...programs, BUSYBOX]) for (const lib of await librariesOf(program)) files.add(lib);
    for (const file of files) {
      const target = path.join(rootfs, file);
      await mkdir(path.dirname(target), { recursive: true });
      await copyFile(file, target);
      await chmod(target, 0o755);
    }
    // git runs its helpers from its exec path; git-remote-https is git-remote-http under another name.
    await symlink('/usr/bin/git', path.join(rootfs, 'usr/lib/git-core/git'));
    await symlink('git-remote-http', path.join(rootfs, 'usr/lib/git-core/git-remote-https'));
    // A file:// fetch starts git-upload-pack from PATH, as over ssh.
    await symlink('git', path.join(rootfs, 'usr/bin/git-upload-pack'));
    await symlink('/usr/bin/git', path.join(rootfs, 'usr/lib/git-core/git-upload-pack'));
    // git init copies its templates from here; none are needed, but a missing directory is warned about in the log.
    await mkdir(path.join(rootfs, 'usr/share/git-core/templates'), { recursive: true });
    for (const applet of ['sh', 'sleep']) await symlink('busybox', path.join(rootfs, 'bin', applet));
    await mkdir(path.join(rootfs, 'etc/ssl/certs'), { recursive: true });
    if (await exists(CA_BUNDLE)) await copyFile(CA_BUNDLE, path.join(rootfs, CA_BUNDLE));
    // ssh wants to know who it runs as.
    await writeFile(path.join(rootfs, 'etc/passwd'), `root:x:0:0:root:${HELPER_HOME}:/bin/sh\n`);
    await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
    await mkdir(path.join(rootfs, 'tmp'), { mode: 0o1777 });
    await mkdir(path.join(rootfs, HELPER_HOME.slice(1)));
    await mkdir(path.join(rootfs, 'data'));
    const [repo, tag] = splitRef(ref);
    tar = spawn('tar', ['-C', rootfs, '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tarError = '';
    tar.stderr!.on('data', (d: Buffer) => (tarError += d.toString()));
    const answer = (await docker.importImage(tar.stdout!, { repo, tag })) as NodeJS.ReadableStream;
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        answer,
        (err: Error | null) => (err ? reject(err) : resolve()),
        (event: { error?: string }) => {
          if (event.error) reject(new Error(event.error));
        },
      );
    });
    const done = tar;
    const code = await new Promise<number | null>((resolve) =>
      done.exitCode !== null ? resolve(done.exitCode) : done.once('exit', resolve),
    );
    if (code !== 0) throw new Error(`cannot make the checkout helper image ${ref}: tar failed: ${tarError.trim()}`);
  } finally {
    // An import the engine refused leaves tar blocked on a pipe nobody reads.
    if (tar && tar.exitCode === null) tar.kill('SIGKILL');
    await rm(rootfs, { recursive: true, force: true });
  }
}

function splitRef(ref: string): [string, string] {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
}

/** A fresh name for a job's helper container. */
export function helperName(jobId: number, attempt: number): string {
  return `dockhand-${jobId}-${attempt}-checkout-${randomBytes(3).toString('hex')}`;
}
