#!/bin/sh
# aiida-stack-profile: create / delete / info of the stack's AiiDA profiles (profile_cli.py).
# Meant for `docker compose exec -T -u aiida aiida aiida-stack-profile ...`; started as root it
# drops to the aiida user first, so config.json and the repositories keep their owner.
set -eu
cli=/usr/local/lib/aiida-stack/profile_cli.py
if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=aiida --regid=aiida --init-groups \
        env HOME=/home/aiida USER=aiida LOGNAME=aiida /opt/aiida/bin/python "$cli" "$@"
fi
exec /opt/aiida/bin/python "$cli" "$@"
