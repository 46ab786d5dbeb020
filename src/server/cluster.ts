// Several server replicas on one PostgreSQL: every wake-up published on one replica's bus is sent to the others
// (NOTIFY) and replayed on their buses, so a job submitted through replica A wakes an executor waiting on B at once.
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../store/store.js';
import type { BusEvent, EventBus } from './events.js';

/** When wake-ups travel between replicas, no held request waits longer than this before looking at the store. */
export const CLUSTER_FALLBACK_POLL_MS = 5_000;

export async function relayEvents(store: Store, events: EventBus, log: Pick<FastifyBaseLogger, 'warn'>): Promise<{ close(): Promise<void> } | undefined> {
  if (!store.listen || !store.notify) return undefined;
  const notify = store.notify.bind(store);
  const origin = randomUUID();
  const subscription = await store.listen(
    (payload) => {
      try {
        const message = JSON.parse(payload) as { origin: string; event: BusEvent };
        if (message.origin !== origin) events.receive(message.event);
      } catch {
        // Not ours: something else used the channel.
      }
    },
    () => {
      log.warn('listening for other replicas\' events again after losing the connection; waking every waiter to look again');
      events.wakeAll();
    },
  );
  let warned = false;
  events.relay = (event) => {
    notify(JSON.stringify({ origin, event })).then(
      () => (warned = false),
      (err: Error) => {
        // Waiters on other replicas still look again within CLUSTER_FALLBACK_POLL_MS.
        if (!warned) log.warn({ err: err.message }, 'could not notify other replicas');
        warned = true;
      },
    );
  };
  return subscription;
}
