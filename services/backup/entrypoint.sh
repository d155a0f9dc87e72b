#!/bin/sh
# Starts as root only to hand the PostgreSQL secret (a root 0600 bind mount) to the backup
# user as ~/.pgpass, then drops privileges for good. The schedule settings (BACKUP_SCHEDULE,
# BACKUP_KEEP_*, AIIDA_CORE_VERSION; empty = default, see stackbackup/schedule.py) pass through.
set -eu
secret=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}
[ -r "$secret" ] || { echo "backup: missing secret $secret" >&2; exit 1; }
umask 077
printf '%s:5432:*:%s:%s\n' "${PGHOST:-postgres}" "${PGUSER:-postgres}" "$(cat "$secret")" > /home/stack-backup/.pgpass
chown stack-backup:stack-backup /home/stack-backup/.pgpass
chown stack-backup:stack-backup /backups && chmod 0700 /backups
exec setpriv --reuid=stack-backup --regid=stack-backup --init-groups --reset-env -- \
    env PATH="$PATH" LANG="$LANG" PYTHONUNBUFFERED=1 HOME=/home/stack-backup \
        PGHOST="${PGHOST:-postgres}" PGUSER="${PGUSER:-postgres}" \
        BACKUP_SCHEDULE="${BACKUP_SCHEDULE:-}" BACKUP_KEEP_LAST="${BACKUP_KEEP_LAST:-}" \
        BACKUP_KEEP_DAILY="${BACKUP_KEEP_DAILY:-}" BACKUP_KEEP_WEEKLY="${BACKUP_KEEP_WEEKLY:-}" \
        BACKUP_KEEP_MONTHLY="${BACKUP_KEEP_MONTHLY:-}" AIIDA_CORE_VERSION="${AIIDA_CORE_VERSION:-}" "$@"
