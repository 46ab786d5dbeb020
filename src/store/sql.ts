// A minimal SQL runner both databases provide, so tables whose queries read the same in SQLite and PostgreSQL
// (users, orgs, tokens, secrets) have one implementation. Queries use PostgreSQL's $1, $2… placeholders;
// booleans are bound as 1/0, the way both schemas store them.
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { postgresFault } from './postgres/faults.js';

export interface Sql {
  all<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  get<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R | undefined>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: unknown[]): Promise<number>;
  /** Runs `fn` in one transaction, rolled back when it throws. */
  tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
}

const bindable = (value: unknown): unknown => (typeof value === 'boolean' ? Number(value) : value);

export function sqliteSql(db: Database.Database): Sql {
  const statements = new Map<string, Database.Statement>();
  const prepare = (sql: string): Database.Statement => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = db.prepare(sql.replace(/\$(\d+)/g, '@p$1'));
      statements.set(sql, statement);
    }
    return statement;
  };
  const named = (params: unknown[]): Record<string, unknown> =>
    Object.fromEntries(params.map((v, i) => [`p${i + 1}`, bindable(v)]));
  // better-sqlite3 is synchronous: a transaction's statements run back to back unless `fn` awaits something
  // else, and the chain keeps two of these transactions from ever overlapping.
  let chain: Promise<unknown> = Promise.resolve();
  const sql: Sql = {
    all: async <R>(text: string, params: unknown[] = []) => prepare(text).all(named(params)) as R[],
    get: async <R>(text: string, params: unknown[] = []) => prepare(text).get(named(params)) as R | undefined,
    run: async (text, params = []) => prepare(text).run(named(params)).changes,
    tx<T>(fn: (inner: Sql) => Promise<T>): Promise<T> {
      const result = chain.then(async () => {
        db.exec('BEGIN IMMEDIATE');
        try {
          const value = await fn(sql);
          db.exec('COMMIT');
          return value;
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK');
          throw err;
        }
      });
      chain = result.catch(() => undefined);
      return result;
    },
  };
  return sql;
}

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

function postgresRunner(client: Queryable, tx: Sql['tx']): Sql {
  const query = (text: string, params: unknown[] = []) => client.query(text, params.map(bindable));
  return {
    all: async <R>(text: string, params?: unknown[]) => (await query(text, params)).rows as R[],
    get: async <R>(text: string, params?: unknown[]) => (await query(text, params)).rows[0] as R | undefined,
    run: async (text, params) => (await query(text, params)).rowCount ?? 0,
    tx,
  };
}

/** Runs `fn` on one pooled connection inside BEGIN/COMMIT, rolling back when it throws. */
export async function pgTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A borrowed connection that drops emits 'error' besides failing its query; the pool listens only to idle
  // ones, and an unheard 'error' would end the process. The failed query is what reports it.
  const ignore = (): void => undefined;
  client.on('error', ignore);
  let fault: Error | undefined;
  try {
    await client.query('BEGIN');
    const value = await fn(client);
    await client.query('COMMIT');
    return value;
  } catch (err) {
    // A connection that met a storage fault is not reused: after a failover, one still open to the old primary
    // would go on answering "read-only transaction" however healthy the new one is.
    if (postgresFault(err)) fault = err as Error;
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.off('error', ignore);
    client.release(fault);
  }
}

export function postgresSql(pool: pg.Pool): Sql {
  const nested = (): Promise<never> => Promise.reject(new Error('nested transaction'));
  return postgresRunner(pool, (fn) => pgTransaction(pool, (client) => fn(postgresRunner(client, nested))));
}
