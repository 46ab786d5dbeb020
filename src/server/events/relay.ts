// Several server replicas on one PostgreSQL: every wake-up of one replica's events is sent to the others (NOTIFY)
// and replayed on theirs, so a job submitted through replica A wakes an executor waiting on B at once. Only
// wake-ups travel, deduplicated per event-loop turn: a domain event stays on its replica (domainEvents.ts).
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../../store/store.js';
import type { Wakeup, Wakeups } from './wakeups.js';

/** When wake-ups travel between replicas, no held request waits longer than this before looking at the store. */
export const CLUSTER_FALLBACK_POLL_MS = 5_000;

/** Room for one notification's wake-ups: PostgreSQL refuses payloads of 8000 bytes or more. */
const MAX_NOTIFY_BYTES = 7_500;

interface RelayMessage {
  origin: string;
  events?: Wakeup[];
  /** One wake-up: replicas before batching. */
  event?: Wakeup;
}

export async function relayWakeups(
  store: Store,
  wakeups: Wakeups,
  log: Pick<FastifyBaseLogger, 'warn'>,
): Promise<{ close(): Promise<void> } | undefined> {
  if (!store.listen || !store.notify) return undefined;
  const notify = store.notify.bind(store);
  const origin = randomUUID();
  const subscription = await store.listen(
    (payload) => {
      let message: RelayMessage;
      try {
        message = JSON.parse(payload) as RelayMessage;
      } catch {
        return; // Not ours: something else used the channel.
      }
      if (message.origin === origin) return;
      for (const wakeup of message.events ?? (message.event ? [message.event] : [])) wakeups.wake(wakeup);
    },
    () => {
      log.warn(
        "listening for other replicas' events again after losing the connection; waking every waiter to look again",
      );
      wakeups.wakeAll();
    },
  );
  let warned = false;
  // One turn's wake-ups (Wakeups.follow), packed into as few notifications as the payload limit allows.
  wakeups.relay = (turn) => {
    const batch = turn.map((wakeup) => [JSON.stringify(wakeup), wakeup] as const);
    for (let start = 0; start < batch.length;) {
      const events: Wakeup[] = [];
      let bytes = 64 + origin.length;
      while (start < batch.length) {
        const [json, wakeup] = batch[start];
        if (events.length && bytes + json.length + 1 > MAX_NOTIFY_BYTES) break;
        events.push(wakeup);
        bytes += json.length + 1;
        start++;
      }
      notify(JSON.stringify({ origin, events } satisfies RelayMessage)).then(
        () => (warned = false),
        (err: Error) => {
          // Waiters on other replicas still look again within CLUSTER_FALLBACK_POLL_MS.
          if (!warned) log.warn({ err: err.message }, 'could not notify other replicas');
          warned = true;
        },
      );
    }
  };
  return subscription;
}
