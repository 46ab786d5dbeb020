#!/usr/bin/env bash
# Installs and starts what the test suite needs on Debian: git, Docker with gVisor registered (runsc, with no network,
# and runsc-net, with the container's network),
# a local registry, htpasswd, a static busybox for the test images, iptables, iproute2, PostgreSQL
# (only its programs: the tests start a throwaway cluster of their own, never Debian's) and chromium (the web UI's
# browser tests drive it headless through playwright-core), redis-server (for the benchmarks' BullMQ peer), and
# openssh-server (the checkout tests run an sshd of their own), buildah and debootstrap (image builds and
# the build workers' image).
# Idempotent, and silent when everything is already in place. Needs root only when something is missing.
set -euo pipefail

DAEMON_JSON=/etc/docker/daemon.json
DOCKER_PIDFILE=/var/run/docker.pid
DOCKERD_LOG=/var/log/dockerd.log
# Debian's runsc package puts it here; a fixed path keeps daemon.json stable between runs.
RUNSC=/usr/bin/runsc
# Build workers run buildah under gVisor, which needs a newer runsc than Debian 12's (2022-12: its mount(2) refuses
# the MS_REC and MS_REMOUNT flags buildah uses). Debian 13's package (a static binary) is fetched from Debian's pool,
# checked against this digest, and kept next to the system one.
RUNSC_NET=/usr/local/lib/dockhand/runsc-20240729
RUNSC_NET_DEB=pool/main/g/golang-gvisor-gvisor/runsc_0.0~20240729.0-4+b7_amd64.deb
RUNSC_NET_DEB_SHA256=3c25a5130dfac2f71237d5baad56ac86a255de87a0400f11b36a555156dc325a

say() { echo "provision.sh: $*" >&2; }
die() { say "$*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Commands in sbin directories are not on every user's PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

busybox_is_static() {
  [ -x /bin/busybox ] || return 1
  # ldd exits non-zero for a static binary, so look only at what it says.
  local out
  out=$(ldd /bin/busybox 2>&1 || true)
  case "$out" in *"not a dynamic executable"*|*"statically linked"*) return 0 ;; *) return 1 ;; esac
}

# --- packages ---------------------------------------------------------------------------------------
missing=()   # Debian package names
why=()       # what was missing, for the message to a non-root user
need() { missing+=("$1"); why+=("$1 ($2)"); }

have git || need git "git"
have curl || need curl "curl (fetches the newer runsc)"
{ have dockerd && have docker; } || need docker.io "dockerd and docker"
[ -x "$RUNSC" ] || need runsc "$RUNSC"
have docker-registry || need docker-registry "docker-registry"
have htpasswd || need apache2-utils "htpasswd"
busybox_is_static || need busybox-static "a static /bin/busybox"
have iptables || need iptables "iptables"
have ip || need iproute2 "ip"
# Debian keeps the server programs off PATH, under /usr/lib/postgresql/VERSION/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need postgresql "/usr/lib/postgresql/*/bin/initdb"
[ -x /usr/bin/chromium ] || need chromium "/usr/bin/chromium"
# The benchmarks' peer BullMQ runs on Redis; the suite runs every benchmark once at a tiny size.
have redis-server || need redis-server "redis-server"
# A real sshd for the tests that show a checkout never uses the executor's SSH agent or keys.
[ -x /usr/sbin/sshd ] || need openssh-server "/usr/sbin/sshd"
# The build manager's process plane runs buildah on the host; the worker images get it from debootstrap.
have buildah || need buildah "buildah"
have debootstrap || need debootstrap "debootstrap"

if [ ${#missing[@]} -gt 0 ]; then
  if ! is_root; then
    say "missing: ${why[*]}"
    die "install as root with: apt-get update && apt-get install -y ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  # busybox-static replaces a dynamic busybox package if one is installed; apt resolves that itself.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  busybox_is_static || die "/bin/busybox is still not a static executable after installing busybox-static"
fi

# --- a newer runsc for build workers ----------------------------------------------------------------
if [ ! -x "$RUNSC_NET" ]; then
  is_root || die "missing $RUNSC_NET (Debian 13's runsc, for gVisor build workers); run this script as root"
  say "fetching Debian 13's runsc into $RUNSC_NET"
  tmp=$(mktemp -d)
  curl -fsSL --max-time 300 -o "$tmp/runsc.deb" "http://deb.debian.org/debian/$RUNSC_NET_DEB" ||
    die "cannot download http://deb.debian.org/debian/$RUNSC_NET_DEB"
  echo "$RUNSC_NET_DEB_SHA256  $tmp/runsc.deb" | sha256sum -c --quiet - || die "$RUNSC_NET_DEB does not have the expected sha256"
  dpkg-deb -x "$tmp/runsc.deb" "$tmp/root"
  mkdir -p "$(dirname "$RUNSC_NET")"
  install -m 0755 "$tmp/root/usr/bin/runsc" "$RUNSC_NET"
  rm -rf "$tmp"
fi

# --- gVisor registered with Docker -----------------------------------------------------------------
# Two registrations of the same runsc:
#   runsc      --network=none: no network at all (the step containers of untrusted jobs; the tests rely on it).
#   runsc-net  Debian 13's runsc with --network=host: gVisor passes its network calls through to the container's
#              own network namespace (Docker's bridge), so the container has the network Docker gave it (the build
#              workers pull and push), and its kernel supports the mounts buildah makes.
# Merges {"runtimes": {"runsc": ..., "runsc-net": ...}} into daemon.json, keeping every other key and runtime.
# Prints "changed" when it wrote the file (or, with --check, when it would).
merge_daemon_json() {
  node -e '
    const fs = require("fs");
    const [file, runsc, runscNet, mode] = process.argv.slice(1);
    const want = {
      runsc: { path: runsc, runtimeArgs: ["--network=none"] },
      "runsc-net": { path: runscNet, runtimeArgs: ["--network=host"] },
    };
    let conf = {};
    if (fs.existsSync(file)) {
      const text = fs.readFileSync(file, "utf8");
      if (text.trim() !== "") {
        try { conf = JSON.parse(text); } catch (e) { console.error(`${file} is not valid JSON: ${e.message}`); process.exit(2); }
      }
    }
    if (conf === null || typeof conf !== "object" || Array.isArray(conf)) { console.error(`${file} is not a JSON object`); process.exit(2); }
    // Without a --network flag every runsc container fails to start on these machines ("cannot run with network
    // enabled in root network namespace").
    const same = (name) => JSON.stringify(conf.runtimes?.[name]) === JSON.stringify(want[name]);
    if (Object.keys(want).every(same)) process.exit(0);
    if (mode !== "--check") {
      conf.runtimes = { ...(conf.runtimes ?? {}), ...want };
      fs.mkdirSync(require("path").dirname(file), { recursive: true });
      fs.writeFileSync(file + ".tmp", JSON.stringify(conf, null, 2) + "\n");
      fs.renameSync(file + ".tmp", file);
    }
    console.log("changed");
  ' "$DAEMON_JSON" "$RUNSC" "$RUNSC_NET" "$@"
}

daemon_json_changed=
# An assignment, so that an unreadable daemon.json stops the script (set -e).
needs_change=$(merge_daemon_json --check)
if [ -n "$needs_change" ]; then
  is_root || die "$DAEMON_JSON must register runsc and runsc-net ({\"runtimes\": {\"runsc\": {\"path\": \"$RUNSC\", \"runtimeArgs\": [\"--network=none\"]}, \"runsc-net\": {\"path\": \"$RUNSC_NET\", \"runtimeArgs\": [\"--network=host\"]}}}); run this script as root"
  say "registering runsc and runsc-net in $DAEMON_JSON"
  merge_daemon_json >/dev/null
  daemon_json_changed=1
fi

# --- dockerd running --------------------------------------------------------------------------------
docker_answers() { docker info >/dev/null 2>&1; }

# Alive and not a zombie: PID 1 of a container or VM does not always reap what it inherits.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

dockerd_pid() {
  local pid
  pid=$(cat "$DOCKER_PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && alive "$pid"; then echo "$pid"; fi
}

wait_for_docker() {
  local i
  for i in $(seq 1 120); do
    docker_answers && return 0
    sleep 0.5
  done
  die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
}

start_dockerd() {
  say "starting dockerd (log: $DOCKERD_LOG)"
  # No systemd here: run it detached in its own session so it outlives this script and its caller's job.
  nohup setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  wait_for_docker
}

stop_dockerd() {
  local pid=$1 i
  say "restarting dockerd (pid $pid) to load $DAEMON_JSON"
  kill -TERM "$pid"
  # dockerd gives running containers up to 15 s to stop before it exits.
  for i in $(seq 1 120); do
    alive "$pid" || return 0
    sleep 0.5
  done
  die "dockerd (pid $pid) did not exit within 60 s of SIGTERM"
}

# True when dockerd serves both gVisor runtimes exactly as daemon.json registers them.
serves_runtimes() {
  local runtimes
  runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null) || return 1
  case "$runtimes" in *"\"runsc\":{\"path\":\"$RUNSC\",\"runtimeArgs\":[\"--network=none\"]}"*) ;; *) return 1 ;; esac
  case "$runtimes" in *"\"runsc-net\":{\"path\":\"$RUNSC_NET\",\"runtimeArgs\":[\"--network=host\"]}"*) ;; *) return 1 ;; esac
}

# dockerd reloads its runtimes on SIGHUP (they are all this script writes), leaving running containers alone.
reload_dockerd() {
  local pid=$1 i
  say "reloading dockerd (pid $pid) to load $DAEMON_JSON"
  kill -HUP "$pid"
  for i in $(seq 1 20); do
    serves_runtimes && return 0
    sleep 0.5
  done
  return 1
}

if docker_answers; then
  if [ -n "$daemon_json_changed" ]; then
    pid=$(dockerd_pid)
    [ -n "$pid" ] || die "dockerd answers but $DOCKER_PIDFILE names no live process; restart it yourself to load $DAEMON_JSON"
    if ! reload_dockerd "$pid"; then
      stop_dockerd "$pid"
      start_dockerd
    fi
  fi
else
  if ! is_root; then
    die "the Docker engine is not answering to this user: $(docker info 2>&1 >/dev/null | tail -n 1); run this script as root to start dockerd, or use a user in the docker group"
  fi
  if [ -n "$(dockerd_pid)" ]; then
    # A dockerd is already starting up: give it time rather than starting a second one.
    wait_for_docker
    if [ -n "$daemon_json_changed" ]; then stop_dockerd "$(dockerd_pid)"; start_dockerd; fi
  else
    start_dockerd
  fi
fi

runtimes=$(docker info --format '{{json .Runtimes}}')
for runtime in runsc runsc-net; do
  case "$runtimes" in
    *"\"$runtime\""*) ;;
    *) die "dockerd does not list the $runtime runtime (runtimes: $runtimes); check $DAEMON_JSON and restart dockerd" ;;
  esac
done
