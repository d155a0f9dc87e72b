"""One profile's daemon as the supervisor watches it: is its storage runnable by this aiida-core, should
its daemon run, does it run its workers; starting the daemons that should run, several at once.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import compat
import daemon
import profiles
import warm
from common import STACK_DIR, configured_workers, disabled_file, is_held, log, read_config, verdi

# Seconds between two looks at a daemon (a marker change is acted on within a second).
INTERVAL = float(os.environ.get("AIIDA_SUPERVISE_INTERVAL", "5"))
# A daemon running fewer workers than its profile's daemon.default_workers this long gets them back.
WORKER_GRACE = float(os.environ.get("AIIDA_WORKER_GRACE", "10"))
# A profile whose storage this aiida-core cannot run (schema) is checked again after this many seconds.
STORAGE_RECHECK = float(os.environ.get("AIIDA_STORAGE_RECHECK", "10"))


ready: set[str] = set()  # profiles whose storage this aiida-core runs (checked once per container)
blocked: dict[str, tuple[str, float]] = {}  # profile -> (why not, when to check again)


def storage_ready(profile: str) -> bool:
    """True once the profile's storage schema is this aiida-core's (then its localhost computer is
    ensured). Otherwise it gets no daemon: its workers could not load it, and only `verdi storage
    migrate` (never run by the service) changes that. Logged once per reason, re-checked now and then.

    The check imports the storage backend (seconds of CPU): a marker saves it on warm starts. It names
    the aiida-core release that last found the schema current; only another release changes the
    schema, and its own start checks again (and removes the marker if the schema is not its own)."""
    if profile in ready:
        return True
    marker = STACK_DIR / f"storage-current.{profile}"
    try:
        stamp = f"{compat.AIIDA_VERSION} {read_config()['profiles'][profile]['PROFILE_UUID']}\n"
    except (OSError, KeyError, ValueError):
        stamp = None
    try:
        known = stamp is not None and marker.read_text() == stamp
    except OSError:
        known = False
    why, recheck = blocked.get(profile, ("", 0.0))
    if not known and time.monotonic() < recheck:
        return False
    try:
        problem = None if known else compat.storage_problem(profiles.load_config().get_profile(profile))
    except Exception as exc:  # config.json being rewritten, or the profile went away meanwhile
        log(f"WARNING: storage of {profile!r} not checked: {type(exc).__name__}: {exc}")
        blocked[profile] = (why, time.monotonic() + INTERVAL)
        return False
    if problem:
        marker.unlink(missing_ok=True)
        if problem != why:
            log(f"not starting the daemon of {profile!r}: {problem}")
        blocked[profile] = (problem, time.monotonic() + STORAGE_RECHECK)
        return False
    if blocked.pop(profile, None):
        log(f"the storage of {profile!r} is current now")
    if stamp and not known:
        marker.write_text(stamp)
    ready.add(profile)
    try:
        profiles.ensure_localhost_computer(profile, runner=warm.run_verdi)
    except (KeyError, OSError, ValueError) as exc:  # the profile went away meanwhile
        log(f"WARNING: computer localhost of {profile!r} not checked: {exc!r}")
    return True


def keep_workers(profile: str, short_since: float | None) -> float | None:
    """Bring back the profile's daemon.default_workers once the daemon has run short of them for
    WORKER_GRACE seconds (workers added by `daemon incr` stay). Returns since when it is short, or None."""
    wanted = configured_workers(profile)
    running = daemon.worker_count(profile)
    if running >= wanted:
        return None
    now = time.monotonic()
    if short_since is None:
        return now
    if now - short_since < WORKER_GRACE:
        return short_since
    log(f"the daemon of {profile!r} has run {running} of its {wanted} workers (daemon.default_workers) for "
        f"{now - short_since:.0f} s: adding {wanted - running}")
    verdi("-p", profile, "daemon", "incr", str(wanted - running), check=False, timeout=90, runner=warm.run_verdi)
    return None


@dataclass
class Watch:
    """What the supervisor keeps about one profile's daemon."""

    failures: int = 0
    short_since: float | None = None  # since when the daemon runs fewer workers than configured
    next_check: float = 0.0
    was_disabled: bool | None = None


def check_daemon(profile: str, watch: Watch) -> bool:
    """One look at the profile's daemon: True if it should run and does not (start_daemons starts it)."""
    disabled = disabled_file(profile).exists()
    if disabled != watch.was_disabled and (disabled or watch.was_disabled is not None):
        log(f"the daemon of {profile!r} is intentionally stopped (./stack daemon.stop): not (re)starting it"
            if disabled else f"supervising the daemon of {profile!r}")
    if watch.was_disabled and not disabled and profile in blocked:
        # Marker just removed (./stack daemon.start, after a migration too): check the storage now.
        blocked[profile] = (blocked[profile][0], 0.0)
    watch.was_disabled = disabled
    watch.next_check = time.monotonic() + INTERVAL
    if disabled or is_held(profile):
        return False
    if daemon.circusd_pid(profile) is not None:
        watch.short_since = keep_workers(profile, watch.short_since)
        return False
    if daemon.starting(profile):
        return False  # not an orphan to clean up: someone's own `verdi daemon start` (./stack verdi -- daemon start)
    return storage_ready(profile)


def start_daemons(names: list[str], watches: dict[str, Watch]) -> bool:
    """Start these profiles' daemons at once: each has its own circusd, and a start is mostly a
    `verdi start-circus` process importing aiida, so starting two takes about as long as one. True if
    any started."""
    results: dict[str, bool] = {}

    def start(name: str) -> None:
        log(f"the daemon of {name!r} is not running: starting it")
        results[name] = daemon.start(name, runner=warm.run_verdi, launch=warm.launch_circusd)

    threads = [threading.Thread(target=start, args=(name,), name=f"start-{name}") for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names:
        watch = watches[name]
        watch.short_since = None
        if results.get(name):
            watch.failures = 0
        else:
            watch.failures += 1
            delay = min(60.0, INTERVAL * 2**watch.failures)
            watch.next_check = time.monotonic() + delay
            log(f"retrying the daemon of {name!r} in {delay:.0f} s")
    return any(results.values())
