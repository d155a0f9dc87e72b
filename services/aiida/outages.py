"""A PostgreSQL restart, noticed and recovered from, without a hand touching it.

Measured here: PostgreSQL's main process SIGKILLed during 40 calculations. The container was back
in seconds, but each daemon worker kept a SQLAlchemy session it never rolled back
(PendingRollbackError in the daemon log) and its processes stayed `Waiting` for good. A daemon
restart alone did not help (the tasks of the processes the workers held were gone with them);
stop → `verdi process repair` (re-creates the lost tasks, and needs the daemon stopped) → start
did, and all 40 finished. So the supervisor looks at PostgreSQL's start time
(pg_postmaster_start_time()) every POLL seconds, and when it differs from the one seen before it
stops every running daemon, repairs each profile, and lets its usual check start them again.

A RabbitMQ restart needs none of this: with the broker SIGKILLed the same way, all 40 finished on
their own (the workers reconnect; the task queues are durable).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import compat
import daemon
import warm
from common import disabled_file, log, read_config, verdi

POLL = float(os.environ.get("AIIDA_OUTAGE_POLL", "5"))
REPAIR_TIMEOUT = 300


def postgres_start_time(config: dict | None = None) -> str | None:
    """PostgreSQL's start time, read with the first psql_dos profile's credentials; None when it does
    not answer (down, restarting, no such profile yet)."""
    config = read_config() if config is None else config
    for entry in config.get("profiles", {}).values():
        storage = entry.get("storage") or {}
        if storage.get("backend") != "core.psql_dos":
            continue
        db = storage.get("config") or {}
        # the password goes to psql's environment: readable by this uid only, like the config.json it is from
        env = {**os.environ, "PGPASSWORD": str(db.get("database_password", "")), "PGCONNECT_TIMEOUT": "3"}
        try:
            done = subprocess.run(["psql", "-XAtq", "-h", str(db.get("database_hostname")), "-p",
                                   str(db.get("database_port", 5432)), "-U", str(db.get("database_username")),
                                   "-d", str(db.get("database_name")), "-c", "SELECT pg_postmaster_start_time()"],
                                  capture_output=True, text=True, env=env, timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None
    return None


class PostgresWatch:
    """PostgreSQL's start time as last seen; `restarted()` is True once after it changed."""

    def __init__(self) -> None:
        self.started: str | None = None
        self.next_look = 0.0

    def restarted(self) -> bool:
        if time.monotonic() < self.next_look:
            return False
        self.next_look = time.monotonic() + POLL
        now = postgres_start_time()
        if now is None:  # down or restarting: look again later, the start time will tell
            return False
        before, self.started = self.started, now
        if before is not None and now != before:
            log(f"PostgreSQL restarted (up since {before}, now since {now}): recovering the daemons")
            return True
        return False


def recover(names: list[str]) -> list[str]:
    """Stop every running daemon of `names` (at once), repair each profile's process tasks; the
    supervisor's next look starts them again. Returns the profiles recovered."""
    running = [name for name in names if not disabled_file(name).exists() and daemon.circusd_pid(name) is not None]
    stoppers = [threading.Thread(target=daemon.stop, args=(name,), name=f"stop-{name}") for name in running]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()
    for name in running:
        done = verdi(*compat.repair_args(name), check=False, timeout=REPAIR_TIMEOUT, runner=warm.run_verdi)
        log(f"{name!r}: process tasks repaired after the outage" if done.returncode == 0
            else f"WARNING: repairing the process tasks of {name!r} failed (exit {done.returncode})")
    return running
