# Brings an accepted worker's commits into the owner's clone on a branch of their own (the
# owner merges them). Runs inside the owner's agent container, as the agent, in its clone.
#   $1: the clone   $2: the bundle   $3: the worker's branch in the bundle   $4: the branch here
set -eu
cd "$1"
status=0
git fetch -q --no-tags "$2" "+$3:refs/heads/$4" || status=$?
rm -f "$2"
exit $status
