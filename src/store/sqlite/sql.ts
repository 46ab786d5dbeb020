// The shared SQL runner (store/sql.ts) over better-sqlite3: $n placeholders become named ones, statements are
// prepared once, and transactions are chained so that two never overlap.
import type Database from 'better-sqlite3';
import { bindable, type Sql } from '../sql.js';

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
