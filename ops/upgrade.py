"""./stack upgrade: move the running stack to the environment the settings name, by the runbook.

check → drain → stop → back up → switch → migrate → check → start, then the record. Nothing
changes before `stop`; every step after it has an undo, and any failure (an exception, Ctrl-C)
rolls back what was done, newest first: the pre-upgrade config.json and backups come back, the
previous image runs again, the daemon starts. Then the command exits non-zero saying so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from packaging.version import Version
from rich.table import Table

from ops import backups, broker, console, daemon, engine, environment, lifecycle, profiles, runner, secrets, wait
from ops.compose import Stack, json_result
from ops.environment import Environment
from ops.errors import StackError
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA, SERVICES
from ops.settings import Settings

CONFIG = f"{AIIDA_HOME_IN_AIIDA}/config.json"
CONFIG_SAVED = f"{AIIDA_HOME_IN_AIIDA}/stack/config.json.pre-upgrade"
FAULT = "AIIDA_STACK_INJECT_FAULT"  # tests only: fail on purpose right after the named step
HEALTH_TIMEOUT = 300


@dataclass
class Running:
    """What the aiida service runs now: its image and the environment it was built from."""

    image: str
    version: str
    lock: str

    @classmethod
    def of(cls, stack: Stack) -> Running:
        container = stack.container(AIIDA)
        if container.status != "running":
            raise StackError("the stack is not running: an upgrade starts from a healthy stack (./stack up)", code=2)
        labels = container.image.labels or {}
        version = labels.get("org.aiida.core.version", "?")
        return cls(container.attrs["Config"]["Image"], version,
                   labels.get("org.aiida-stack.lock") or f"aiida-core-{version}.txt")

    def compose_env(self) -> dict[str, str]:
        """Compose variables that select this image again (they override the env file)."""
        tag = self.image.rsplit(":", 1)[-1].removeprefix(f"{self.version}-")
        return {"AIIDA_CORE_VERSION": self.version, "AIIDA_LOCK": self.lock, "STACK_TAG_AIIDA": tag}


@dataclass
class Journal:
    """Steps done, with their undo, and their durations; unwinds newest first."""

    undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str):
        console.note(f"{name} ...")
        start = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - start, 2)
        console.step(f"{name} ({self.seconds[name]:.1f} s)")
        if os.environ.get(FAULT) == name:
            raise StackError(f"fault injected after {name} ({FAULT})")

    def rollback(self) -> list[str]:
        undone = []
        while self.undo:
            name, action = self.undo.pop()
            console.note(f"rollback: {name}")
            try:
                action()
                undone.append(name)
            except Exception as exc:  # keep undoing the rest; report what could not be undone
                undone.append(f"{name} FAILED ({exc})")
        return undone


def check(stack: Stack, target: Environment) -> tuple[Running, dict]:
    """Everything that can refuse, before anything changes. Returns (running, activity)."""
    running = Running.of(stack)
    if Version(target.version) < Version(running.version):
        raise StackError(f"aiida-core {target.version} is older than the running {running.version}: a downgrade is "
                         "not possible. As the AiiDA how-to says, a database migrated by a newer aiida-core cannot be "
                         "opened by an older one; to go back, restore a backup taken before the upgrade "
                         "(./stack backup.list, ./stack restore) on a stack of the older version. Nothing changed.",
                         code=2)
    environment.require_lock(target)
    if running.lock == target.lock.name:
        return running, {}
    activity = _activity(stack)
    lifecycle.build(stack, only_missing=True)
    _smoke(stack, target, activity)
    return running, activity


def _activity(stack: Stack) -> dict:
    done = stack.exec_aiida([profiles.PROFILE_CLI, "activity"], capture=True)
    return json_result(done.returncode, done.stdout, "reading the profiles' schemas and processes", done.stderr)[
        "profiles"]


def _smoke(stack: Stack, target: Environment, activity: dict) -> None:
    """The new image: its verdi answers, its plugins' entry points load, and it can read every profile's schema."""
    image = stack.images()[AIIDA]
    probe = ("import json, importlib.metadata as md\n"
             "from aiida.storage.psql_dos.migrator import PsqlDosMigrator as M\n"
             "from aiida.plugins.entry_point import get_entry_point_names\n"
             f"names = {json.dumps([_dist(p) for p in target.plugins])}\n"
             "missing = [f'{ep.group}:{ep.name}' for n in names for ep in md.distribution(n).entry_points\n"
             "           if ep.group.startswith('aiida.') and ep.name not in get_entry_point_names(ep.group)]\n"
             "print(json.dumps({'head': M.get_schema_version_head(), 'known': list(M.get_schema_versions()),\n"
             "                  'missing': missing}))\n")
    result = engine.client().containers.run(image, ["-c", probe], entrypoint=["/opt/aiida/bin/python"], remove=True,
                                            environment={"AIIDA_PATH": "/tmp/smoke"}, user="aiida", network_mode="none")
    verdict = json.loads(result.decode().strip().splitlines()[-1])
    if verdict["missing"]:
        raise StackError(f"the new image does not load these plugin entry points: {', '.join(verdict['missing'])}; "
                         "nothing changed")
    newer = {name: p["schema"] for name, p in activity.items() if p["schema"] not in verdict["known"]}
    if newer:
        raise StackError(f"aiida-core {target.version} does not know the schema of {newer} (a newer aiida-core wrote "
                         "it): a downgrade is not possible; nothing changed", code=2)
    console.step(f"new image {image}: verdi answers, plugins load, schema head {verdict['head']}")


def _dist(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def drain(stack: Stack, wait_idle: bool) -> None:
    """Refuse (or with wait_idle, wait) while processes are active or their queues hold tasks."""
    uuids = profiles.names(stack)["uuids"]
    while True:
        active = {name: p["active"] for name, p in _activity(stack).items() if p["active"]}
        queued = {name: n for name, n in broker.queued_tasks(stack, uuids).items() if n}
        if not active and not queued:
            console.step("drained: no active process, no queued task")
            return
        busy = "; ".join([f"{name}: {n} active process(es)" for name, n in active.items()]
                         + [f"{name}: {n} queued task(s)" for name, n in queued.items()])
        if not wait_idle:
            raise StackError(f"the stack is busy ({busy}): unfinished processes cannot be migrated. Let them finish "
                             "and run the upgrade again, or add --wait; nothing changed", code=2)
        console.note(f"waiting until idle: {busy}")
        time.sleep(10)


def upgrade(settings: Settings, yes: bool, wait_idle: bool) -> Table:
    stack = Stack(settings)
    target = Environment.of(settings)
    started, start = dt.datetime.now(dt.timezone.utc), time.monotonic()
    running, activity = check(stack, target)
    if not activity:
        console.step(f"already on {target.describe()}: nothing to upgrade")
        return _summary(stack)
    names = list(activity)
    _confirm(yes, running, target, names)
    drain(stack, wait_idle)
    journal, record = Journal(), {"from": running.lock, "to": target.lock.name, "started": started.isoformat(),
                                  "profiles": names}
    downtime = 0.0
    try:
        with journal.step("stop daemon"):  # each undo is registered inside its step, as soon as there is one
            journal.undo.append(("start daemon", lambda: daemon.start(stack)))
            stopped = time.monotonic()
            daemon.stop(stack)
        with journal.step("back up"):
            record["backups"] = _back_up(stack, names)
        with journal.step("switch"):
            _keep_config(stack)
            journal.undo.append(("config.json back", lambda: _restore_config(stack)))
            journal.undo.append((f"switch back to {running.image}", lambda: _switch_back(stack, running)))
            stack.run("up", "--detach", "--no-deps", "--no-build", AIIDA, capture=True)
            _until_running(stack)
        with journal.step("migrate"):
            # undone after the switch back and config.json (the old aiida-core restores), before the daemon starts
            journal.undo.insert(1, ("restore the pre-upgrade backups", lambda: _restore_all(stack, record["backups"])))
            for name in names:
                _verdi_ok(stack, name, "storage", "migrate", "--force")
        with journal.step("check"):
            for name in names:
                _verdi_ok(stack, name, "storage", "version")
        with journal.step("start"):
            daemon.start(stack)
            downtime = time.monotonic() - stopped
            wait.until_healthy(stack, SERVICES, HEALTH_TIMEOUT)
            _one_calculation(stack)
    except BaseException as exc:
        undone = journal.rollback()
        with contextlib.suppress(Exception):
            wait.until_healthy(stack, SERVICES, HEALTH_TIMEOUT)
        record.update(result="rolled back", error=str(exc)[-500:], undone=undone,
                      seconds=round(time.monotonic() - start, 1), steps=journal.seconds)
        _write_history(stack, record)
        raise StackError(f"upgrade to {target.describe()} failed: {exc}\nrolled back: {', '.join(undone) or 'nothing'}"
                         f"; the stack runs {running.image} again") from None
    record.update(result="ok", seconds=round(time.monotonic() - start, 1), steps=journal.seconds,
                  daemon_downtime=round(downtime, 1))
    _write_history(stack, record)
    lifecycle.record_environment(stack)
    console.step(f"upgraded to {target.describe()} in {record['seconds']:.0f} s "
                 f"(daemon down {downtime:.0f} s); pre-upgrade backups: {record['backups']}")
    return _summary(stack)


def _confirm(yes: bool, running: Running, target: Environment, names: list[str]) -> None:
    question = (f"Upgrade {', '.join(names)} from {running.lock} to {target.lock.name}? The daemon stops, every "
                "profile is backed up and migrated; a migrated database cannot go back to the older aiida-core.")
    if yes:
        return
    if not sys.stdin.isatty():
        raise StackError(f"{question} Confirm with --yes; nothing changed", code=2)
    if console.err.input(f"{question} Type 'upgrade' to go on: ").strip() != "upgrade":
        raise StackError("not confirmed; nothing changed", code=2)


def _back_up(stack: Stack, names: list[str]) -> dict[str, str]:
    taken = {}
    for result in backups.backup(stack, names, keep=None):
        checked = backups.verify(stack, result["profile"], result["id"], scratch=False)
        if not checked["ok"]:
            raise StackError(f"the pre-upgrade backup {result['id']} of {result['profile']} failed verification")
        taken[result["profile"]] = result["id"]
    return taken


def _keep_config(stack: Stack) -> None:
    if stack.exec_aiida(["cp", "-p", CONFIG, CONFIG_SAVED], capture=True).returncode != 0:
        raise StackError("could not keep a copy of config.json before the switch")


def _restore_config(stack: Stack) -> None:
    if stack.exec_aiida(["cp", "-p", CONFIG_SAVED, CONFIG], capture=True).returncode != 0:
        raise StackError("could not put the pre-upgrade config.json back")


def _switch_back(stack: Stack, running: Running) -> None:
    stack.run("up", "--detach", "--no-deps", "--no-build", AIIDA, capture=True, env=running.compose_env())
    _until_running(stack)


def _until_running(stack: Stack) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stack.exec_aiida(["verdi", "--version"], capture=True).returncode == 0:
            return
        time.sleep(1)
    raise StackError("the aiida service did not come up after the switch")


def _restore_all(stack: Stack, taken: dict[str, str]) -> None:
    for name, ident in taken.items():
        backups.restore(stack, ident, name, name, yes=True)


def _verdi_ok(stack: Stack, profile: str, *args: str) -> None:
    done = stack.exec_aiida(["verdi", "-p", profile, *args], capture=True)
    if done.returncode != 0:
        raise StackError(f"verdi -p {profile} {' '.join(args)} exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-500:]}")


def _one_calculation(stack: Stack) -> None:
    code, out = runner.run_script(stack, runner.SCRIPTS / "smoke_calculation.py", capture=True)
    result = json_result(code, out, "the post-upgrade calculation")
    if not result["ok"]:
        raise StackError(f"the post-upgrade calculation did not finish ok: {result}")


def _history_file(stack: Stack):
    return stack.state / "upgrades.json"


def history(stack: Stack) -> list[dict]:
    try:
        return json.loads(_history_file(stack).read_text())
    except (OSError, ValueError):
        return []


def _write_history(stack: Stack, record: dict) -> None:
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    secrets.write_private(_history_file(stack), json.dumps([*history(stack), record], indent=1) + "\n")


def last_upgrade(stack: Stack) -> str:
    """One line for ./stack status."""
    past = history(stack)
    if not past:
        return "none"
    last = past[-1]
    return f"{last['from']} → {last['to']}: {last['result']} at {last.get('finished', '?')[:16]} UTC"


def _summary(stack: Stack) -> Table:
    table = Table("upgrade", "", title="upgrades", title_justify="left")
    for entry in history(stack)[-3:]:
        table.add_row(f"{entry['from']} → {entry['to']}", f"{entry['result']} ({entry.get('seconds', '?')} s)")
    return table
