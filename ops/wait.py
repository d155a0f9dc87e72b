"""The one wait helper: block until services are healthy, showing their state as it changes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from docker.errors import DockerException
from rich.live import Live
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from ops import console, engine
from ops.compose import Stack
from ops.errors import StackError

CRASH_LOOP = 3  # restarts while waiting before we stop waiting and show the logs
POLL = 0.25  # seconds between two looks at the engine
PROBE_EVERY = 0.5  # seconds between two runs of a starting container's own healthcheck
PROBE_TIMEOUT = 10


class NotReady(Exception):
    pass


def service_states(stack: Stack) -> dict[str, dict]:
    """service → {state, health, restarts, exit_code, id} from the engine (one container per service; one API
    call, no Compose process: `up` polls this four times a second)."""
    found = engine.client().containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={stack.settings.name}", "com.docker.compose.oneoff=False"]})
    states = {}
    for container in sorted(found, key=lambda c: c.labels.get("com.docker.compose.service", "")):
        info = container.attrs["State"]
        states.setdefault(container.labels.get("com.docker.compose.service", "?"), {
            "state": info.get("Status", "?"),
            "health": info.get("Health", {}).get("Status", "none"),
            "restarts": container.attrs.get("RestartCount", 0),
            "exit_code": info.get("ExitCode", 0),
            "id": container.id,
            "check": _check_command(container.attrs["Config"].get("Healthcheck") or {}),
        })
    return states


def _check_command(healthcheck: dict) -> list[str] | None:
    test = healthcheck.get("Test") or []
    if test[:1] == ["CMD"]:
        return ["timeout", str(PROBE_TIMEOUT), *test[1:]]
    if test[:1] == ["CMD-SHELL"]:
        return ["timeout", str(PROBE_TIMEOUT), "/bin/sh", "-c", test[1]]
    return None


def probe_starting(states: dict[str, dict], last: dict[str, float] | None = None) -> None:
    """Run the own healthcheck of each running container that Docker still calls `starting`, at most every
    PROBE_EVERY s; one that passes counts as healthy. Docker runs it only once per interval (this engine
    has no start_interval), and one pass is all Docker needs too; `up` returns up to an interval sooner,
    and `status` right after it agrees with it."""
    now, last = time.monotonic(), {} if last is None else last
    for service, st in states.items():
        if st["state"] != "running" or st["health"] != "starting" or not st["check"]:
            continue
        if now - last.get(service, 0.0) < PROBE_EVERY:
            continue
        last[service] = now
        with contextlib.suppress(DockerException):
            if engine.client().containers.get(st["id"]).exec_run(st["check"]).exit_code == 0:
                st["health"] = "healthy"


def state_table(states: dict[str, dict], elapsed: float | None = None) -> Table:
    title = f"waiting for health: {elapsed:.0f} s" if elapsed is not None else None
    table = Table("service", "state", "health", "restarts", title=title, title_justify="left")
    colours = {"healthy": "green", "starting": "yellow", "unhealthy": "red"}
    for service, st in states.items():
        colour = colours.get(st["health"], "white")
        table.add_row(service, st["state"], f"[{colour}]{st['health']}[/]", str(st["restarts"]))
    return table


def until_healthy(stack: Stack, services: Iterable[str], timeout: float) -> float:
    """Wait until every named service is running and healthy; returns seconds waited."""
    wanted = list(services)
    start = time.monotonic()
    # Restarts before this wait are history (a container restarted three times last month is not in a
    # crash loop now); only restarts while waiting count.
    before = {st["id"]: st["restarts"] for st in service_states(stack).values()}
    probed: dict[str, float] = {}
    with Live(console=console.err, transient=True, refresh_per_second=4) as live:
        retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(POLL),
                            retry=retry_if_exception_type(NotReady), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    states = {s: st for s, st in service_states(stack).items() if s in wanted}
                    probe_starting(states, probed)
                    live.update(state_table(states, time.monotonic() - start))
                    _check(stack, wanted, states, before)
        except NotReady as exc:
            raise StackError(f"not healthy after {timeout:.0f} s: {exc}\n{_logs_hint(stack, wanted)}") from None
    return time.monotonic() - start


def _check(stack: Stack, wanted: list[str], states: dict[str, dict], before: dict[str, int]) -> None:
    for service in wanted:
        st = states.get(service)
        if st is None:
            raise NotReady(f"{service} has no container")
        recent = st["restarts"] - before.get(st["id"], 0)  # a container created since counts from 0
        if recent >= CRASH_LOOP or (st["state"] == "exited" and st["exit_code"] != 0):
            raise StackError(f"{service} keeps failing (state {st['state']}, exit {st['exit_code']}, "
                             f"{st['restarts']} restarts); last log lines:\n{_tail(stack, service)}")
        if st["state"] != "running" or st["health"] not in ("healthy", "none"):
            raise NotReady(f"{service} is {st['state']}/{st['health']}")


def _tail(stack: Stack, service: str, lines: int = 30) -> str:
    return stack.run("logs", "--no-color", "--tail", str(lines), service, capture=True, check=False).stdout


def _logs_hint(stack: Stack, services: list[str]) -> str:
    return "\n".join(f"--- {s}:\n{_tail(stack, s, 15)}" for s in services)
