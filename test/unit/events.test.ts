import { afterEach, beforeEach, describe, it, expect, vi } from 'vitest';
import type { EventEmitter } from 'node:events';
import { DomainEvents, type DomainEvent } from '../../src/server/events/domainEvents.js';
import { Wakeups, wakeupsOf } from '../../src/server/events/wakeups.js';

/** Tracks a promise so a test can ask whether it has settled yet, without racing real time. */
function track<T>(promise: Promise<T>): { readonly done: boolean; readonly value: T | undefined } {
  const state = { done: false, value: undefined as T | undefined };
  void promise.then((value) => {
    state.done = true;
    state.value = value;
  });
  return state;
}

/** Lets pending promise callbacks run; with fake timers no time passes. */
const settle = () => vi.advanceTimersByTimeAsync(0);

describe('Wakeups', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('does not lose an event that comes between watch and wait', async () => {
    const bus = new Wakeups();
    const waiter = bus.watchQueues(['build']);
    bus.wake({ type: 'queue', queue: 'build' }); // e.g. a job is submitted while the dequeue looks at the store
    const result = track(waiter.wait(10_000));
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('wakes a waiting watcher as soon as the event comes', async () => {
    const bus = new Wakeups();
    const result = track(bus.watchJobs([7]).wait(10_000));
    await settle();
    expect(result.done).toBe(false);
    bus.wake({ type: 'job', id: 7 });
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('wakes on any of the watched names, and only on those', async () => {
    const bus = new Wakeups();
    const result = track(bus.watchQueues(['a', 'b']).wait(10_000));
    bus.wake({ type: 'queue', queue: 'other' });
    bus.wake({ type: 'queue', queue: 'A' });
    bus.wake({ type: 'job', id: 1 });
    await settle();
    expect(result.done).toBe(false);
    bus.wake({ type: 'queue', queue: 'b' });
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('returns false when the timeout passes without an event', async () => {
    const bus = new Wakeups();
    const result = track(bus.watchQueues(['idle']).wait(100));
    bus.wake({ type: 'queue', queue: 'busy' });
    await vi.advanceTimersByTimeAsync(99);
    expect(result.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(result).toEqual({ done: true, value: false });
  });

  it('returns false for a zero or negative timeout without an event', async () => {
    const bus = new Wakeups();
    const zero = track(bus.watchJobs([1]).wait(0));
    const negative = track(bus.watchJobs([1]).wait(-5));
    await settle();
    expect(zero).toEqual({ done: true, value: false });
    expect(negative).toEqual({ done: true, value: false });
  });

  it('ends the wait when the signal aborts', async () => {
    const bus = new Wakeups();
    const controller = new AbortController();
    const result = track(bus.watchJobs([1]).wait(60_000, controller.signal));
    await settle();
    expect(result.done).toBe(false);
    controller.abort();
    await settle();
    expect(result).toEqual({ done: true, value: false });
  });

  it('returns at once when the signal has already aborted', async () => {
    const bus = new Wakeups();
    const controller = new AbortController();
    controller.abort();
    const result = track(bus.watchJobs([1]).wait(60_000, controller.signal));
    await settle();
    expect(result).toEqual({ done: true, value: false });
  });

  it('reports an event that came before the signal aborted', async () => {
    const bus = new Wakeups();
    const controller = new AbortController();
    const waiter = bus.watchJobs([1]);
    bus.wake({ type: 'job', id: 1 });
    controller.abort();
    const result = track(waiter.wait(60_000, controller.signal));
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('unsubscribes after the wait and on cancel, and leaves no timer behind', async () => {
    const bus = new Wakeups();
    const emitter = (bus as unknown as { emitter: EventEmitter }).emitter;
    const waiter = bus.watchQueues(['q']);
    expect(emitter.listenerCount('queue:q')).toBe(1);
    const result = track(waiter.wait(10_000));
    bus.wake({ type: 'queue', queue: 'q' });
    await settle();
    expect(result.value).toBe(true);
    expect(emitter.listenerCount('queue:q')).toBe(0);
    expect(vi.getTimerCount()).toBe(0);

    const other = bus.watchJobs([1, 2]);
    expect(emitter.listenerCount('job:1') + emitter.listenerCount('job:2')).toBe(2);
    other.cancel();
    expect(emitter.listenerCount('job:1') + emitter.listenerCount('job:2')).toBe(0);
  });

  it('removes its abort listener once the wait ends', async () => {
    const bus = new Wakeups();
    const controller = new AbortController();
    const add = vi.spyOn(controller.signal, 'addEventListener');
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const result = track(bus.watchJobs([3]).wait(10_000, controller.signal));
    bus.wake({ type: 'job', id: 3 });
    await settle();
    expect(result.value).toBe(true);
    expect(add).toHaveBeenCalledTimes(1);
    expect(remove).toHaveBeenCalledWith('abort', add.mock.calls[0][1]);
  });

  it('wakes every waiter on wakeAll, and caps waits at maxWaitMs', async () => {
    const bus = new Wakeups({ maxWaitMs: 5_000 });
    const a = track(bus.watchQueues(['x']).wait(25_000));
    const b = track(bus.watchJobs([1]).wait(25_000));
    bus.wakeAll();
    await settle();
    expect([a.value, b.value]).toEqual([true, true]);
    const capped = track(bus.watchQueues(['x']).wait(25_000));
    await vi.advanceTimersByTimeAsync(4_999);
    expect(capped.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(capped).toEqual({ done: true, value: false });
  });
});

const submitted: DomainEvent = { type: 'job.submitted', jobId: 1, queue: 'build', namespace: 'global' };
const seen: DomainEvent = { type: 'executor.seen', name: 'e', hostname: 'h', runningJobs: 0 };

describe('DomainEvents', () => {
  it('calls subscribers in order, and stops after unsubscribe', () => {
    const events = new DomainEvents();
    const calls: [string, DomainEvent][] = [];
    const stopA = events.subscribe((event) => calls.push(['a', event]));
    events.subscribe((event) => calls.push(['b', event]));
    events.emit(submitted);
    stopA();
    events.emit(seen);
    expect(calls).toEqual([
      ['a', submitted],
      ['b', submitted],
      ['b', seen],
    ]);
  });

  it('reports a subscriber that throws, and still calls the others', () => {
    const failures: [unknown, DomainEvent][] = [];
    const events = new DomainEvents((err, event) => failures.push([err, event]));
    const after: DomainEvent[] = [];
    events.subscribe(() => {
      throw new Error('subscriber bug');
    });
    events.subscribe((event) => after.push(event));
    expect(() => events.emit(submitted)).not.toThrow();
    expect(after).toEqual([submitted]);
    expect(failures).toEqual([[new Error('subscriber bug'), submitted]]);
  });

  it('wakes whom its events concern, and relays those wake-ups, never one it was given by another replica', async () => {
    const events = new DomainEvents();
    const bus = new Wakeups();
    bus.follow(events);
    const relayed: unknown[] = [];
    bus.relay = (wakeups) => relayed.push(...wakeups);
    events.emit({ type: 'job.cancelRequested', jobId: 3, queue: 'q', attempt: 1 });
    bus.wake({ type: 'queue', queue: 'from-another-replica' });
    await new Promise((resolve) => setImmediate(resolve));
    expect(relayed).toEqual([
      { type: 'interrupt', id: 3 },
      { type: 'job', id: 3 },
    ]);
  });

  it("wakes its waiters once the change's own turn is done (the submit answers first), each wake-up once", async () => {
    const events = new DomainEvents();
    const bus = new Wakeups();
    bus.follow(events);
    const order: string[] = [];
    const waiter = bus.watchQueues(['build']);
    const woken = waiter.wait(10_000).then((fired) => order.push(`woken: ${fired}`));
    const wake = vi.spyOn(bus, 'wake');
    events.emit(submitted);
    events.emit({ ...submitted, jobId: 2 });
    // The submit's own continuation: several promise hops, all before the waiter runs.
    for (let hop = 0; hop < 5; hop++) await Promise.resolve();
    order.push('submit answered');
    await new Promise((resolve) => setImmediate(resolve));
    await woken;
    expect(order).toEqual(['submit answered', 'woken: true']);
    expect(wake).toHaveBeenCalledTimes(1);
  });
});

describe('wakeupsOf', () => {
  const job = { jobId: 5, queue: 'q', attempt: 2 };
  it.each<[string, DomainEvent, string[]]>([
    ['a submitted job wakes its queue', { ...submitted }, ['queue:build']],
    ['a started job wakes its followers', { type: 'job.started', ...job, executorName: 'e' }, ['job:5']],
    ['output wakes followers', { type: 'job.output', jobId: 5, attempt: 2 }, ['job:5']],
    ['a cancel interrupts the executor', { type: 'job.cancelRequested', ...job }, ['interrupt:5', 'job:5']],
    [
      'a retryable error queues it again',
      { type: 'job.requeued', ...job, cause: 'error', availableAt: 0 },
      ['queue:q', 'job:5'],
    ],
    [
      'a reset also interrupts the silent executor',
      { type: 'job.requeued', ...job, cause: 'reset', availableAt: 0 },
      ['queue:q', 'interrupt:5', 'job:5'],
    ],
    [
      "the executor's own report interrupts nobody",
      { type: 'job.finished', ...job, state: 'completed', reason: null, cause: 'report' },
      ['job:5'],
    ],
    [
      'a job failed by the reaper interrupts its executor',
      { type: 'job.finished', ...job, state: 'failed', reason: 'executor_lost', cause: 'stalled' },
      ['interrupt:5', 'job:5'],
    ],
    ['an executor heartbeat wakes nobody', seen, []],
  ])('%s', (_what, event, names) => {
    expect(wakeupsOf(event).map((w) => (w.type === 'queue' ? `queue:${w.queue}` : `${w.type}:${w.id}`))).toEqual(names);
  });
});
