// The project's folder, found from this module whether it runs from test/support (vitest) or from its build in
// dist-bench/test/support (the benchmarks): the nearest folder up with a package.json.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the project folder (no package.json above test/support)');
    dir = up;
  }
  return dir;
}

export const ROOT = projectRoot();
