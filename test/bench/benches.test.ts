// Benchmarks are not tests: nothing here checks a number. Each benchmark runs once at a tiny size, as
// `node dist-bench/bench/all.js --tiny NAME` does, to prove it still runs from start to end and prints its report.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ALL = path.join(ROOT, 'dist-bench/bench/all.js');
const NAMES = ['docker-overhead', 'store', 'peers', 'throughput', 'latency', 'logs', 'kubernetes', 'builds', 'soak'];

function runTiny(name: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ALL, '--tiny', name], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

describe('benchmarks, once each at a tiny size', () => {
  it('are built, and all of them are run here', async () => {
    expect(existsSync(ALL), `${ALL} is missing: build with tsc -p bench/tsconfig.json`).toBe(true);
    const { code, output } = await runTiny('no-such-benchmark');
    expect(code).toBe(2);
    expect(output).toContain(`choose from ${NAMES.join(', ')}`);
  });

  for (const name of NAMES) {
    it(`${name} runs to its report`, { timeout: 600_000 }, async () => {
      const { code, output } = await runTiny(name);
      expect(code, output.slice(-4000)).toBe(0);
      // Every benchmark prints its report as a markdown table.
      expect(output).toMatch(/\n\|.+\|\n\|[-:| ]+\|\n/);
    });
  }
});
