import { readFileSync } from 'node:fs';

/** Dockhand's version, read from package.json so the server and executors report the release they run. */
export const VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return '0.0.0-dev';
  }
})();
