#!/usr/bin/env bash
# The whole test suite, on a fresh machine: provisions what the tests need, builds, runs every test.
# A test that cannot get its service fails; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root_to_install() {
  echo "test.sh: $1 is missing and this user cannot install it (run as root on Debian, or install: $2)" >&2
  exit 1
}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then need_root_to_install "$1" "apt-get install $*"; fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then echo "test.sh: Node 20 or newer is needed (found $(node --version))" >&2; exit 1; fi

# The shell runtime's repository checkout uses git.
command -v git >/dev/null || apt_install git

[ -d node_modules ] || npm ci
npm run build

mkdir -p test-output
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=test-output/vitest.json "$@" || status=$?
# One plain closing line with the counts, whatever the reporter printed above it.
node -e '
  const r = JSON.parse(require("fs").readFileSync("test-output/vitest.json", "utf8"));
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
' || true
exit "$status"
