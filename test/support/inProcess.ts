// A whole coordinator in this process (fastify's inject, a real SQLite store, a real keyring), for tests of the
// HTTP API that need no sockets: route walks, authorization, fuzzing.
import path from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../../src/core/tokens.js';
import { createCoordinator, type Coordinator } from '../../src/server/coordinator.js';
import type { RouteDef } from '../../src/server/http.js';
import { Keyring, generateKey } from '../../src/server/secrets/keyring.js';
import { Secrets } from '../../src/server/secrets/secrets.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import type { Store } from '../../src/store/store.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN, tempDir } from './processes.js';

export interface InProcessServer<S extends Store = SqliteStore> {
  app: FastifyInstance;
  routes: RouteDef<any, any>[];
  store: S;
  secrets: Secrets;
  coordinator: Coordinator;
  /** Creates a user (with an org membership per name in `orgs`, creating the org) and returns a token for them. */
  addUser(name: string, opts?: { siteAdmin?: boolean; orgs?: string[] }): Promise<string>;
  close(): Promise<void>;
}

/**
 * On a new SQLite store, or on `store` (migrated; closed by close()). Background work (the reaper, the replica
 * relay) runs only with `start`.
 */
export async function inProcessServer(): Promise<InProcessServer>;
export async function inProcessServer<S extends Store>(opts: {
  store: S;
  start?: boolean;
}): Promise<InProcessServer<S>>;
export async function inProcessServer(opts: { store?: Store; start?: boolean } = {}): Promise<InProcessServer<Store>> {
  const store = opts.store ?? new SqliteStore(path.join(await tempDir('in-process'), 'dockhand.db'));
  await store.migrate();
  const admin =
    (await store.accounts.getUser('admin')) ?? (await store.accounts.createUser('admin', true, Date.now()))!;
  if (!(await store.accounts.findToken(hashToken(ADMIN_TOKEN), Date.now())))
    await store.accounts.createToken(admin.id, 'admin', hashToken(ADMIN_TOKEN), Date.now());
  const secrets = new Secrets(store.accounts, Keyring.load({ DOCKHAND_ENCRYPTION_KEY: generateKey() }, ''));
  const log = pino({ level: 'silent' });
  const config = {
    executorsAccessToken: EXECUTORS_TOKEN,
    stalledJobTimeoutMs: 25_000,
    maxJobResets: 3,
    retryBackoffMs: 5_000,
  };
  const coordinator = createCoordinator({ store, secrets, config, log });
  const { app, routes } = coordinator;
  if (opts.start) await coordinator.start();
  await app.ready();
  return {
    app,
    routes,
    store,
    secrets,
    coordinator,
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
      await coordinator.stop();
      await store.close();
    },
  };
}
