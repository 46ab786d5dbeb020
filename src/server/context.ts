import type { FastifyBaseLogger } from 'fastify';
import type { ServerConfig } from './config.js';
import type { DomainEvents } from './events/domainEvents.js';
import type { Wakeups } from './events/wakeups.js';
import type { JobLedger, StoreReads } from './jobs/jobLedger.js';
import type { ServerMetrics } from './metrics.js';
import type { Secrets } from './secrets/secrets.js';
import type { StorageHealth } from './storageHealth.js';

/** What route groups and background loops share. */
export interface ServerContext {
  /** Reads; every change goes through `ledger`. */
  store: StoreReads;
  /** Jobs and executors changed only here: each change emits its domain events. */
  ledger: JobLedger;
  events: DomainEvents;
  /** Held requests wait on these; they follow `events`. */
  wakeups: Wakeups;
  metrics: ServerMetrics;
  secrets: Secrets;
  /** Whether the database takes writes; new work is refused while it does not. */
  storage: StorageHealth;
  config: Pick<ServerConfig, 'executorsAccessToken' | 'stalledJobTimeoutMs' | 'maxJobResets' | 'retryBackoffMs'>;
  log: FastifyBaseLogger;
  /** Aborted when the server shuts down, so held requests (long polls, log streams) end at once. */
  closing: AbortSignal;
}
