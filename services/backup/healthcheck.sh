#!/bin/sh
# Healthy when, as the backup user: the database answers and accepts our credentials, the
# AiiDA home is readable and the backups folder writable, and the sidecar process is alive.
set -eu
exec setpriv --reuid=stack-backup --regid=stack-backup --init-groups -- sh -c '
  export HOME=/home/stack-backup
  pg_isready -q -h "${PGHOST:-postgres}" || { echo "postgres not ready"; exit 1; }
  psql -h "${PGHOST:-postgres}" -U "${PGUSER:-postgres}" -d postgres -tAc "select 1" >/dev/null \
    || { echo "postgres refuses the backup credentials"; exit 1; }
  [ -r /aiida-home ] && [ -x /aiida-home ] || { echo "/aiida-home not readable"; exit 1; }
  [ -w /backups ] || { echo "/backups not writable"; exit 1; }
  [ -f /tmp/sidecar.alive ] && [ $(( $(date +%s) - $(stat -c %Y /tmp/sidecar.alive) )) -lt 120 ] \
    || { echo "sidecar heartbeat stale"; exit 1; }
'
