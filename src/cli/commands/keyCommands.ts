// `dockhand secret rotate-key`: re-encrypts every stored secret with a new key. It works on the database directly,
// like the server, so it runs where a server runs (same DOCKHAND_DATABASE_URL or data directory, same keys).
import path from 'node:path';
import type { Command } from 'commander';

export function addKeyCommands(secret: Command): void {
  secret
    .command('rotate-key')
    .description(
      'Re-encrypt every secret with a new key. With the key file in the data directory a new key is made and the old one ' +
        'removed; with DOCKHAND_ENCRYPTION_KEY, put the new key first (NEW,OLD), run this, then drop OLD on every replica.',
    )
    .option(
      '--data-dir <dir>',
      "the server's data directory (env DOCKHAND_DATA_DIR), where the SQLite file and key file live",
    )
    .action(async (opts: { dataDir?: string }) => {
      // Imported here: the other commands (an executor above all) need none of the server's modules.
      const [{ defaultDataDir, readDatabaseUrl }, { Keyring }, { rotateKey }, { openStore }] = await Promise.all([
        import('../../server/config.js'),
        import('../../server/secrets/keyring.js'),
        import('../../server/secrets/rotation.js'),
        import('../../store/open.js'),
      ]);
      const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
      const databaseUrl = readDatabaseUrl(process.env);
      const keyring = Keyring.load(process.env, dataDir);
      const store = await openStore({ dataDir, databaseUrl });
      try {
        const report = await rotateKey(store.accounts, keyring);
        process.stdout.write(
          `re-encrypted ${report.secrets} secret(s) and ${report.jobs} job credential(s); every stored value now uses key ${report.keyId}\n`,
        );
        if (report.file) {
          process.stdout.write(
            `${report.file} now holds only the new key; back it up: without it the secrets cannot be read\n`,
          );
        } else if (report.retired.length) {
          process.stdout.write(
            `nothing uses key${report.retired.length > 1 ? 's' : ''} ${report.retired.join(', ')} any more: remove ${report.retired.length > 1 ? 'them' : 'it'} from DOCKHAND_ENCRYPTION_KEY on every replica\n`,
          );
        }
      } finally {
        await store.close();
      }
    });
}
