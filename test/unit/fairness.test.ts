// Weighted queue order for multi-queue executors.
import { describe, expect, it } from 'vitest';
import { weightedOrder } from '../../src/core/fairness.js';

/** A small deterministic generator, so the counts below are the same on every run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

describe('weightedOrder', () => {
  it('puts every queue in the order exactly once', () => {
    const random = seeded(1);
    for (let i = 0; i < 100; i++) {
      expect(weightedOrder(['a', 'b', 'c', 'd'], { b: 5 }, random).sort()).toEqual(['a', 'b', 'c', 'd']);
    }
  });

  it('puts a queue first in proportion to its weight (3:1 gives about three in four)', () => {
    const random = seeded(42);
    const firsts = { builds: 0, tests: 0 };
    for (let i = 0; i < 10_000; i++)
      firsts[weightedOrder(['builds', 'tests'], { builds: 3, tests: 1 }, random)[0] as 'builds' | 'tests']++;
    expect(firsts.builds / 10_000).toBeCloseTo(0.75, 1);
  });

  it('treats unnamed queues as weight 1, and among the rest keeps the proportions', () => {
    const random = seeded(7);
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    // When "a" is empty the store serves the next queue in the order: b and c should then split 1:1.
    for (let i = 0; i < 10_000; i++)
      counts[weightedOrder(['a', 'b', 'c'], { a: 8 }, random).filter((q) => q !== 'a')[0]]++;
    expect(counts.b / 10_000).toBeCloseTo(0.5, 1);
  });
});
