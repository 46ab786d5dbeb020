// Shared pieces for benchmarks: real `dockhand server` / `dockhand executor` processes from the built CLI, a tiny
// HTTP client, timing of child processes, statistics, and rewriting one benchmark's section of BENCHMARKS.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: this file runs as dist-bench/bench/lib.js. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/cli/main.js');
export const BENCHMARKS_MD = path.join(ROOT, 'BENCHMARKS.md');

export const EXECUTORS_TOKEN = 'bench-executors-token-0123456789abcdef';
export const ADMIN_TOKEN = 'dha_bench_admin_token_0123456789abcdef';

// ---- command line: --flag, --option VALUE, and numbers from options or the environment ----

const argv = process.argv.slice(2);
export const flag = (name: string): boolean => argv.includes(name);
export const opt = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
/** `v` as a number, or `fallback` when it is not given. */
export const num = (v: string | undefined, fallback: number): number =>
  v === undefined || v === '' ? fallback : Number(v);

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `dockhand-bench-${prefix}-`));
}

/** A child `dockhand` process; the tail of its output is kept for error messages. */
export class Proc {
  readonly child: ChildProcess;
  private output = '';
  private readonly exited: Promise<void>;

  /** `cli`: another build's dist/cli/main.js, to measure an earlier version in the same run. */
  constructor(
    readonly label: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    cli = CLI,
  ) {
    if (!existsSync(cli)) throw new Error(`${path.relative(ROOT, cli)} is missing: run \`npm run build\` first`);
    this.child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer): void => {
      this.output = (this.output + d.toString()).slice(-64 * 1024);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(chars = 4000): string {
    return this.output.slice(-chars);
  }

  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.match(pattern);
      if (match) return match;
      if (!this.running) throw new Error(`${this.label} exited before printing ${pattern}:\n${this.tail()}`);
      if (Date.now() > deadline) throw new Error(`${this.label}: timed out waiting for ${pattern}:\n${this.tail()}`);
      await sleep(25);
    }
  }

  /** SIGTERM (a graceful stop), then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A `dockhand server` on SQLite in `dataDir`, or on PostgreSQL with `env.DOCKHAND_DATABASE_URL`. */
export async function startServer(
  dataDir: string,
  env: NodeJS.ProcessEnv = {},
  cli?: string,
): Promise<{ url: string; proc: Proc }> {
  const proc = new Proc(
    'server',
    ['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir],
    {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
      DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
      ...env,
    },
    cli,
  );
  const match = await proc.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
  return { url: match[1], proc };
}

export async function startExecutor(url: string, env: NodeJS.ProcessEnv, cli?: string): Promise<Proc> {
  const proc = new Proc(
    'executor',
    ['executor'],
    { EXECUTOR_FRONTEND_URL: url, EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN, ...env },
    cli,
  );
  // Its log line, not the server's list: the build measured against may be from before executors sent their pid.
  await proc.waitFor(/executor registered/, 60_000);
  return proc;
}

/** Kept-alive connections for `api`, as a client that submits many jobs would keep them. */
const keepAlive = new http.Agent({ keepAlive: true });

/**
 * The client API with the admin token, over node:http (a fraction of fetch's CPU per call: on a 2-CPU machine the
 * benchmark's own client would otherwise take time from the processes it measures).
 */
export function api<T>(base: string, method: string, route: string, body?: unknown): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = http.request(`${base}/api/v1${route}`, {
      method,
      agent: keepAlive,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(payload === undefined
          ? {}
          : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
      },
    });
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('error', reject);
      res.once('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if ((res.statusCode ?? 0) >= 300)
          reject(new Error(`${method} ${route}: HTTP ${res.statusCode}: ${text.slice(0, 500)}`));
        else resolve(JSON.parse(text) as T);
      });
    });
    req.end(payload);
  });
}

export interface Timed {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command and returns its wall-clock time from spawn to exit (process.hrtime), with its output. */
export function timeCommand(cmd: string, args: string[]): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ ms: Number(process.hrtime.bigint() - start) / 1e6, code, stdout, stderr }));
  });
}

/** Runs a command to completion; throws with its stderr on failure unless `allowFail`. */
export async function run(cmd: string, args: string[], allowFail = false): Promise<string> {
  const r = await timeCommand(cmd, args);
  if (r.code !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

// ---- statistics ----

export interface Summary {
  n: number;
  median: number;
  p90: number;
  mean: number;
  min: number;
  max: number;
}

/** Linear-interpolated quantile (q in [0, 1]) of unsorted values. */
export function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function summarize(values: number[]): Summary {
  return {
    n: values.length,
    median: quantile(values, 0.5),
    p90: quantile(values, 0.9),
    mean: values.reduce((a, b) => a + b, 0) / values.length,
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

export const fmtMs = (ms: number): string => (Number.isFinite(ms) ? `${Math.round(ms)} ms` : '–');
export const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');

// ---- BENCHMARKS.md ----

const INTRO = `# Benchmarks

Performance claims about Dockhand are measured here, not asserted. Every benchmark lives in \`bench/\`, runs
against real processes on the machine it runs on, compares Dockhand with a peer or a physical limit measured in
the same run, and reports ratios (absolute times vary from machine to machine; ratios travel better).

Run them all (builds first; needs a Docker engine with the \`runc\` and \`runsc\` OCI runtimes, as the test suite
does, and root for the docker runtime's network rules):

\`\`\`sh
npm run bench
\`\`\`

Each benchmark rewrites only its own section below, between its \`bench:…:start\` and \`bench:…:end\` markers, and
prints the same tables to stdout.
`;

/** Replaces the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`, appending it if absent. */
export async function writeSection(name: string, body: string): Promise<void> {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n${body.trim()}\n${end}`;
  let text = await readFile(BENCHMARKS_MD, 'utf8').catch(() => INTRO);
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + block + text.slice(j + end.length);
  else text = `${text.trimEnd()}\n\n${block}\n`;
  await writeFile(BENCHMARKS_MD, text.endsWith('\n') ? text : `${text}\n`);
}

/** A job as the client API returns it, the fields the benchmarks read. */
export interface ApiJob {
  id: number;
  state: string;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  failureMessage: string | null;
}
