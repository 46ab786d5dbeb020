// A minimal SQL runner both databases provide (sqlite/sql.ts, postgres/sql.ts), so tables whose queries read the
// same in SQLite and PostgreSQL (users, orgs, tokens, secrets) have one implementation. Queries use PostgreSQL's
// $1, $2… placeholders; booleans are bound as 1/0, the way both schemas store them.

export interface Sql {
  all<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  get<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R | undefined>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: unknown[]): Promise<number>;
  /** Runs `fn` in one transaction, rolled back when it throws. */
  tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
}

/** A parameter as both databases take it: booleans as 1/0. */
export const bindable = (value: unknown): unknown => (typeof value === 'boolean' ? Number(value) : value);
