#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check and test: formatting,
# clippy, unit tests and the integration tests against real podman.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

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
if [ -n "$left" ]; then
  echo "test: containers left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "test: all green" >&2
