// The replica relay's packing: however many wake-ups one tick brings, each notification stays under PostgreSQL's
// payload limit, the other replica gets each wake-up once, and a replica's own notifications are not replayed to
// it. (The relay over a real PostgreSQL is in test/e2e/domainEvents.test.ts.)
import { describe, expect, it } from 'vitest';
import { DomainEvents } from '../../src/server/events/domainEvents.js';
import { relayWakeups } from '../../src/server/events/relay.js';
import { Wakeups, type Wakeup } from '../../src/server/events/wakeups.js';
import type { Store } from '../../src/store/store.js';

/** A channel like PostgreSQL's NOTIFY: every listener gets every payload; 8000 bytes or more is refused. */
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

/** Records every wake-up a Wakeups is given, by spying on wake(). */
function recording(wakeups: Wakeups): Wakeup[] {
  const got: Wakeup[] = [];
  const wake = wakeups.wake.bind(wakeups);
  wakeups.wake = (w) => {
    got.push(w);
    wake(w);
  };
  return got;
}

describe('replica relay', () => {
  it('packs a tick of wake-ups into notifications under the payload limit, each delivered once', async () => {
    const { store, sent } = channel();
    const events = new DomainEvents();
    const [a, b] = [new Wakeups(), new Wakeups()];
    a.follow(events);
    await relayWakeups(store, a, quiet);
    await relayWakeups(store, b, quiet);
    const onA = recording(a);
    const onB = recording(b);
    for (let i = 1; i <= 1_500; i++) events.emit({ type: 'job.output', jobId: i, attempt: 1 });
    // Output again in the same tick: its wake-up goes once.
    events.emit({ type: 'job.output', jobId: 1, attempt: 1 });
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(onB).toEqual(Array.from({ length: 1_500 }, (_, i) => ({ type: 'job', id: i + 1 })));
    // A woke its own waiters once the tick was done, once per wake-up, and got none of that back from the channel.
    expect(onA).toEqual(onB);
    expect(sent.length).toBeGreaterThan(1);
  });

  it("wakes this replica's waiters on an older replica's single wake-up, and ignores what is not a relay message", async () => {
    const { store } = channel();
    const wakeups = new Wakeups();
    await relayWakeups(store, wakeups, quiet);
    const waiter = wakeups.watchInterruptions([4]);
    await store.notify!('not json');
    await store.notify!(JSON.stringify({ origin: 'old', event: { type: 'interrupt', id: 4 } }));
    expect(await waiter.wait(1_000)).toBe(true);
  });
});
