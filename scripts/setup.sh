#!/usr/bin/env bash
# Set up everything devaipod and its tests need on a bare Debian 12 machine:
# podman + runc, a containers.conf drop-in where this host needs one, the podman API
# service, the local base image (no registry is reachable) and opencode from npm.
# Idempotent: every step checks first and does nothing when its result is already there.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

OPENCODE_VERSION="${DEVAIPOD_OPENCODE_VERSION:-1.18.33}"
# MCP clients the tests drive devaipod with (clients no one here wrote).
PY_MCP_VERSION=1.30.0
INSPECTOR_VERSION=0.15.0
PLAYWRIGHT_VERSION=1.57.0
BASE_IMAGE="${DEVAIPOD_BASE_IMAGE:-localhost/devaipod-base:latest}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/devaipod"
SOCK_DIR=/run/podman
SOCK="$SOCK_DIR/podman.sock"

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "run as root or install sudo"
  SUDO="sudo"
fi

# 1. Packages from Debian.
need_pkgs=()
for pkg in podman runc catatonit netavark aardvark-dns iptables mmdebstrap chromium; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]} from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# 2. containers.conf: crun and the default rlimits fail on hosts without a unified cgroup v2
#    hierarchy. Only there, write a drop-in of our own (never the user's containers.conf).
DROPIN=/etc/containers/containers.conf.d/50-devaipod.conf
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && [ ! -f "$DROPIN" ]; then
  log "writing $DROPIN (runc + cgroupfs: this host has no unified cgroup v2)"
  $SUDO mkdir -p "$(dirname "$DROPIN")"
  $SUDO tee "$DROPIN" >/dev/null <<'CONF'
# Written by devaipod's scripts/setup.sh: crun fails on hybrid cgroups on this host.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

# 3. The podman API service.
ping() { curl -fsS --max-time 2 --unix-socket "$SOCK" http://d/v4.0.0/libpod/_ping >/dev/null 2>&1; }
if [ -n "${CONTAINER_HOST:-}" ]; then
  log "CONTAINER_HOST is set ($CONTAINER_HOST): not starting a podman service"
elif ! ping; then
  log "starting the podman API service on $SOCK"
  $SUDO mkdir -p "$SOCK_DIR"
  $SUDO rm -f "$SOCK"
  # setsid + nohup: the service outlives this script and the shell that ran it.
  $SUDO setsid nohup podman system service --time=0 "unix://$SOCK" \
    >"${TMPDIR:-/tmp}/devaipod-podman-service.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do ping && break; sleep 0.1; done
  ping || die "the podman API service did not answer on $SOCK; see ${TMPDIR:-/tmp}/devaipod-podman-service.log"
fi

# 4. The local base image: Debian minimal + git, bash, ca-certificates, ripgrep.
if ! podman image exists "$BASE_IMAGE"; then
  mirror=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
    [ -n "$mirror" ] && break
  done
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources"
  log "building $BASE_IMAGE with mmdebstrap (takes about half a minute)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=minbase --include=git,bash,ca-certificates,ripgrep \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --format=tar bookworm "$work/rootfs.tar" "$mirror" >&2
  podman import --quiet --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
  trap - EXIT
fi

# npm_pinned DIR PACKAGE VERSION [FILE]: PACKAGE@VERSION in DIR/node_modules, unless it is
# there (and FILE, when given, exists).
npm_pinned() {
  local dir="$1" pkg="$2" version="$3" needed="${4:-}"
  if grep -q "\"version\": \"$version\"" "$dir/node_modules/$pkg/package.json" 2>/dev/null \
      && { [ -z "$needed" ] || [ -e "$needed" ]; }; then
    return 0
  fi
  log "installing $pkg@$version into $dir"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "$pkg@$version" >&2
}

# 5. opencode from npm into the cache.
OPENCODE_BIN="$CACHE_DIR/opencode/node_modules/opencode-linux-x64/bin/opencode"
npm_pinned "$CACHE_DIR/opencode" opencode-ai "$OPENCODE_VERSION" "$OPENCODE_BIN"
[ -x "$OPENCODE_BIN" ] || die "opencode binary missing after npm install: $OPENCODE_BIN"

# 6. MCP clients for the tests: the Python SDK (in a venv) and the MCP Inspector CLI.
VENV="$CACHE_DIR/venv"
if ! "$VENV/bin/python3" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$PY_MCP_VERSION')" 2>/dev/null; then
  log "installing the Python mcp SDK $PY_MCP_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$PY_MCP_VERSION" >&2
fi
npm_pinned "$CACHE_DIR/inspector" @modelcontextprotocol/inspector "$INSPECTOR_VERSION"

# 7. The browser tests' driver: playwright-core (no bundled browser; it drives Debian's chromium).
npm_pinned "$CACHE_DIR/playwright" playwright-core "$PLAYWRIGHT_VERSION"

log "ready: podman $(podman --version | awk '{print $3}'), image $BASE_IMAGE, opencode $OPENCODE_VERSION"
