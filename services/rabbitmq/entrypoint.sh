#!/bin/sh
# Starts as root (compose secrets keep the host's root:0600), writes the broker's definitions, then
# execs rabbitmq-server as the rabbitmq user.
#
# The stack's user is loaded by the node itself at boot (rabbitmq.conf: load_definitions), before its
# AMQP listener opens: a client that can connect can log in, and no CLI call (an Erlang VM boot each)
# is needed after the boot. The definitions hold the password only as RabbitMQ stores it (salted
# SHA-256). They are imported at every start, so a new secret takes effect with the next start. A
# node that loads definitions never creates `guest`; the user has no tags (no management rights).
set -eu

DEFINITIONS=/run/rabbitmq-stack/definitions.json
die() { echo "rabbitmq-entrypoint: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must start as root (it reads root-owned secrets, then drops to rabbitmq)"
[ -n "${RABBITMQ_USER:-}" ] || die "RABBITMQ_USER is not set"
[ -n "${RABBITMQ_PASSWORD_FILE:-}" ] && [ -r "$RABBITMQ_PASSWORD_FILE" ] \
    || die "RABBITMQ_PASSWORD_FILE='${RABBITMQ_PASSWORD_FILE:-}' is not readable"

install -d -m 0755 /run/rabbitmq-stack
install -m 0600 -o rabbitmq -g rabbitmq /dev/null "$DEFINITIONS"
python3 - "$RABBITMQ_PASSWORD_FILE" "$RABBITMQ_USER" "$DEFINITIONS" <<'PY' || exit 1
import base64, hashlib, json, os, sys

secret, user, target = sys.argv[1:]
password = open(secret, "rb").read().rstrip(b"\n")
if not password:
    sys.exit("rabbitmq-entrypoint: empty password secret")
salt = os.urandom(4)  # rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))
hashed = base64.b64encode(salt + hashlib.sha256(salt + password).digest()).decode()
definitions = {
    "users": [{"name": user, "password_hash": hashed, "hashing_algorithm": "rabbit_password_hashing_sha256",
               "tags": []}],
    "vhosts": [{"name": "/"}],
    "permissions": [{"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
}
with open(target, "w") as handle:
    json.dump(definitions, handle)
PY

# Named volumes may come up root-owned. The cookie is created here, before the server and the
# CLI could race to create two different ones.
chown rabbitmq:rabbitmq /var/lib/rabbitmq
if [ ! -s /var/lib/rabbitmq/.erlang.cookie ]; then
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        sh -c 'umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$HOME/.erlang.cookie"'
    chmod 0400 /var/lib/rabbitmq/.erlang.cookie
fi

exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups rabbitmq-server
