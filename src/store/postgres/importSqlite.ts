// `dockhand db migrate`: moves an installation's SQLite data into an empty PostgreSQL database, keeping every id
// (job, user, token and build ids, log sequence numbers; secrets stay encrypted with the same key), in one transaction, then checks that every table has as many rows
// on both sides.
import Database from 'better-sqlite3';
import pg from 'pg';
import { SqliteStore } from '../sqlite/sqliteStore.js';
import { PostgresStore } from './postgresStore.js';

interface TableCopy {
  table: string;
  columns: string[];
  /** Orders the source rows (and so the inserts) by their key. */
  orderBy: string;
  /** Converts a column value from SQLite's storage to PostgreSQL's. */
  convert?: Record<string, (value: unknown) => unknown>;
  /** Identity column whose sequence must continue after the copied ids. */
  identity?: string;
}

const asBoolean = (v: unknown): boolean => v === 1 || v === true;
const jsonArrayToTextArray = (v: unknown): string[] => JSON.parse(v as string) as string[];

/** Parents before children, so foreign keys hold at every insert. */
const TABLES: TableCopy[] = [
  { table: 'users', columns: ['id', 'name', 'site_admin', 'created_at'], orderBy: 'id', identity: 'id' },
  { table: 'orgs', columns: ['id', 'name', 'created_at'], orderBy: 'id', identity: 'id' },
  { table: 'org_members', columns: ['org_id', 'user_id', 'created_at'], orderBy: 'org_id, user_id' },
  {
    table: 'jobs',
    columns: [
      'id',
      'queue',
      'namespace',
      'spec',
      'state',
      'attempt',
      'max_attempts',
      'num_failures',
      'num_resets',
      'cancel_requested',
      'failure_message',
      'executor_name',
      'created_at',
      'queued_at',
      'available_at',
      'started_at',
      'finished_at',
      'last_heartbeat_at',
      'docker_auth_config',
      'submitted_by',
      'failure_reason',
    ],
    orderBy: 'id',
    convert: { cancel_requested: asBoolean },
    identity: 'id',
  },
  {
    table: 'job_attempts',
    columns: [
      'job_id',
      'attempt',
      'executor_name',
      'token_hash',
      'started_at',
      'finished_at',
      'outcome',
      'message',
      'failure_reason',
    ],
    orderBy: 'job_id, attempt',
  },
  {
    table: 'log_entries',
    columns: ['job_id', 'attempt', 'idx', 'key', 'command', 'start_time', 'exit_code', 'duration_ms', 'length'],
    orderBy: 'job_id, attempt, idx',
  },
  {
    table: 'log_chunks',
    columns: ['seq', 'job_id', 'attempt', 'idx', 'offset', 'data'],
    orderBy: 'seq',
    identity: 'seq',
  },
  {
    table: 'executors',
    columns: [
      'name',
      'hostname',
      'os',
      'arch',
      'version',
      'runtime',
      'runtime_version',
      'queues',
      'max_jobs',
      'running_jobs',
      'job_cpus',
      'job_memory_bytes',
      'job_disk_bytes',
      'pid',
      'first_seen_at',
      'last_seen_at',
      'instance_id',
      'instance_seen_at',
      'instance_window_ms',
    ],
    orderBy: 'name',
    convert: { queues: jsonArrayToTextArray },
  },
  {
    table: 'api_tokens',
    columns: ['id', 'user_id', 'name', 'token_hash', 'created_at', 'last_used_at'],
    orderBy: 'id',
    identity: 'id',
  },
  {
    table: 'secrets',
    columns: ['id', 'namespace', 'name', 'value', 'updated_by', 'created_at', 'updated_at'],
    orderBy: 'id',
    identity: 'id',
  },
  {
    table: 'secret_access_log',
    columns: ['id', 'namespace', 'name', 'job_id', 'attempt', 'executor_name', 'accessed_at'],
    orderBy: 'id',
    identity: 'id',
  },
  { table: 'namespace_turns', columns: ['queue', 'namespace', 'served_seq'], orderBy: 'queue, namespace' },
  {
    table: 'builds',
    columns: [
      'id',
      'namespace',
      'repository',
      'phase',
      'final',
      'spec',
      'commit_sha',
      'tries_remaining',
      'tries',
      'plane',
      'digest',
      'message',
      'submitted_by',
      'cancel_requested',
      'available_at',
      'created_at',
      'started_at',
      'finished_at',
      'failed_planes',
    ],
    orderBy: 'id',
    identity: 'id',
  },
  {
    table: 'build_tries',
    columns: [
      'build_id',
      'number',
      'plane',
      'execution_id',
      'registration_jti',
      'setup_deadline',
      'started_at',
      'registered_at',
      'last_heartbeat_at',
      'ended_at',
      'outcome',
      'message',
      'worker_stopped',
      'job_token_hash',
    ],
    orderBy: 'build_id, number',
  },
  {
    table: 'build_logs',
    columns: ['build_id', 'seq', 'try_number', 'at', 'kind', 'text', 'phase'],
    orderBy: 'build_id, seq',
  },
  {
    table: 'build_contexts',
    columns: ['id', 'namespace', 'build_id', 'bytes', 'sha256', 'data', 'created_at'],
    orderBy: 'id',
  },
  {
    table: 'image_pushes',
    columns: ['id', 'image', 'tag', 'digest', 'repository', 'commit_sha', 'build_id', 'at'],
    orderBy: 'id',
    identity: 'id',
  },
  // leases are not copied: they name server replicas of the old installation, none of which holds anything after.
];

/** Rows per INSERT: well under PostgreSQL's 65535 parameters for the widest table. */
const BATCH = 500;

export interface CopyReport {
  table: string;
  rows: number;
}

export class MigrationError extends Error {}

export async function importSqlite(
  sqliteFile: string,
  postgresUrl: string,
  progress: (line: string) => void = () => undefined,
): Promise<CopyReport[]> {
  // Both sides at the current schema first: the source may come from an older version.
  const source = new SqliteStore(sqliteFile);
  await source.migrate();
  await source.close();
  const target = new PostgresStore(postgresUrl);
  await target.migrate();
  await target.close();

  const db = new Database(sqliteFile, { readonly: true, fileMustExist: true });
  const client = new pg.Client({ connectionString: postgresUrl });
  // A dropped connection also emits 'error'; the failed query reports it, an unheard event would end the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    const nonEmpty = [];
    for (const { table } of TABLES) {
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${table}`);
      if (rows[0].n > 0) nonEmpty.push(`${table} (${rows[0].n} rows)`);
    }
    if (nonEmpty.length) {
      throw new MigrationError(
        `the target database is not empty: ${nonEmpty.join(', ')}. Migrate into a new, empty database.`,
      );
    }
    await client.query('BEGIN');
    const reports: CopyReport[] = [];
    for (const copy of TABLES) {
      const quoted = copy.columns.map((c) => `"${c}"`);
      const select = db.prepare(`SELECT ${quoted.join(', ')} FROM ${copy.table} ORDER BY ${copy.orderBy}`);
      let batch: unknown[][] = [];
      let rows = 0;
      const flush = async (): Promise<void> => {
        if (!batch.length) return;
        const params: unknown[] = [];
        const tuples = batch.map((row) => `(${row.map((value) => `$${params.push(value)}`).join(', ')})`);
        const overriding = copy.identity ? ' OVERRIDING SYSTEM VALUE' : '';
        await client.query(
          `INSERT INTO ${copy.table} (${quoted.join(', ')})${overriding} VALUES ${tuples.join(', ')}`,
          params,
        );
        rows += batch.length;
        batch = [];
      };
      for (const row of select.iterate() as Iterable<Record<string, unknown>>) {
        batch.push(copy.columns.map((c) => (copy.convert?.[c] ? copy.convert[c](row[c]) : row[c])));
        if (batch.length === BATCH) await flush();
      }
      await flush();
      if (copy.identity) {
        await client.query(
          `SELECT setval(pg_get_serial_sequence('${copy.table}', '${copy.identity}'), coalesce((SELECT max(${copy.identity}) FROM ${copy.table}), 0) + 1, false)`,
        );
      }
      progress(`${copy.table}: ${rows} rows`);
      reports.push({ table: copy.table, rows });
    }
    await client.query(
      `SELECT setval('namespace_turn_seq', coalesce((SELECT max(served_seq) FROM namespace_turns), 0) + 1, false)`,
    );
    // The check: as many rows on both sides, read back inside the same transaction.
    for (const { table, rows } of reports) {
      const sourceRows = (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
      const { rows: counted } = await client.query(`SELECT count(*)::int AS n FROM ${table}`);
      if (sourceRows !== rows || counted[0].n !== rows) {
        throw new MigrationError(
          `row counts differ for ${table}: ${sourceRows} in SQLite, ${counted[0].n} copied; nothing was changed`,
        );
      }
    }
    await client.query('COMMIT');
    return reports;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await client.end();
    db.close();
  }
}
