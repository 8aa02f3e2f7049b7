# Gives a worker's clone the state it is to work on: its folder emptied, then one commit
# (the owner's work, without history) from a bundle the daemon copied in, checked out.
# Runs inside the worker container (as the agent), with no git configuration.
#   $1: the work tree   $2: the bundle   $3: the seed commit's ref in the bundle
set -eu
work=$1
bundle=$2
ref=$3
chmod -R u+rwX "$work" 2>/dev/null || true
find "$work" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
cd "$work"
git -c init.defaultBranch=work init -q
git fetch -q --no-tags "$bundle" "+$ref:refs/devaipod/seed"
git checkout -q -f -B work refs/devaipod/seed
rm -f "$bundle"
