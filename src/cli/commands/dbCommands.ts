// `dockhand db migrate`: moving an installation from its SQLite file to PostgreSQL, for several server replicas.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CliError } from '../client.js';

/** "sqlite:PATH", where PATH is the database file or the data directory that holds dockhand.db. */
function sqliteFile(from: string): string {
  const match = /^sqlite:(.+)$/.exec(from);
  if (!match)
    throw new CliError("--from must be sqlite:PATH, the SQLite file (dockhand.db) or the server's data directory", 2);
  const target = path.resolve(match[1]);
  const file = existsSync(target) && statSync(target).isDirectory() ? path.join(target, 'dockhand.db') : target;
  if (!existsSync(file)) throw new CliError(`--from: ${file} does not exist`, 2);
  return file;
}

export function registerDbCommands(program: Command): void {
  const db = program.command('db').description('Database administration');
  db.command('migrate')
    .description(
      'Copy all data (jobs, attempts, logs, executors, users, orgs, API tokens, encrypted secrets) from SQLite into an empty PostgreSQL database, keeping ids, and check the row counts',
    )
    .requiredOption('--from <sqlite:PATH>', "the SQLite database file, or the server's data directory")
    .requiredOption('--to <postgres-url>', 'postgres://USER:PASSWORD@HOST:PORT/DATABASE, an empty database')
    .action(async (opts: { from: string; to: string }) => {
      // Imported here: the other commands (an executor above all) need none of the store's modules.
      const [{ redactDatabaseUrl }, { KEY_FILE_NAME }, { MigrationError, importSqlite }] = await Promise.all([
        import('../../store/open.js'),
        import('../../server/secrets/keyring.js'),
        import('../../store/postgres/importSqlite.js'),
      ]);
      const file = sqliteFile(opts.from);
      if (!/^postgres(ql)?:\/\/\S+$/.test(opts.to))
        throw new CliError('--to must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE', 2);
      process.stderr.write(`copying ${file} into ${redactDatabaseUrl(opts.to)}\n`);
      try {
        const reports = await importSqlite(file, opts.to, (line) => process.stderr.write(`  ${line}\n`));
        const total = reports.reduce((n, r) => n + r.rows, 0);
        process.stdout.write(
          `migrated ${total} rows; row counts match in every table. Stop the old server and start every replica with\n` +
            `DOCKHAND_DATABASE_URL=${redactDatabaseUrl(opts.to)}\n`,
        );
        const keyFile = path.join(path.dirname(file), KEY_FILE_NAME);
        if (!process.env.DOCKHAND_ENCRYPTION_KEY && existsSync(keyFile)) {
          process.stdout.write(
            `Secrets stay encrypted with the key in ${keyFile}: give every replica that key, e.g.\n` +
              `DOCKHAND_ENCRYPTION_KEY=$(grep -v '^#' ${keyFile} | paste -sd, -)\n`,
          );
        }
      } catch (err) {
        if (err instanceof MigrationError) throw new CliError(err.message, 1);
        throw err;
      }
    });
}
