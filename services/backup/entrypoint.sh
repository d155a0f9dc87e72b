#!/bin/sh
# Starts as root only to hand the PostgreSQL secret (a root 0600 bind mount) to the backup
# user as ~/.pgpass, then drops privileges for good.
set -eu
secret=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}
[ -r "$secret" ] || { echo "backup: missing secret $secret" >&2; exit 1; }
umask 077
printf '%s:5432:*:%s:%s\n' "${PGHOST:-postgres}" "${PGUSER:-postgres}" "$(cat "$secret")" > /home/stack-backup/.pgpass
chown stack-backup:stack-backup /home/stack-backup/.pgpass
chown stack-backup:stack-backup /backups && chmod 0700 /backups
exec setpriv --reuid=stack-backup --regid=stack-backup --init-groups --reset-env -- \
    env PATH="$PATH" LANG="$LANG" PYTHONUNBUFFERED=1 HOME=/home/stack-backup \
        PGHOST="${PGHOST:-postgres}" PGUSER="${PGUSER:-postgres}" "$@"
