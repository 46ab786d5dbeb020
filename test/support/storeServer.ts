// A test server on either store: SQLite in its own data dir, or a fresh PostgreSQL database of the run's cluster.
import { createTestDatabase } from './postgres.js';
import { startServer, type ServerHandle } from './processes.js';

export type StoreKind = 'sqlite' | 'postgres';

/** Starts a server on `store`; what to undo afterwards (stop it, drop its database) goes onto `cleanup`. */
export async function startServerOn(
  store: StoreKind,
  name: string,
  env: NodeJS.ProcessEnv,
  cleanup: (() => Promise<void>)[],
): Promise<ServerHandle> {
  let serverEnv = env;
  if (store === 'postgres') {
    const database = await createTestDatabase(name);
    cleanup.push(() => database.drop());
    serverEnv = { ...env, DOCKHAND_DATABASE_URL: database.url };
  }
  const server = await startServer({ name: `${name}-${store}`, env: serverEnv });
  cleanup.push(() => server.stop());
  return server;
}
