#!/bin/sh
# Installs one devcontainer feature in the derived image's build, as the reference CLI
# does: the feature's options and the users as environment variables, then its install.sh
# from its own folder. $1: the feature's folder. Written by devaipod.
set -e
cd "$1"
# NAME=value lines; `export "$line"` takes the value verbatim (no expansion).
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] && export "$line"
done < ./devaipod-feature.env
home_of() {
  h=$(getent passwd "$1" 2>/dev/null | cut -d: -f6) || true
  [ -n "$h" ] || h=$(awk -F: -v u="$1" '$1 == u { print $6 }' /etc/passwd 2>/dev/null) || true
  [ -n "$h" ] || { [ "$1" = root ] && h=/root; } || true
  printf '%s' "$h"
}
_REMOTE_USER_HOME=$(home_of "$_REMOTE_USER")
_CONTAINER_USER_HOME=$(home_of "$_CONTAINER_USER")
export _REMOTE_USER_HOME _CONTAINER_USER_HOME
chmod +x ./install.sh
echo "devaipod: installing feature $(basename "$1")"
./install.sh
