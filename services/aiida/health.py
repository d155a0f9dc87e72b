"""Health check of the aiida service (run by /usr/local/bin/aiida-healthcheck as user aiida).

Exit 0 only when, for the DEFAULT profile of config.json (the one whose daemon the supervisor runs):
  storage ✔  the database is reachable and its schema matches this aiida-core,
  broker  ✔  RabbitMQ accepts a connection with the profile's credentials,
  daemon  ✔  circusd answers and runs at least one worker.
`verdi status` is not enough: it exits 0 with the daemon stopped. One line per check is printed
(docker inspect shows the output of the last checks); the first line names the profile.
"""

from __future__ import annotations

import os
import sys
import warnings

import compat

DAEMON_TIMEOUT = 5


def main() -> int:
    warnings.filterwarnings("ignore")
    from aiida.manage import get_manager
    from aiida.manage.configuration import get_config, load_profile

    try:
        config = get_config()
        profile = config.get_profile(None)
    except Exception as exc:
        print(f"profile: (none)\n✘ profile: no default profile configured: {type(exc).__name__}")
        return 1
    print(f"profile: {profile.name}")
    load_profile(profile.name, allow_switch=True)
    manager = get_manager()
    ok = True

    try:
        storage = profile.storage_cls(profile)
    except Exception as exc:
        print(f"✘ storage: {compat.storage_problem(profile) or f'{type(exc).__name__}: {exc}'}")
        ok = False
    else:
        print(f"✔ storage: {storage}")
        storage.close()

    try:
        broker = compat.check_broker(manager)
    except Exception as exc:
        print(f"✘ broker: {type(exc).__name__}: {exc}")
        ok = False
    else:
        print(f"✔ broker: {broker}")

    disabled = os.path.join(config.dirpath, "stack", "daemon.disabled")
    try:
        client = manager.get_daemon_client()
        workers = compat.daemon_workers(client, DAEMON_TIMEOUT)
        if workers < 1:
            raise RuntimeError("daemon is running without workers")
    except Exception as exc:
        hint = " (intentionally stopped: daemon.disabled is set)" if os.path.exists(disabled) else ""
        print(f"✘ daemon: {type(exc).__name__}: {exc}{hint}")
        ok = False
    else:
        print(f"✔ daemon: running with {workers} worker(s), PID {client.get_daemon_pid()}")

    return 0 if ok else 1


def record(path: str) -> int:
    """Run the full check and publish its verdict atomically: first line ok/fail, then the report
    (whose first line is `profile: <name>`: the cheap check compares it with the current default).

    The supervisor calls this every RECORD_INTERVAL s; the Docker healthcheck only reads it (cheap),
    because a full check imports aiida and costs about two CPU-seconds.
    """
    import contextlib
    import io

    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        code = main()
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(("ok" if code == 0 else "fail") + "\n" + report.getvalue())
    os.replace(tmp, path)
    return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--record":
        sys.exit(record(sys.argv[2]))
    sys.exit(main())
