#!/usr/bin/env bash
# The whole test suite, on a fresh machine: provisions what the tests need, builds, runs every test.
# A test that cannot get its service fails; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then echo "test.sh: Node 20 or newer is needed (found $(node --version))" >&2; exit 1; fi

# System packages and services: git (the shell runtime's repository checkout), Docker with gVisor,
# a local registry and the rest the tests use; it installs and starts only what is missing.
bash scripts/provision.sh

[ -d node_modules ] || npm ci
npm run build
# The benchmarks too: the suite runs each once at a tiny size (test/bench).
npx tsc -p bench/tsconfig.json
# The tests type-check as well (vitest runs them without checking): with the build above, all of `npm run typecheck`.
npx tsc -p test/tsconfig.json
# Lint (floating and misused promises) and the formatting: before the suite, so CI fails fast on them.
npm run lint

mkdir -p test-output
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=test-output/vitest.json "$@" || status=$?
# The ten slowest test files, so that the suite's growth is seen in every run, then one plain closing line with
# the counts, whatever the reporter printed above it.
node -e '
  const r = JSON.parse(require("fs").readFileSync("test-output/vitest.json", "utf8"));
  const files = r.testResults.map((f) => ({ name: require("path").relative(process.cwd(), f.name), s: (f.endTime - f.startTime) / 1000 }));
  console.log("Slowest test files:");
  for (const f of files.sort((a, b) => b.s - a.s).slice(0, 10)) console.log(`  ${f.s.toFixed(1).padStart(6)} s  ${f.name}`);
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
' || true
exit "$status"
