// Small file systems of the tests' own, to fill up and break: a tmpfs that can be resized (a disk that fills and gets
// room again), and ext4 on a loop device that the kernel turns read-only on an error, as it does for a failing disk.
// Both need root (mount); the test suite runs as root and fails here, saying so, otherwise.
import { execFile } from 'node:child_process';
import { mkdir, rm, statfs, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './processes.js';
import { until } from './wait.js';

const run = promisify(execFile);

async function sh(command: string, args: string[]): Promise<string> {
  try {
    return (await run(command, args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `${command} ${args.join(' ')} failed: ${(e.stderr || e.message).trim()} (these tests mount file systems: run them as root)`,
    );
  }
}

export interface SmallDisk {
  /** The mounted directory. */
  dir: string;
  unmount(): Promise<void>;
}

export interface Tmpfs extends SmallDisk {
  /** Grows or shrinks it in place (not under what it holds); open files stay open. */
  resize(bytes: number): Promise<void>;
  usedBytes(): Promise<number>;
}

/** `owner`: who owns its root (mode 0700), e.g. the postgres user for a tablespace. */
export async function mountTmpfs(bytes: number, owner?: { uid: number; gid: number }): Promise<Tmpfs> {
  const dir = await tempDir('tmpfs');
  const ownership = owner ? `,uid=${owner.uid},gid=${owner.gid},mode=0700` : '';
  await sh('mount', ['-t', 'tmpfs', '-o', `size=${bytes}${ownership}`, 'tmpfs', dir]);
  return {
    dir,
    resize: async (size) => void (await sh('mount', ['-o', `remount,size=${size}`, dir])),
    usedBytes: async () => {
      const stats = await statfs(dir);
      return (stats.blocks - stats.bfree) * stats.bsize;
    },
    unmount: async () => void (await sh('umount', ['-l', dir])),
  };
}

export interface Ext4 extends SmallDisk {
  /** Reports a file-system error, which ext4 mounted with errors=remount-ro answers by turning read-only at once. */
  fail(): Promise<void>;
  /** What an operator does after such an error: unmount, fsck, mount again (read-write). */
  repair(): Promise<void>;
}

export async function mountExt4(bytes: number): Promise<Ext4> {
  const base = await tempDir('ext4');
  const image = path.join(base, 'disk.img');
  const dir = path.join(base, 'mnt');
  await mkdir(dir);
  await writeFile(image, '');
  await truncate(image, bytes);
  await sh('mkfs.ext4', ['-q', '-F', image]);
  const mount = async (): Promise<string> => {
    await sh('mount', ['-o', 'loop,errors=remount-ro', image, dir]);
    return path.basename((await sh('findmnt', ['-n', '-o', 'SOURCE', dir])).trim());
  };
  let device = await mount();
  return {
    dir,
    fail: async () => {
      await sh('sh', ['-c', `echo 1 > /sys/fs/ext4/${device}/trigger_fs_error`]);
    },
    repair: async () => {
      await sh('umount', [dir]);
      // The file system lives on until its last open file is released (a killed process's may still be), and a
      // mount of the same image meanwhile gets that same read-only file system back: wait until its loop device
      // is let go.
      await until(
        `the loop device of ${image} is released`,
        async () => (await sh('losetup', ['-j', image])).trim() === '',
        30_000,
      );
      // e2fsck exits 1 when it fixed something, which is what it is here for.
      await run('e2fsck', ['-fy', image]).catch((err: { code?: number }) => {
        if (err.code !== 1) throw err;
      });
      device = await mount();
    },
    unmount: async () => {
      await sh('umount', ['-l', dir]).catch(() => undefined);
      await rm(image, { force: true });
    },
  };
}
