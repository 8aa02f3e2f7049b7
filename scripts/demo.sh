#!/usr/bin/env bash
# The demo: sets up the machine, builds devaipod, and runs the whole loop on a sample
# repository: workspace → task (real opencode, driven by the scripted LLM in tests/support)
# → proposal → diff → approve --apply → the branch in the human's workspace → delete.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --quiet
bin=$PWD/target/debug/devaipod
dp() { echo "+ devaipod $*" >&2; "$bin" "$@"; }

work=$(mktemp -d)
export DEVAIPOD_INSTANCE=demo
export DEVAIPOD_DATA_DIR="$work/data" DEVAIPOD_RUNTIME_DIR="$work/run" DEVAIPOD_LISTEN=127.0.0.1:0
cleanup() {
  "$bin" delete sample >/dev/null 2>&1 || true
  [ -f "$work/run/daemon.pid" ] && kill "$(cat "$work/run/daemon.pid")" 2>/dev/null || true
  [ -n "${llm_pid:-}" ] && kill "$llm_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The scripted OpenAI-compatible LLM stands in for a real provider (see README, "[agent]").
cat > "$work/script.json" <<'JSON'
{"rules": [{"match": "greeting", "steps": [
  {"tool": "write", "args": {"filePath": "/workspaces/sample/GREETING.md", "content": "Hello from the agent!\n"}},
  {"tool": "bash", "args": {"command": "git -C /workspaces/sample status --short", "description": "check the work"}},
  {"text": "Added GREETING.md with a friendly greeting."}]}]}
JSON
python3 tests/support/scripted_llm.py --host 127.0.0.1 --port 0 --script "$work/script.json" > "$work/llm.out" &
llm_pid=$!
for _ in $(seq 1 50); do grep -q listening "$work/llm.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '{print $3}' "$work/llm.out")
export DEVAIPOD_CONFIG="$work/devaipod.toml"
cat > "$DEVAIPOD_CONFIG" <<TOML
[agent]
base-url = "http://host.containers.internal:$port/v1"
model = "scripted"
TOML

repo="$work/sample"
mkdir -p "$repo"
echo "# sample" > "$repo/README.md"
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -qm "sample repository"

dp up "$repo" --name sample
dp list
dp exec sample --agent -- sh -c 'echo "agent: uid $(id -u)"; grep -E "CapEff|NoNewPrivs" /proc/1/status'
dp run -w sample -c "Please add a greeting file"
proposal=$("$bin" --json proposals | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
dp proposals
dp diff "$proposal"
dp approve "$proposal" --apply
dp exec sample -- git log --oneline --all
dp delete sample
