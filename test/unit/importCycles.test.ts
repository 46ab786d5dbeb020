// No import circles in src/ (type imports included): a circle makes load order matter and hides which part depends
// on which. Lazy `import()` calls are left out: loading a runtime only when chosen is what they are for. And the
// clients (the CLI, the web UI) know the server only by the API contract in core/: never its store or its code.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SRC = path.join(ROOT, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(full);
    return /\.tsx?$/.test(e.name) ? [full] : [];
  });
}

/** Each file's relative static imports and re-exports, as files (web/ leaves out the extension). */
function importGraph(dir = SRC): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(dir)) {
    const text = readFileSync(file, 'utf8');
    const deps = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+['"](\.[^'"]+)['"]/gms)].map((m) =>
      path
        .resolve(path.dirname(file), m[1])
        .replace(/\.js$/, '.ts')
        .replace(/^(?!.*\.tsx?$)(.*)$/, '$1.ts'),
    );
    graph.set(file, deps);
  }
  return graph;
}

/** Every circle, each once, as a list of files relative to src/. */
function circles(graph: Map<string, string[]>): string[][] {
  const found = new Map<string, string[]>();
  // A file whose imports were all followed leads to no circle not already found through it.
  const done = new Set<string>();
  const visit = (file: string, stack: string[]): void => {
    const at = stack.indexOf(file);
    if (at >= 0) {
      const circle = stack.slice(at).map((f) => path.relative(SRC, f));
      found.set([...circle].sort().join(' '), circle);
      return;
    }
    if (done.has(file)) return;
    for (const dep of graph.get(file) ?? []) visit(dep, [...stack, file]);
    done.add(file);
  };
  for (const file of graph.keys()) visit(file, []);
  return [...found.values()];
}

describe('src/ imports', () => {
  it('form no circles', () => {
    const graph = importGraph();
    expect(graph.size).toBeGreaterThan(50);
    expect(circles(graph)).toEqual([]);
  });

  it('would be seen to form one', () => {
    const a = path.join(SRC, 'a.ts');
    const b = path.join(SRC, 'b.ts');
    expect(
      circles(
        new Map([
          [a, [b]],
          [b, [a]],
        ]),
      ).map((c) => c.sort()),
    ).toEqual([['a.ts', 'b.ts']]);
  });
});

describe('the clients', () => {
  it('import nothing of the server or its store: only core/, the API contract', () => {
    const reaching = [...importGraph(path.join(SRC, 'cli')), ...importGraph(path.join(ROOT, 'web/src'))].flatMap(
      ([file, deps]) =>
        deps
          .filter((dep) => /^src\/(store|server)\//.test(path.relative(ROOT, dep)))
          .map((dep) => `${path.relative(ROOT, file)} -> ${path.relative(ROOT, dep)}`),
    );
    expect(reaching).toEqual([]);
  });
});
