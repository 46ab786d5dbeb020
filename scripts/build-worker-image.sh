#!/usr/bin/env bash
# Makes the build worker's image, dockhand/build-worker:TAG (TAG defaults to package.json's version), in three parts:
#   1. a base, dockhand/build-worker-base:HASH: Debian bookworm (minbase) with buildah, git and ca-certificates,
#      buildah set up for vfs storage and chroot isolation. Made with debootstrap (as root) and `docker import`ed;
#      HASH covers its recipe below, so editing the recipe makes a new base and an existing one is reused.
#   2. dockhand/build-worker-deps:HASH, FROM the base: this machine's node binary and the production part of
#      node_modules/, copied from the installed tree (offline, and no native module is rebuilt). Made again only
#      when one of those files changes.
#   3. the worker, FROM that: package.json and dist/, built every run (cached by Docker when they did not change).
# Needs `npm run build` to have run, and Docker. Idempotent: when nothing changed it rebuilds nothing and says one line.
# Prints the image reference on stdout; progress and timings go to stderr.
# Usage: scripts/build-worker-image.sh [TAG]      (DEBIAN_MIRROR overrides http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "build-worker-image.sh: $*" >&2; }
die() { say "$*"; exit 1; }

TAG=${1:-$(node -p 'require("./package.json").version')}
REPO=dockhand/build-worker
BASE_REPO=dockhand/build-worker-base
DEPS_REPO=dockhand/build-worker-deps
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# --- the base's recipe: everything here goes into its hash -----------------------------------------------------
SUITE=bookworm
BASE_PACKAGES=(buildah git ca-certificates)
BASE_CHANGES=(
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  # buildah's default would be oci isolation, which needs an OCI runtime the image does not have.
  'ENV BUILDAH_ISOLATION=chroot'
  'CMD ["/bin/bash"]'
)

make_base_rootfs() {
  local root=$1
  # buildah's dependencies fail to configure when debootstrap installs them with the base system (--include):
  # the bare system first, then apt inside it.
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR"
  # Nothing may start a daemon in the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${BASE_PACKAGES[@]}"
  rm -f "$root/usr/sbin/policy-rc.d"
  chroot "$root" apt-get clean

  # vfs: plain copies, so it works on any filesystem (overlay on the container's overlay does not) and needs
  # neither fuse nor a kernel overlay mount.
  mkdir -p "$root/etc/containers"
  cat >"$root/etc/containers/storage.conf" <<'EOF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF

  # Smaller: package lists, documentation (copyright files kept), translations, logs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
  # debootstrap copies this machine's name and resolver into the tree; Docker provides both at run time.
  : >"$root/etc/resolv.conf"
  echo localhost >"$root/etc/hostname"
}

base_hash() {
  { echo "$SUITE"; echo "${BASE_PACKAGES[*]}"; printf '%s\n' "${BASE_CHANGES[@]}"; declare -f make_base_rootfs; } |
    sha256sum | cut -c1-12
}

# --- helpers --------------------------------------------------------------------------------------------------
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

work=
show_on_failure=
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ] && [ -n "$show_on_failure" ] && [ -f "$show_on_failure" ]; then
    tail -n 30 "$show_on_failure" >&2
    say "failed: above, the end of $(basename "$show_on_failure")"
  fi
  [ -n "$work" ] || return 0
  # debootstrap mounts /proc and /sys in the tree and may leave them mounted when it fails.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- checks ---------------------------------------------------------------------------------------------------
[ -f dist/cli/main.js ] || die "dist/cli/main.js is missing: run npm run build first"
if [ -n "$(find src -newer dist/cli/main.js -name '*.ts' -print -quit 2>/dev/null)" ]; then
  say "warning: src/ has files newer than dist/ (run npm run build to include them)"
fi
[ -d node_modules ] || die "node_modules/ is missing: run npm ci first"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer: run scripts/provision.sh as root"
NODE=$(command -v node)

# One run at a time on this machine (test workers may call this together).
exec 9>"${TMPDIR:-/tmp}/dockhand-build-worker-image.lock"
flock 9

started=$(now)
work=$(mktemp -d "${TMPDIR:-/tmp}/dockhand-build-worker.XXXXXX")

# --- 1. the base ----------------------------------------------------------------------------------------------
BASE="$BASE_REPO:$(base_hash)"
if [ -z "$(image_id "$BASE")" ]; then
  [ "$(id -u)" -eq 0 ] || die "$BASE must be made (debootstrap, chroot): run this script as root"
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || die "debootstrap is missing: run scripts/provision.sh as root"
  export PATH="$PATH:/usr/sbin:/sbin"
  t=$(now)
  say "making $BASE (debootstrap $SUITE from $MIRROR; one to two minutes)"
  # Called plainly, not in a condition, so that set -e stops it at the first failing command.
  show_on_failure="$work/base.log"
  make_base_rootfs "$work/rootfs" >"$work/base.log" 2>&1
  show_on_failure=
  say "root filesystem: $(since "$t") ($(du -sh --one-file-system "$work/rootfs" | cut -f1))"
  t=$(now)
  changes=()
  for c in "${BASE_CHANGES[@]}"; do changes+=(--change "$c"); done
  # Under a unique tag first, then the real one: nobody sees a half-imported base.
  temp="$BASE_REPO:importing-$$"
  tar --numeric-owner --xattrs -C "$work/rootfs" -c . |
    docker import "${changes[@]}" --message "dockhand build worker base" - "$temp" >/dev/null
  docker tag "$temp" "$BASE"
  docker image rm "$temp" >/dev/null
  rm -rf --one-file-system "$work/rootfs"
  say "imported $BASE: $(since "$t")"
fi

# --- 2. node and the production node_modules: a layer of their own, cached -------------------------------------
# The production packages, from package-lock.json: every installed top-level package not marked dev (a package's
# own nested node_modules come with it).
mapfile -t prod < <(node -e '
  const fs = require("fs");
  const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
  for (const [key, pkg] of Object.entries(lock.packages ?? {})) {
    if (!/^node_modules\/(@[^/]+\/)?[^/]+$/.test(key) || pkg.dev || pkg.link) continue;
    if (fs.existsSync(key)) console.log(key);
  }
')
[ ${#prod[@]} -gt 0 ] || die "package-lock.json names no installed production package"

# Hard links where the temporary folder is on the same filesystem (fast, no space); copies otherwise.
link_or_copy() { cp -al "$@" 2>/dev/null || cp -a "$@"; }

stage_deps() {
  local ctx=$1 build
  link_or_copy "$NODE" "$ctx/node"
  link_or_copy --parents "${prod[@]}" "$ctx/"
  # Not needed to run: source maps, type declarations, native modules' build leftovers and C sources. Deleting
  # in the copy only unlinks there.
  find "$ctx/node_modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete
  for gyp in "$ctx"/node_modules/*/binding.gyp "$ctx"/node_modules/@*/*/binding.gyp; do
    build="$(dirname "$gyp")/build"
    [ -d "$build" ] || continue
    # node-gyp's output: only build/Release/*.node is loaded.
    (cd "$build" && find . -type f ! \( -path './Release/*.node' ! -path './Release/*/*' \) -delete &&
      find . -mindepth 1 -depth -type d -empty -delete)
  done
  rm -rf "$ctx/node_modules/better-sqlite3/deps" "$ctx/node_modules/better-sqlite3/src"
  cat >"$ctx/Dockerfile" <<EOF
FROM $BASE
COPY node /usr/local/bin/node
COPY node_modules /opt/dockhand/node_modules/
EOF
}

# Keyed by the base, the node binary, every production file's name, size and time, and the staging recipe: the
# engine takes 10-30 s to receive these ~200 MB, so that happens only when one of them changed.
deps_hash=$(
  {
    echo "$BASE"
    sha256sum "$NODE" | cut -d' ' -f1
    find "${prod[@]}" -printf '%p %s %T@\n'
    declare -f stage_deps
  } | sha256sum | cut -c1-12
)
DEPS="$DEPS_REPO:$deps_hash"
if [ -z "$(image_id "$DEPS")" ]; then
  t=$(now)
  mkdir "$work/deps"
  stage_deps "$work/deps"
  docker build --quiet --tag "$DEPS" "$work/deps" >/dev/null 2>"$work/deps.err" ||
    { cat "$work/deps.err" >&2; die "building $DEPS failed"; }
  rm -rf "$work/deps"
  # Earlier ones only lose their tag: a worker image built on one keeps its layers.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$DEPS_REPO" | grep -vxF "$DEPS" |
    xargs -r docker image rm >/dev/null 2>&1 || true
  say "made $DEPS (node and the production node_modules): $(since "$t")"
fi

# --- 3. the worker: dist/ on top, every run -------------------------------------------------------------------
t=$(now)
ctx="$work/worker"
mkdir "$ctx"
link_or_copy dist package.json "$ctx/"
cat >"$ctx/Dockerfile" <<EOF
FROM $DEPS
COPY package.json /opt/dockhand/package.json
COPY dist /opt/dockhand/dist/
ENV NODE_ENV=production
ENTRYPOINT ["/usr/local/bin/node", "/opt/dockhand/dist/cli/main.js"]
CMD ["build-worker", "--help"]
EOF

REF="$REPO:$TAG"
old=$(image_id "$REF")
docker build --quiet --tag "$REF" "$ctx" >/dev/null 2>"$work/worker.err" ||
  { cat "$work/worker.err" >&2; die "building $REF failed"; }
new=$(image_id "$REF")
if [ "$new" != "$old" ]; then
  # The host's node must run on the base's libraries and the native module must load.
  docker run --rm --network none --entrypoint /usr/local/bin/node --workdir /opt/dockhand "$REF" \
    -e 'const D = require("better-sqlite3"); new D(":memory:").close()' ||
    die "$REF was built but its node cannot load better-sqlite3 (is this machine's node built for Debian bookworm?)"
  # The image this tag named before: removed unless something else still uses it.
  [ -z "$old" ] || docker image rm "$old" >/dev/null 2>&1 || true
  size=$(docker image inspect --format '{{.Size}}' "$REF" | awk '{ printf "%d MB", $1 / 1000000 }')
  say "$REF built: $(since "$t") ($size; total $(since "$started"))"
else
  say "$REF unchanged ($(since "$started"))"
fi
echo "$REF"
