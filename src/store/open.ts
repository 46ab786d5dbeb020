// Opening the coordinator's store: which database (PostgreSQL when a URL is set, else SQLite in the data directory),
// its migrations, and whether it takes writes, said as a setting to fix rather than a stack trace.
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../core/envConfig.js';
import { postgresFault } from './postgres/faults.js';
import { PostgresStore } from './postgres/postgresStore.js';
import { SqliteStore, sqliteFault } from './sqlite/sqliteStore.js';
import type { Store } from './store.js';

/** Where the coordinator keeps its data: a directory (SQLite's file, the key file), and a PostgreSQL URL or none. */
export interface StoreLocation {
  dataDir: string;
  databaseUrl?: string;
}

/** The database URL with its password hidden, for logs and the startup line. */
export function redactDatabaseUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]+):[^@]*@/, '$1:***@');
}

/** Where the data lives, for people: the SQLite directory, or the PostgreSQL URL without its password. */
export function describeStore(config: StoreLocation): string {
  return config.databaseUrl ? redactDatabaseUrl(config.databaseUrl) : config.dataDir;
}

/** The configured database (PostgreSQL when a URL is set, else SQLite in the data directory), migrated. */
export async function openStore(config: StoreLocation): Promise<Store> {
  const file = path.join(config.dataDir, 'dockhand.db');
  let store: Store | undefined;
  try {
    store = config.databaseUrl ? new PostgresStore(config.databaseUrl) : new SqliteStore(file);
    await store.migrate();
    // SQLite opens a file it may not write as read-only without a word, and a PostgreSQL standby reads fine: learn
    // it now, not at the first request.
    await store.probeWrite(Date.now());
    return store;
  } catch (err) {
    await store?.close().catch(() => undefined);
    const fault = config.databaseUrl ? postgresFault(err) : sqliteFault(err);
    if (!fault || fault.kind === 'unreachable') throw err;
    // Starting on a database that cannot be written would only refuse every request: say why, and stop.
    if (config.databaseUrl) {
      throw new ConfigError(
        `the PostgreSQL database ${redactDatabaseUrl(config.databaseUrl)} cannot take writes (${fault.kind}: ${fault.detail}). ` +
          'Point DOCKHAND_DATABASE_URL at the primary, writable database.',
      );
    }
    const readOnly = unwritableReason(config.dataDir);
    throw new ConfigError(
      `cannot open the database ${file} for writing (${fault.detail})${readOnly ? `: the data directory ${config.dataDir} ${readOnly}` : ''}. ` +
        'Give --data-dir (DOCKHAND_DATA_DIR) a writable directory on a disk with free space.',
    );
  }
}

/**
 * Why a directory cannot be written to ("is on a read-only file system"), or undefined when it can. It writes a
 * file to learn it: a file system the kernel turned read-only after an error still says "rw" to access(2).
 */
export function unwritableReason(dir: string): string | undefined {
  const file = path.join(dir, '.dockhand-write-check');
  try {
    writeFileSync(file, '');
    rmSync(file, { force: true });
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return 'is on a read-only file system (EROFS)';
    if (code === 'EACCES' || code === 'EPERM') return `is not writable by this user (${code})`;
    if (code === 'ENOSPC') return 'is on a full disk (ENOSPC)';
    if (code === 'ENOENT') return 'does not exist (ENOENT)';
    return `cannot be written to (${code ?? (err as Error).message})`;
  }
}
