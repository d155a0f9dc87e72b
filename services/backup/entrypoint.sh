#!/bin/sh
# Starts as root only to hand the PostgreSQL secret (a root 0600 bind mount) to the backup
# user as ~/.pgpass, then drops privileges for good. The schedule settings (BACKUP_SCHEDULE,
# BACKUP_KEEP_*, AIIDA_CORE_VERSION; empty = default, see stackbackup/schedule.py) pass through.
set -eu
# Two roles: BACKUP_DB_USER (read-only: pg_read_all_data) for dumps, the default; the superuser only
# for restores (stackbackup.database.ADMIN).
secret=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}
reader=${BACKUP_DB_PASSWORD_FILE:-/run/secrets/backup_db_password}
for file in "$secret" "$reader"; do
    [ -r "$file" ] || { echo "backup: missing secret $file" >&2; exit 1; }
done
umask 077
{
    printf '%s:5432:*:%s:%s\n' "${PGHOST:-postgres}" "${BACKUP_DB_USER:-stack_backup}" "$(cat "$reader")"
    printf '%s:5432:*:postgres:%s\n' "${PGHOST:-postgres}" "$(cat "$secret")"
} > /home/stack-backup/.pgpass
chown stack-backup:stack-backup /home/stack-backup/.pgpass
chown stack-backup:stack-backup /backups && chmod 0700 /backups
# the handoff volume (stack_rules.HANDOFF_*): the sidecar writes the requests, the aiida service the results
requests=$(python3 -c 'import sys; sys.path.insert(0, "/opt/backup"); import stack_rules
print(stack_rules.HANDOFF_REQUESTS)')
if [ -d "$(dirname "$requests")" ]; then
    install -d -o stack-backup -g stack-backup -m 0755 "$requests"
fi
/usr/local/bin/backup-offsite-install  # the offsite key and known_hosts, for the backup user
exec setpriv --reuid=stack-backup --regid=stack-backup --init-groups --reset-env -- \
    env PATH="$PATH" LANG="$LANG" PYTHONUNBUFFERED=1 HOME=/home/stack-backup \
        PGHOST="${PGHOST:-postgres}" PGUSER="${BACKUP_DB_USER:-stack_backup}" \
        BACKUP_SCHEDULE="${BACKUP_SCHEDULE:-}" BACKUP_KEEP_LAST="${BACKUP_KEEP_LAST:-}" \
        BACKUP_KEEP_DAILY="${BACKUP_KEEP_DAILY:-}" BACKUP_KEEP_WEEKLY="${BACKUP_KEEP_WEEKLY:-}" \
        BACKUP_KEEP_MONTHLY="${BACKUP_KEEP_MONTHLY:-}" BACKUP_VERIFY_READ_SHARE="${BACKUP_VERIFY_READ_SHARE:-}" \
        BACKUP_MAINTENANCE="${BACKUP_MAINTENANCE:-}" BACKUP_OFFSITE="${BACKUP_OFFSITE:-}" \
        BACKUP_OFFSITE_INTERVAL="${BACKUP_OFFSITE_INTERVAL:-}" BACKUP_OFFSITE_RECIPIENTS="${BACKUP_OFFSITE_RECIPIENTS:-}" \
        AIIDA_CORE_VERSION="${AIIDA_CORE_VERSION:-}" "$@"
