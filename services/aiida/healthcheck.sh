#!/bin/bash
# Docker healthcheck of the aiida service; runs every few seconds, so it must be cheap.
# Healthy = the supervisor's last full check (health.py: storage ✔, broker ✔, daemon ✔ with
# workers; `verdi status` alone exits 0 with the daemon stopped) passed and is fresh, AND the
# daemon's circusd is alive right now. `aiida-healthcheck --full` runs the full check instead.
set -u
if [ "${1:-}" = "--full" ]; then
    exec setpriv --reuid=aiida --regid=aiida --init-groups env HOME=/home/aiida USER=aiida \
        timeout 14 /opt/aiida/bin/python /usr/local/lib/aiida-stack/health.py
fi
status=${AIIDA_HEALTH_FILE:-/run/aiida-stack/health}
max_age=${AIIDA_HEALTH_MAX_AGE:-90}
pid_file="${AIIDA_PATH:-/home/aiida}/.aiida/daemon/circus-${AIIDA_PROFILE:-default}.pid"

[ -f "$status" ] || { echo "no full health check recorded yet"; exit 1; }
age=$(( $(date +%s) - $(stat -c %Y "$status") ))
[ "$age" -le "$max_age" ] || { echo "last full health check is ${age} s old (supervisor stuck?)"; exit 1; }
[ "$(head -n 1 "$status")" = "ok" ] || { tail -n +2 "$status"; exit 1; }
pid=$(cat "$pid_file" 2>/dev/null) && kill -0 "$pid" 2>/dev/null \
    || { echo "✘ daemon: circusd is not running (${pid_file})"; exit 1; }
tail -n +2 "$status"
