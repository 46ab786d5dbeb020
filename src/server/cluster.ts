// Several server replicas on one PostgreSQL: every wake-up published on one replica's bus is sent to the others
// (NOTIFY) and replayed on their buses, so a job submitted through replica A wakes an executor waiting on B at once.
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../store/store.js';
import type { BusEvent, EventBus } from './events.js';

/** When wake-ups travel between replicas, no held request waits longer than this before looking at the store. */
export const CLUSTER_FALLBACK_POLL_MS = 5_000;

/** Room for one notification's events: PostgreSQL refuses payloads of 8000 bytes or more. */
const MAX_NOTIFY_BYTES = 7_500;

export async function relayEvents(
  store: Store,
  events: EventBus,
  log: Pick<FastifyBaseLogger, 'warn'>,
): Promise<{ close(): Promise<void> } | undefined> {
  if (!store.listen || !store.notify) return undefined;
  const notify = store.notify.bind(store);
  const origin = randomUUID();
  const subscription = await store.listen(
    (payload) => {
      try {
        const message = JSON.parse(payload) as { origin: string; event?: BusEvent; events?: BusEvent[] };
        if (message.origin === origin) return;
        // One event (replicas before batching) or several.
        for (const event of message.events ?? (message.event ? [message.event] : [])) events.receive(event);
      } catch {
        // Not ours: something else used the channel.
      }
    },
    () => {
      log.warn(
        "listening for other replicas' events again after losing the connection; waking every waiter to look again",
      );
      events.wakeAll();
    },
  );
  let warned = false;
  // Events published while the event loop runs go out together, once it is done: a dequeue or a batch of reports
  // that changes hundreds of jobs costs a few notifications, not one per job.
  let pending = new Map<string, BusEvent>();
  const flush = (): void => {
    // Keyed by its JSON: the key's length is the event's size in the payload.
    const batch = [...pending];
    pending = new Map();
    for (let start = 0; start < batch.length;) {
      const events: BusEvent[] = [];
      let bytes = 64 + origin.length;
      while (start < batch.length) {
        const [json, event] = batch[start];
        if (events.length && bytes + json.length + 1 > MAX_NOTIFY_BYTES) break;
        events.push(event);
        bytes += json.length + 1;
        start++;
      }
      notify(JSON.stringify({ origin, events })).then(
        () => (warned = false),
        (err: Error) => {
          // Waiters on other replicas still look again within CLUSTER_FALLBACK_POLL_MS.
          if (!warned) log.warn({ err: err.message }, 'could not notify other replicas');
          warned = true;
        },
      );
    }
  };
  events.relay = (event) => {
    if (pending.size === 0) setImmediate(flush);
    pending.set(JSON.stringify(event), event);
  };
  return subscription;
}
