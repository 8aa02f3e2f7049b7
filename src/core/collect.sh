# Collects an agent's work tree as one commit, sent as a git bundle on stdout.
# Runs inside the agent container (as the agent), under an environment without any git
# configuration (no system or global file, HOME and XDG_CONFIG_HOME nowhere): git runs
# against a fresh, throw-away GIT_DIR, so the clone's own config, hooks, fsmonitor, index,
# locks and aliases are never read, and .gitattributes cannot name a filter driver.
# Nothing is written to the clone. Its objects are read (as an alternate) only to find the
# seed commit, whose tree seeds the index (files that are tracked and ignored stay) and
# whose objects the bundle leaves out.
#   $1: the work tree (the agent's clone)   $2: the seed commit (the source's)
set -eu
work=$1
seed=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/devaipod-collect.XXXXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
git init -q --bare --template= "$tmp/git"
GIT_DIR=$tmp/git
GIT_WORK_TREE=$work
GIT_INDEX_FILE=$tmp/index
export GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
if [ -d "$work/.git/objects" ]; then
    GIT_ALTERNATE_OBJECT_DIRECTORIES=$work/.git/objects
    export GIT_ALTERNATE_OBJECT_DIRECTORIES
fi
cd "$work"
if [ -n "$seed" ] && git cat-file -e "$seed^{commit}" 2>/dev/null; then
    git read-tree "$seed"
else
    seed=
fi
git add -A
tree=$(git write-tree)
if [ -n "$seed" ]; then
    commit=$(git commit-tree "$tree" -p "$seed" -m collected </dev/null)
    git update-ref refs/heads/collected "$commit"
    git bundle create -q - refs/heads/collected "^$seed"
else
    commit=$(git commit-tree "$tree" -m collected </dev/null)
    git update-ref refs/heads/collected "$commit"
    git bundle create -q - refs/heads/collected
fi
