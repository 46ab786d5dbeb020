// The services benchmarks run against, from Debian's packages: started when missing, and installed first (as root)
// when the package is missing too; and throwaway databases on the PostgreSQL cluster.
import { spawnSync } from 'node:child_process';
import { startPostgres, withAdmin, type PostgresHandle } from '../test/support/postgres.js';
import { startRedis, type RedisHandle } from './peers.js';

const isRoot = (): boolean => process.getuid?.() === 0;

/** `apt-get install -y PACKAGE` as root (after an `apt-get update` if the first try fails); otherwise says what to run. */
function aptInstall(pkg: string, why: string): void {
  if (!isRoot())
    throw new Error(`${why}: install it with \`apt-get install -y ${pkg}\` (as root) and run the benchmark again`);
  console.error(`${why}: installing it with apt-get install -y ${pkg}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): number | null =>
    spawnSync('apt-get', ['install', '-y', pkg], { stdio: ['ignore', 'inherit', 'inherit'], env }).status;
  if (install() === 0) return;
  spawnSync('apt-get', ['update'], { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (install() !== 0) throw new Error(`apt-get install -y ${pkg} failed; install it and run the benchmark again`);
}

/** A throwaway redis-server (installing Debian's package when it is missing). */
export async function ensureRedis(): Promise<RedisHandle> {
  if (spawnSync('redis-server', ['--version']).error)
    aptInstall('redis-server', 'redis-server is missing (BullMQ needs Redis)');
  return startRedis();
}

/** A throwaway PostgreSQL cluster, or DOCKHAND_TEST_POSTGRES_URL (installing Debian's package when it is missing). */
export async function ensurePostgres(): Promise<PostgresHandle> {
  try {
    return await startPostgres();
  } catch (err) {
    if (!/not installed/.test((err as Error).message)) throw err;
    aptInstall('postgresql', 'PostgreSQL is missing');
    return startPostgres();
  }
}

/** The server version of the PostgreSQL cluster at `adminUrl`, for a report. */
export function postgresVersion(adminUrl: string): Promise<string> {
  return withAdmin(
    adminUrl,
    async (c) => (await c.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0].v,
  );
}

/**
 * An empty database `name` on the cluster at `adminUrl` (one a run before left behind is dropped first), with its URL;
 * `drop()` ends its open connections and removes it.
 */
export async function freshDatabase(adminUrl: string, name: string): Promise<{ url: string; drop(): Promise<void> }> {
  const drop = (): Promise<void> =>
    withAdmin(adminUrl, async (c) => void (await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)));
  await drop();
  await withAdmin(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop };
}
