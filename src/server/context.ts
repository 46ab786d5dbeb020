import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../store/store.js';
import type { ServerConfig } from './config.js';
import type { EventBus } from './events.js';
import type { ServerMetrics } from './metrics.js';
import type { Secrets } from './secrets/secrets.js';
import type { StorageHealth } from './storageHealth.js';

/** What route groups and background loops share. */
export interface ServerContext {
  store: Store;
  events: EventBus;
  metrics: ServerMetrics;
  secrets: Secrets;
  /** Whether the database takes writes; new work is refused while it does not. */
  storage: StorageHealth;
  config: Pick<ServerConfig, 'executorsAccessToken' | 'stalledJobTimeoutMs' | 'maxJobResets' | 'retryBackoffMs'>;
  log: FastifyBaseLogger;
  /** Aborted when the server shuts down, so held requests (long polls, log streams) end at once. */
  closing: AbortSignal;
}
