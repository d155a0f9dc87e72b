"""The one wait helper: block until services are healthy, showing their state as it changes."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.live import Live
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from ops import console
from ops.compose import Stack
from ops.errors import StackError

CRASH_LOOP = 3  # restarts before we stop waiting and show the logs


class NotReady(Exception):
    pass


def service_states(stack: Stack) -> dict[str, dict]:
    """service → {state, health, restarts} from the engine (one container per service)."""
    states = {}
    for entry in stack.ps():
        container = stack.container(entry["Service"])
        info = container.attrs["State"]
        states[entry["Service"]] = {
            "state": info.get("Status", "?"),
            "health": info.get("Health", {}).get("Status", "none"),
            "restarts": container.attrs.get("RestartCount", 0),
            "exit_code": info.get("ExitCode", 0),
        }
    return states


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
    with Live(console=console.err, transient=True, refresh_per_second=4) as live:
        retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(1),
                            retry=retry_if_exception_type(NotReady), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    states = {s: st for s, st in service_states(stack).items() if s in wanted}
                    live.update(state_table(states, time.monotonic() - start))
                    _check(stack, wanted, states)
        except NotReady as exc:
            raise StackError(f"not healthy after {timeout:.0f} s: {exc}\n{_logs_hint(stack, wanted)}") from None
    return time.monotonic() - start


def _check(stack: Stack, wanted: list[str], states: dict[str, dict]) -> None:
    for service in wanted:
        st = states.get(service)
        if st is None:
            raise NotReady(f"{service} has no container")
        if st["restarts"] >= CRASH_LOOP or (st["state"] == "exited" and st["exit_code"] != 0):
            raise StackError(f"{service} keeps failing (state {st['state']}, exit {st['exit_code']}, "
                             f"{st['restarts']} restarts); last log lines:\n{_tail(stack, service)}")
        if st["state"] != "running" or st["health"] not in ("healthy", "none"):
            raise NotReady(f"{service} is {st['state']}/{st['health']}")


def _tail(stack: Stack, service: str, lines: int = 30) -> str:
    return stack.run("logs", "--no-color", "--tail", str(lines), service, capture=True, check=False).stdout


def _logs_hint(stack: Stack, services: list[str]) -> str:
    return "\n".join(f"--- {s}:\n{_tail(stack, s, 15)}" for s in services)
