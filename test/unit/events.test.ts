import { afterEach, beforeEach, describe, it, expect, vi } from 'vitest';
import type { EventEmitter } from 'node:events';
import { EventBus } from '../../src/server/events.js';

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

describe('EventBus', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('does not lose an event that comes between watch and wait', async () => {
    const bus = new EventBus();
    const waiter = bus.watchQueues(['build']);
    bus.queueChanged('build'); // e.g. a job is submitted while the dequeue looks at the store
    const result = track(waiter.wait(10_000));
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('wakes a waiting watcher as soon as the event comes', async () => {
    const bus = new EventBus();
    const result = track(bus.watchJobs([7]).wait(10_000));
    await settle();
    expect(result.done).toBe(false);
    bus.jobChanged(7);
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('wakes on any of the watched names, and only on those', async () => {
    const bus = new EventBus();
    const result = track(bus.watchQueues(['a', 'b']).wait(10_000));
    bus.queueChanged('other');
    bus.queueChanged('A');
    bus.jobChanged(1);
    await settle();
    expect(result.done).toBe(false);
    bus.queueChanged('b');
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('returns false when the timeout passes without an event', async () => {
    const bus = new EventBus();
    const result = track(bus.watchQueues(['idle']).wait(100));
    bus.queueChanged('busy');
    await vi.advanceTimersByTimeAsync(99);
    expect(result.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(result).toEqual({ done: true, value: false });
  });

  it('returns false for a zero or negative timeout without an event', async () => {
    const bus = new EventBus();
    const zero = track(bus.watchJobs([1]).wait(0));
    const negative = track(bus.watchJobs([1]).wait(-5));
    await settle();
    expect(zero).toEqual({ done: true, value: false });
    expect(negative).toEqual({ done: true, value: false });
  });

  it('ends the wait when the signal aborts', async () => {
    const bus = new EventBus();
    const controller = new AbortController();
    const result = track(bus.watchJobs([1]).wait(60_000, controller.signal));
    await settle();
    expect(result.done).toBe(false);
    controller.abort();
    await settle();
    expect(result).toEqual({ done: true, value: false });
  });

  it('returns at once when the signal has already aborted', async () => {
    const bus = new EventBus();
    const controller = new AbortController();
    controller.abort();
    const result = track(bus.watchJobs([1]).wait(60_000, controller.signal));
    await settle();
    expect(result).toEqual({ done: true, value: false });
  });

  it('reports an event that came before the signal aborted', async () => {
    const bus = new EventBus();
    const controller = new AbortController();
    const waiter = bus.watchJobs([1]);
    bus.jobChanged(1);
    controller.abort();
    const result = track(waiter.wait(60_000, controller.signal));
    await settle();
    expect(result).toEqual({ done: true, value: true });
  });

  it('unsubscribes after the wait and on cancel, and leaves no timer behind', async () => {
    const bus = new EventBus();
    const emitter = (bus as unknown as { emitter: EventEmitter }).emitter;
    const waiter = bus.watchQueues(['q']);
    expect(emitter.listenerCount('queue:q')).toBe(1);
    const result = track(waiter.wait(10_000));
    bus.queueChanged('q');
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
    const bus = new EventBus();
    const controller = new AbortController();
    const add = vi.spyOn(controller.signal, 'addEventListener');
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const result = track(bus.watchJobs([3]).wait(10_000, controller.signal));
    bus.jobChanged(3);
    await settle();
    expect(result.value).toBe(true);
    expect(add).toHaveBeenCalledTimes(1);
    expect(remove).toHaveBeenCalledWith('abort', add.mock.calls[0][1]);
  });

  it('relays what it publishes, and replays what it receives without relaying it back', async () => {
    const bus = new EventBus();
    const relayed: unknown[] = [];
    bus.relay = (event) => relayed.push(event);
    bus.queueChanged('build');
    bus.jobInterrupted(3);
    expect(relayed).toEqual([
      { type: 'queue', queue: 'build' },
      { type: 'interrupt', id: 3 },
      { type: 'job', id: 3 },
    ]);
    const woken = track(bus.watchInterruptions([9]).wait(10_000));
    bus.receive({ type: 'interrupt', id: 9 });
    await settle();
    expect(woken).toEqual({ done: true, value: true });
    expect(relayed).toHaveLength(3);
  });

  it('wakes every waiter on wakeAll, and caps waits at maxWaitMs', async () => {
    const bus = new EventBus({ maxWaitMs: 5_000 });
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
