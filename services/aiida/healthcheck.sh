#!/bin/bash
# Docker healthcheck of the aiida service; runs every few seconds, so it must be cheap.
# Healthy = the supervisor's last full check (health.py: storage ✔, broker ✔, daemon ✔ with
# workers, for the default profile; `verdi status` alone exits 0 with the daemon stopped) passed,
# is fresh and is about the CURRENT default profile of config.json, AND that profile's circusd is
# alive right now. `aiida-healthcheck --full` runs the full check instead.
# Output: the recorded report, whose first line is `profile: <name>`.
set -u
if [ "${1:-}" = "--full" ]; then
    exec setpriv --reuid=aiida --regid=aiida --init-groups env HOME=/home/aiida USER=aiida \
        timeout 14 /opt/aiida/bin/python /usr/local/lib/aiida-stack/health.py
fi
status=${AIIDA_HEALTH_FILE:-/run/aiida-stack/health}
max_age=${AIIDA_HEALTH_MAX_AGE:-90}
aiida_dir="${AIIDA_PATH:-/home/aiida}/.aiida"

[ -f "$status" ] || { echo "no full health check recorded yet"; exit 1; }
age=$(( $(date +%s) - $(stat -c %Y "$status") ))
[ "$age" -le "$max_age" ] || { echo "last full health check is ${age} s old (supervisor stuck?)"; exit 1; }
[ "$(head -n 1 "$status")" = "ok" ] || { tail -n +2 "$status"; exit 1; }
checked=$(sed -n '2s/^profile: //p' "$status")
# The default profile as config.json says now (plain python3: no aiida import, a few ms).
default=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("default_profile") or "")' \
    "$aiida_dir/config.json" 2>/dev/null)
[ -n "$checked" ] && [ "$checked" = "$default" ] \
    || { echo "✘ default profile is '${default}', last full check was for '${checked}' (daemon moving)"; exit 1; }
pid_file="$aiida_dir/daemon/circus-${checked}.pid"
pid=$(cat "$pid_file" 2>/dev/null) && kill -0 "$pid" 2>/dev/null \
    || { echo "✘ daemon: circusd is not running (${pid_file})"; exit 1; }
tail -n +2 "$status"
