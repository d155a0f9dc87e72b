#!/bin/sh
# Starts as root (compose secrets keep the host's root:0600), then execs rabbitmq-server as the
# rabbitmq user. A detached helper waits for the node and, on every start, deletes guest and
# (re)creates $RABBITMQ_USER with the password from the secret; the healthcheck only passes
# after that.
set -eu

MARKER=/run/rabbitmq-stack/ready
die() { echo "rabbitmq-entrypoint: $*" >&2; exit 1; }
as_rabbitmq() { setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$@"; }

[ "$(id -u)" = 0 ] || die "must start as root (it reads root-owned secrets, then drops to rabbitmq)"
user=${RABBITMQ_USER:-}
[ -n "$user" ] || die "RABBITMQ_USER is not set"
[ -n "${RABBITMQ_PASSWORD_FILE:-}" ] && [ -r "$RABBITMQ_PASSWORD_FILE" ] \
    || die "RABBITMQ_PASSWORD_FILE='${RABBITMQ_PASSWORD_FILE:-}' is not readable"
password=$(cat "$RABBITMQ_PASSWORD_FILE")
[ -n "$password" ] || die "empty password secret"

install -d -m 0755 /run/rabbitmq-stack
rm -f "$MARKER"
# Named volumes may come up root-owned. The cookie is created here, before the server and the
# CLI could race to create two different ones.
chown rabbitmq:rabbitmq /var/lib/rabbitmq
if [ ! -s /var/lib/rabbitmq/.erlang.cookie ]; then
    as_rabbitmq sh -c 'umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$HOME/.erlang.cookie"'
    chmod 0400 /var/lib/rabbitmq/.erlang.cookie
fi

# Runs detached (set -e does not apply inside `||`): every step checks its own status.
configure_users() {
    ctl() { as_rabbitmq rabbitmqctl -q "$@"; }
    deadline=$(($(date +%s) + 120))
    # await_startup fails at once while the Erlang node is not up yet: retry until it is.
    until ctl await_startup --timeout 60 >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    users=$(ctl list_users --no-table-headers | cut -f1) || return 1
    if printf '%s\n' "$users" | grep -qxF guest; then
        ctl delete_user guest >/dev/null || return 1
    fi
    # Password on stdin: never in argv or logs.
    if printf '%s\n' "$users" | grep -qxF "$user"; then
        printf '%s\n' "$password" | ctl change_password "$user" >/dev/null || return 1
    else
        printf '%s\n' "$password" | ctl add_user "$user" >/dev/null || return 1
    fi
    ctl set_user_tags "$user" administrator >/dev/null &
    tags=$!
    ctl set_permissions -p / "$user" '.*' '.*' '.*' >/dev/null || return 1
    wait "$tags" || return 1
    touch "$MARKER"
    echo "rabbitmq-entrypoint: user '$user' configured, guest removed"
}

# Double fork: the helper is re-parented to init (tini), which reaps it. If it fails, stop the
# server ($$ becomes rabbitmq-server after exec) so the restart policy tries again.
pid=$$
( (configure_users || { echo "rabbitmq-entrypoint: user setup failed" >&2; kill -TERM "$pid"; }) & )
unset password

exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups rabbitmq-server
