// Fuzzes every route of the HTTP APIs in-process (see apiFuzzer.ts for what is generated and what must hold):
// at least 20,000 requests in all, FUZZ_REQUESTS to change that, FUZZ_SEED to replay a run fast-check reported.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFuzzTarget, fuzzRoutes, type FuzzTarget } from './apiFuzzer.js';

const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 20_000);
// A seed of its own for every run, printed, so a failure or a hang can be replayed with FUZZ_SEED.
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);

let target: FuzzTarget;

beforeAll(async () => {
  target = await createFuzzTarget();
});

afterAll(async () => {
  await target?.close();
});

describe('HTTP API fuzzing', () => {
  it(`answers ${REQUESTS} generated requests over every route without a 5xx, a crash or a malformed error`, async () => {
    const started = Date.now();
    process.stdout.write(`fuzz: seed ${SEED} (replay with FUZZ_SEED=${SEED})\n`);
    const stats = await fuzzRoutes(target, {
      requests: REQUESTS,
      seed: SEED,
      progress: process.env.FUZZ_PROGRESS
        ? (done, route) =>
            process.stdout.write(
              `fuzz: ${done} requests at ${((Date.now() - started) / 1000).toFixed(1)} s, done with ${route}\n`,
            )
        : undefined,
    });
    const summary = Object.entries(stats.byStatus)
      .map(([status, n]) => `${status}: ${n}`)
      .join(', ');
    process.stdout.write(
      `fuzz: ${stats.requests} requests over ${target.routes.length} routes in ${(stats.elapsedMs / 1000).toFixed(1)} s (${summary})\n`,
    );
    expect(stats.requests).toBeGreaterThanOrEqual(REQUESTS);
    // Every route was reached, and enough requests got past validation to exercise the handlers.
    expect(Object.keys(stats.byRoute)).toHaveLength(target.routes.length);
    const succeeded = Object.entries(stats.byStatus)
      .filter(([s]) => Number(s) < 300)
      .reduce((n, [, c]) => n + c, 0);
    expect(succeeded).toBeGreaterThan(REQUESTS * 0.05);
  }, 180_000);
});
