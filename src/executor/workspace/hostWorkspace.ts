// A job's workspace as a directory on the executor's host (the shell and docker runtimes): its directories, the
// repository checkout into it, the job's files, the step scripts and the steps' working directories, all confined
// to the workspace so that a symlink in the job's own checkout can never make the executor create, write or run
// anything outside it.
import { chmod, lstat, mkdir, mkdtemp, readlink, realpath, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { JobSpec } from '../../core/jobSpec.js';
import { isSafeRelativePath } from '../../core/paths.js';
import { JobFailure, RuntimeSetupError, type PrepareContext } from '../runtimes/runtime.js';
import { checkRepositoryUrl, checkout, type GitRunner } from './checkout.js';

/** A job's directories on the executor's host, as real paths (no symlinks in them). */
export interface HostDirs {
  /** Per-job directory; removed after the job. */
  root: string;
  /** The workspace the steps share: repository checkout and files. */
  workspace: string;
  /** Step scripts, kept outside the workspace so they do not show up in the checkout. */
  scripts: string;
}

/** Workspace roots as real paths, resolved once each: what mkdtemp makes inside one is then real too. */
const realRoots = new Map<string, Promise<string>>();

export async function realRoot(root: string): Promise<string> {
  let real = realRoots.get(root);
  if (!real) {
    real = realpath(root);
    realRoots.set(root, real);
    real.catch(() => realRoots.delete(root));
  }
  return real;
}

/**
 * The directory an executor keeps its jobs' directories in, `<workspace root>/dockhand-<executor name>`: only its
 * own user may look in, and a restarted executor of that name knows that whatever it finds there is its own.
 */
export async function executorRoot(workspaceRoot: string, executorName: string): Promise<string> {
  const dir = path.join(await realRoot(workspaceRoot), `dockhand-${executorName}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // The workspace root is often /tmp, where anyone may make this name first (or a symlink by it) and then swap
  // what is inside for places of their choosing: use it only when it is a real directory of this user.
  const found = await lstat(dir);
  const uid = process.getuid?.();
  if (!found.isDirectory() || (uid !== undefined && found.uid !== uid)) {
    throw new RuntimeSetupError(
      `${dir} is not a directory of this executor's user (${found.isSymbolicLink() ? 'a symlink' : `owner uid ${found.uid}`}); another user may have made it`,
      `remove it, or set EXECUTOR_WORKSPACE_ROOT to a directory only this user can write`,
    );
  }
  await chmod(dir, 0o700);
  return dir;
}

/** Makes a job's directories under `root` (named `<prefix>XXXXXX`), their paths real. */
export async function createHostDirs(root: string, prefix: string): Promise<HostDirs> {
  const dir = await mkdtemp(path.join(await realRoot(root), prefix));
  return hostDirsIn(dir, path.join(dir, 'workspace'));
}

/** Adds the workspace and scripts directories to a job directory (the workspace may be on a mounted disk). */
export async function hostDirsIn(root: string, workspace: string): Promise<HostDirs> {
  const dirs = { root, workspace, scripts: path.join(root, 'scripts') };
  await mkdir(dirs.workspace, { recursive: true });
  await mkdir(dirs.scripts);
  return dirs;
}

export async function removeHostDirs(dirs: HostDirs): Promise<void> {
  await rm(dirs.root, { recursive: true, force: true, maxRetries: 3 });
}

/** A path in the job's workspace leads outside it (the job's own content is at fault: retrying cannot help). */
export class WorkspaceEscape extends JobFailure {
  constructor(message: string) {
    super('invalid_workspace', message);
  }
}

function inside(root: string, p: string): boolean {
  return p === root || p.startsWith(root + path.sep);
}

/**
 * Creates the directory `rel` (relative to the real path `root`) one component at a time, resolving each existing
 * one, so that a symlink in the checkout can never make us create, write or run anything outside the workspace.
 * Returns its real path.
 */
export async function confinedDirectory(root: string, rel: string): Promise<string> {
  let current = root;
  for (const part of rel.split('/').filter((p) => p && p !== '.')) {
    const next = path.join(current, part);
    const stat = await lstat(next).catch(() => undefined);
    if (!stat) {
      await mkdir(next);
      current = next;
      continue;
    }
    const resolved = await realpath(next).catch(() => undefined);
    if (resolved === undefined) {
      // A dangling symlink: following it with mkdir would create its target, wherever that is.
      const target = path.resolve(path.dirname(next), await readlink(next));
      throw new WorkspaceEscape(
        inside(root, target)
          ? `${rel}: ${part} is a broken symlink`
          : `${rel} leads outside the workspace through a symlink`,
      );
    }
    if (!inside(root, resolved)) throw new WorkspaceEscape(`${rel} leads outside the workspace through a symlink`);
    current = resolved;
  }
  return current;
}

/** Writes the job's files, refusing any path that resolves (through `..` or a symlink) outside the workspace. */
export async function writeFiles(
  files: JobSpec['files'],
  workspace: string,
  log: PrepareContext['log'],
): Promise<void> {
  const list = Object.entries(files ?? {});
  if (list.length === 0) return;
  const entry = log.startEntry('setup.files', ['write', `${list.length} file(s)`]);
  const started = Date.now();
  try {
    for (const [rel, content] of list) {
      if (!isSafeRelativePath(rel)) throw new WorkspaceEscape(`refusing to write ${rel}: outside the workspace`);
      const parent = await confinedDirectory(workspace, path.posix.dirname(rel)).catch((err: Error) => {
        throw err instanceof WorkspaceEscape ? new WorkspaceEscape(`refusing to write ${rel}: ${err.message}`) : err;
      });
      const target = path.join(parent, path.posix.basename(rel));
      // A symlink from the checkout at the target itself would redirect the write: replace it with the file.
      if ((await lstat(target).catch(() => undefined))?.isSymbolicLink()) await unlink(target);
      await writeFile(target, content, { mode: 0o755 });
      entry.write('stdout', `wrote ${rel} (${Buffer.byteLength(content)} bytes)\n`);
    }
  } catch (err) {
    entry.note((err as Error).message);
    entry.finish(1, Date.now() - started);
    if (err instanceof JobFailure) throw err;
    throw new JobFailure(
      (err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'out_of_disk' : 'system_failure',
      `writing files failed: ${(err as Error).message}`,
    );
  }
  entry.finish(0, Date.now() - started);
}

/**
 * Prepares a host workspace: the repository checked out into its `dir` (by `git`, wherever the runtime runs it),
 * then the job's files. `git` gets the real path of the checkout directory.
 */
export async function prepareHostWorkspace(
  spec: Pick<JobSpec, 'repository' | 'files'>,
  dirs: HostDirs,
  git: (checkoutDir: string) => GitRunner,
  ctx: PrepareContext & { allowLocalRepositories: boolean },
): Promise<void> {
  const repo = spec.repository;
  if (repo) {
    checkRepositoryUrl(repo.url, ctx.allowLocalRepositories);
    // The workspace is fresh and empty: nothing in it can redirect the checkout directory yet.
    const dir = await confinedDirectory(dirs.workspace, repo.dir ?? '.');
    await checkout(repo, git(dir), ctx.log, ctx.signal);
  }
  await writeFiles(spec.files, dirs.workspace, ctx.log);
}

/** Writes step `index`'s script into the scripts directory; returns its path. */
export async function writeStepScript(dirs: HostDirs, index: number, run: string): Promise<string> {
  const scriptPath = stepScriptPath(dirs, index);
  await writeFile(scriptPath, run.endsWith('\n') ? run : `${run}\n`, { mode: 0o755 });
  return scriptPath;
}

export function stepScriptPath(dirs: HostDirs, index: number): string {
  return path.join(dirs.scripts, `step-${index + 1}.sh`);
}

/** The step's working directory (its `dir`), created and checked to be inside the workspace. */
export async function stepWorkdir(dirs: HostDirs, dir: string | undefined): Promise<string> {
  try {
    return await confinedDirectory(dirs.workspace, dir ?? '.');
  } catch (err) {
    if (err instanceof WorkspaceEscape) throw new WorkspaceEscape(`dir ${err.message}`);
    throw err;
  }
}
