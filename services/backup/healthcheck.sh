#!/bin/sh
# Healthy when, as the backup user: the database answers and accepts our credentials, the
# AiiDA home is readable and the backups folder writable, the sidecar process is alive, and (schedule
# on) the last scheduled run did not fail and one succeeded before the deadline that `serve`
# precomputes (the later of its start and the last success + 2 periods; see stackbackup/schedule.py).
# Runs every 5 s: nothing here parses JSON.
set -eu
exec setpriv --reuid=stack-backup --regid=stack-backup --init-groups -- sh -c '
  export HOME=/home/stack-backup
  pg_isready -q -h "${PGHOST:-postgres}" || { echo "postgres not ready"; exit 1; }
  psql -h "${PGHOST:-postgres}" -U "${PGUSER:-postgres}" -d postgres -tAc "select 1" >/dev/null \
    || { echo "postgres refuses the backup credentials"; exit 1; }
  [ -r /aiida-home ] && [ -x /aiida-home ] || { echo "/aiida-home not readable"; exit 1; }
  [ -w /backups ] || { echo "/backups not writable"; exit 1; }
  if [ -f /tmp/schedule-failed ]; then
    echo "scheduled backup failed: $(head -c 500 /tmp/schedule-failed)"; exit 1
  fi
  [ -f /tmp/sidecar.alive ] && [ $(( $(date +%s) - $(stat -c %Y /tmp/sidecar.alive) )) -lt 120 ] \
    || { echo "sidecar heartbeat stale"; exit 1; }
  if [ -f /tmp/schedule-deadline ]; then
    read -r deadline since period < /tmp/schedule-deadline
    [ "$(date +%s)" -le "$deadline" ] || {
      echo "no successful scheduled backup since $since (more than 2 x $period s)"; exit 1; }
  fi
  exit 0
'
