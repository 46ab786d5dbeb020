// A job's workspace: a fresh directory, the repository checked out at the requested commit, and the job's files.
import { lstat, mkdir, mkdtemp, readlink, realpath, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { JobSpec } from '../core/jobSpec.js';
import { isSafeRelativePath } from '../core/paths.js';
import type { JobLog } from './jobLog.js';
import { runProcess } from './process.js';
import type { JobDirs } from './runtimes/runtime.js';

/** Workspace roots as real paths, resolved once each: what mkdtemp makes inside one is then real too. */
const realRoots = new Map<string, Promise<string>>();

/** Makes the job's directories; their paths are real (symlinks such as a linked temp dir resolved once, here). */
export async function createJobDirs(root: string, jobId: number): Promise<JobDirs> {
  let realRoot = realRoots.get(root);
  if (!realRoot) {
    realRoot = realpath(root);
    realRoots.set(root, realRoot);
    realRoot.catch(() => realRoots.delete(root));
  }
  const dir = await mkdtemp(path.join(await realRoot, `dockhand-job-${jobId}-`));
  const dirs = { root: dir, workspace: path.join(dir, 'workspace'), scripts: path.join(dir, 'scripts') };
  await mkdir(dirs.workspace);
  await mkdir(dirs.scripts);
  return dirs;
}

export async function removeJobDirs(dirs: JobDirs): Promise<void> {
  await rm(dirs.root, { recursive: true, force: true, maxRetries: 3 });
}

/** Thrown when preparing the workspace failed; the message is for the user. */
export class WorkspaceError extends Error {}

/** A lone user name can be a token too (https://TOKEN@host/…); only the conventional "git" user is not secret. */
const PUBLIC_GIT_USER = 'git';

/** Hides the password in URLs like https://user:token@host/repo.git before they are logged. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z+]+:\/\/)([^/@]+)@/i, (_m, scheme: string, userinfo: string) => {
    const [user] = userinfo.split(':');
    return `${scheme}${userinfo.includes(':') ? `${user}:***` : user === PUBLIC_GIT_USER ? user : '***'}@`;
  });
}

/** The secrets in a repository URL (password, or a token used as user name), for the job's redactor. */
export function urlCredentials(url: string | undefined): string[] {
  if (!url) return [];
  try {
    const { username, password } = new URL(url);
    return [password, username === PUBLIC_GIT_USER ? '' : username].filter(Boolean).map(decodeURIComponent);
  } catch {
    return [];
  }
}

const GIT_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LANG', 'TMPDIR', 'SSH_AUTH_SOCK', 'GIT_SSH_COMMAND', 'http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];

export async function checkoutRepository(spec: JobSpec, dirs: JobDirs, log: JobLog, signal: AbortSignal): Promise<void> {
  const repo = spec.repository;
  if (!repo) return;
  const dir = path.join(dirs.workspace, repo.dir ?? '.');
  await mkdir(dir, { recursive: true });
  const env: Record<string, string> = { GIT_TERMINAL_PROMPT: '0', GIT_LFS_SKIP_SMUDGE: '1' };
  for (const key of GIT_ENV_KEYS) if (process.env[key]) env[key] = process.env[key]!;

  const git = async (key: string, args: string[], shown: string[] = args): Promise<void> => {
    const entry = log.startEntry(key, ['git', ...shown]);
    const started = Date.now();
    let result: { exitCode: number };
    try {
      result = await runProcess(['git', ...args], { cwd: dir, env, output: entry.write, signal });
    } catch (err) {
      entry.note(`could not run git: ${(err as Error).message}`);
      entry.finish(127, Date.now() - started);
      throw new WorkspaceError(`${key} failed: could not run git (${(err as Error).message}); is git installed on the executor?`);
    }
    entry.finish(result.exitCode, Date.now() - started);
    if (result.exitCode !== 0) throw new WorkspaceError(`${key} failed with exit code ${result.exitCode}; see its log`);
  };

  await git('setup.git.init', ['init', '--quiet', '.']);
  await git('setup.git.add-remote', ['remote', 'add', 'origin', repo.url], ['remote', 'add', 'origin', redactUrl(repo.url)]);
  const fetchArgs = [
    '-c', 'protocol.version=2', 'fetch', '--progress', '--no-recurse-submodules',
    repo.fetchTags ? '--tags' : '--no-tags',
    ...(repo.shallow ? ['--depth=1'] : []),
    ...(repo.sparseCheckout ? ['--filter=blob:none'] : []),
    'origin', repo.commit,
  ];
  await git('setup.git.fetch', fetchArgs);
  if (repo.sparseCheckout) await git('setup.git.sparse-checkout', ['sparse-checkout', 'set', '--no-cone', '--', ...repo.sparseCheckout]);
  await git('setup.git.checkout', ['-c', 'advice.detachedHead=false', 'checkout', '--progress', '--force', 'FETCH_HEAD']);
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
      throw new WorkspaceError(inside(root, target) ? `${rel}: ${part} is a broken symlink` : `${rel} leads outside the workspace through a symlink`);
    }
    if (!inside(root, resolved)) throw new WorkspaceError(`${rel} leads outside the workspace through a symlink`);
    current = resolved;
  }
  return current;
}

/** Writes the job's files, refusing any path that resolves (through `..` or a symlink) outside the workspace. */
export async function writeFiles(spec: JobSpec, dirs: JobDirs, log: JobLog): Promise<void> {
  const files = Object.entries(spec.files ?? {});
  if (files.length === 0) return;
  const entry = log.startEntry('setup.files', ['write', `${files.length} file(s)`]);
  const started = Date.now();
  const root = dirs.workspace;
  try {
    for (const [rel, content] of files) {
      if (!isSafeRelativePath(rel)) throw new WorkspaceError(`refusing to write ${rel}: outside the workspace`);
      const parent = await confinedDirectory(root, path.posix.dirname(rel)).catch((err: Error) => {
        throw err instanceof WorkspaceError ? new WorkspaceError(`refusing to write ${rel}: ${err.message}`) : err;
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
    throw err instanceof WorkspaceError ? err : new WorkspaceError(`writing files failed: ${(err as Error).message}`);
  }
  entry.finish(0, Date.now() - started);
}
