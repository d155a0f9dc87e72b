"""The daemon of the default profile, supervised by the aiida service.

The service restarts a daemon that dies; an intentional stop leaves a marker that tells it not to.
"""

from __future__ import annotations

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import console, profiles, wait
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.inputs import InputError
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA

DISABLED_MARKER = f"{AIIDA_HOME_IN_AIIDA}/stack/daemon.disabled"
RECOVERY_TIMEOUT = 120
STOP_TIMEOUT = 90


def verdi_daemon(stack: Stack, *args: str) -> None:
    """`verdi daemon ARGS` in the aiida service, its output shown; StackError if it fails."""
    done = stack.exec_aiida(["verdi", "daemon", *args])
    if done.returncode != 0:
        raise StackError(f"verdi daemon {' '.join(args)} failed (exit {done.returncode})")


def _marker(stack: Stack, present: bool) -> None:
    argv = ["sh", "-c", f'mkdir -p "$(dirname {DISABLED_MARKER})" && touch {DISABLED_MARKER}'] if present \
        else ["rm", "-f", DISABLED_MARKER]
    if stack.exec_aiida(argv, capture=True).returncode != 0:
        raise StackError("could not update the daemon marker in the aiida service")


def status(stack: Stack) -> None:
    verdi_daemon(stack, "status")


def _running(stack: Stack) -> bool:
    return stack.exec_aiida(["verdi", "daemon", "status"], capture=True).returncode == 0


def start(stack: Stack) -> None:
    """Start the daemon now; the service's supervisor (which also starts it once the marker is gone)
    may win the race, which is fine: what counts is the service's own check passing afterwards."""
    _marker(stack, present=False)
    if not _running(stack):
        done = stack.exec_aiida(["verdi", "daemon", "start"], capture=True)
        if done.returncode != 0 and not _running(stack):
            console.note("verdi daemon start did not succeed; waiting for the aiida service to start it")
    profiles.serving(stack, profiles.info(stack)["default"])
    wait.until_healthy(stack, [AIIDA], RECOVERY_TIMEOUT)


def stop(stack: Stack) -> None:
    """Stop the daemon and keep it stopped (the service then reports itself unhealthy, on purpose).

    `verdi daemon stop` gives up after daemon.timeout seconds while busy workers are still shutting
    down; what counts is that the daemon is gone soon after."""
    _marker(stack, present=True)
    if stack.exec_aiida(["verdi", "daemon", "stop"]).returncode == 0:
        return
    gone = Retrying(stop=stop_after_delay(STOP_TIMEOUT), wait=wait_fixed(1), retry=retry_if_result(lambda ok: not ok),
                    retry_error_callback=lambda _: False)
    if not gone(lambda: not _running(stack)):
        raise StackError(f"the daemon still runs {STOP_TIMEOUT} s after `verdi daemon stop`")
    console.note("the daemon stopped after verdi's own timeout")


def restart(stack: Stack) -> None:
    # The marker keeps the service's supervisor from starting a second daemon in between.
    _marker(stack, present=True)
    try:
        verdi_daemon(stack, "restart")
    finally:
        _marker(stack, present=False)
    wait.until_healthy(stack, [AIIDA], RECOVERY_TIMEOUT)


def workers(stack: Stack) -> dict:
    """{"profile", "running", "configured"}: the default profile's daemon workers now and its
    daemon.default_workers (the count the service keeps)."""
    done = stack.exec_aiida([profiles.PROFILE_CLI, "workers"], capture=True)
    return json_result(done.returncode, done.stdout, "counting the daemon workers", done.stderr)


def change_workers(stack: Stack, delta: int) -> None:
    """Add (delta > 0) or remove workers; removing never goes below daemon.default_workers."""
    if delta == 0:
        raise InputError("--number", "must be at least 1")
    if delta < 0:
        count = workers(stack)
        left = count["running"] + delta
        if left < count["configured"]:
            raise InputError("--number", f"would leave {max(left, 0)} worker(s), fewer than daemon.default_workers "
                             f"({count['configured']}) of profile {count['profile']!r}, which the service keeps "
                             f"(running now: {count['running']}); to run fewer for good: "
                             "./stack config.set daemon.default_workers N --restart")
    verdi_daemon(stack, "incr" if delta > 0 else "decr", str(abs(delta)))
