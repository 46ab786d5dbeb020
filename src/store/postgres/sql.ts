// The shared SQL runner (store/sql.ts) over a node-postgres pool, and the transaction helper the PostgreSQL store
// uses for its own queries.
import type pg from 'pg';
import { bindable, type Sql } from '../sql.js';
import { postgresFault } from './faults.js';

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
