// Proves the PostgreSQL test helpers work on this machine before the store tests rely on them.
import { readdirSync } from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, POSTGRES_URL_ENV, startPostgres, type TestDatabase } from '../support/postgres.js';

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

const dbName = (url: string): string => new URL(url).pathname.slice(1);

async function databaseExists(name: string): Promise<boolean> {
  const rows = await query(inject('postgresUrl'), 'SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  return rows.length === 1;
}

describe('createTestDatabase', () => {
  const made: TestDatabase[] = [];
  afterAll(async () => {
    for (const db of made) await db.drop();
  });

  it('gives a database that answers SELECT 1', async () => {
    const db = await createTestDatabase('infra-select');
    made.push(db);
    expect(dbName(db.url)).toMatch(/^infra_select_\d+_\d+_[0-9a-f]{8}$/);
    const rows = await query<{ one: number; db: string }>(db.url, 'SELECT 1 AS one, current_database() AS db');
    expect(rows).toEqual([{ one: 1, db: dbName(db.url) }]);
  });

  it('gives a different database on each call', async () => {
    const a = await createTestDatabase('infra_two');
    const b = await createTestDatabase('infra_two');
    made.push(a, b);
    expect(dbName(a.url)).not.toBe(dbName(b.url));
    await query(a.url, 'CREATE TABLE only_in_a (x int)');
    const inB = await query(b.url, "SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a'");
    expect(inB).toEqual([]);
  });

  it('drop() removes the database even with a connection still open, and may be called twice', async () => {
    const db = await createTestDatabase('infra-drop');
    const name = dbName(db.url);
    expect(await databaseExists(name)).toBe(true);
    const leftover = new pg.Client({ connectionString: db.url });
    leftover.on('error', () => {}); // drop() ends this connection from the server side
    await leftover.connect();
    try {
      await db.drop();
      await db.drop();
    } finally {
      await leftover.end().catch(() => {});
    }
    expect(await databaseExists(name)).toBe(false);
  });

  it('makes a valid name from any prefix', async () => {
    const db = await createTestDatabase('9 Weird-Prefix/with "quotes" and a very long tail that goes on and on');
    made.push(db);
    expect(dbName(db.url)).toMatch(/^t_9_weird_prefix_with_quotes_and_\d+_\d+_[0-9a-f]{8}$/);
    expect(dbName(db.url).length).toBeLessThanOrEqual(63);
    expect(await query(db.url, 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });
});

describe('the run server', () => {
  it('is on 127.0.0.1', async () => {
    const url = inject('postgresUrl');
    expect(new URL(url).hostname).toBe('127.0.0.1');
    const [row] = await query<{ addr: string }>(url, 'SELECT host(inet_server_addr()) AS addr');
    expect(row.addr).toBe('127.0.0.1');
  });
});

describe('startPostgres', () => {
  const ours = (): string[] =>
    readdirSync(os.tmpdir()).filter((n) => n.startsWith(`dockhand-test-postgres-${process.pid}-`));

  it(
    process.env[POSTGRES_URL_ENV]
      ? `uses ${POSTGRES_URL_ENV} and stop() leaves it running`
      : 'starts a throwaway cluster tuned for tests, and stop() ends it and removes its directory',
    async () => {
      const given = process.env[POSTGRES_URL_ENV];
      const server = await startPostgres();
      if (given) {
        expect(server.url).toBe(given);
        await server.stop();
        expect(await query(given, 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
        return;
      }
      try {
        expect(server.url).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
        expect(server.url).not.toBe(inject('postgresUrl'));
        expect(ours()).toHaveLength(1);
        const settings = await query<{ name: string; setting: string }>(
          server.url,
          "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'fsync', 'synchronous_commit', 'full_page_writes', 'max_connections') ORDER BY name",
        );
        expect(Object.fromEntries(settings.map((s) => [s.name, s.setting]))).toEqual({
          fsync: 'off',
          full_page_writes: 'off',
          listen_addresses: '127.0.0.1',
          max_connections: '200',
          synchronous_commit: 'off',
        });
      } finally {
        await server.stop();
      }
      expect(ours()).toEqual([]);
      await expect(query(server.url, 'SELECT 1')).rejects.toThrow(/ECONNREFUSED/);
    },
  );
});
