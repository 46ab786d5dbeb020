// Opening a workspace up for a step that runs as another user: chown for a uid, a+rwX for a user name.
import { lstat, mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeAccessible } from '../../src/executor/runtimes/docker/workspaceOwner.js';

async function tree(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'dockhand-owner-'));
  await mkdir(path.join(root, 'src'), { mode: 0o755 });
  await writeFile(path.join(root, 'src', 'a.txt'), 'a', { mode: 0o644 });
  await writeFile(path.join(root, 'run.sh'), 'true', { mode: 0o744 });
  await symlink('/etc/passwd', path.join(root, 'link'));
  return root;
}

describe('workspace access for a step user', () => {
  it('gives the whole tree to a numeric uid:gid, symlinks themselves and not what they point at', async () => {
    if (process.getuid?.() !== 0)
      throw new Error('this test chowns files: run the suite as root (scripts/test.sh does on CI)');
    const root = await tree();
    const before = await lstat('/etc/passwd');
    await makeAccessible(root, '1000:1001');
    for (const p of ['.', 'src', 'src/a.txt', 'run.sh', 'link']) {
      const st = await lstat(path.join(root, p));
      expect([p, st.uid, st.gid]).toEqual([p, 1000, 1001]);
    }
    expect((await lstat('/etc/passwd')).uid).toBe(before.uid);
  });

  it('makes the tree readable and writable for everyone for a user name, keeping who may execute what', async () => {
    const root = await tree();
    await makeAccessible(root, 'app');
    const mode = async (p: string): Promise<number> => (await lstat(path.join(root, p))).mode & 0o777;
    expect(await mode('src')).toBe(0o777);
    expect(await mode('src/a.txt')).toBe(0o666);
    expect(await mode('run.sh')).toBe(0o777);
  });

  it('leaves everything as it is for root', async () => {
    const root = await tree();
    await makeAccessible(root, '0:0');
    expect((await lstat(path.join(root, 'src/a.txt'))).mode & 0o777).toBe(0o644);
  });
});
