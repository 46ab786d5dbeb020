// Starting and stopping `dockhand server`: the store (migrated), the keys, the bootstrap token, then a coordinator
// (coordinator.ts) on a socket.
import path from 'node:path';
import pino from 'pino';
import { logRedact } from '../core/logRedact.js';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../core/tokens.js';
import { describeStore, openStore } from '../store/open.js';
import type { Accounts, UserRecord } from '../store/accounts.js';
import type { Store } from '../store/store.js';
import type { ServerConfig } from './config.js';
import { createCoordinator } from './coordinator.js';
import { Keyring } from './secrets/keyring.js';
import { Secrets } from './secrets/secrets.js';
import { ConfigError } from '../core/envConfig.js';

export interface RunningServer {
  url: string;
  port: number;
  store: Store;
  /** Set when this start created the first admin token; it is shown once and stored only as a hash. */
  bootstrapToken?: string;
  close(): Promise<void>;
}

export const BOOTSTRAP_USER = 'admin';

/** The first site admin, "admin", made on the first start (or found again). */
export async function bootstrapAdminUser(accounts: Accounts): Promise<UserRecord> {
  const existing = await accounts.getUser(BOOTSTRAP_USER);
  if (existing) return existing;
  // Replicas starting together may both try; the loser finds the winner's row.
  return (await accounts.createUser(BOOTSTRAP_USER, true, Date.now())) ?? (await accounts.getUser(BOOTSTRAP_USER))!;
}

/** On the first start, a token for "admin", returned to be shown once; DOCKHAND_ADMIN_TOKEN is admin's token instead. */
async function bootstrapAdminToken(accounts: Accounts, fromEnv: string | undefined): Promise<string | undefined> {
  if (fromEnv) {
    if (!(await accounts.findToken(hashToken(fromEnv), Date.now()))) {
      const admin = await bootstrapAdminUser(accounts);
      await accounts.createToken(admin.id, 'DOCKHAND_ADMIN_TOKEN', hashToken(fromEnv), Date.now());
    }
    return undefined;
  }
  if ((await accounts.countTokens()) > 0) return undefined;
  const admin = await bootstrapAdminUser(accounts);
  const token = newToken(API_TOKEN_PREFIX);
  await accounts.createToken(admin.id, 'bootstrap', hashToken(token), Date.now());
  return token;
}

export async function startServer(
  config: ServerConfig,
  logger = pino({ level: config.logLevel, base: { component: 'server' }, ...logRedact }),
): Promise<RunningServer> {
  const store = await openStore(config);
  const secrets = new Secrets(
    store.accounts,
    Keyring.load({ DOCKHAND_ENCRYPTION_KEY: config.encryptionKey }, config.dataDir),
  );
  const missingKeys = await secrets.missingKeys();
  if (missingKeys.length) {
    await store.close();
    throw new ConfigError(
      `stored secrets were encrypted with key${missingKeys.length > 1 ? 's' : ''} ${missingKeys.join(', ')}, which ${secrets.keyring.source.describe} does not hold. ` +
        'Give this server the same keys as the others (DOCKHAND_ENCRYPTION_KEY on every replica, or the key file from the data directory they used).',
    );
  }
  const bootstrapToken = await bootstrapAdminToken(store.accounts, config.adminToken);
  const coordinator = createCoordinator({
    store,
    secrets,
    config,
    log: logger,
    storage: { dataDir: config.databaseUrl ? undefined : config.dataDir, minFreeBytes: config.minFreeDiskBytes },
    builds: config.builds,
    http: {
      https: config.tls && { cert: config.tls.cert, key: config.tls.key },
      trustProxy: config.trustProxy,
      authFailures: { limit: config.authFailureLimit, windowMs: config.authFailureWindowMs },
    },
  });
  const { app } = coordinator;
  try {
    await coordinator.start();
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await coordinator.stop().catch(() => undefined);
    await store.close();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  logger.info(
    { port, store: store.kind, where: describeStore(config), tls: Boolean(config.tls) },
    'dockhand server listening',
  );
  return {
    url: `${config.tls ? 'https' : 'http'}://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`,
    port,
    store,
    bootstrapToken,
    async close() {
      await coordinator.stop();
      await store.close();
    },
  };
}
