#!/usr/bin/env bash
# Set up everything devaipod and its tests need on a bare Debian 12 machine:
# podman + runc, a containers.conf drop-in where this host needs one, the podman API
# service, the local base image (no registry is reachable) and opencode from npm.
# Idempotent: every step checks first and does nothing when its result is already there.
#
# `scripts/setup.sh --rootless` (or DEVAIPOD_ROOTLESS=1) also prepares a non-root user for
# rootless podman (step 8): the rootless tests run as that user.
set -euo pipefail

ROOTLESS=${DEVAIPOD_ROOTLESS:-0}
for arg in "$@"; do
  case "$arg" in
    --rootless) ROOTLESS=1 ;;
    *) printf 'setup: unknown argument %s (known: --rootless)\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

OPENCODE_VERSION="${DEVAIPOD_OPENCODE_VERSION:-1.18.33}"
# MCP clients the tests drive devaipod with (clients no one here wrote).
PY_MCP_VERSION=1.30.0
INSPECTOR_VERSION=0.15.0
# A second ACP agent for the tests (tests/agents.rs): Codex's ACP adapter, a native binary.
CODEX_ACP_VERSION=0.16.0
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
# openssh-client and tmux: the SSH tests drive the real OpenSSH client, tmux gives it a
# terminal whose size changes. docker-registry: the OCI registry the devcontainer-features
# tests start on 127.0.0.1.
for pkg in podman runc catatonit netavark aardvark-dns iptables mmdebstrap chromium openssh-client tmux docker-registry; do
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

# 4. The local base image: Debian minimal + git, bash, ca-certificates, ripgrep, and
#    openssh-sftp-server (the SSH server's sftp subsystem runs the container's own; editors
#    upload their remote servers with it). An older base without it is built again.
if ! podman image exists "$BASE_IMAGE" \
    || ! podman run --rm --network none "$BASE_IMAGE" test -x /usr/lib/openssh/sftp-server 2>/dev/null; then
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
  mmdebstrap --quiet --variant=minbase --include=git,bash,ca-certificates,ripgrep,openssh-sftp-server \
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

# 6b. Codex's ACP adapter for the agent-backend tests (devaipod never ships it; the tests
# mount it read-only into the agent container as [agents.codex] inject-dir).
CODEX_ACP_BIN="$CACHE_DIR/codex-acp/node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp"
npm_pinned "$CACHE_DIR/codex-acp" @zed-industries/codex-acp-linux-x64 "$CODEX_ACP_VERSION" "$CODEX_ACP_BIN"

# 7. The browser tests' driver: playwright-core (no bundled browser; it drives Debian's chromium).
npm_pinned "$CACHE_DIR/playwright" playwright-core "$PLAYWRIGHT_VERSION"

# 8. (--rootless) A user for rootless podman: its subordinate ids, /dev/net/tun usable by
#    slirp4netns, a runtime directory (no login session here), its storage (overlay when the
#    kernel can do it unprivileged, else vfs), its own API service, the base image in its
#    own store, and opencode where its cache is.
if [ "$ROOTLESS" = 1 ]; then
  [ -z "$SUDO" ] || die "--rootless prepares another user: run it as root"
  RL_USER="${DEVAIPOD_ROOTLESS_USER:-devaipod-rootless}"
  need_pkgs=()
  for pkg in uidmap slirp4netns fuse-overlayfs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$pkg")
  done
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]} (rootless podman)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  if ! id "$RL_USER" >/dev/null 2>&1; then
    log "creating user $RL_USER"
    useradd -m -s /bin/bash "$RL_USER"
  fi
  RL_UID=$(id -u "$RL_USER")
  RL_HOME=$(getent passwd "$RL_USER" | cut -d: -f6)
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$RL_USER:" "$f" 2>/dev/null; then
      # After the highest range given so far (useradd gives one on most systems).
      start=$(awk -F: 'BEGIN {m = 100000} {e = $2 + $3; if (e > m) m = e} END {print m}' "$f" 2>/dev/null || echo 100000)
      log "giving $RL_USER subordinate ids $start-$((start + 65535)) in $f"
      echo "$RL_USER:$start:65536" >>"$f"
    fi
  done
  # Debian ships /dev/net/tun 0666; some VMs make it 0600, and then slirp4netns fails.
  if [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    log "making /dev/net/tun 0666 (slirp4netns opens it as the user)"
    chmod 0666 /dev/net/tun
  fi
  RL_RUN="/run/user/$RL_UID"
  if [ ! -d "$RL_RUN" ]; then
    log "creating $RL_RUN (no login session makes it here)"
    install -d -m 0700 -o "$RL_USER" -g "$RL_USER" "$RL_RUN"
  fi
  as_user() { runuser -u "$RL_USER" -- env HOME="$RL_HOME" XDG_RUNTIME_DIR="$RL_RUN" "$@"; }
  # Storage: overlay without fuse (kernel >= 5.13 mounts it in a user namespace), else
  # overlay over fuse-overlayfs, else vfs. Chosen once, while the user's store is empty.
  RL_CONF="$RL_HOME/.config/containers/storage.conf"
  if [ ! -f "$RL_CONF" ]; then
    as_user mkdir -p "$(dirname "$RL_CONF")"
    driver=""
    for candidate in native fuse vfs; do
      case "$candidate" in
        native) printf '[storage]\ndriver = "overlay"\n' ;;
        fuse) printf '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n' ;;
        vfs) printf '[storage]\ndriver = "vfs"\n' ;;
      esac | as_user tee "$RL_CONF" >/dev/null
      as_user podman system reset --force >/dev/null 2>&1 || true
      if as_user podman run --rm --network none "$BASE_IMAGE" true >/dev/null 2>&1 \
          || { podman save "$BASE_IMAGE" | as_user podman load -q >/dev/null 2>&1 \
               && as_user podman run --rm --network none "$BASE_IMAGE" true >/dev/null 2>&1; }; then
        driver=$candidate
        break
      fi
    done
    [ -n "$driver" ] || die "rootless podman runs no container as $RL_USER with any storage driver"
    log "$RL_USER's storage: $(as_user podman info --format '{{.Store.GraphDriverName}}') ($driver)"
  fi
  RL_SOCK="$RL_RUN/podman/podman.sock"
  rl_ping() { as_user curl -fsS --max-time 2 --unix-socket "$RL_SOCK" http://d/v4.0.0/libpod/_ping >/dev/null 2>&1; }
  if ! rl_ping; then
    log "starting $RL_USER's podman API service on $RL_SOCK"
    as_user mkdir -p "$RL_RUN/podman"
    rm -f "$RL_SOCK"
    as_user setsid nohup podman system service --time=0 "unix://$RL_SOCK" \
      >"/tmp/devaipod-podman-service-$RL_USER.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do rl_ping && break; sleep 0.1; done
    rl_ping || die "$RL_USER's podman API service did not answer on $RL_SOCK; see /tmp/devaipod-podman-service-$RL_USER.log"
  fi
  if ! as_user podman image exists "$BASE_IMAGE"; then
    log "copying $BASE_IMAGE into $RL_USER's store"
    podman save "$BASE_IMAGE" | as_user podman load -q >/dev/null
  fi
  # opencode: root's cache is under /root (0700 here), out of the user's reach: a copy.
  RL_OPENCODE="$RL_HOME/.cache/devaipod/opencode/node_modules/opencode-linux-x64/bin/opencode"
  if ! cmp -s "$OPENCODE_BIN" "$RL_OPENCODE"; then
    log "copying opencode for $RL_USER"
    as_user mkdir -p "$(dirname "$RL_OPENCODE")"
    install -m 0755 -o "$RL_USER" -g "$RL_USER" "$OPENCODE_BIN" "$RL_OPENCODE"
  fi
  log "rootless: user $RL_USER (uid $RL_UID), XDG_RUNTIME_DIR=$RL_RUN, podman at $RL_SOCK"
fi

log "ready: podman $(podman --version | awk '{print $3}'), image $BASE_IMAGE, opencode $OPENCODE_VERSION"
