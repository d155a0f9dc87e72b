"""bench.up: where a warm `./stack up` spends its time, on a throwaway stack with N profiles.

Warm = the containers were removed (`./stack down`); volumes, images and the state folder are kept.
The milestones come from the engine's own events (each container's creation, start and first healthy
check, in nanoseconds), from the aiida service's log (its supervisor stamps milestones in
milliseconds) and from the host's clock around `up`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import statistics
import threading
import time

from rich.table import Table

from ops import console, engine, lifecycle, profiles
from ops.compose import Stack
from ops.services import AIIDA, SERVICES
from ops.settings import Settings, load

TARGET = 10.0  # seconds, with two profiles' daemons (issue: a fast warm start)
SUPERVISOR_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?)Z aiida-supervisor: (.*)$")
# supervisor log lines worth a row: (pattern, how the row reads)
SUPERVISOR_MILESTONES = (
    (re.compile(r"^aiida-core "), "aiida: supervisor running (aiida imported in the background)"),
    (re.compile(r"are reachable$"), "aiida: PostgreSQL and RabbitMQ reachable"),
    (re.compile(r"^daemon of '(.+)' running"), "aiida: daemon of {0} running"),
    (re.compile(r"^full health check passes"), "aiida: first full health check passes"),
)


class Events:
    """The project's container events, streamed while `up` runs: the engine keeps only its last 256
    events, which the healthchecks' exec events of a busy host fill within minutes."""

    def __init__(self, name: str) -> None:
        self.seen: list[tuple[float, str]] = []
        self._stream = engine.client().events(decode=True, filters={
            "type": "container", "label": f"com.docker.compose.project={name}"})
        self._thread = threading.Thread(target=self._read, name="engine-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # closing the stream ends the loop with an error
            for event in self._stream:
                action = event.get("Action") or event.get("status", "")
                service = event.get("Actor", {}).get("Attributes", {}).get("com.docker.compose.service", "?")
                self.seen.append((event["timeNano"] / 1e9, f"{service} {action}"))

    def stop(self) -> list[tuple[float, str]]:
        self._stream.close()
        self._thread.join(timeout=5)
        return list(self.seen)


def _supervisor(stack: Stack, since: float) -> list[tuple[float, str]]:
    """The aiida service's start-up milestones, from its own log."""
    text = stack.container(AIIDA).logs(since=int(since)).decode(errors="replace")
    found = []
    for line in text.splitlines():
        match = SUPERVISOR_LINE.match(line)
        if not match:
            continue
        stamp = dt.datetime.fromisoformat(match[1]).replace(tzinfo=dt.UTC).timestamp()
        for pattern, row in SUPERVISOR_MILESTONES:
            hit = pattern.search(match[2])
            if hit and stamp >= since:
                found.append((stamp, row.format(*hit.groups())))
    return found


def milestones(stack: Stack, events: list[tuple[float, str]], began: float, ended: float) -> list[tuple[float, str]]:
    """Every milestone of one warm `up`, in seconds since it began, in order."""
    wanted = {f"{s} {a}" for s in SERVICES for a in ("create", "start", "health_status: healthy")}
    rows = [(at, what) for at, what in events if what in wanted]
    firsts: dict[str, float] = {}
    for at, what in sorted(rows):
        firsts.setdefault(what, at)  # a service's first healthy check only
    rows = [(at, what.replace("health_status: healthy", "healthy").replace(" create", " created")
             .replace(" start", " started")) for what, at in firsts.items()]
    rows += _supervisor(stack, began)
    rows.append((ended, "./stack up returned (every service healthy, environment recorded)"))
    return [(at - began, what) for at, what in sorted(rows)]


def warm_up(settings: Settings) -> tuple[float, list[tuple[float, str]]]:
    """Remove the containers, time `up` until healthy; (seconds, milestones)."""
    lifecycle.down(settings, volumes=False, yes=False)
    events = Events(settings.name)
    began = time.time()
    try:
        stack = lifecycle.up(settings)
    finally:
        seen = events.stop()
    ended = time.time()
    return ended - began, milestones(stack, seen, began, ended)


def breakdown_table(rows: list[tuple[float, str]], title: str) -> Table:
    table = Table("at (s)", "+ (s)", "milestone", title=title, title_justify="left")
    previous = 0.0
    for at, what in rows:
        table.add_row(f"{at:.2f}", f"{at - previous:.2f}", what)
        previous = at
    return table


def up_benchmark(settings: Settings, profile_count: int, runs: int, keep: bool) -> list[float]:
    """A throwaway stack with `profile_count` profiles (each with its daemon), started warm `runs` times."""
    name = f"{settings.name}-bench-up"
    bench = load(name=name, backup_schedule="off")
    times: list[float] = []
    try:
        console.note(f"throwaway stack {name}: a first (cold) up, then {profile_count} profile(s)")
        stack = lifecycle.up(bench)
        have = profiles.names(stack)["profiles"]
        for index in range(len(have), profile_count):
            profiles.create(stack, f"bench{index}", bench.user_email, bench.user_first_name, bench.user_last_name,
                            bench.user_institution, False)
        tables = []
        for run in range(1, runs + 1):
            console.note(f"warm start {run} of {runs}: down (volumes kept), then up")
            seconds, rows = warm_up(bench)
            times.append(seconds)
            tables.append(breakdown_table(rows, f"warm start {run}: {seconds:.1f} s"))
    finally:
        if not keep:
            lifecycle.remove_throwaway(bench)
    median = statistics.median(times)
    for table in tables:
        console.out.print(table)
    verdict = "[green]met[/]" if median <= TARGET else "[red]missed[/]"
    console.out.print(f"warm ./stack up → healthy with {profile_count} profiles' daemons: median [bold]{median:.1f} s"
                      f"[/] of {', '.join(f'{t:.1f}' for t in times)} (target ≤ {TARGET:.0f} s: {verdict})")
    return times
