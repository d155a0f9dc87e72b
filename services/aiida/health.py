"""Health check of the aiida service (run by /usr/local/bin/aiida-healthcheck as user aiida).

Exit 0 only when the broker answers and, for EVERY profile of config.json:
  storage ✔  the database is reachable and its schema matches this aiida-core,
  daemon  ✔  circusd answers and runs at least one worker, unless the daemon is stopped on
             purpose (./stack daemon.stop --profile P: a daemon that should not run is no failure).
`verdi status` is not enough: it exits 0 with the daemon stopped. The first line lists the profiles
checked (the cheap Docker healthcheck compares it with config.json); one line per check follows.
"""

from __future__ import annotations

import sys
import time
import warnings

import compat
import daemon
from common import disabled_file, write_atomic

DAEMON_TIMEOUT = 5


def check_profile(profile, settle: float = 0.0) -> bool:
    """settle: seconds to wait for a daemon that is starting right now to answer (0: it must answer now)."""
    from aiida.engine.daemon.client import DaemonClient

    try:
        storage = profile.storage_cls(profile)
    except Exception as exc:
        print(f"✘ {profile.name}: storage: {compat.storage_problem(profile) or f'{type(exc).__name__}: {exc}'}")
        return False
    storage.close()
    if disabled_file(profile.name).exists():
        print(f"✔ {profile.name}: storage ok; daemon stopped on purpose (./stack daemon.start --profile "
              f"{profile.name})")
        return True
    deadline = time.monotonic() + settle
    while daemon.circusd_pid(profile.name) is None and time.monotonic() < deadline:
        time.sleep(0.1)  # a circus call to a daemon that is not up yet would only wait out its timeout
    while True:
        try:
            client = DaemonClient(profile)
            workers = compat.daemon_workers(client, DAEMON_TIMEOUT)
            if workers < 1:
                raise RuntimeError("daemon is running without workers")
            break
        except Exception as exc:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            print(f"✘ {profile.name}: daemon: {type(exc).__name__}: {exc}")
            return False
    print(f"✔ {profile.name}: storage ok; daemon running with {workers} worker(s), PID {client.get_daemon_pid()}")
    return True


def main(settle: float = 0.0, starting: tuple[str, ...] | list[str] = ()) -> int:
    warnings.filterwarnings("ignore")
    from aiida.manage import get_manager
    from aiida.manage.configuration import get_config, load_profile

    config = get_config()
    profiles = sorted(config.profiles, key=lambda p: p.name)
    print(f"profiles: {','.join(p.name for p in profiles)}")
    if not profiles:
        print("✘ profile: none configured")
        return 1
    default = config.get_profile(None) if config.default_profile_name else profiles[0]
    load_profile(default.name, allow_switch=True)
    manager = get_manager()
    ok = True
    try:
        print(f"✔ broker: {compat.check_broker(manager)}")
    except Exception as exc:
        print(f"✘ broker: {type(exc).__name__}: {exc}")
        ok = False
    for profile in profiles:
        ok = check_profile(profile, settle if profile.name in starting else 0.0) and ok
    return 0 if ok else 1


def record(path: str, settle: float = 0.0, starting: tuple[str, ...] | list[str] = ()) -> int:
    """Run the full check and publish its verdict atomically: first line ok/fail, then the report
    (whose first line is `profiles: <names>`: the cheap check compares it with config.json).

    The supervisor calls this every HEALTH_INTERVAL s, and while it starts daemons (settle: how long the
    daemons of `starting` may take to answer; broker and storage are checked meanwhile); the Docker
    healthcheck only reads the verdict (cheap), because a full check needs aiida imported.
    """
    import contextlib
    import io

    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        code = main(settle, starting)
    write_atomic(path, ("ok" if code == 0 else "fail") + "\n" + report.getvalue())
    return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--record":
        sys.exit(record(sys.argv[2]))
    sys.exit(main())
