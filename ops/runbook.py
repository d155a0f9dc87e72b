"""The AiiDA how-to's update runbook, step by step, for `./stack upgrade` and `./stack migrate`.

drain → stop daemon → back up → [switch] → migrate → check → start. A `Change` runs the steps in a
`Journal` that times them and keeps each one's undo as soon as there is something to undo. Any
failure (an exception, Ctrl-C) rolls back newest first, with further Ctrl-C held off until the
rollback has finished; then the history records what happened and the command exits non-zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rich.table import Table

from ops import backups, broker, console, daemon, profiles, restore, runner, secrets, wait
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.interrupts import interrupts_held
from ops.services import SERVICES

FAULT = "AIIDA_STACK_INJECT_FAULT"  # tests only: fail on purpose right after the named step
HEALTH_TIMEOUT = 300
DRAIN_POLL = 5
START_DAEMON = "start daemon"


@dataclass
class Journal:
    """Steps done, with their undo, and their durations; unwinds newest first."""

    undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        console.note(f"{name} ...")
        start = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - start, 2)
        console.step(f"{name} ({self.seconds[name]:.1f} s)")
        if os.environ.get(FAULT) == name:
            raise StackError(f"fault injected after {name} ({FAULT})")

    def on_failure(self, name: str, action: Callable[[], None], undone_before: str | None = None) -> None:
        """Register an undo; `undone_before` names an earlier undo this one must run before."""
        if undone_before is None:
            self.undo.append((name, action))
            return
        index = next(i for i, (other, _) in enumerate(self.undo) if other == undone_before)
        self.undo.insert(index + 1, (name, action))

    def rollback(self) -> tuple[list[str], list[str]]:
        """Undo everything, newest first, whatever fails on the way: (undone, failed)."""
        undone, failed = [], []
        with interrupts_held():
            while self.undo:
                name, action = self.undo.pop()
                console.note(f"rollback: {name}")
                try:
                    action()
                    undone.append(name)
                except BaseException as exc:  # keep undoing the rest; report what could not be undone
                    failed.append(f"{name} ({exc})")
                    console.note(f"rollback: {name} FAILED: {exc}")
        return undone, failed


# ------------------------------------------------------------------------------------------- state


def activity(stack: Stack) -> dict[str, dict]:
    """profile → {"schema", "head", "active", "paused"} (read with SQL; any schema)."""
    done = stack.exec_aiida([profiles.PROFILE_CLI, "activity"], capture=True)
    return json_result(done.returncode, done.stdout, "reading the profiles' schemas and processes", done.stderr)[
        "profiles"]


def _busy(stack: Stack, names: list[str], pausing: bool) -> str:
    """'' when idle; otherwise what keeps the profiles busy. Paused processes do not count when pausing."""
    state = activity(stack)
    uuids = {name: uuid for name, uuid in profiles.names(stack)["uuids"].items() if name in names}
    queued = broker.queued_tasks(stack, uuids)
    busy = []
    for name in names:
        running = state[name]["active"] - (state[name]["paused"] if pausing else 0)
        if running:
            busy.append(f"{name}: {running} active process(es)")
        if queued.get(name):
            busy.append(f"{name}: {queued[name]} queued task(s)")
    return "; ".join(busy)


# ------------------------------------------------------------------------------------------ change


@dataclass
class Change:
    """One run of the runbook over some profiles: its journal and the record the history keeps."""

    stack: Stack
    kind: str  # "upgrade", "migrate" or "maintain" (full)
    names: list[str]
    version: str  # the aiida-core the pre-change backups are taken with
    record: dict = field(default_factory=dict)
    journal: Journal = field(default_factory=Journal)
    backups: dict[str, str] = field(default_factory=dict)
    migrated: list[str] = field(default_factory=list)
    paused: dict[str, list[int]] = field(default_factory=dict)
    stopped_at: float | None = None
    downtime: float = 0.0
    began: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.record = {"kind": self.kind, **self.record, "profiles": self.names,
                       "started": dt.datetime.now(dt.timezone.utc).isoformat()}

    # ---- drain

    def drain(self, wait_idle: bool, pause: bool) -> None:
        """Refuse (or wait) while processes are active or queued; with `pause`, pause the running ones first."""
        if pause:
            for name in self.names:
                done = self.stack.exec_aiida([profiles.PROFILE_CLI, "pause", name], capture=True)
                self.paused[name] = json_result(done.returncode, done.stdout, f"pausing the processes of {name}",
                                                done.stderr)["paused"]
            self.journal.on_failure("play the paused processes", self.play)
            console.step(f"paused: {self.paused}")
        while busy := _busy(self.stack, self.names, pause):
            if not wait_idle:
                why = ("a full maintenance needs the profile unused" if self.kind == "maintain"
                       else "unfinished processes cannot be migrated")
                hint = "--wait" if self.kind == "maintain" else "--wait (or --pause-running)"
                raise StackError(f"the stack is busy ({busy}): {why}. Let them finish and run again, or add {hint}; "
                                 "nothing changed", code=2)
            console.note(f"waiting until idle: {busy}")
            time.sleep(DRAIN_POLL)
        console.step("drained: no running process, no queued task"
                     + (f" ({sum(map(len, self.paused.values()))} paused)" if pause else ""))

    def play(self) -> None:
        for name, pks in self.paused.items():
            if pks:
                done = self.stack.exec_aiida([profiles.PROFILE_CLI, "play", name, *map(str, pks)], capture=True)
                json_result(done.returncode, done.stdout, f"playing the paused processes of {name}", done.stderr)
                console.step(f"{name}: played {pks} again")
        self.paused = {}

    # ---- the steps

    def stop_daemon(self) -> None:
        with self.journal.step("stop daemon"):
            self.journal.on_failure(START_DAEMON, self.start_daemons)
            self.stopped_at = time.monotonic()
            for name in self.names:  # the other profiles' daemons keep running
                daemon.stop(self.stack, name)
            late = _busy_without_broker(self.stack, self.names, bool(self.paused))
            if late:  # submitted between the drain and the stop: the runbook wants them finished first
                raise StackError(f"processes became active while the daemon stopped ({late}); run again once idle")

    def back_up(self) -> None:
        with self.journal.step("back up"):
            for result in backups.backup(self.stack, self.names, keep=None, aiida_version=self.version):
                self.backups[result["profile"]] = result["id"]  # verified: a failed one raised
            self.record["backups"] = self.backups

    def migrate(self, names: list[str] | None = None) -> None:
        with self.journal.step("migrate"):
            # undone after a switch back (the older aiida-core restores), before the daemon starts again
            self.journal.on_failure(f"restore the pre-{self.kind} backups", self.restore_backups,
                                    undone_before=START_DAEMON)
            for name in self.names if names is None else names:
                self.migrated.append(name)  # before the call: a half-done migration is restored too
                verdi_ok(self.stack, name, "storage", "migrate", "--force")

    def check(self) -> None:
        with self.journal.step("check"):
            for name in self.names:
                verdi_ok(self.stack, name, "storage", "version")

    def start(self) -> None:
        with self.journal.step("start"):
            self.start_daemons()
            self.downtime = time.monotonic() - (self.stopped_at or time.monotonic())
            wait.until_healthy(self.stack, SERVICES, HEALTH_TIMEOUT)
            self.play()
            one_calculation(self.stack, self.names[0])

    def start_daemons(self) -> None:
        for name in self.names:
            daemon.start(self.stack, name)

    # ---- the undo of `migrate`

    def restore_backups(self) -> None:
        failed = []
        for name in self.migrated:
            try:
                restore.restore(self.stack, self.backups[name], name, name, yes=True, during_rollback=True)
            except Exception as exc:  # restore the others all the same
                failed.append(f"{name} from {self.backups[name]}: {exc}")
        if failed:
            raise StackError("; ".join(failed))

    # ---- the end

    def succeeded(self) -> None:
        self.record.update(result="ok", seconds=round(time.monotonic() - self.began, 1),
                           steps=self.journal.seconds, daemon_downtime=round(self.downtime, 1))
        write_history(self.stack, self.record)

    def roll_back(self, exc: BaseException, what: str) -> StackError:
        """Undo every step done, check health, record it; the error to exit with."""
        undone, failed = self.journal.rollback()
        healthy = True
        try:
            if undone or failed:
                wait.until_healthy(self.stack, SERVICES, HEALTH_TIMEOUT)
        except StackError as problem:
            healthy = False
            failed.append(f"health check ({str(problem).splitlines()[0]})")
        reason = str(exc) or type(exc).__name__
        self.record.update(result="rolled back" if not failed else "rollback incomplete", error=reason[-500:],
                           undone=undone, failed=failed, healthy=healthy,
                           seconds=round(time.monotonic() - self.began, 1), steps=self.journal.seconds)
        write_history(self.stack, self.record)
        return StackError(f"{what} failed: {reason}\nrolled back: {', '.join(undone) or 'nothing'}"
                          + (f"\nNOT undone: {'; '.join(failed)}" if failed else ""))


def _busy_without_broker(stack: Stack, names: list[str], pausing: bool) -> str:
    state = activity(stack)
    return "; ".join(f"{name}: {n} active" for name in names
                     if (n := state[name]["active"] - (state[name]["paused"] if pausing else 0)))


def verdi_ok(stack: Stack, profile: str, *args: str) -> None:
    done = stack.exec_aiida(["verdi", "-p", profile, *args], capture=True)
    if done.returncode != 0:
        raise StackError(f"verdi -p {profile} {' '.join(args)} exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-500:]}")


def one_calculation(stack: Stack, profile: str) -> None:
    code, out = runner.run_script(stack, runner.SCRIPTS / "smoke_calculation.py", profile=profile, capture=True)
    result = json_result(code, out, "the calculation after the change")
    if not result["ok"]:
        raise StackError(f"the calculation after the change did not finish ok: {result}")


# ----------------------------------------------------------------------------------------- history


def _history_file(stack: Stack):
    return stack.state / "upgrades.json"


def history(stack: Stack) -> list[dict]:
    try:
        text = _history_file(stack).read_text()
    except OSError:
        return []
    try:
        return json.loads(text)
    except ValueError:
        raise StackError(f"{_history_file(stack)} is not valid JSON: fix or move it; it is the stack's upgrade "
                         "history and is not overwritten") from None


def write_history(stack: Stack, record: dict) -> None:
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    try:
        past = history(stack)
    except StackError as exc:  # keep the broken file; start a new one beside it
        aside = _history_file(stack).with_suffix(f".broken-{int(time.time())}.json")
        _history_file(stack).rename(aside)
        console.note(f"{exc}; moved it to {aside}")
        past = []
    secrets.write_private(_history_file(stack), json.dumps([*past, record], indent=1) + "\n")


def last_change(stack: Stack) -> dict | None:
    """The newest upgrade or migration recorded (None: none yet; {"error"}: the record is unreadable)."""
    try:
        past = history(stack)
    except StackError as exc:
        return {"error": str(exc)}
    return past[-1] if past else None


def describe(entry: dict | None) -> str:
    """One line for ./stack status."""
    if not entry:
        return "none"
    if "error" in entry:
        return f"[red]{entry['error']}[/]"
    return f"{_what(entry)}: {entry['result']} at {entry.get('finished', '?')[:16]} UTC"


def _what(entry: dict) -> str:
    if entry.get("kind", "upgrade") == "upgrade":
        return f"{entry['from']} → {entry['to']}"
    return f"{entry['kind']} {', '.join(entry.get('profiles', []))}"


def summary(stack: Stack) -> Table:
    table = Table("change", "", title="upgrades and migrations", title_justify="left")
    for entry in history(stack)[-3:]:
        table.add_row(_what(entry), f"{entry['result']} ({entry.get('seconds', '?')} s)")
    return table
