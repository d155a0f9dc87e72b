"""./stack upgrade: move the running stack to the environment the settings name, by the runbook.

check → drain → stop daemon → back up → switch → migrate → check → start, then the record (the
steps live in ops/runbook.py, shared with ./stack migrate). Nothing changes before `stop daemon`;
a failure after it rolls back: the previous image with its config.json, the pre-upgrade backups
of the profiles the migration touched, the daemon, the paused processes.
"""

from __future__ import annotations

import json

from docker.errors import DockerException
from packaging.requirements import Requirement
from packaging.version import Version
from rich.table import Table
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import console, engine, environment, lifecycle, locking, runbook
from ops.compose import Stack
from ops.environment import Environment
from ops.errors import StackError
from ops.lifecycle import Deployed
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA, BACKUP
from ops.settings import Settings

CONFIG = f"{AIIDA_HOME_IN_AIIDA}/config.json"
CONFIG_SAVED = f"{AIIDA_HOME_IN_AIIDA}/stack/config.json.pre-upgrade"


def check(stack: Stack, target: Environment, pause: bool) -> tuple[Deployed, dict | None]:
    """Everything that can refuse, before anything changes: (running, activity), activity None when
    there is nothing to upgrade."""
    running = Deployed.running(stack)
    if Version(target.version) < Version(running.version):
        raise StackError(f"aiida-core {target.version} is older than the running {running.version}: a downgrade is "
                         "not possible. As the AiiDA how-to says, a database migrated by a newer aiida-core cannot be "
                         "opened by an older one; to go back, restore a backup taken before the upgrade "
                         "(./stack backup.list, ./stack restore) on a stack of the older version. Nothing changed.",
                         code=2)
    environment.require_lock(target)
    if running.same_software(target):
        return running, None
    activity = runbook.activity(stack)
    lifecycle.build(stack, only_missing=True)
    head = _smoke(stack, target, activity)
    moving = sorted(name for name, state in activity.items() if state["schema"] != head)
    if pause and moving:
        raise StackError(f"--pause-running: aiida-core {target.version} migrates the storage of {', '.join(moving)} "
                         f"to {head}, and unfinished processes cannot be migrated (AiiDA how-to). Let them finish "
                         "(--wait) instead; nothing changed", code=2)
    return running, activity


def _smoke(stack: Stack, target: Environment, activity: dict) -> str:
    """The new image: verdi answers, the plugins' entry points load, every stored schema is one it knows.
    Returns its schema head."""
    image = stack.images()[AIIDA]
    probe = ("import json, importlib.metadata as md\n"
             "from aiida.storage.psql_dos.migrator import PsqlDosMigrator as M\n"
             "from aiida.plugins.entry_point import get_entry_point_names\n"
             f"names = {json.dumps([Requirement(p).name for p in target.plugins])}\n"
             "missing = [f'{ep.group}:{ep.name}' for n in names for ep in md.distribution(n).entry_points\n"
             "           if ep.group.startswith('aiida.') and ep.name not in get_entry_point_names(ep.group)]\n"
             "print(json.dumps({'head': M.get_schema_version_head(), 'known': list(M.get_schema_versions()),\n"
             "                  'missing': missing}))\n")
    try:
        output = engine.client().containers.run(image, ["-c", probe], entrypoint=["/opt/aiida/bin/python"],
                                                remove=True, environment={"AIIDA_PATH": "/tmp/smoke"}, user="aiida",
                                                network_mode="none")
        verdict = json.loads(output.decode().strip().splitlines()[-1])
    except (DockerException, ValueError, IndexError) as exc:
        raise StackError(f"the new image {image} failed its smoke test: {str(exc)[-800:]}; nothing changed") from None
    if verdict["missing"]:
        raise StackError(f"the new image does not load these plugin entry points: {', '.join(verdict['missing'])}; "
                         "nothing changed")
    newer = {name: p["schema"] for name, p in activity.items() if p["schema"] not in verdict["known"]}
    if newer:
        raise StackError(f"aiida-core {target.version} does not know the schema of {newer} (a newer aiida-core wrote "
                         "it): a downgrade is not possible; nothing changed", code=2)
    console.step(f"new image {image}: verdi answers, plugins load, schema head {verdict['head']}")
    return verdict["head"]


def upgrade(settings: Settings, yes: bool, wait_idle: bool, pause: bool, wait_lock: bool = True) -> Table:
    stack = Stack(settings)
    target = Environment.of(settings)
    running, activity = check(stack, target, pause)
    if activity is None:
        console.step(f"already on {target.describe()}: nothing to upgrade (./stack up applies the stack's own "
                     "changes)")
        return runbook.summary(stack)
    names = list(activity)
    console.confirm(yes, f"Upgrade {', '.join(names)} from {running.lock} to {target.lock.name}? The daemon stops, "
                    "every profile is backed up and migrated; a migrated database cannot go back to the older "
                    "aiida-core.", "upgrade")
    with locking.held(stack, f"upgrade to {target.describe()}", wait=wait_lock):
        return _upgrade(stack, target, running, names, wait_idle, pause)


def _upgrade(stack: Stack, target: Environment, running: Deployed, names: list[str], wait_idle: bool,
             pause: bool) -> Table:
    change = runbook.Change(stack, "upgrade", names, running.version,
                            record={"from": running.lock, "to": target.lock.name})
    try:
        change.drain(wait_idle, pause)
    except BaseException:
        change.journal.rollback()  # plays what the drain paused; nothing else changed
        raise
    try:
        change.stop_daemon()
        change.back_up()
        _switch(change, running)
        change.migrate()
        change.check()
        change.start()
    except BaseException as exc:
        error = change.roll_back(exc, f"upgrade to {target.describe()}")
        now = _image_now(stack)
        raise StackError(f"{error}\nthe aiida service runs {now}"
                         + ("" if now == running.image else f" (before the upgrade: {running.image})")) from None
    change.succeeded()
    lifecycle.record_environment(stack)
    console.step(f"upgraded to {target.describe()} in {change.record['seconds']:.0f} s "
                 f"(daemon down {change.downtime:.0f} s); pre-upgrade backups: {change.backups}")
    return runbook.summary(stack)


def _switch(change: runbook.Change, running: Deployed) -> None:
    """The new image for the aiida service; the sidecar re-created too (it records the aiida-core version)."""
    stack = change.stack
    with change.journal.step("switch"):
        if stack.exec_aiida(["cp", "-p", CONFIG, CONFIG_SAVED], capture=True).returncode != 0:
            raise StackError("could not keep a copy of config.json before the switch")
        change.journal.on_failure(f"switch back to {running.image} with the pre-upgrade config.json",
                                  lambda: _switch_back(stack, running))
        stack.run("up", "--detach", "--no-deps", "--no-build", AIIDA, BACKUP, capture=True)
        locking.renew(stack)  # the re-created sidecar holds no lock for us
        _until_verdi_answers(stack)


def _switch_back(stack: Stack, running: Deployed) -> None:
    """Stop the new image, put config.json back (a newer aiida-core migrated it), start the old image."""
    old = running.compose_env()
    stack.run("stop", AIIDA, capture=True, env=old)
    stack.run("run", "--rm", "--no-deps", "-T", "--user", "aiida", "--entrypoint", "cp", AIIDA, "-p", CONFIG_SAVED,
              CONFIG, capture=True, env=old)
    stack.run("up", "--detach", "--no-deps", "--no-build", AIIDA, BACKUP, capture=True, env=old)
    locking.renew(stack)
    _until_verdi_answers(stack)


def _until_verdi_answers(stack: Stack) -> None:
    answers = Retrying(stop=stop_after_delay(120), wait=wait_fixed(1), retry=retry_if_result(lambda ok: not ok),
                       retry_error_callback=lambda _: False)
    if not answers(lambda: stack.exec_aiida(["verdi", "--version"], capture=True).returncode == 0):
        raise StackError("the aiida service did not come up after the switch")


def _image_now(stack: Stack) -> str:
    try:
        return stack.container(AIIDA).attrs["Config"]["Image"]
    except (StackError, DockerException) as exc:
        return f"nothing ({exc})"
