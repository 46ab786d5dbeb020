// A whole coordinator in this process (fastify's inject, a real SQLite store, a real keyring), for tests of the
// HTTP API that need no sockets: route walks, authorization, fuzzing.
import path from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../../src/core/tokens.js';
import { buildApp } from '../../src/server/app.js';
import { EventBus } from '../../src/server/events.js';
import type { RouteDef } from '../../src/server/http.js';
import { ServerMetrics } from '../../src/server/metrics.js';
import { Keyring, generateKey } from '../../src/server/secrets/keyring.js';
import { Secrets } from '../../src/server/secrets/secrets.js';
import { StorageHealth } from '../../src/server/storageHealth.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN, tempDir } from './processes.js';

export interface InProcessServer {
  app: FastifyInstance;
  routes: RouteDef<any, any>[];
  store: SqliteStore;
  secrets: Secrets;
  events: EventBus;
  /** Creates a user (with an org membership per name in `orgs`, creating the org) and returns a token for them. */
  addUser(name: string, opts?: { siteAdmin?: boolean; orgs?: string[] }): Promise<string>;
  close(): Promise<void>;
}

export async function inProcessServer(): Promise<InProcessServer> {
  const store = new SqliteStore(path.join(await tempDir('in-process'), 'dockhand.db'));
  await store.migrate();
  const admin = (await store.accounts.createUser('admin', true, Date.now()))!;
  await store.accounts.createToken(admin.id, 'admin', hashToken(ADMIN_TOKEN), Date.now());
  const secrets = new Secrets(store.accounts, Keyring.load({ DOCKHAND_ENCRYPTION_KEY: generateKey() }, ''));
  const log = pino({ level: 'silent' });
  const config = {
    executorsAccessToken: EXECUTORS_TOKEN,
    stalledJobTimeoutMs: 25_000,
    maxJobResets: 3,
    retryBackoffMs: 5_000,
  };
  const events = new EventBus();
  const { app, routes } = buildApp(
    {
      store,
      events,
      metrics: new ServerMetrics(store),
      secrets,
      storage: new StorageHealth({ store, log, minFreeBytes: 0 }),
      config,
    },
    log,
  );
  await app.ready();
  return {
    app,
    routes,
    store,
    secrets,
    events,
    async addUser(name, opts = {}) {
      const user = (await store.accounts.createUser(name, opts.siteAdmin ?? false, Date.now()))!;
      for (const orgName of opts.orgs ?? []) {
        const org =
          (await store.accounts.getOrg(orgName)) ?? (await store.accounts.createOrg(orgName, undefined, Date.now()))!;
        await store.accounts.addMember(org.id, user.id, Date.now());
      }
      const token = newToken(API_TOKEN_PREFIX);
      await store.accounts.createToken(user.id, 'test', hashToken(token), Date.now());
      return token;
    },
    async close() {
      await app.close();
      await store.close();
    },
  };
}
