// A wall clock to the microsecond, for times set against each other across processes (the executor's log times,
// bench/latency.ts): Date.now() has whole milliseconds only.

/**
 * Milliseconds since the epoch with a sub-ms fraction: the monotonic clock, re-anchored to the wall clock whenever
 * the two drift apart by over a millisecond (a clock step), so the times stay wall-clock times.
 */
export function preciseClock(): () => number {
  let origin = performance.timeOrigin;
  return () => {
    const now = performance.now();
    const wall = Date.now(); // whole ms, truncated: the true time is in [wall, wall + 1)
    let t = origin + now;
    if (t < wall - 1 || t > wall + 2) {
      origin = wall + 0.5 - now;
      t = origin + now;
    }
    return t;
  };
}
