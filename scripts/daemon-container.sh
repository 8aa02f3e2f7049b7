#!/usr/bin/env bash
# The devaipod daemon in a container (rootful podman): build its image offline from this
# host's devaipod and opencode, and run it. docs/container.md explains every flag.
#
#   scripts/daemon-container.sh build [BINARY]   # the image, from BINARY (default: target/debug/devaipod)
#   scripts/daemon-container.sh run              # the daemon container
#   scripts/daemon-container.sh rm               # stop and remove it (the state volume stays)
#
# Settings (environment):
#   DEVAIPOD_IMAGE      image (default localhost/devaipod:latest)
#   DEVAIPOD_BASE       base of the image (default localhost/devaipod-base:latest, from scripts/setup.sh)
#   DEVAIPOD_NAME       container name (default devaipod)
#   DEVAIPOD_VOLUME     named volume with the daemon's state (default devaipod-state)
#   DEVAIPOD_INSTANCE   instance (default "default")
#   DEVAIPOD_LISTEN     the API (default 127.0.0.1:8080, on the host's loopback)
#   DEVAIPOD_RUNTIME_DIR  sockets (default /run/devaipod/<instance>)
#   DEVAIPOD_SOURCES    host directories with local repositories, ':'-separated, mounted
#                       read-only at the same paths (default $HOME)
#   DEVAIPOD_CONFIG     a devaipod.toml on the host, mounted read-only (default ~/.config/devaipod.toml when it exists)
#   DEVAIPOD_LABELS     extra labels for the container and the volume, ' '-separated k=v
set -euo pipefail

die() { printf 'daemon-container: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'daemon-container: %s\n' "$*" >&2; }

IMAGE=${DEVAIPOD_IMAGE:-localhost/devaipod:latest}
BASE=${DEVAIPOD_BASE:-localhost/devaipod-base:latest}
NAME=${DEVAIPOD_NAME:-devaipod}
VOLUME=${DEVAIPOD_VOLUME:-devaipod-state}
INSTANCE=${DEVAIPOD_INSTANCE:-default}
LISTEN=${DEVAIPOD_LISTEN:-127.0.0.1:8080}
RUNTIME=${DEVAIPOD_RUNTIME_DIR:-/run/devaipod/$INSTANCE}
SOURCES=${DEVAIPOD_SOURCES:-$HOME}
CONFIG=${DEVAIPOD_CONFIG:-}
if [ -z "$CONFIG" ] && [ -f "${XDG_CONFIG_HOME:-$HOME/.config}/devaipod.toml" ]; then
  CONFIG="${XDG_CONFIG_HOME:-$HOME/.config}/devaipod.toml"
fi
SOCK=/run/podman/podman.sock
[ "$(id -u)" = 0 ] || die "the containerized daemon needs rootful podman (run as root); as a user, run the devaipod binary itself"

labels=(--label "io.devaipod.instance=$INSTANCE" --label io.devaipod.role=daemon)
for l in ${DEVAIPOD_LABELS:-}; do labels+=(--label "$l"); done

case "${1:-}" in
  build)
    here=$(cd "$(dirname "$0")/.." && pwd)
    bin=${2:-${CARGO_TARGET_DIR:-$here/target}/debug/devaipod}
    opencode=${DEVAIPOD_OPENCODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devaipod/opencode/node_modules/opencode-linux-x64/bin}/opencode
    [ -x "$bin" ] || die "no devaipod binary at $bin: cargo build first, or name one"
    [ -x "$opencode" ] || die "no opencode at $opencode: run scripts/setup.sh"
    ctx=$(mktemp -d)
    trap 'rm -rf "$ctx"' EXIT
    cp "$bin" "$ctx/devaipod"
    cp "$opencode" "$ctx/opencode"
    podman build --pull=never -q -f "$here/Containerfile" --target prebuilt \
      --build-arg "BASE=$BASE" "${labels[@]}" -t "$IMAGE" "$ctx" >/dev/null
    log "built $IMAGE ($("$bin" --version))"
    ;;
  run)
    curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/v4.0.0/libpod/_ping >/dev/null 2>&1 \
      || die "podman's API does not answer on $SOCK: run scripts/setup.sh"
    podman volume exists "$VOLUME" || podman volume create "${labels[@]}" "$VOLUME" >/dev/null
    # The state volume is mounted at its own host path, and the runtime directory at the
    # same path as on the host: every path the daemon hands to podman is a host path.
    data=$(podman volume inspect --format '{{.Mountpoint}}' "$VOLUME")
    mkdir -p "$RUNTIME"
    chmod 0700 "$RUNTIME"
    args=(
      run -d --name "$NAME" --init "${labels[@]}"
      --network host
      --security-opt label=disable
      -v "$SOCK:$SOCK"
      -v "$VOLUME:$data"
      -v "$RUNTIME:$RUNTIME"
      -e "DEVAIPOD_DATA_DIR=$data"
      -e "DEVAIPOD_RUNTIME_DIR=$RUNTIME"
      -e "DEVAIPOD_INSTANCE=$INSTANCE"
      -e "DEVAIPOD_LISTEN=$LISTEN"
    )
    # The agents' seccomp profile is built from podman's default: the host's.
    for f in /usr/share/containers/seccomp.json /etc/containers/seccomp.json; do
      [ -f "$f" ] && args+=(-v "$f:$f:ro")
    done
    IFS=: read -r -a dirs <<<"$SOURCES"
    for d in "${dirs[@]}"; do
      [ -n "$d" ] || continue
      [ -d "$d" ] || die "DEVAIPOD_SOURCES: $d is not a directory"
      args+=(-v "$d:$d:ro")
    done
    if [ -n "$CONFIG" ]; then
      [ -f "$CONFIG" ] || die "DEVAIPOD_CONFIG: $CONFIG does not exist"
      args+=(-v "$CONFIG:/etc/devaipod/devaipod.toml:ro" -e DEVAIPOD_CONFIG=/etc/devaipod/devaipod.toml)
    fi
    podman "${args[@]}" "$IMAGE" serve >/dev/null
    log "started $NAME ($IMAGE): API on http://$LISTEN; token: podman exec $NAME devaipod token"
    ;;
  rm)
    podman rm -f -t 10 "$NAME" >/dev/null 2>&1 || true
    log "removed $NAME (the state stays in volume $VOLUME)"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
