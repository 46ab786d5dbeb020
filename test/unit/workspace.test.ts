import { execFile } from 'node:child_process';
import { afterEach, beforeEach, describe, it, expect } from 'vitest';
import {
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseJobSpec, type JobSpec } from '../../src/core/jobSpec.js';
import type { LogEntryUpdate } from '../../src/core/protocol.js';
import { JobLog } from '../../src/executor/jobLog.js';
import { Redactor } from '../../src/executor/redactor.js';
import { gitEnvironment, redactUrl } from '../../src/executor/workspace/checkout.js';
import { RuntimeSetupError } from '../../src/executor/runtimes/runtime.js';
import {
  WorkspaceEscape,
  createHostDirs,
  executorRoot,
  writeFiles as writeHostFiles,
  type HostDirs,
} from '../../src/executor/workspace/hostWorkspace.js';

const writeFiles = (spec: JobSpec, dirs: HostDirs, log: JobLog): Promise<void> =>
  writeHostFiles(spec.files, dirs.workspace, log);

describe('redactUrl', () => {
  it.each([
    ['https://user:token@github.com/org/repo.git', 'https://user:***@github.com/org/repo.git'],
    ['http://x-access-token:ghs_abc123@example.com/r.git', 'http://x-access-token:***@example.com/r.git'],
    ['HTTPS://User:Secret@Host/r', 'HTTPS://User:***@Host/r'],
    ['ssh://git:hunter2@host:2222/r.git', 'ssh://git:***@host:2222/r.git'],
    ['git+ssh://me:pw@host/r', 'git+ssh://me:***@host/r'],
    ['https://user:pa:ss@host/r', 'https://user:***@host/r'],
    ['https://user:p@ss@host/r', 'https://user:***@host/r'],
  ])('hides the password in %s', (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
  });

  it('never returns the password', () => {
    const url = 'https://deploy:s3cr3t-t0ken@git.example.com/team/app.git';
    expect(redactUrl(url)).not.toContain('s3cr3t-t0ken');
  });

  it.each([
    'https://github.com/org/repo.git',
    'ssh://git@github.com/org/repo.git',
    'git@github.com:org/repo.git',
    'file:///srv/repos/app.git',
    'https://host/path/with@sign',
  ])('leaves %s unchanged', (url) => {
    expect(redactUrl(url)).toBe(url);
  });
});

describe("a repository's password from the job's secrets", () => {
  /** What `git credential fill` answers for `request` in the checkout's environment (a real git, no other config). */
  async function fill(request: string, secrets: Record<string, string>): Promise<string> {
    const parsed = parseJobSpec({
      queue: 'q',
      secrets: ['GIT_TOKEN'],
      steps: [],
      repository: { url: 'https://git.example.com:8443/team/app.git', username: 'deploy', passwordSecret: 'GIT_TOKEN' },
    });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
    const home = await mkdtemp(path.join(os.tmpdir(), 'dockhand-credential-'));
    const env = gitEnvironment({
      home,
      path: process.env.PATH ?? '/usr/bin:/bin',
      allowLocal: false,
      repository: parsed.value.repository,
      secrets,
    });
    try {
      return await new Promise((resolve) => {
        const child = execFile('git', ['credential', 'fill'], { env }, (_err, stdout) => resolve(stdout));
        child.stdin!.end(request);
      });
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }

  it("is given to the repository's own protocol and host, without the secret's closing line break", async () => {
    const answer = await fill('protocol=https\nhost=git.example.com:8443\npath=team/app.git\n\n', {
      GIT_TOKEN: 'tok-123\n',
    });
    expect(answer).toContain('username=deploy\n');
    expect(answer).toContain('password=tok-123\n');
  });

  it.each([
    ['another host (a redirect)', 'protocol=https\nhost=evil.example.com\n\n'],
    ['another port', 'protocol=https\nhost=git.example.com\n\n'],
    ['plain http', 'protocol=http\nhost=git.example.com:8443\n\n'],
  ])('is not given to %s', async (_what, request) => {
    expect(await fill(request, { GIT_TOKEN: 'tok-123' })).not.toContain('tok-123');
  });
});

describe("an executor's own directory under the workspace root", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'dockhand-root-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('is made private to its user, and kept when it is already theirs', async () => {
    const dir = await executorRoot(root, 'mine');
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect(await executorRoot(root, 'mine')).toBe(dir);
  });

  it('is refused when another user made it first, or put a symlink by its name', async () => {
    const elsewhere = await mkdtemp(path.join(os.tmpdir(), 'dockhand-elsewhere-'));
    try {
      await symlink(elsewhere, path.join(root, 'dockhand-linked'));
      await expect(executorRoot(root, 'linked')).rejects.toThrow(RuntimeSetupError);
      // The suite runs as root (it provisions the machine), so it can make a directory of another user.
      await mkdir(path.join(root, 'dockhand-taken'));
      await chown(path.join(root, 'dockhand-taken'), 65534, 65534);
      await expect(executorRoot(root, 'taken')).rejects.toThrow(/owner uid 65534/);
    } finally {
      await rm(elsewhere, { recursive: true, force: true });
    }
  });
});

function specWithFiles(files: Record<string, string>): JobSpec {
  const result = parseJobSpec({ queue: 'q', files, steps: [{ run: 'true' }] });
  if (!result.ok) throw new Error(JSON.stringify(result.issues));
  return result.value;
}

function recordingLog(): { log: JobLog; updates: LogEntryUpdate[] } {
  const updates: LogEntryUpdate[] = [];
  const log = new JobLog(
    async (entries) => {
      updates.push(...entries);
      return { entries: entries.map((e) => ({ index: e.index, length: e.offset + e.out.length })) };
    },
    new Redactor(),
    1_000_000,
  );
  return { log, updates };
}

const noopLog = () =>
  new JobLog(
    async (entries) => ({ entries: entries.map((e) => ({ index: e.index, length: e.offset + e.out.length })) }),
    new Redactor(),
    1_000_000,
  );

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

describe('writeFiles', () => {
  let tmp: string;
  let dirs: HostDirs;
  /** A directory outside the workspace that symlinks try to reach. */
  let outside: string;

  beforeEach(async () => {
    tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'dockhand-ws-test-')));
    dirs = await createHostDirs(tmp, 'dockhand-job-1-');
    outside = path.join(tmp, 'outside');
    await mkdir(outside);
  });

  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('does nothing without files', async () => {
    const { log, updates } = recordingLog();
    await writeFiles(specWithFiles({}), dirs, log);
    await log.flush();
    expect(updates).toHaveLength(0);
    expect(await readdir(dirs.workspace)).toEqual([]);
  });

  it('writes nested files and logs each one', async () => {
    const { log, updates } = recordingLog();
    await writeFiles(
      specWithFiles({ 'a.txt': 'A', 'deep/er/b.json': '{"b":1}', 'deep/c.sh': 'echo c\n', 'ünï/çødé.txt': 'ü' }),
      dirs,
      log,
    );
    expect(await readFile(path.join(dirs.workspace, 'a.txt'), 'utf8')).toBe('A');
    expect(await readFile(path.join(dirs.workspace, 'deep/er/b.json'), 'utf8')).toBe('{"b":1}');
    expect(await readFile(path.join(dirs.workspace, 'deep/c.sh'), 'utf8')).toBe('echo c\n');
    expect(await readFile(path.join(dirs.workspace, 'ünï/çødé.txt'), 'utf8')).toBe('ü');
    await log.flush();
    expect(updates).toHaveLength(1);
    expect(updates[0]).toMatchObject({ key: 'setup.files', exitCode: 0 });
    expect(updates[0].out).toContain('stdout: wrote deep/er/b.json (7 bytes)\n');
    expect(updates[0].out).toContain('stdout: wrote ünï/çødé.txt (2 bytes)\n');
  });

  it('overwrites a file the checkout already has', async () => {
    await writeFile(path.join(dirs.workspace, 'config.yml'), 'old');
    await writeFiles(specWithFiles({ 'config.yml': 'new' }), dirs, noopLog());
    expect(await readFile(path.join(dirs.workspace, 'config.yml'), 'utf8')).toBe('new');
  });

  it('follows a symlinked directory that stays inside the workspace', async () => {
    await mkdir(path.join(dirs.workspace, 'real'));
    await symlink(path.join(dirs.workspace, 'real'), path.join(dirs.workspace, 'alias'));
    await writeFiles(specWithFiles({ 'alias/f.txt': 'ok' }), dirs, noopLog());
    expect(await readFile(path.join(dirs.workspace, 'real/f.txt'), 'utf8')).toBe('ok');
  });

  it('refuses a path whose parent is a symlink pointing outside the workspace', async () => {
    await symlink(outside, path.join(dirs.workspace, 'evil'));
    const { log, updates } = recordingLog();
    const error: unknown = await writeFiles(specWithFiles({ 'evil/pwned.txt': 'x' }), dirs, log).catch(
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(WorkspaceEscape);
    expect((error as Error).message).toMatch(/evil\/pwned\.txt: evil leads outside the workspace through a symlink/);
    expect(await readdir(outside)).toEqual([]);
    await log.flush();
    expect(updates.find((u) => u.key === 'setup.files')?.exitCode).toBe(1);
  });

  it('refuses a relative symlink that climbs out of the workspace', async () => {
    await symlink('../../outside', path.join(dirs.workspace, 'up'));
    await expect(writeFiles(specWithFiles({ 'up/pwned.txt': 'x' }), dirs, noopLog())).rejects.toThrow(WorkspaceEscape);
    expect(await readdir(outside)).toEqual([]);
  });

  // mkdir({ recursive: true }) follows the symlink, so without a check before it the directories below the
  // link are created outside the workspace even though the write itself is then refused.
  it('creates nothing outside the workspace through a symlinked parent', async () => {
    await symlink(outside, path.join(dirs.workspace, 'evil'));
    await expect(writeFiles(specWithFiles({ 'evil/made/by/job/pwned.txt': 'x' }), dirs, noopLog())).rejects.toThrow(
      WorkspaceEscape,
    );
    expect(await readdir(outside)).toEqual([]);
  });

  it('replaces a symlink at the target itself instead of writing through it', async () => {
    const secret = path.join(outside, 'secret.txt');
    await writeFile(secret, 'original');
    await symlink(secret, path.join(dirs.workspace, 'link.txt'));
    await mkdir(path.join(dirs.workspace, 'sub'));
    await symlink(secret, path.join(dirs.workspace, 'sub', 'nested-link.txt'));
    await writeFiles(
      specWithFiles({ 'link.txt': 'replaced', 'sub/nested-link.txt': 'also replaced' }),
      dirs,
      noopLog(),
    );
    expect(await readFile(secret, 'utf8')).toBe('original');
    const stat = await lstat(path.join(dirs.workspace, 'link.txt'));
    expect(stat.isSymbolicLink()).toBe(false);
    expect(stat.isFile()).toBe(true);
    expect(await readFile(path.join(dirs.workspace, 'link.txt'), 'utf8')).toBe('replaced');
    expect(await readFile(path.join(dirs.workspace, 'sub', 'nested-link.txt'), 'utf8')).toBe('also replaced');
  });

  it('replaces a dangling symlink at the target without creating its destination', async () => {
    const dest = path.join(outside, 'would-be-created.txt');
    await symlink(dest, path.join(dirs.workspace, 'dangling'));
    await writeFiles(specWithFiles({ dangling: 'content' }), dirs, noopLog());
    expect(await exists(dest)).toBe(false);
    expect(await readFile(path.join(dirs.workspace, 'dangling'), 'utf8')).toBe('content');
  });

  it('refuses an unsafe path even when the spec was not validated', async () => {
    const spec = { ...specWithFiles({}), files: { '../escape.txt': 'x' } } as JobSpec;
    await expect(writeFiles(spec, dirs, noopLog())).rejects.toThrow(WorkspaceEscape);
    expect(await exists(path.join(dirs.root, 'escape.txt'))).toBe(false);
  });
});
