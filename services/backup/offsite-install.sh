#!/bin/sh
# Hands the offsite SSH files (the state folder's offsite/: key, known_hosts; bind-mounted read-only,
# root-owned 0600, see ops/offsite.py) to the backup user: a copy in its home, owned by it, files 0600
# (OpenSSH and paramiko refuse keys others can read). Run as root by the entrypoint at every start
# and by stack-backup before it drops privileges, so a key or host trusted since is seen at once.
# The aiida service never mounts these: workflow code cannot read the offsite credentials.
set -eu
[ "$(id -u)" = 0 ] || { echo "backup-offsite-install: must run as root" >&2; exit 1; }
set -- $(/opt/backup/bin/python3 -c 'import sys; sys.path.insert(0, "/opt/backup"); import stack_rules as r
print(r.OFFSITE_MOUNT, r.OFFSITE_HOME)')
src=$1 dst=$2
[ -d "$src" ] || exit 0
install -d -o stack-backup -g stack-backup -m 0700 "$dst"
rsync --recursive --delete --chown=stack-backup:stack-backup --chmod=D0700,F0600 "$src/" "$dst/"
