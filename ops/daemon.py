"""Each profile's daemon, supervised by the aiida service (one circusd per profile, its own queues).

The service starts and restarts every profile's daemon; an intentional stop leaves a marker per
profile (stack/daemon.disabled.<profile>) that tells it not to, across container restarts too.
`profile` None means the default profile.
"""

from __future__ import annotations

import time

from ops import console, profiles, wait
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.inputs import InputError
from ops.rules import daemon_stop_marker
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA

RECOVERY_TIMEOUT = 120


def disabled_marker(profile: str) -> str:
    return f"{AIIDA_HOME_IN_AIIDA}/stack/{daemon_stop_marker(profile)}"


def _name(stack: Stack, profile: str | None) -> str:
    return profile or profiles.names(stack)["default"]


def verdi_daemon(stack: Stack, profile: str, *args: str) -> None:
    """`verdi -p PROFILE daemon ARGS` in the aiida service, its output shown; StackError if it fails."""
    done = stack.exec_aiida(["verdi", "-p", profile, "daemon", *args])
    if done.returncode != 0:
        raise StackError(f"verdi -p {profile} daemon {' '.join(args)} failed (exit {done.returncode})")


def _marker(stack: Stack, profile: str, present: bool) -> None:
    marker = disabled_marker(profile)
    argv = ["sh", "-c", f'mkdir -p "$(dirname {marker})" && touch {marker}'] if present else ["rm", "-f", marker]
    if stack.exec_aiida(argv, capture=True).returncode != 0:
        raise StackError(f"could not update the daemon marker of {profile} in the aiida service")


def keep_stopped(stack: Stack, profile: str) -> None:
    """Keep a profile's daemon from starting (a new profile whose entry is not ready for work yet)."""
    _marker(stack, profile, present=True)


def forget_marker(stack: Stack, profile: str) -> None:
    """A profile that is gone leaves no stop marker behind (a later profile of that name starts)."""
    _marker(stack, profile, present=False)


def status(stack: Stack, profile: str | None = None) -> None:
    verdi_daemon(stack, _name(stack, profile), "status")


def start(stack: Stack, profile: str | None = None) -> float:
    """Start the daemon now: the service drops the stop marker and its supervisor, the one place that
    starts daemons, starts it at once (two starters at once could each take the other's fresh circusd
    for an orphan). Returns once circusd runs with its workers and the service's own check agrees;
    the value is the moment (time.monotonic) the daemon was seen running."""
    name = _name(stack, profile)
    done = stack.exec_aiida([profiles.PROFILE_CLI, "daemon-start", name, "--timeout", str(RECOVERY_TIMEOUT)],
                            capture=True)
    json_result(done.returncode, done.stdout, f"starting the daemon of {name}", done.stderr)
    running = time.monotonic()
    profiles.serving(stack, name)
    wait.until_healthy(stack, [AIIDA], RECOVERY_TIMEOUT)
    return running


def stop(stack: Stack, profile: str | None = None, now: bool = False) -> None:
    """Stop the daemon and keep it stopped until start (the service stays healthy: it should not run).

    One call to the service: the marker first (the supervisor leaves the daemon alone), then SIGTERM to
    circusd, as `verdi daemon stop` asks, workers given a few seconds, then killed (their processes'
    tasks go back to the broker). No verdi start-up, and no daemon.timeout that busy workers outlast.
    `now`: circusd and its workers are killed at once instead of the second a graceful stop takes (a
    restore, whose swap sets the data they work on aside: they go on from their last checkpoint)."""
    name = _name(stack, profile)
    done = stack.exec_aiida([profiles.PROFILE_CLI, "daemon-stop", "--keep-stopped", *(["--now"] if now else []), name],
                            capture=True)
    result = json_result(done.returncode, done.stdout, f"stopping the daemon of {name}", done.stderr)
    if result["running"]:
        raise StackError(f"the daemon of {name} still runs after it was stopped; see ./stack logs --service aiida")
    console.step(f"daemon of {name} stopped" if result["stopped"] else f"daemon of {name} was not running")


def restart(stack: Stack, profile: str | None = None) -> None:
    name = _name(stack, profile)
    # The marker keeps the service's supervisor from starting a second daemon in between.
    _marker(stack, name, present=True)
    try:
        verdi_daemon(stack, name, "restart")
    finally:
        _marker(stack, name, present=False)
    wait.until_healthy(stack, [AIIDA], RECOVERY_TIMEOUT)


def workers(stack: Stack, profile: str | None = None) -> dict:
    """{"profile", "running", "configured", "disabled"}: the profile's daemon workers now, its
    daemon.default_workers (the count the service keeps), and whether it is stopped on purpose."""
    done = stack.exec_aiida([profiles.PROFILE_CLI, "workers", *([profile] if profile else [])], capture=True)
    return json_result(done.returncode, done.stdout, "counting the daemon workers", done.stderr)


def describe(state: dict | None) -> str:
    """'2 workers', 'stopped (daemon.stop)', 'NOT running' for a status table."""
    if not state:
        return "?"
    if state["disabled"]:
        return "[yellow]stopped (./stack daemon.start)[/]"
    if state["running"] < 1:
        return "[red]NOT running[/]"
    return f"{state['running']} worker{'s' if state['running'] != 1 else ''}"


def change_workers(stack: Stack, delta: int, profile: str | None = None) -> None:
    """Add (delta > 0) or remove workers; removing never goes below daemon.default_workers."""
    if delta == 0:
        raise InputError("--number", "must be at least 1")
    count = workers(stack, profile)
    if delta < 0:
        left = count["running"] + delta
        if left < count["configured"]:
            raise InputError("--number", f"would leave {max(left, 0)} worker(s), fewer than daemon.default_workers "
                             f"({count['configured']}) of profile {count['profile']!r}, which the service keeps "
                             f"(running now: {count['running']}); to run fewer for good: "
                             "./stack config.set daemon.default_workers N --restart")
    verdi_daemon(stack, count["profile"], "incr" if delta > 0 else "decr", str(abs(delta)))
