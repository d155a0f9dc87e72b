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

# Erlang run inside the node by ONE `rabbitmqctl eval` (each CLI call boots an Erlang VM, about a
# CPU-second; the five calls this took before cost seconds of every start). The password comes from
# a file only rabbitmq reads, never from argv or a log; the user's name from the node's environment.
SETUP_USERS='
User = list_to_binary(os:getenv("RABBITMQ_USER")),
Acting = <<"aiida-stack">>,
{ok, Password} = file:read_file("/run/rabbitmq-stack/password"),
ok = case rabbit_auth_backend_internal:lookup_user(User) of
    {ok, _} -> rabbit_auth_backend_internal:change_password(User, Password, Acting);
    _ -> rabbit_auth_backend_internal:add_user(User, Password, Acting)
end,
ok = rabbit_auth_backend_internal:set_tags(User, [administrator], Acting),
ok = rabbit_auth_backend_internal:set_permissions(User, <<"/">>, <<".*">>, <<".*">>, <<".*">>, Acting),
ok = case rabbit_auth_backend_internal:lookup_user(<<"guest">>) of
    {ok, _} -> rabbit_auth_backend_internal:delete_user(<<"guest">>, Acting);
    _ -> ok
end,
configured.'

# Runs detached (set -e does not apply inside `||`): every step checks its own status.
configure_users() {
    deadline=$(($(date +%s) + 120))
    # The AMQP listener answers once the node has booted (networking is its last boot step).
    until /usr/local/bin/rabbitmq-healthcheck --listener >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
    install -m 0600 -o rabbitmq -g rabbitmq /dev/null /run/rabbitmq-stack/password || return 1
    printf '%s' "$password" > /run/rabbitmq-stack/password || return 1
    result=$(as_rabbitmq rabbitmqctl -q eval "$SETUP_USERS" 2>&1)
    rm -f /run/rabbitmq-stack/password
    [ "$result" = "configured" ] || { echo "rabbitmq-entrypoint: user setup said: $result" >&2; return 1; }
    touch "$MARKER"
    echo "rabbitmq-entrypoint: user '$user' configured, guest removed"
}

# Double fork: the helper is re-parented to init (tini), which reaps it. If it fails, stop the
# server ($$ becomes rabbitmq-server after exec) so the restart policy tries again.
pid=$$
( (configure_users || { echo "rabbitmq-entrypoint: user setup failed" >&2; kill -TERM "$pid"; }) & )
unset password

exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups rabbitmq-server
