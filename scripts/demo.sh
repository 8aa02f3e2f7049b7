#!/usr/bin/env bash
# The demo: sets up the machine, builds devaipod, makes a sample repository, brings a
# workspace up, shows it, runs commands in both containers, and deletes it again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --quiet
dp() { echo "+ devaipod $*" >&2; ./target/debug/devaipod "$@"; }

export DEVAIPOD_INSTANCE=demo
work=$(mktemp -d)
trap 'dp delete sample >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

repo="$work/sample"
mkdir -p "$repo/.devcontainer"
cat > "$repo/.devcontainer/devcontainer.json" <<'JSON'
{
  // The base image that scripts/setup.sh built; any local image works.
  "image": "localhost/devaipod-base:latest",
  "containerEnv": { "GREETING": "hello from ${localWorkspaceFolderBasename}" },
  "postCreateCommand": "echo \"$GREETING\" > /tmp/greeting",
}
JSON
echo "# sample" > "$repo/README.md"
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -qm "sample repository"

dp delete sample >/dev/null 2>&1 || true
dp up "$repo" --name sample
dp list
dp status sample
dp exec sample -- git log --oneline
dp exec sample -- cat /tmp/greeting
dp exec sample --agent -- sh -c 'echo "agent: uid $(id -u)"; grep -E "CapEff|NoNewPrivs" /proc/1/status; /opt/devaipod/bin/opencode --version'
dp exec sample --agent -- touch /mnt/main-workspace/nope || echo "(as expected: the agent cannot write the human's workspace)"
dp delete sample
