#!/bin/bash
# aiida service entrypoint. Starts as root (compose file secrets are root-owned 0600 bind mounts),
# reads the secrets into the environment of the service process, fixes the ownership of the
# aiida-home volume, then drops to the unprivileged `aiida` user (uid 1000) with setpriv and
# execs the supervisor (profile bootstrap + daemon supervision, services/aiida/supervisor.py).
#
# With arguments, runs them as `aiida` instead (e.g. `docker compose run --rm aiida verdi status`).
set -euo pipefail

AIIDA_USER=aiida
AIIDA_HOME_DIR="${AIIDA_PATH:-/home/aiida}/.aiida"
SUPERVISOR=/usr/local/lib/aiida-stack/supervisor.py

log() { printf '%s aiida-entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

as_aiida() {
    if [ "$(id -u)" = 0 ]; then
        exec setpriv --reuid="$AIIDA_USER" --regid="$AIIDA_USER" --init-groups \
            env HOME=/home/aiida USER="$AIIDA_USER" LOGNAME="$AIIDA_USER" "$@"
    fi
    exec "$@"
}

read_secret() {  # read_secret VAR FILE SETTING: exports VAR, never echoes the value
    local var="$1" file="$2" setting="$3" value
    if [ ! -r "$file" ]; then
        log "ERROR: secret file $file ($setting) is missing or unreadable (running as uid $(id -u))"; exit 1
    fi
    value="$(<"$file")"
    value="${value%$'\n'}"
    if [ -z "$value" ]; then
        log "ERROR: secret file $file ($setting) is empty"; exit 1
    fi
    export "$var=$value"
}

if [ "$(id -u)" = 0 ]; then
    install -d -o "$AIIDA_USER" -g "$AIIDA_USER" -m 0755 "$AIIDA_HOME_DIR"
    # A fresh named volume inherits the image's ownership; files written by root (a restore, a
    # `docker compose exec` without `-u aiida`) are handed back. find stops at the first hit.
    if [ -n "$(find "$AIIDA_HOME_DIR" -xdev ! -user "$AIIDA_USER" -print -quit)" ]; then
        log "fixing ownership of $AIIDA_HOME_DIR (files not owned by $AIIDA_USER found)"
        chown -R "$AIIDA_USER:$AIIDA_USER" "$AIIDA_HOME_DIR"
    fi
    /usr/local/bin/aiida-stack-ssh-install  # the stack's SSH key, known_hosts and ssh_config (ops/ssh.py)
    # the handoff volume (stack_rules.HANDOFF_*): this service writes the results, the sidecar the requests
    results=$(python3 -c 'import sys; sys.path.insert(0, "/usr/local/lib/aiida-stack"); import stack_rules
print(stack_rules.HANDOFF_RESULTS)')
    if [ -d "$(dirname "$results")" ]; then
        install -d -o "$AIIDA_USER" -g "$AIIDA_USER" -m 0755 "$results"
    fi
fi

if [ "$#" -gt 0 ]; then
    as_aiida "$@"
fi

read_secret AIIDA_STACK_DB_PASSWORD "${AIIDA_DB_PASSWORD_FILE:-/run/secrets/aiida_db_password}" AIIDA_DB_PASSWORD_FILE
read_secret AIIDA_STACK_BROKER_PASSWORD "${RABBITMQ_PASSWORD_FILE:-/run/secrets/rabbitmq_password}" RABBITMQ_PASSWORD_FILE

as_aiida /opt/aiida/bin/python -u "$SUPERVISOR"
