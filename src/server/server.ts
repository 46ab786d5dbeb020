// Starting and stopping a coordinator: store, migrations, bootstrap token, HTTP, reaper.
import path from 'node:path';
import pino from 'pino';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../core/tokens.js';
import { PostgresStore } from '../store/postgres/postgresStore.js';
import { SqliteStore } from '../store/sqlite/sqliteStore.js';
import type { Store } from '../store/store.js';
import { buildApp } from './app.js';
import { redactDatabaseUrl, type ServerConfig } from './config.js';
import { CLUSTER_FALLBACK_POLL_MS, relayEvents } from './cluster.js';
import { EventBus } from './events.js';
import { ServerMetrics } from './metrics.js';
import { startReaper } from './reaper.js';

export interface RunningServer {
  url: string;
  port: number;
  store: Store;
  /** Set when this start created the first admin token; it is shown once and stored only as a hash. */
  bootstrapToken?: string;
  close(): Promise<void>;
}

export const BOOTSTRAP_TOKEN_NAME = 'admin';
const CLOSE_GRACE_MS = 2_000;

async function bootstrapAdminToken(store: Store, fromEnv: string | undefined): Promise<string | undefined> {
  if (fromEnv) {
    if (!(await store.findApiToken(hashToken(fromEnv)))) await store.createApiToken('admin (DOCKHAND_ADMIN_TOKEN)', hashToken(fromEnv), Date.now());
    return undefined;
  }
  if ((await store.countApiTokens()) > 0) return undefined;
  const token = newToken(API_TOKEN_PREFIX);
  await store.createApiToken(BOOTSTRAP_TOKEN_NAME, hashToken(token), Date.now());
  return token;
}

/** Where the data lives, for people: the SQLite directory, or the PostgreSQL URL without its password. */
export function describeStore(config: Pick<ServerConfig, 'dataDir' | 'databaseUrl'>): string {
  return config.databaseUrl ? redactDatabaseUrl(config.databaseUrl) : config.dataDir;
}

export async function startServer(config: ServerConfig, logger = pino({ level: config.logLevel, base: { component: 'server' } })): Promise<RunningServer> {
  const store: Store = config.databaseUrl ? new PostgresStore(config.databaseUrl) : new SqliteStore(path.join(config.dataDir, 'dockhand.db'));
  await store.migrate();
  const bootstrapToken = await bootstrapAdminToken(store, config.adminToken);
  const events = new EventBus(store.listen ? { maxWaitMs: CLUSTER_FALLBACK_POLL_MS } : {});
  const relay = await relayEvents(store, events, logger);
  const metrics = new ServerMetrics(store);
  const { app } = buildApp({ store, events, metrics, config }, logger);
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const reaper = startReaper({ store, events, metrics, config, log: logger }, Date.now());
  logger.info({ port, store: store.kind, where: describeStore(config) }, 'dockhand server listening');
  return {
    url: `http://${shownHost}:${port}`,
    port,
    store,
    bootstrapToken,
    async close() {
      reaper.stop();
      // Held requests end at once (preClose); others get a moment. Connections a client opened without sending a
      // request yet would otherwise keep the server up until the headers timeout.
      const force = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
      await app.close();
      clearTimeout(force);
      await relay?.close();
      await store.close();
    },
  };
}
