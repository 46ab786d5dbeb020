// Several server replicas on one PostgreSQL: every domain event of one replica (but the local-only ones) is sent to
// the others (NOTIFY) and replayed on their buses, so a job submitted through replica A wakes an executor waiting
// on B at once, and a subscriber on B sees it too (as not local).
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../../store/store.js';
import type { DomainEvent, DomainEvents } from './domainEvents.js';
import { wakeupsOf, type Wakeup, type Wakeups } from './wakeups.js';

/** When events travel between replicas, no held request waits longer than this before looking at the store. */
export const CLUSTER_FALLBACK_POLL_MS = 5_000;

/** Room for one notification's events: PostgreSQL refuses payloads of 8000 bytes or more. */
const MAX_NOTIFY_BYTES = 7_500;

/**
 * One notification. `domain` carries the events; `events` their wake-ups, which is all that replicas of versions
 * before domain events read (they wake their waiters from it during a rolling upgrade).
 */
interface RelayMessage {
  origin: string;
  domain?: DomainEvent[];
  events?: Wakeup[];
  /** One wake-up: replicas before batching. */
  event?: Wakeup;
}

export async function relayEvents(
  store: Store,
  events: DomainEvents,
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
      if (Array.isArray(message.domain)) for (const event of message.domain) events.receive(event);
      else for (const wakeup of message.events ?? (message.event ? [message.event] : [])) wakeups.wake(wakeup);
    },
    () => {
      log.warn(
        "listening for other replicas' events again after losing the connection; waking every waiter to look again",
      );
      wakeups.wakeAll();
    },
  );
  let warned = false;
  const send = (domain: DomainEvent[], wakes: Wakeup[]): void => {
    const message: RelayMessage = { origin, domain, events: wakes };
    notify(JSON.stringify(message)).then(
      () => (warned = false),
      (err: Error) => {
        // Waiters on other replicas still look again within CLUSTER_FALLBACK_POLL_MS.
        if (!warned) log.warn({ err: err.message }, 'could not notify other replicas');
        warned = true;
      },
    );
  };
  // Events emitted while the event loop runs go out together, once it is done: a dequeue or a batch of reports
  // that changes hundreds of jobs costs a few notifications, not one per job.
  let pending = new Map<string, DomainEvent>();
  const flush = (): void => {
    // Keyed by their JSON: a key's length is its size in the payload.
    const batch = [...pending];
    pending = new Map();
    let domain: DomainEvent[] = [];
    let wakes = new Map<string, Wakeup>();
    let bytes = 0;
    const empty = 96 + origin.length;
    for (const [json, event] of batch) {
      const own = wakeupsOf(event).map((w) => [JSON.stringify(w), w] as const);
      const sizeIn = (sent: Map<string, Wakeup>): number =>
        own.reduce((sum, [key]) => (sent.has(key) ? sum : sum + key.length + 1), json.length + 1);
      if (domain.length && empty + bytes + sizeIn(wakes) > MAX_NOTIFY_BYTES) {
        send(domain, [...wakes.values()]);
        domain = [];
        wakes = new Map();
        bytes = 0;
      }
      bytes += sizeIn(wakes);
      domain.push(event);
      for (const [key, w] of own) wakes.set(key, w);
    }
    if (domain.length) send(domain, [...wakes.values()]);
  };
  events.relay = (event) => {
    if (pending.size === 0) setImmediate(flush);
    pending.set(JSON.stringify(event), event);
  };
  return subscription;
}
