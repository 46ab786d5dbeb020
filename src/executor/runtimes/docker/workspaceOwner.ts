// A step that runs as a non-root user must be able to write the workspace, which the executor made as its own
// user. A numeric uid[:gid] gets the tree chowned to it (when the executor may); a user name cannot be mapped to a
// uid without looking inside the image, so the tree is made writable for everyone instead (prefer numeric users).
import { chmod, lchown, lstat, opendir } from 'node:fs/promises';
import path from 'node:path';

export async function makeAccessible(root: string, user: string): Promise<void> {
  const [uidText, gidText] = user.split(':');
  const uid = /^\d+$/.test(uidText) ? Number(uidText) : undefined;
  const gid = gidText !== undefined && /^\d+$/.test(gidText) ? Number(gidText) : uid;
  if (uid === 0 || uidText === 'root') return;
  if (uid !== undefined) {
    try {
      await walk(root, (file) => lchown(file, uid, gid!));
      return;
    } catch (err) {
      // An executor that is not root may not give files away: fall back to opening the tree up.
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
  }
  await walk(root, async (file, isDir, isLink) => {
    if (isLink) return;
    const mode = (await lstat(file)).mode;
    // a+rw, plus a+x on directories and on files someone may already execute (chmod a+rwX).
    await chmod(file, (mode & 0o7777) | 0o666 | (isDir || mode & 0o111 ? 0o111 : 0));
  });
}

async function walk(
  dir: string,
  visit: (file: string, isDir: boolean, isLink: boolean) => Promise<void>,
): Promise<void> {
  await visit(dir, true, false);
  for await (const entry of await opendir(dir)) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) await walk(file, visit);
    else await visit(file, false, entry.isSymbolicLink());
  }
}
