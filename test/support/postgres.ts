// PostgreSQL for tests: one throwaway cluster per vitest run (started by the globalSetup), and a fresh
// database per test file or test from createTestDatabase. Set DOCKHAND_TEST_POSTGRES_URL to use a server
// of your own instead; its user must be allowed to create and drop databases.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
} from 'node:fs';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { inject } from 'vitest';
import { freePort } from './ports.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the run's PostgreSQL server (its `postgres` database). */
    postgresUrl: string;
  }
}

export const POSTGRES_URL_ENV = 'DOCKHAND_TEST_POSTGRES_URL';

// Not imported from processes.js: that module throws when dist/ is not built, and the globalSetup imports this one.
const OUTPUT_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../test-output');
const LOG_FILE = path.join(OUTPUT_DIR, 'postgres.log');
const PG_ROOT = '/usr/lib/postgresql';
// The owning process's pid is in the name, so a later run can tell a cluster left by a killed run.
const DIR_PREFIX = 'dockhand-test-postgres-';
const HINT = `run scripts/provision.sh as root, or set ${POSTGRES_URL_ENV} to a PostgreSQL server to use`;

export interface PostgresHandle {
  url: string;
  stop(): Promise<void>;
}

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

const isRoot = (): boolean => process.getuid?.() === 0;

interface RunResult {
  code: number;
  output: string;
}

/** Runs a PostgreSQL program; as root, as the postgres user (initdb and the server refuse to run as root). */
function runPg(cmd: string, args: string[], cwd: string): Promise<RunResult> {
  const [file, argv] = asPgUser(cmd, args);
  return new Promise((resolve) => {
    // cwd: the postgres user may not be allowed into the caller's directory.
    execFile(file, argv, { cwd, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      const output = `${stdout}${stderr}${err && typeof err.code !== 'number' ? err.message : ''}`.trim();
      resolve({ code, output });
    });
  });
}

/** The command line that runs `cmd` as the postgres user when we are root, else as ourselves. */
function asPgUser(cmd: string, args: string[]): [string, string[]] {
  if (!isRoot()) return [cmd, args];
  return [existsSync('/usr/sbin/runuser') ? '/usr/sbin/runuser' : 'runuser', ['-u', 'postgres', '--', cmd, ...args]];
}

/** The bin directory of the newest PostgreSQL installed the Debian way (/usr/lib/postgresql/VERSION/bin). */
function findPgBin(): string {
  const versions = existsSync(PG_ROOT)
    ? readdirSync(PG_ROOT).filter((v) => existsSync(path.join(PG_ROOT, v, 'bin/initdb')))
    : [];
  if (versions.length === 0) throw new Error(`PostgreSQL is not installed (no ${PG_ROOT}/*/bin/initdb): ${HINT}`);
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return path.join(PG_ROOT, versions[0], 'bin');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stops and removes clusters whose vitest run was killed before its teardown; best effort. */
async function reapAbandonedClusters(bin: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(os.tmpdir()).filter((n) => n.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const owner = Number(name.slice(DIR_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || pidAlive(owner)) continue;
    const dir = path.join(os.tmpdir(), name);
    if (existsSync(path.join(dir, 'data/postmaster.pid'))) {
      await runPg(
        path.join(bin, 'pg_ctl'),
        ['stop', '-D', path.join(dir, 'data'), '-m', 'immediate', '-w', '-t', '30'],
        dir,
      );
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Connects and runs SELECT 1, retrying until `timeoutMs` or until `gone()`; throws the last error. */
async function waitForConnection(url: string, timeoutMs: number, gone: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (err) {
      if (Date.now() > deadline || gone()) throw err;
    } finally {
      await client.end().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function logTail(fromByte: number): string {
  try {
    return readFileSync(LOG_FILE).subarray(fromByte).toString('utf8').trim().split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}

interface Server {
  /** Settles when the server process has exited, with its exit code (or 128 + signal). */
  exited: Promise<number>;
  /** Set once it has exited. */
  exitCode?: number;
}

/**
 * Starts `postgres` as our own child rather than through `pg_ctl start`: pg_ctl leaves the server to PID 1,
 * which in containers often never reaps it, and a child's early exit (a port taken after all) shows at once.
 * Its output goes to LOG_FILE through a descriptor we open, so the postgres user need not be able to write test-output/.
 */
function spawnServer(bin: string, dataDir: string, port: number, cwd: string): Server {
  const fd = openSync(LOG_FILE, 'a');
  try {
    const [file, argv] = asPgUser(path.join(bin, 'postgres'), ['-D', dataDir, '-p', String(port)]);
    // Its own process group: a Ctrl-C in the terminal reaches vitest, whose teardown then stops the server.
    const child = spawn(file, argv, { cwd, stdio: ['ignore', fd, fd], detached: true });
    child.unref();
    const server: Server = {
      exited: new Promise<number>((resolve) => {
        const done = (code: number): void => {
          server.exitCode ??= code;
          resolve(server.exitCode);
        };
        child.on('error', () => done(127));
        child.on('exit', (code, signal) => done(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
      }),
    };
    return server;
  } finally {
    closeSync(fd);
  }
}

/**
 * A PostgreSQL server for tests. With DOCKHAND_TEST_POSTGRES_URL set, that server (stop() does nothing);
 * otherwise a new cluster in a temp dir on a free 127.0.0.1 port, tuned for speed over durability.
 * Throws when PostgreSQL cannot be had: tests that need it fail rather than skip.
 */
export async function startPostgres(): Promise<PostgresHandle> {
  const given = process.env[POSTGRES_URL_ENV];
  if (given) {
    await waitForConnection(given, 5_000).catch((err: Error) => {
      throw new Error(`${POSTGRES_URL_ENV}=${redact(given)} does not answer: ${err.message}`);
    });
    return { url: given, stop: async () => {} };
  }

  const bin = findPgBin();
  const owner = isRoot() ? postgresUser() : undefined;
  if (isRoot() && !owner)
    throw new Error(`there is no postgres user to run PostgreSQL as (it refuses to run as root): ${HINT}`);
  await reapAbandonedClusters(bin);
  mkdirSync(OUTPUT_DIR, { recursive: true });

  const dir = await mkdtemp(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  const dataDir = path.join(dir, 'data');
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    if (owner) chownSync(dir, owner.uid, owner.gid);
    // C locale: the same collation everywhere, whatever the caller's LANG says.
    const init = await runPg(
      path.join(bin, 'initdb'),
      ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'],
      dir,
    );
    if (init.code !== 0) throw new Error(`initdb failed (exit ${init.code}): ${init.output}`);
    // In the config file, so the temp path needs no quoting on a command line.
    await appendFile(
      path.join(dataDir, 'postgresql.conf'),
      [
        '',
        '# dockhand tests: a throwaway cluster, so speed over durability',
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir.replace(/'/g, "''")}'`,
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        'max_connections = 200',
        '',
      ].join('\n'),
    );

    // Another process may take the free port before the server binds it: try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const logStart = existsSync(LOG_FILE) ? statSync(LOG_FILE).size : 0;
      appendFileSync(
        LOG_FILE,
        `--- ${new Date().toISOString()} starting ${bin}/postgres in ${dataDir} on 127.0.0.1:${port}\n`,
      );
      const server = spawnServer(bin, dataDir, port, dir);
      const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
      try {
        await waitForConnection(url, 30_000, () => server.exitCode !== undefined);
      } catch (err) {
        if (server.exitCode !== undefined) {
          const tail = logTail(logStart);
          if (attempt < 3 && /could not bind|already in use|could not create any TCP\/IP sockets/i.test(tail)) continue;
          throw new Error(
            `PostgreSQL exited (${server.exitCode}) before accepting connections; from ${LOG_FILE}:\n${tail}`,
          );
        }
        await pgCtlStop(bin, dataDir, dir);
        await server.exited;
        throw new Error(`PostgreSQL started but does not answer on ${url}: ${(err as Error).message}; see ${LOG_FILE}`);
      }
      // vitest exits on Ctrl-C without running the globalSetup teardown: ask the server to shut down then
      // (SIGINT is its fast shutdown); the next run's reapAbandonedClusters removes the directory.
      const postmasterPid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      const onExit = (): void => {
        try {
          process.kill(postmasterPid, 'SIGINT');
        } catch {
          // already gone
        }
      };
      process.on('exit', onExit);
      let stopping: Promise<void> | undefined;
      const stop = (): Promise<void> => {
        stopping ??= (async () => {
          process.off('exit', onExit);
          const r = await pgCtlStop(bin, dataDir, dir);
          // Nothing to wait for when it had already gone (pg_ctl then fails): the exit has been seen.
          if (r.code === 0) await server.exited;
          await cleanup();
          if (r.code !== 0) throw new Error(`pg_ctl stop failed (exit ${r.code}): ${r.output}`);
        })();
        return stopping;
      };
      return { url, stop };
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(not a URL)';
  }
}

function pgCtlStop(bin: string, dataDir: string, cwd: string): Promise<RunResult> {
  return runPg(path.join(bin, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], cwd);
}

/** The uid and gid of the postgres user, or undefined when there is none. */
export function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string): number =>
      Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

let dbCounter = 0;

/** A valid, unquoted-safe database name: lower case, [a-z0-9_], at most 63 bytes (NAMEDATALEN - 1). */
function databaseName(prefix: string): string {
  let p = prefix
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .slice(0, 30);
  if (!/^[a-z_]/.test(p)) p = `t_${p}`;
  return `${p}_${process.pid}_${++dbCounter}_${randomBytes(4).toString('hex')}`.slice(0, 63);
}

/** Runs `fn` on a connection of its own to `adminUrl`, closed afterwards. */
export async function withAdmin<T>(adminUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * A new, empty database on the run's server (from the globalSetup), named after `prefix` and unique across
 * workers and runs. drop() ends its open connections first, so a test's leftover pool cannot block it;
 * a pg.Pool whose connections are ended that way emits 'error', so end pools before dropping.
 */
export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  const adminUrl = inject('postgresUrl');
  if (!adminUrl)
    throw new Error(
      'no PostgreSQL URL was provided to this worker: the globalSetup in vitest.config.ts (test/support/globalSetup.ts) starts it',
    );
  const name = databaseName(prefix);
  await withAdmin(adminUrl, (c) => c.query(`CREATE DATABASE "${name}"`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropping: Promise<void> | undefined;
  const drop = (): Promise<void> => {
    dropping ??= withAdmin(adminUrl, async (c) => {
      await c.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
        [name],
      );
      // DROP DATABASE itself waits a few seconds for terminated backends to exit.
      await c.query(`DROP DATABASE IF EXISTS "${name}"`);
    }).catch((err: unknown) => {
      dropping = undefined; // let a later call try again
      throw err;
    });
    return dropping;
  };
  return { url: url.toString(), drop };
}
