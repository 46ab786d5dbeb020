import path from 'node:path';

/**
 * True when `p` is a relative path that stays inside the directory it is resolved against:
 * no absolute paths, no ".." segments, no NUL bytes. Symlinks are checked where files are written.
 */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.includes('\0') || p.includes('\\')) return false;
  if (path.posix.isAbsolute(p)) return false;
  const normalized = path.posix.normalize(p);
  return normalized !== '..' && !normalized.startsWith('../') && !p.split('/').includes('..');
}
