#!/bin/sh
# stack-profile-db: the PostgreSQL side of an AiiDA profile (role + database aiida_<NAME>).
# The one place that holds this SQL: the entrypoint bootstraps $AIIDA_PROFILE through it, and
# the host (`./stack profile ...`) calls it through `docker compose exec -T postgres`.
#
#   stack-profile-db create NAME     password on stdin (first line): role aiida_NAME (LOGIN, no
#                                    other privileges) owning database aiida_NAME (UTF8, C.UTF-8),
#                                    CONNECT/TEMPORARY revoked from PUBLIC. Exit 3 if either exists.
#   stack-profile-db drop NAME       terminate its connections, drop database and role (exit 0 if absent)
#   stack-profile-db exists NAME     exit 0 if role or database exists, 1 if neither
#   stack-profile-db password NAME   password on stdin: set it IF the role exists (entrypoint; exit 0)
#
# Runs as root or postgres; talks to the server over the unix socket with peer authentication.
# Passwords travel through the environment of psql (\getenv), never argv or the server log.
# Exit codes: 0 ok, 1 failure, 2 usage / invalid name / empty password, 3 already exists.
set -eu

me=stack-profile-db
die() { code=$1; shift; echo "$me: $*" >&2; exit "$code"; }

usage="usage: $me create|drop|exists|password NAME (create/password read the password from stdin)"
[ $# -eq 2 ] || die 2 "$usage"
action=$1
name=$2
case "$action" in create|drop|exists|password) ;; *) die 2 "$usage" ;; esac
echo "$name" | grep -Eqx '[a-z][a-z0-9_]{0,40}' \
    || die 2 "invalid profile name '$name': use ^[a-z][a-z0-9_]{0,40}\$"
role="aiida_$name"

psql_() {  # psql as postgres over the unix socket; errors stop the script, terse messages.
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups psql -X -q -At -v ON_ERROR_STOP=1 \
            -v role="$role" -v backup_role="${BACKUP_DB_USER:-stack_backup}" -d postgres "$@"
    else
        psql -X -q -At -v ON_ERROR_STOP=1 -v role="$role" -v backup_role="${BACKUP_DB_USER:-stack_backup}" \
            -d postgres "$@"
    fi
}

run_sql() {  # run_sql WHAT < SQL: on failure, one line on stderr naming WHAT and the server's reason.
    what=$1
    errors=$(mktemp)
    if psql_ 2>"$errors"; then
        rm -f "$errors"
        return 0
    fi
    reason=$(grep -v '^\s*$' "$errors" | tail -n 1 | sed 's/^psql:[^ ]* //')
    rm -f "$errors"
    echo "$me: $what failed: ${reason:-psql failed}" >&2
    return 1
}

state() {  # prints "<role exists> <database exists>" as t/f
    psql_ <<'SQL'
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')::text || ' '
    || EXISTS (SELECT FROM pg_database WHERE datname = :'role')::text;
SQL
}

read_password() {
    password=
    IFS= read -r password || true
    [ -n "$password" ] || die 2 "no password on stdin (first line) for $role"
    STACK_PROFILE_DB_PW=$password
    export STACK_PROFILE_DB_PW  # read by psql's \getenv
    unset password
}

drop_sql() {
    run_sql "drop $role" <<'SQL'
\set VERBOSITY terse
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'role' \gset
DROP DATABASE IF EXISTS :"role" WITH (FORCE);
DROP ROLE IF EXISTS :"role";
SQL
}

current=$(state 2>&1) || die 1 "cannot query the server over the unix socket: $(echo "$current" | tail -n 1)"
set -- $current
role_exists=$1
db_exists=$2

case "$action" in
exists)
    echo "$role: role $([ "$role_exists" = true ] && echo exists || echo absent), database $([ "$db_exists" = true ] && echo exists || echo absent)"
    [ "$role_exists" = true ] || [ "$db_exists" = true ]
    ;;
create)
    read_password
    [ "$role_exists" = false ] && [ "$db_exists" = false ] \
        || die 3 "$role already exists (role: $role_exists, database: $db_exists); nothing changed"
    # CREATE ROLE on its own first: if it loses a race, nothing of ours needs undoing.
    run_sql "create role $role" <<'SQL' || exit 1
\set VERBOSITY terse
\getenv pw STACK_PROFILE_DB_PW
SET log_min_error_statement = panic;
CREATE ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'pw';
SQL
    if ! run_sql "create database $role" <<'SQL'
\set VERBOSITY terse
CREATE DATABASE :"role" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0
    LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8';
-- Profiles are isolated: only the owning role (and superusers) may connect.
REVOKE CONNECT, TEMPORARY ON DATABASE :"role" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"role" TO :"role";
-- the backup sidecar's read-only role (created by the entrypoint) dumps it
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'role', rolname) FROM pg_roles
WHERE rolname = :'backup_role' \gexec
SQL
    then
        drop_sql || true
        die 1 "undid the creation of $role; nothing changed"
    fi
    echo "created role and database $role"
    ;;
password)
    read_password
    if [ "$role_exists" = false ]; then
        echo "role $role does not exist (profile deleted?): not re-creating it"
        exit 0
    fi
    run_sql "set the password of $role" <<'SQL' || exit 1
\set VERBOSITY terse
\getenv pw STACK_PROFILE_DB_PW
SET log_min_error_statement = panic;
ALTER ROLE :"role" WITH PASSWORD :'pw';
SQL
    echo "password of role $role applied"
    ;;
drop)
    if [ "$role_exists" = false ] && [ "$db_exists" = false ]; then
        echo "$role does not exist: nothing to drop"
        exit 0
    fi
    drop_sql || exit 1
    echo "dropped database and role $role"
    ;;
esac
