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
[ -n "$PG_SUPER_PW" ] && [ -n "$AIIDA_DB_PW" ] || die "empty password secret"
export PG_SUPER_PW AIIDA_DB_PW   # read by psql's \getenv: never in argv or logs

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

as_postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
\set VERBOSITY terse
\set SHOW_CONTEXT never
\getenv super_pw PG_SUPER_PW
SET log_min_error_statement = panic;
ALTER ROLE postgres WITH PASSWORD :'super_pw';
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
unset PG_SUPER_PW AIIDA_DB_PW
echo "postgres-entrypoint: roles ready; starting postgres"
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c "config_file=$CONF"
