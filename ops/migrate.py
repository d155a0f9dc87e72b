"""./stack migrate: the runbook's migrate step alone, for profiles whose stored schema is older than the
running aiida-core's (a profile restored from an older backup, for one). Same rules as an upgrade:
drain → stop daemon → back up (verified) → migrate → check → start, and a rollback that restores the
pre-migration backup of every profile it touched.
"""

from __future__ import annotations

from rich.table import Table

from ops import console, locking, runbook
from ops.compose import Stack
from ops.lifecycle import Deployed
from ops.settings import Settings


def migrate(settings: Settings, profile: str | None, yes: bool, wait_idle: bool, wait_lock: bool = True) -> Table:
    stack = Stack(settings)
    running = Deployed.running(stack)
    activity = runbook.activity(stack)
    behind = {name: state for name, state in activity.items()
              if state["schema"] != state["head"] and (profile is None or name == profile)}
    if not behind:
        console.step(f"{profile or 'every profile'}: schema {next(iter(activity.values()))['head']}, current; "
                     "nothing to migrate")
        return runbook.summary(stack)
    names = sorted(behind)
    described = ", ".join(f"{name} ({state['schema']} → {state['head']})" for name, state in behind.items())
    console.confirm(yes, f"Migrate {described}? The daemon stops and each is backed up first; a migrated database "
                    f"cannot be opened by an older aiida-core than {running.version}.", "migrate")
    with locking.held(stack, f"migration of {', '.join(names)}", wait=wait_lock):
        return _migrate(stack, running, names, described, wait_idle)


def _migrate(stack: Stack, running: Deployed, names: list[str], described: str, wait_idle: bool) -> Table:
    change = runbook.Change(stack, "migrate", names, running.version)
    change.drain(wait_idle, pause=False)  # refuses, or waits: nothing changes before the daemon stops
    try:
        change.stop_daemon()
        change.back_up()
        change.migrate()
        change.check()
        change.start()
    except BaseException as exc:
        raise change.roll_back(exc, f"migrating {', '.join(names)}") from None
    change.succeeded()
    console.step(f"migrated {described} in {change.record['seconds']:.0f} s; pre-migration backups: "
                 f"{change.backups}")
    return runbook.summary(stack)
