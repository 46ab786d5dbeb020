// Each job's workspace on a file system of its own, of the job's disk size: a sparse file formatted ext4 and
// loop-mounted, so a job that fills its disk fails alone (out_of_disk) instead of filling the executor's disk for
// everyone. Making one costs about 75 ms of processes (mkfs, mount) and removing one about 40 ms (umount, rm): too
// much to pay per job, even in the background, where it competed with the next job's container start (+6% a job in
// the docker overhead benchmark). So one disk of the executor's default size is kept ready, and a spent one of that
// size becomes the next ready one: its workspace emptied and its freed blocks handed back to the host (fstrim, which
// punches them out of the sparse file), about 15 ms. Other sizes are made for their job and removed after it.
//
//   <workspace root>/dockhand-<executor>/disk-XXXXXX/   disk.img (sparse), mnt/ (the mount), mnt/workspace, scripts/
//   <workspace root>/dockhand-disk-check-XXXXXX/        the start-up check's tiny disk, made and removed at once
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, statfs, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { formatSize } from '../../../core/units.js';
import { BackgroundWork } from '../../background.js';
import { executorRoot, hostDirsIn, realRoot, type HostDirs } from '../../workspace/hostWorkspace.js';
import { OwnedDirs } from '../../workspace/ownedDirs.js';
import { JobFailure, type CheckResult } from '../runtime.js';

/** ext4 needs room for its own structures; a smaller request gets this much. */
export const MIN_DISK_BYTES = 8 * 2 ** 20;
/** Less free than this after a failed step means the step most likely failed for want of space. */
const FULL_BELOW_BYTES = 2 ** 20;
const COMMAND_TIMEOUT_MS = 30_000;
const PREFIX = 'disk-';
const CHECK_PREFIX = 'dockhand-disk-check-';

export interface JobDisk {
  dirs: HostDirs;
  /** The mount point. */
  mount: string;
  bytes: number;
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: COMMAND_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const why =
        (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${command} is not installed` : stderr.trim() || err.message;
      reject(new Error(`${command} ${args.join(' ')}: ${why}`));
    });
  });
}

/** Mount points under `root`, from the kernel's own list (octal escapes decoded). */
async function mountsUnder(root: string): Promise<Set<string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const mounts = new Set<string>();
  for (const line of text.split('\n')) {
    const point = line.split(' ')[4];
    if (!point) continue;
    const decoded = point.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    if (decoded.startsWith(root + path.sep)) mounts.add(decoded);
  }
  return mounts;
}

export class JobDisks {
  private readonly background = new BackgroundWork();
  /** The disk the next job of the default size takes: made ahead, or the last one emptied. */
  private spare?: Promise<JobDisk>;
  /** Every disk this process made and has not removed (in use, ready, being emptied): the janitor leaves them be. */
  private readonly owned = new OwnedDirs();
  private prepared = false;
  private closed = false;

  constructor(
    private readonly workspaceRoot: string,
    private readonly executorName: string,
    /** The executor's default per job (EXECUTOR_JOB_DISK): what a job that asks for no size gets. */
    private readonly defaultBytes: number,
    private readonly log: Logger,
  ) {}

  /** A disk of `bytes` with an empty workspace on it, mounted; the ready one when it has that size. */
  async take(bytes: number): Promise<JobDisk> {
    const size = Math.max(bytes, MIN_DISK_BYTES);
    let disk: JobDisk;
    const spare = size === Math.max(this.defaultBytes, MIN_DISK_BYTES) ? this.spare : undefined;
    if (spare) {
      this.spare = undefined;
      disk = await spare.catch(() => this.make(size));
    } else {
      disk = await this.make(size);
    }
    return disk;
  }

  /**
   * Makes the first ready disk, off the first job's path; later ones are the spent disks (release). Only once: a
   * janitor round that made one whenever a job had taken it would make a disk per job again.
   */
  prepare(): void {
    if (this.prepared) return;
    this.prepared = true;
    this.makeSpare();
  }

  /**
   * Done with the disk, once `idle` resolves (nothing of the job may still use it): emptied to be the next ready
   * disk, or unmounted and deleted, in the background. `keep` leaves it mounted for a look (EXECUTOR_KEEP_WORKSPACES).
   */
  release(disk: JobDisk, keep: boolean, idle: Promise<unknown> = Promise.resolve()): void {
    if (keep) {
      this.log.info({ workspace: disk.dirs.workspace }, "keeping the job's workspace (EXECUTOR_KEEP_WORKSPACES)");
      this.owned.release(disk.dirs.root);
      return;
    }
    const reuse = !this.spare && !this.closed && disk.bytes === Math.max(this.defaultBytes, MIN_DISK_BYTES);
    const done = idle
      .catch(() => undefined)
      .then(() => (reuse ? this.empty(disk) : this.destroy(disk.dirs.root).then(() => undefined)));
    if (reuse) {
      this.spare = done.then(() => disk);
      // A disk that cannot be emptied is not reused: the next job makes its own.
      this.spare.catch(() => (this.spare = undefined));
    }
    this.background.run(
      () => done,
      (err) =>
        this.log.warn(
          { disk: disk.dirs.root, err: err.message },
          'could not empty or remove a job disk; the janitor will try again',
        ),
    );
  }

  /** A fresh, empty workspace and scripts directory on a used disk, and the blocks the job freed given back. */
  private async empty(disk: JobDisk): Promise<void> {
    try {
      for (const dir of [disk.dirs.workspace, disk.dirs.scripts]) {
        await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        await mkdir(dir);
      }
      await run('fstrim', [disk.mount]);
    } catch (err) {
      await this.destroy(disk.dirs.root).catch(() => undefined);
      throw err;
    }
  }

  /** Whether a step that failed on this disk most likely ran out of space (or of inodes). */
  async isFull(disk: JobDisk): Promise<boolean> {
    try {
      const s = await statfs(disk.mount);
      return s.bavail * s.bsize < FULL_BELOW_BYTES || s.ffree === 0;
    } catch {
      return false;
    }
  }

  /** The JobFailure for a full disk. */
  full(disk: JobDisk): JobFailure {
    return new JobFailure(
      'out_of_disk',
      `the job's disk is full (${formatSize(disk.bytes)}; ask for more with resources.disk, up to EXECUTOR_JOB_DISK)`,
    );
  }

  /** Removes this executor's disks that no job of this process holds (left by a crash), unless they are kept. */
  async cleanupOrphans(keep: boolean): Promise<string[]> {
    const root = await this.root();
    const names = (await readdir(root).catch(() => [] as string[])).filter((n) => n.startsWith(PREFIX));
    const removed: string[] = [];
    for (const name of names) {
      const dir = path.join(root, name);
      // Checked again for each one: disks are made and released while this loop waits.
      if (this.owned.spares(dir)) continue;
      try {
        if (keep && (await mountsUnder(dir)).size) continue;
        await this.destroy(dir);
        removed.push(dir);
      } catch (err) {
        // One that cannot go (a busy mount) must not keep the others, or the executor's start.
        this.log.warn(
          { disk: dir, err: (err as Error).message },
          'could not remove an orphaned job disk; the janitor will try again',
        );
      }
    }
    return removed;
  }

  /** Makes and removes a tiny disk: the runtime cannot enforce disk limits without mkfs.ext4, mount and root. */
  async check(): Promise<CheckResult> {
    const name = 'job disks';
    try {
      // Outside the executor's own directory: before its name is registered, another process may hold that name,
      // and its janitor would remove this disk half-made.
      const disk = await this.make(MIN_DISK_BYTES, await realRoot(this.workspaceRoot), CHECK_PREFIX);
      await this.destroy(disk.dirs.root);
      return {
        name,
        ok: true,
        detail: `each job's workspace on its own ext4 file system under ${this.workspaceRoot}, ${formatSize(this.defaultBytes)} unless the job asks for less`,
      };
    } catch (err) {
      return { name, ok: false, detail: (err as Error).message, fix: JOB_DISK_FIX };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const spare = await this.spare?.catch(() => undefined);
    this.spare = undefined;
    if (spare) await this.destroy(spare.dirs.root).catch(() => undefined);
    await this.background.settle();
  }

  private root(): Promise<string> {
    return executorRoot(this.workspaceRoot, this.executorName);
  }

  private makeSpare(): void {
    if (this.spare || this.closed) return;
    const spare = this.make(Math.max(this.defaultBytes, MIN_DISK_BYTES));
    // Failures show when a job takes it (and makes its own instead).
    spare.catch((err: Error) => this.log.warn({ err: err.message }, 'could not make a spare job disk'));
    this.spare = spare;
  }

  private async make(bytes: number, parent?: string, prefix = PREFIX): Promise<JobDisk> {
    const root = await this.owned.make(
      async () => mkdtemp(path.join(parent ?? (await this.root()), prefix)),
      (r) => r,
    );
    const image = path.join(root, 'disk.img');
    const mount = path.join(root, 'mnt');
    try {
      // Sparse: the file takes only the blocks the job writes.
      await writeFile(image, '');
      await truncate(image, bytes);
      // No journal (the disk dies with the job), nothing reserved for root, inode tables left for later: ~35 ms.
      await run('mkfs.ext4', [
        '-q',
        '-F',
        '-m',
        '0',
        '-O',
        '^has_journal',
        '-E',
        'lazy_itable_init=1,nodiscard',
        image,
      ]);
      await mkdir(mount);
      // noinit_itable: the kernel must not zero the inode tables behind our back (it would fill the sparse file).
      await run('mount', ['-o', 'loop,noatime,nodev,nosuid,noinit_itable', image, mount]);
      return { dirs: await hostDirsIn(root, path.join(mount, 'workspace')), mount, bytes };
    } catch (err) {
      await this.destroy(root).catch(() => undefined);
      throw err;
    }
  }

  private async destroy(root: string): Promise<void> {
    try {
      const mounts = await mountsUnder(root);
      // Deepest first, should anything have been mounted inside.
      for (const point of [...mounts].sort((a, b) => b.length - a.length)) await run('umount', [point]);
      await rm(root, { recursive: true, force: true, maxRetries: 3 });
    } finally {
      // Gone, or left for the janitor to try again: no job holds it any more either way.
      this.owned.release(root);
    }
  }
}

export const JOB_DISK_FIX =
  'run the executor as root on a host with mkfs.ext4 and mount (Debian: e2fsprogs, mount), so each job gets a disk of its own; ' +
  "or set EXECUTOR_JOB_DISK=0 to leave job disks unbounded (one job can then fill the host's disk)";
