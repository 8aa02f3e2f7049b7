#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check and test: formatting,
# clippy, unit tests and the integration tests against real podman. As root, rootless podman
# is tested too: setup.sh --rootless prepares a user, and tests/rootless.rs runs its tests
# again as that user against the user's own podman (a non-root caller's podman is rootless
# already: they run in place).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  scripts/setup.sh --rootless
  export DEVAIPOD_REQUIRE_ROOTLESS=1
else
  scripts/setup.sh
fi

echo "test: cargo fmt --check" >&2
cargo fmt --check
echo "test: cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --all-targets --quiet -- -D warnings

# Integration tests must not skip here: podman was just set up.
export DEVAIPOD_REQUIRE_PODMAN=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi

left=$(podman ps -a --filter label=io.devaipod.instance --format '{{.Names}}' | grep -v '^devaipod-demo' || true)
if [ "$(id -u)" = 0 ]; then
  rl_user="${DEVAIPOD_ROOTLESS_USER:-devaipod-rootless}"
  rl_left=$(cd / && runuser -u "$rl_user" -- env HOME="$(getent passwd "$rl_user" | cut -d: -f6)" \
    XDG_RUNTIME_DIR="/run/user/$(id -u "$rl_user")" \
    podman ps -a --filter label=io.devaipod.instance --format "$rl_user: {{.Names}}" || true)
  left=$(printf '%s\n%s' "$left" "$rl_left" | sed '/^$/d')
fi
if [ -n "$left" ]; then
  echo "test: containers left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "test: all green" >&2
