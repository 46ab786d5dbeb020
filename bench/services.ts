// The services benchmarks run against, from Debian's packages: started when missing, and installed first (as root)
// when the package is missing too.
import { spawnSync } from 'node:child_process';
import { startPostgres, type PostgresHandle } from '../test/support/postgres.js';
import { startRedis, type RedisHandle } from './peers.js';

const isRoot = (): boolean => process.getuid?.() === 0;

/** `apt-get install -y PACKAGE` as root (after an `apt-get update` if the first try fails); otherwise says what to run. */
function aptInstall(pkg: string, why: string): void {
  if (!isRoot()) throw new Error(`${why}: install it with \`apt-get install -y ${pkg}\` (as root) and run the benchmark again`);
  console.error(`${why}: installing it with apt-get install -y ${pkg}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): number | null => spawnSync('apt-get', ['install', '-y', pkg], { stdio: ['ignore', 'inherit', 'inherit'], env }).status;
  if (install() === 0) return;
  spawnSync('apt-get', ['update'], { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (install() !== 0) throw new Error(`apt-get install -y ${pkg} failed; install it and run the benchmark again`);
}

/** A throwaway redis-server (installing Debian's package when it is missing). */
export async function ensureRedis(): Promise<RedisHandle> {
  if (spawnSync('redis-server', ['--version']).error) aptInstall('redis-server', 'redis-server is missing (BullMQ needs Redis)');
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
