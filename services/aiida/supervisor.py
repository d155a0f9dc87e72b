"""aiida service supervisor: first-start bootstrap + supervision of every profile's daemon (user aiida).

Started by entrypoint.sh after it has read the compose secrets as root; the passwords arrive in
AIIDA_STACK_DB_PASSWORD / AIIDA_STACK_BROKER_PASSWORD and are removed from the environment at
once, so verdi sub-commands, circusd and the daemon workers never inherit them.

1. wait for PostgreSQL (pg_isready) and RabbitMQ (TCP: the broker's user exists before its listener
   opens) until a deadline; the container starts with theirs, not after their health;
2. remove stale circus PID files and orphaned workers of every profile: nothing of a daemon can
   be alive in a fresh container;
3. first start only (config.json has no profile and none was ever set up): `verdi profile setup
   core.psql_dos` of $AIIDA_PROFILE (profiles.py). Other profiles come from aiida-stack-profile;
4. every start: re-sync config.json with the secrets and settings (profiles.sync_config), the
   `localhost` computer of the default profile if missing; keep only the newest 20 of aiida-core's
   timestamped config.json copies. A config.json written by a newer aiida-core (which this one
   cannot read) is waited out, not crashed on: an upgrade's rollback puts the old one back;
   a profile whose storage schema is not this aiida-core's gets no daemon and no computer until it
   is (`verdi storage migrate`, run by ./stack upgrade: the service never migrates);
5. supervise the daemon of EVERY profile of config.json (re-read every second: a new profile gets
   its daemon, a deleted one is dropped); every AIIDA_SUPERVISE_INTERVAL s restart a dead daemon -
   unless $AIIDA_PATH/.aiida/stack/daemon.disabled.<profile> exists (intentional stop, kept across
   restarts) or a profile CLI holds that profile (stack/hold.<profile>); `verdi -p P daemon start`
   without a count, so each profile's daemon.default_workers applies; a daemon that runs fewer
   workers than that for AIIDA_WORKER_GRACE s gets them back (extra workers from `daemon incr` stay
   until `daemon decr` or a restart). Each daemon has its own circusd and works only its profile's
   queues (named by the profile's UUID);
6. record the full health check (health.py) for the cheap Docker healthcheck;
   daemon starts and health checks run in children of one process with aiida imported (warm.py);
7. serve the backup sidecar's requests for basic maintenance before its scheduled backups (handoff.py);
8. SIGTERM/SIGINT: stop every daemon at once (hard kill after a few seconds), exit 0.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import compat
import daemon
import handoff
import health
import outages
import profiles
import warm
from common import (
    AIIDA_PATH,
    BOOTSTRAPPED_FILE,
    BROKER_FILE,
    CONFIG_FILE,
    DAEMON_DIR,
    LEGACY_DISABLED_FILE,
    STACK_DIR,
    add_secret,
    daemon_workers_setting,
    default_profile,
    disabled_file,
    log,
    profile_names,
    write_atomic,
)
from watching import INTERVAL, Watch, blocked, check_daemon, ready, start_daemons, storage_ready

BOOTSTRAP_PROFILE = os.environ.get("AIIDA_PROFILE") or "default"
DB_HOST = profiles.DB_HOST
DB_PORT = profiles.DB_PORT
BROKER_HOST = os.environ.get("RABBITMQ_HOST", "rabbitmq")
BROKER_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))

WAIT_TIMEOUT = float(os.environ.get("AIIDA_WAIT_TIMEOUT", "120"))
# Full health check (storage, broker, daemon) recorded for the cheap Docker healthcheck to read.
HEALTH_FILE = pathlib.Path(os.environ.get("AIIDA_HEALTH_FILE", "/run/aiida-stack/health"))
HEALTH_INTERVAL = float(os.environ.get("AIIDA_HEALTH_INTERVAL", "30"))
START_SETTLE = 15.0  # seconds the check run alongside daemon starts waits for them to answer
DISABLED_POLL = 0.1  # seconds between looks at the stop markers (daemon.start and .stop on the host)

DB_PASSWORD = os.environ.pop("AIIDA_STACK_DB_PASSWORD", "")
BROKER_PASSWORD = os.environ.pop("AIIDA_STACK_BROKER_PASSWORD", "")
add_secret(DB_PASSWORD)
add_secret(BROKER_PASSWORD)
BROKER = {
    "broker_username": os.environ.get("RABBITMQ_USER", "aiida"),
    "broker_password": BROKER_PASSWORD,
    "broker_host": BROKER_HOST,
    "broker_port": BROKER_PORT,
    "broker_virtual_host": os.environ.get("RABBITMQ_VHOST", ""),
}

stopping = threading.Event()


def wait_for_services() -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    pg_ok = rmq_ok = False
    last_report = 0.0
    while True:
        if stopping.is_set():
            sys.exit(0)
        if not pg_ok:
            probe = ["pg_isready", "-q", "-h", DB_HOST, "-p", str(DB_PORT), "-t", "2"]
            pg_ok = subprocess.run(probe, check=False).returncode == 0
        if not rmq_ok:
            try:
                socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2).close()
                rmq_ok = True
            except OSError:
                pass
        if pg_ok and rmq_ok:
            break
        now = time.monotonic()
        missing = [n for n, ok in ((f"PostgreSQL {DB_HOST}:{DB_PORT}", pg_ok),
                                   (f"RabbitMQ {BROKER_HOST}:{BROKER_PORT}", rmq_ok)) if not ok]
        if now > deadline:
            log(f"ERROR: gave up after {WAIT_TIMEOUT:.0f} s waiting for {' and '.join(missing)} (AIIDA_WAIT_TIMEOUT)")
            sys.exit(1)
        if now - last_report > 10:
            log(f"waiting for {' and '.join(missing)} ...")
            last_report = now
        stopping.wait(0.2)  # they boot alongside this container: every tenth of a second counts
    log(f"PostgreSQL {DB_HOST}:{DB_PORT} and RabbitMQ {BROKER_HOST}:{BROKER_PORT} are reachable")


def bootstrap() -> None:
    """Set up $AIIDA_PROFILE on the very first start only (no profile, never bootstrapped)."""
    if profile_names():
        BOOTSTRAPPED_FILE.touch()
        return
    if BOOTSTRAPPED_FILE.exists():
        log(f"no profile in {CONFIG_FILE} (all deleted): nothing to supervise until one is created "
            "(aiida-stack-profile create)")
        return
    log(f"no profile in {CONFIG_FILE}: first start, setting up profile {BOOTSTRAP_PROFILE!r}")
    user = {
        "email": os.environ.get("AIIDA_USER_EMAIL", "aiida@localhost"),
        "first_name": os.environ.get("AIIDA_USER_FIRST_NAME", "AiiDA"),
        "last_name": os.environ.get("AIIDA_USER_LAST_NAME", "User"),
        "institution": os.environ.get("AIIDA_USER_INSTITUTION", "aiida-stack"),
    }
    profiles.setup_profile(BOOTSTRAP_PROFILE, DB_PASSWORD, BROKER, user, set_default=True,
                           db_user=os.environ.get("AIIDA_DB_USER"), db_name=os.environ.get("AIIDA_DB_NAME"))
    BOOTSTRAPPED_FILE.touch()
    log(f"profile {BOOTSTRAP_PROFILE!r} created")


def wait_for_readable_config() -> None:
    """Wait (up, unhealthy, no daemon) while config.json was written by a newer aiida-core: this one
    cannot read it, and crash-looping would also stop `docker compose exec` from putting the old
    one back (what an upgrade's rollback does). It is never downgraded here."""
    problem = compat.config_problem(CONFIG_FILE)
    if problem is None:
        return
    log(f"ERROR: {problem}: waiting until a config.json that this aiida-core reads is in place")
    while problem is not None:
        if stopping.wait(2):
            sys.exit(0)
        problem = compat.config_problem(CONFIG_FILE)
    log("config.json is readable now: going on")


def write_broker_file() -> None:
    write_atomic(BROKER_FILE, json.dumps({"broker_protocol": "amqp", **BROKER}), mode=0o600)


last_verdict: list[bool] = []  # the previous full check's result, to log changes only


def record_health(starting: list[str] | None = None, result: list[bool] | None = None) -> bool:
    """Record the full check; the daemons of `starting` (being started now) get START_SETTLE s to answer."""
    settle = START_SETTLE if starting else 0.0
    try:
        ok = warm.call(health.record, str(HEALTH_FILE), settle, starting or [], timeout=60 + settle)[0] == 0
    except subprocess.TimeoutExpired:
        ok = False
    if last_verdict[-1:] != [ok]:
        log("full health check passes" if ok else "full health check fails (aiida-healthcheck shows why)")
        last_verdict[:] = [ok]
    if result is not None:
        result.append(ok)
    return ok


def current_profiles(previous: list[str]) -> list[str]:
    try:
        return profile_names()
    except (OSError, ValueError):  # unreadable for a moment: keep what we had
        return previous


def supervise() -> None:
    """Every profile's daemon, until SIGTERM. Profiles are re-read from config.json every second: a
    new one (aiida-stack-profile create) gets its daemon, a deleted one (whose CLI stopped it) is dropped."""
    watches: dict[str, Watch] = {}
    names: list[str] = []
    next_health = 0.0
    postgres = outages.PostgresWatch()
    while not stopping.is_set():
        names = current_profiles(names)
        if postgres.restarted():
            for name in outages.recover(names):
                watches.setdefault(name, Watch()).next_check = 0.0  # started again at once, below
        for gone in set(watches) - set(names):
            del watches[gone]
            ready.discard(gone)
            blocked.pop(gone, None)
        due = []
        for name in names:
            watch = watches.setdefault(name, Watch())
            if disabled_file(name).exists() != watch.was_disabled:
                watch.next_check = 0.0  # stopped or started on purpose: act within a second
            if time.monotonic() >= watch.next_check and check_daemon(name, watch):
                due.append(name)
        if due and not stopping.is_set():
            # The check runs alongside the starts (broker and storage meanwhile, then each daemon as soon
            # as it answers): the recovery is recorded the moment it happens.
            checked: list[bool] = []
            checker = threading.Thread(target=record_health, args=(due, checked), name="health")
            checker.start()
            start_daemons(due, watches)
            checker.join()
            next_health = time.monotonic() + (HEALTH_INTERVAL if checked == [True] else INTERVAL / 2)
        if time.monotonic() >= next_health:
            # A failing verdict is re-checked soon: right after a start the workers may still be coming up.
            next_health = time.monotonic() + (HEALTH_INTERVAL if record_health() else INTERVAL / 2)
        _pause(names, watches)


def _pause(names: list[str], watches: dict[str, Watch]) -> None:
    """A second between rounds, cut short when a stop marker comes or goes (./stack daemon.start waits
    for the supervisor: a restore's daemon downtime includes this reaction)."""
    for _ in range(round(1 / DISABLED_POLL)):
        if stopping.wait(DISABLED_POLL):
            return
        if any(name in watches and disabled_file(name).exists() != watches[name].was_disabled for name in names):
            return


def stop_every_daemon() -> None:
    """Stop the daemons of every profile at once (each stop may wait a few seconds for its workers)."""
    running = [name for name in current_profiles([]) if daemon.circusd_pid(name) is not None]
    stoppers = [threading.Thread(target=daemon.stop, args=(name,), name=f"stop-{name}") for name in running]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()


def adopt_legacy_marker() -> None:
    """A daemon.disabled from before daemons per profile meant the default profile's daemon."""
    if LEGACY_DISABLED_FILE.exists():
        default = default_profile()
        if default:
            disabled_file(default).touch()
        LEGACY_DISABLED_FILE.unlink(missing_ok=True)


phase = "init"


def on_signal(signum, _frame) -> None:
    if not stopping.is_set():
        log(f"received {signal.Signals(signum).name}: shutting down")
    stopping.set()
    if phase == "init":  # nothing of ours to stop yet: leave at once (verdi children are killed)
        raise SystemExit(0)


def main() -> int:
    global phase
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not DB_PASSWORD or not BROKER_PASSWORD:
        log("ERROR: database or broker password missing (run through the entrypoint with the secrets)")
        return 1
    log(f"aiida-core {importlib.metadata.version('aiida-core')}, bootstrap profile {BOOTSTRAP_PROFILE!r}, "
        f"AIIDA_PATH={AIIDA_PATH}")

    warm.start()  # imports aiida in the background while PostgreSQL and RabbitMQ boot
    HEALTH_FILE.unlink(missing_ok=True)  # a restarted container must not inherit the last verdict
    DAEMON_DIR.mkdir(parents=True, exist_ok=True)
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    # Fresh container: no daemon of any profile can be running; their PID files are stale.
    daemon.clean_stale_state(None)
    for hold in STACK_DIR.glob("hold.*"):  # held by a CLI of the previous container
        hold.unlink(missing_ok=True)

    wait_for_services()
    wait_for_readable_config()
    write_broker_file()
    bootstrap()
    if profile_names():
        profiles.sync_config(BOOTSTRAP_PROFILE, DB_PASSWORD, BROKER, daemon_workers_setting())
    removed = profiles.prune_config_copies()
    if removed:
        log(f"removed {removed} old timestamped copies of config.json (aiida-core makes one per store; 20 kept)")
    adopt_legacy_marker()
    names = profile_names()
    if names:
        log(f"supervising the daemons of {', '.join(map(repr, names))} (default: {default_profile()!r})")
    for name in names:
        storage_ready(name)

    phase = "run"
    if stopping.is_set():
        return 0
    handoff.start(stopping)  # the sidecar's requests for basic maintenance before its scheduled backups
    supervise()
    phase = "stop"
    stop_every_daemon()
    log("bye")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        log(f"ERROR: {exc}")
        sys.exit(1)
