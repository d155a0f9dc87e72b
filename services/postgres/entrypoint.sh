#!/bin/sh
# Starts as root (compose secrets keep the host's root:0600). On a new cluster it creates the
# bootstrap profile's role and database ($AIIDA_PROFILE, through stack-profile-db, which holds
# the profile SQL); on every start it re-applies the superuser password and, if that role still
# exists, the profile's password from the secrets. Then it execs postgres as the postgres user.
set -eu

CONF=/etc/postgresql/aiida-stack/postgresql.conf
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
BOOTSTRAPPED="$PGDATA/aiida-stack.bootstrapped"

die() { echo "postgres-entrypoint: $*" >&2; exit 1; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
read_secret() {
    [ -n "${2:-}" ] || die "$1 is not set"
    [ -r "$2" ] || die "$1=$2 is not readable"
    cat "$2"
}

[ "$(id -u)" = 0 ] || die "must start as root (it reads root-owned secrets, then drops to postgres)"
profile=${AIIDA_PROFILE:-}
echo "$profile" | grep -Eqx '[a-z][a-z0-9_]{0,40}' \
    || die "AIIDA_PROFILE='$profile' is invalid: use ^[a-z][a-z0-9_]{0,40}\$"
role="aiida_$profile"

PG_SUPER_PW=$(read_secret POSTGRES_PASSWORD_FILE "${POSTGRES_PASSWORD_FILE:-}")
AIIDA_DB_PW=$(read_secret AIIDA_DB_PASSWORD_FILE "${AIIDA_DB_PASSWORD_FILE:-}")
BACKUP_DB_PW=$(read_secret BACKUP_DB_PASSWORD_FILE "${BACKUP_DB_PASSWORD_FILE:-}")
BACKUP_DB_USER=${BACKUP_DB_USER:-stack_backup}
[ -n "$PG_SUPER_PW" ] && [ -n "$AIIDA_DB_PW" ] && [ -n "$BACKUP_DB_PW" ] || die "empty password secret"
export PG_SUPER_PW AIIDA_DB_PW BACKUP_DB_PW   # read by psql's \getenv: never in argv or logs

# Named volumes may come up root-owned.
chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "postgres-entrypoint: initialising $PGDATA (UTF8, C.UTF-8)"
    # Without an explicit encoding a bare container gets SQL_ASCII, which breaks aiida-core.
    as_postgres initdb -D "$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi

# Temporary server on the unix socket only: clients (and the healthcheck) see nothing until
# the roles match the secrets.
as_postgres pg_ctl -D "$PGDATA" -s -w -t 60 \
    -o "-c config_file=$CONF -c listen_addresses=''" start

as_postgres psql -X -q -v ON_ERROR_STOP=1 -v backup_role="$BACKUP_DB_USER" -d postgres <<'SQL'
\set VERBOSITY terse
\set SHOW_CONTEXT never
\getenv super_pw PG_SUPER_PW
\getenv backup_pw BACKUP_DB_PW
SET log_min_error_statement = panic;
ALTER ROLE postgres WITH PASSWORD :'super_pw';
-- The backup sidecar's role: reads everything (pg_read_all_data), writes nothing, owns nothing.
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'backup_role') AS backup_role_missing \gset
\if :backup_role_missing
CREATE ROLE :"backup_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
\endif
ALTER ROLE :"backup_role" WITH PASSWORD :'backup_pw';
GRANT pg_read_all_data TO :"backup_role";
-- CONNECT on every profile's database (revoked from PUBLIC there); new ones get it in stack-profile-db.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', datname, :'backup_role')
FROM pg_database WHERE datname LIKE 'aiida\_%' \gexec
SQL

# The bootstrap profile's role and database are created once, when the cluster is new (a marker
# in PGDATA records it, so an interrupted first start retries). Later starts only re-apply the
# password, and only if the role still exists: a deleted bootstrap profile stays deleted.
if [ ! -e "$BOOTSTRAPPED" ]; then
    status=0
    printf '%s\n' "$AIIDA_DB_PW" | stack-profile-db create "$profile" || status=$?
    case $status in
        0) ;;
        3) printf '%s\n' "$AIIDA_DB_PW" | stack-profile-db password "$profile" ;;  # volume older than the marker
        *) as_postgres pg_ctl -D "$PGDATA" -s -w -m fast stop; die "bootstrap of $role failed" ;;
    esac
    as_postgres touch "$BOOTSTRAPPED"
else
    printf '%s\n' "$AIIDA_DB_PW" | stack-profile-db password "$profile"
fi

as_postgres pg_ctl -D "$PGDATA" -s -w -m fast stop
unset PG_SUPER_PW AIIDA_DB_PW BACKUP_DB_PW
echo "postgres-entrypoint: roles ready; starting postgres"
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c "config_file=$CONF"
