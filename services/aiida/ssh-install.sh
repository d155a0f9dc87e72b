#!/bin/bash
# Hands the stack's SSH files to the aiida user: mirrors the state folder .stack/<name>/ssh (bind-
# mounted read-only, root-owned 0600; see ops/ssh.py) into ~aiida/.ssh, owned by aiida, files 0600
# (OpenSSH and paramiko refuse keys that others can read). Run as root by the entrypoint at every
# start and by ./stack ssh.* after each change. ~/.ssh lives in the container's own layer: in no
# image and no volume, so the state folder stays the one copy. Files ssh itself would add go again.
set -euo pipefail
src=${AIIDA_SSH_SOURCE:-/run/aiida-stack-ssh}
dst=/home/aiida/.ssh
[ "$(id -u)" = 0 ] || { echo "aiida-stack-ssh-install: must run as root" >&2; exit 1; }
install -d -o aiida -g aiida -m 0700 "$dst"
if [ -d "$src" ]; then
    rsync --recursive --delete --chown=aiida:aiida --chmod=D0700,F0600 "$src/" "$dst/"
fi
