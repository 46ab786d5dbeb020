// The replica relay's packing: however many events one tick emits, each notification stays under PostgreSQL's
// payload limit, the other replica receives every event once, and older replicas get every wake-up. (The relay
// over a real PostgreSQL is in test/e2e/domainEvents.test.ts.)
import { describe, expect, it } from 'vitest';
import { DomainEvents, type DomainEvent } from '../../src/server/events/domainEvents.js';
import { relayEvents } from '../../src/server/events/relay.js';
import { Wakeups } from '../../src/server/events/wakeups.js';
import type { Store } from '../../src/store/store.js';

/** A channel like PostgreSQL's NOTIFY: every listener gets every payload; larger than 7999 bytes is refused. */
function channel() {
  const listeners: ((payload: string) => void)[] = [];
  const sent: string[] = [];
  const store = {
    async listen(onMessage: (payload: string) => void) {
      listeners.push(onMessage);
      return { close: async () => {} };
    },
    async notify(payload: string) {
      if (Buffer.byteLength(payload) >= 8000) throw new Error('payload string too long');
      sent.push(payload);
      for (const listener of listeners) listener(payload);
    },
  } as unknown as Store;
  return { store, sent };
}

const quiet = { warn: () => {} };

describe('replica relay', () => {
  it('packs a tick of events into notifications under the payload limit, each delivered once', async () => {
    const { store, sent } = channel();
    const [a, b] = [new DomainEvents(), new DomainEvents()];
    await relayEvents(store, a, new Wakeups(), quiet);
    await relayEvents(store, b, new Wakeups(), quiet);
    const received: DomainEvent[] = [];
    b.subscribe((event, origin) => {
      if (!origin.local) received.push(event);
    });
    const emitted: DomainEvent[] = Array.from({ length: 600 }, (_, i) => ({
      type: 'job.submitted',
      jobId: i + 1,
      queue: `queue-${i % 7}`,
      namespace: 'org:a-rather-long-organization-name',
    }));
    for (const event of emitted) a.emit(event);
    // The same event twice in one tick goes once.
    a.emit(emitted[0]);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(received).toEqual(emitted);
    expect(sent.length).toBeGreaterThan(1);
    for (const payload of sent) {
      const message = JSON.parse(payload) as { events: { queue: string }[] };
      // What a replica from before domain events reads: each queue's wake-up, once per notification.
      expect(new Set(message.events.map((w) => w.queue)).size).toBe(message.events.length);
    }
  });

  it("wakes this replica's waiters on an older replica's wake-ups, and ignores what is not a relay message", async () => {
    const { store } = channel();
    const wakeups = new Wakeups();
    await relayEvents(store, new DomainEvents(), wakeups, quiet);
    const waiter = wakeups.watchInterruptions([4]);
    await store.notify!('not json');
    await store.notify!(JSON.stringify({ origin: 'old', event: { type: 'interrupt', id: 4 } }));
    expect(await waiter.wait(1_000)).toBe(true);
  });
});
