#!/bin/bash
# Docker healthcheck of the aiida service; runs every few seconds, so it must be cheap.
# Healthy = the supervisor's last full check (health.py: broker ✔, and for every profile storage ✔
# and daemon ✔ with workers unless stopped on purpose; `verdi status` alone exits 0 with the daemon
# stopped) passed, is fresh and is about the CURRENT profiles of config.json, AND the circusd of
# every profile whose daemon should run is alive right now. `aiida-healthcheck --full` runs the
# full check instead. Output: the recorded report, whose first line is `profiles: <names>`.
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
checked=$(sed -n '2s/^profiles: //p' "$status")
# The profiles as config.json says now, and those whose daemon should run (plain python3: no aiida
# import, a few ms).
read -r current running < <(python3 - "$aiida_dir" <<'PY' 2>/dev/null
import json, os, sys
sys.path.insert(0, "/usr/local/lib/aiida-stack")
from stack_rules import daemon_stop_marker
home = sys.argv[1]
names = sorted(json.load(open(os.path.join(home, "config.json"))).get("profiles", {}))
wanted = [n for n in names if not os.path.exists(os.path.join(home, "stack", daemon_stop_marker(n)))]
print(",".join(names), ",".join(wanted) or "-")
PY
)
[ -n "$checked" ] && [ "$checked" = "${current:-}" ] \
    || { echo "✘ profiles are '${current:-}', last full check was for '${checked}' (a profile added or removed)"; exit 1; }
IFS=, read -r -a wanted <<< "${running:--}"
for name in "${wanted[@]}"; do
    [ "$name" = "-" ] && continue
    pid_file="$aiida_dir/daemon/circus-${name}.pid"
    pid=$(cat "$pid_file" 2>/dev/null) && kill -0 "$pid" 2>/dev/null \
        || { echo "✘ ${name}: daemon: circusd is not running (${pid_file})"; exit 1; }
done
tail -n +2 "$status"
