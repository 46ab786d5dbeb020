// The HTTP API fuzzer of test/fuzz at length: `npm run fuzz -- [REQUESTS] [SEED]` (default 300,000 requests and a
// random seed, printed so a failure can be replayed). Every route of the app gets its share of generated requests;
// see test/fuzz/apiFuzzer.ts for what is generated and what must hold. Exits 1 on the first broken rule.
import { createFuzzTarget, fuzzRoutes } from '../test/fuzz/apiFuzzer.js';

const requests = Number(process.argv[2] ?? process.env.FUZZ_REQUESTS ?? 300_000);
const seed = Number(process.argv[3] ?? process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
if (!Number.isInteger(requests) || requests <= 0 || !Number.isInteger(seed)) {
  process.stderr.write('usage: npm run fuzz -- [REQUESTS] [SEED]\n');
  process.exit(2);
}

process.stdout.write(
  `fuzzing the HTTP APIs with ${requests} requests, seed ${seed} (replay: npm run fuzz -- ${requests} ${seed})\n`,
);
const target = await createFuzzTarget();
const started = Date.now();
let status = 0;
try {
  const stats = await fuzzRoutes(target, {
    requests,
    seed,
    progress: (done, route) =>
      process.stdout.write(
        `  ${String(done).padStart(8)} requests  ${((Date.now() - started) / 1000).toFixed(1).padStart(7)} s  ${route}\n`,
      ),
  });
  const statuses = Object.entries(stats.byStatus)
    .map(([s, n]) => `${s}: ${n}`)
    .join(', ');
  process.stdout.write(
    `\n${stats.requests} requests over ${target.routes.length} routes in ${(stats.elapsedMs / 1000).toFixed(1)} s ` +
      `(${Math.round(stats.requests / (stats.elapsedMs / 1000))}/s): no 5xx, no crash, every error well-formed\nanswers: ${statuses}\n`,
  );
} catch (err) {
  process.stderr.write(`\nFUZZ FAILURE (seed ${seed}):\n${(err as Error).stack ?? String(err)}\n`);
  status = 1;
} finally {
  await target.close();
}
process.exit(status);
