// The process plane: each worker is a local `dockhand build-worker` process running buildah on this host as the
// server's user. Nothing sandboxes the Dockerfile's RUN steps beyond buildah's chroot: for trusted builds only
// (docs/builds.md). The worker gets a clean environment (never the server's secrets) and its token on stdin.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProcessPlaneConfig } from '../buildsConfig.js';
import { PlaneError, type ControlPlane, type WorkerLaunch } from './controlPlane.js';

/** A stopped worker gets this long after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

/**
 * `node …/dist/buildWorker/main.js`: `dockhand build-worker` on its own (it loads only the worker's modules), found
 * next to this module in the build.
 */
export function workerCommand(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [
    path.resolve(here, '../../../buildWorker/main.js'),
    // Loaded from the TypeScript sources (tests): the build's copy.
    path.resolve(here, '../../../../dist/buildWorker/main.js'),
  ]) {
    if (existsSync(candidate)) return [process.execPath, candidate];
  }
  throw new PlaneError('cannot find dist/buildWorker/main.js to start a worker with: run npm run build');
}

/** Kills (with their groups) the processes whose command line names `dir`. Linux: reads /proc. */
function killProcessesNaming(dir: string): void {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return;
  }
  for (const pid of pids) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmdline.includes(`${dir}/`)) continue;
    for (const target of [-Number(pid), Number(pid)]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // gone, or not a group leader
      }
    }
  }
}

export class ProcessPlane implements ControlPlane {
  private readonly workers = new Map<string, { child: ChildProcess; dir: string; exited: Promise<void> }>();

  constructor(readonly config: ProcessPlaneConfig) {}

  get name(): string {
    return this.config.NAME;
  }

  async start(launch: WorkerLaunch): Promise<void> {
    const command = workerCommand();
    const dir = await mkdtemp(path.join(os.tmpdir(), `${launch.executionId}-`));
    const child = spawn(command[0], [...command.slice(1), '--server', launch.serverUrl], {
      cwd: dir,
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      env: {
        PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
        HOME: dir,
        TMPDIR: dir,
        DOCKHAND_BUILD_WORK_DIR: dir,
        DOCKHAND_BUILD_BUILDAH: this.config.BUILDAH,
      },
    });
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (err) => resolve(err));
    });
    if (spawned) {
      await rm(dir, { recursive: true, force: true });
      throw new PlaneError(`cannot start ${command[0]}: ${spawned.message}`);
    }
    this.workers.set(launch.executionId, { child, dir, exited });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(`${launch.registrationToken}\n`);
    void exited.then(() => rm(dir, { recursive: true, force: true }).catch(() => undefined));
  }

  async stop(executionId: string): Promise<void> {
    const worker = this.workers.get(executionId);
    if (!worker) return;
    const { child, dir, exited } = worker;
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        // already gone
      }
    };
    if (child.exitCode === null && child.signalCode === null) {
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    // buildah runs in a session of its own: a worker killed outright leaves it behind. Its arguments name the
    // worker's folder, which nothing else does.
    killProcessesNaming(dir);
    this.workers.delete(executionId);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }

  async running(): Promise<number> {
    let n = 0;
    for (const [id, w] of this.workers) {
      if (w.child.exitCode === null && w.child.signalCode === null) n++;
      else this.workers.delete(id);
    }
    return n;
  }

  async close(): Promise<void> {
    // A server that stops takes its local workers with it: nobody else could stop them.
    await Promise.all([...this.workers.keys()].map((id) => this.stop(id)));
  }
}
