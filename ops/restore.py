"""Restore: a backup put back so that no data can be lost, whatever happens on the way.

stage (while the backup is verified) → safety backup → stop daemon → swap → check → start → drop the
old copy. The backup's database and repository are loaded under new names while the daemon still
runs and the backup's every checksum and object is read; each copy is checked against the manifest
there. A failed verification or check drops the staged copies: nothing live was touched, and no safety
backup taken. The daemon stops only for the swap (two renames each; its workers are killed, as the data
they work on is set aside); the replaced copies stay until the checks after the swap pass. The phase
reached is written to a journal in the stack's state before each step, and the stack's lock stays
marked while it runs: a restore killed anywhere is completed (once its checks had passed) or rolled
back by the next ./stack command, or `./stack restore --resume`. Never half old, half new.
"""

from __future__ import annotations

import json
import secrets as token
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from rich.table import Table

from ops import backups, console, daemon, locking, profiles
from ops import restore_steps as steps
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.interrupts import interrupts_held
from ops.rules import database_name, restore_names
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA, BACKUP, POSTGRES


@dataclass
class Restored:
    """What a restore did, for its summary and the benchmark."""

    plan: steps.Plan
    chosen: dict
    safety: str | None
    seconds: float
    downtime: float | None  # the daemon's, when it ran before

    def table(self) -> Table:
        return _summary(self.plan, self.chosen, self.safety, self.seconds, self.downtime)


def restore(stack: Stack, ident: str, source: str, target: str, yes: bool, during_rollback: bool = False,
            wait: bool = True) -> Restored:
    """`during_rollback`: a runbook puts its own verified pre-change backup back; it keeps the daemon
    stopped (the runbook starts it last) and takes no safety backup of the data it failed to change."""
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:  # a named source's backup is looked up beside the listing
        early = pool.submit(_chosen, stack, profiles.validate_name(source), ident) if source else None
        listing = profiles.info(stack)
    source = profiles.validate_name(source or listing["default"])
    target = profiles.validate_name(target or source)
    with locking.held(stack, f"restore of {source}/{ident} into {target}", wait=wait,
                      journal=steps.journal(stack).exists):
        existing = next((p for p in listing["profiles"] if p["name"] == target), None)
        holds_data = _confirmed(existing, target, yes)
        if existing is None:
            profiles.refuse_existing_database(stack, target)
        chosen, head = early.result() if early else _chosen(stack, source, ident)
        plan = _plan(stack, chosen, source, target, existing, during_rollback)
        plan.head = head
        safety = None
        steps.save(stack, plan, steps.STAGING)
        try:
            password = steps.stage(stack, plan, verify=lambda: _verified(stack, source, chosen))
            if holds_data and not during_rollback:  # after the checks: it holds what changed while they ran
                console.note(f"safety backup of {target} (online: its daemon keeps running)")
                safety = backups.backup(stack, [target], keep=None)[0]["id"]
            steps.killed_after("stage")
            stopped = time.monotonic()
            if plan.serving:
                daemon.stop(stack, target, now=True)
            steps.save(stack, plan, steps.SWAPPING)
            swapped = steps.swap(stack, plan, "in")
            steps.save(stack, plan, steps.SWAPPED)
            if plan.new_profile:
                _adopt(stack, target, password, _backed_up_entry(stack, source, chosen["id"]))
                plan.adopted = True
                steps.save(stack, plan)
            steps.check(plan, chosen, swapped)
            steps.save(stack, plan, steps.CHECKED)
            steps.killed_after("check")
        except BaseException as exc:
            with interrupts_held():
                steps.roll_back(stack, plan)
            raise StackError(f"restore of {source}/{chosen['id']} into {target} failed and was rolled back ("
                             + ("the half-made profile was removed" if plan.new_profile
                                else f"{target} holds its data from before") + f"): {exc}") from None
        running = _finish(stack, plan, start_daemon=not during_rollback)
        down = (running or time.monotonic()) - stopped if plan.serving else None
    return Restored(plan, chosen, safety, time.monotonic() - start, down)


def _confirmed(existing: dict | None, target: str, yes: bool) -> bool:
    """Does the target hold data (an unreadable one counts as holding some)? Refuse without --yes."""
    unreadable = existing is not None and existing.get("nodes") is None
    holds_data = unreadable or bool(existing and existing.get("nodes"))
    if holds_data and not yes:
        held = (f"cannot be read ({existing.get('error') or 'unknown error'}) and may hold data" if unreadable
                else f"holds {existing['nodes']} nodes")
        raise StackError(f"profile {target!r} {held}: restoring replaces it; confirm with --yes (a safety backup "
                         "is taken first, and the restore stops if it fails); nothing touched", code=2)
    return holds_data


def _chosen(stack: Stack, source: str, ident: str) -> tuple[dict, str]:
    """The backup's manifest, refused if its schema is newer than this aiida-core's (nothing read yet)."""
    chosen = backups.find(stack, source, ident)
    known = _schema_known(stack, chosen.get("schema_version"))
    if not known["known"]:
        raise StackError(f"backup {chosen['id']} holds schema {chosen.get('schema_version')}, which this "
                         f"aiida-core ({stack.settings.aiida_core_version}, schema {known['head']}) does not know: "
                         f"it was written by a newer aiida-core ({chosen.get('aiida_version') or 'unknown'}); "
                         "upgrade the stack first (./stack upgrade); nothing touched", code=2)
    return chosen, known["head"]


def _verified(stack: Stack, source: str, chosen: dict) -> None:
    """Every checksum, object and object's content of the backup (while it is staged)."""
    checked = backups.verify(stack, source, chosen["id"], scratch=False)
    if not checked["ok"]:
        raise StackError(f"backup {chosen['id']} failed verification, nothing touched: {backups.failures(checked)}")
    console.step(f"verified {chosen['id']} ({chosen['node_count']} nodes, schema {chosen.get('schema_version')}): "
                 "checksums, repository objects and their content")


def _schema_known(stack: Stack, revision: str | None) -> dict:
    if not revision:
        raise StackError("the backup's manifest records no schema version; nothing touched")
    done = stack.exec_aiida([profiles.PROFILE_CLI, "schema-check", revision], capture=True)
    return json_result(done.returncode, done.stdout, "reading the schemas this aiida-core knows", done.stderr)


def _plan(stack: Stack, chosen: dict, source: str, target: str, existing: dict | None,
          during_rollback: bool) -> steps.Plan:
    """The target's own names: its config entry's database and repository (a new profile: the stack's)."""
    if existing is None:
        database = owner = database_name(target)
        repository = f"repository/{target}"
    else:
        database, owner = existing.get("database_name"), existing.get("database_username")
        folder = PurePosixPath(existing.get("repository_path") or "")
        home = PurePosixPath(AIIDA_HOME_IN_AIIDA)
        if not database or not owner or home not in folder.parents or ".." in folder.parts:
            raise StackError(f"profile {target!r} keeps its storage outside the stack (database {database!r}, "
                             f"repository {str(folder)!r}); the stack restores only into its own; nothing touched")
        repository = str(folder.relative_to(home))
    restore_id = token.token_hex(4)
    serving = (existing is not None and not during_rollback
               and not daemon.workers(stack, target).get("disabled"))
    return steps.Plan(id=restore_id, source=source, backup=chosen["id"], target=target, database=database, owner=owner,
                repository=repository, new_profile=existing is None, serving=serving,
                names=restore_names(database, PurePosixPath(repository).name, restore_id))


def _finish(stack: Stack, plan: steps.Plan, start_daemon: bool = True) -> float | None:
    """After the checks passed: repair the broker's tasks, start the daemon, drop the replaced copies.
    Returns when the daemon was seen running (time.monotonic), if it was started."""
    running = None
    current = plan.checked["schema"] == plan.head
    if current and plan.checked["active_processes"]:
        done = stack.exec_aiida([profiles.PROFILE_CLI, "after-restore", plan.target], capture=True)
        json_result(done.returncode, done.stdout, f"repairing the process tasks of {plan.target}", done.stderr)
        console.step(f"{plan.target}: tasks of its {plan.checked['active_processes']} unfinished process(es) "
                     "repaired (broker state is not in backups)")
    elif current:
        console.step(f"{plan.target}: no unfinished process, no task to repair")
    else:
        console.note(f"{plan.target}: its schema is older than this aiida-core's: not migrated (no silent "
                     f"migrations); run ./stack migrate --profile {plan.target}")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the set-aside copies go while the daemon starts
        dropped = pool.submit(steps.drop, stack, plan, "old_database", "old_folder", remove_worker=True)
        if start_daemon and current and (plan.serving or plan.new_profile):
            running = daemon.start(stack, plan.target)
            console.step(f"daemon of {plan.target} started")
        dropped.result()
    steps.journal(stack).unlink(missing_ok=True)
    return running



# ------------------------------------------------------------------------------------------- resume


def resume(stack: Stack, asked: bool = False) -> bool:
    """Complete or roll back an interrupted restore (its journal in the state folder); True if one was.
    `asked` (./stack restore --resume): also clear the lock's mark of a restore killed before its journal."""
    plan = steps.pending(stack)
    if plan is None and not asked:
        return False
    if not all(stack.is_running(service) for service in (BACKUP, AIIDA, POSTGRES)):
        if asked:
            raise StackError("the stack is not running: ./stack up first (it completes or rolls back the "
                             "interrupted restore once the services answer)", code=2)
        console.note(f"an interrupted restore into {plan.target} waits: it is completed or rolled back by the "
                     "first ./stack command once the stack runs")
        return False
    with locking.held(stack, "resume of an interrupted restore", journal=steps.journal(stack).exists, take_over=True):
        plan = steps.pending(stack)  # re-read under the lock
        if plan is None:
            return False
        console.note(f"an interrupted restore of {plan.source}/{plan.backup} into {plan.target} was found "
                     f"(phase {plan.phase}, started {plan.started[:19]} UTC)")
        steps.remove_workers(plan)
        if plan.phase == steps.CHECKED:
            _finish(stack, plan)
            console.step(f"completed: {plan.target} holds the backup {plan.backup}")
        else:
            with interrupts_held():
                steps.roll_back(stack, plan)
            console.step(f"rolled back: {plan.target} " + ("was removed (the restore was creating it)"
                                                           if plan.new_profile else "holds its data from before"))
    return True


def discard(stack: Stack) -> None:
    """The data volumes are gone (./stack down --volumes): so is what an interrupted restore was doing."""
    if steps.journal(stack).exists():
        steps.journal(stack).unlink()
        console.note("dropped the journal of an interrupted restore: its data went with the volumes")


# ------------------------------------------------------------------------------------------ helpers


def _backed_up_entry(stack: Stack, profile: str, ident: str) -> dict:
    """The backed-up profile's config.json entry (options, default user)."""
    done = stack.run("exec", "-T", BACKUP, "cat", f"/backups/{profile}/{ident}/config.json", capture=True, check=False)
    try:
        return json.loads(done.stdout).get("profiles", {}).get(profile, {}) if done.returncode == 0 else {}
    except ValueError:
        return {}


def _adopt(stack: Stack, target: str, password: str, entry: dict) -> None:
    email = entry.get("default_user_email") or stack.settings.user_email
    done = stack.exec_aiida([profiles.PROFILE_CLI, "adopt", target, "--email", email, "--options",
                             json.dumps(entry.get("options") or {})], capture=True, input=password + "\n")
    if done.returncode != 0:
        raise StackError(f"could not write the profile entry of {target}: {done.stderr.strip()[-800:]}")
    console.step(f"profile {target}: entry with this stack's credentials and broker")


def _summary(plan: steps.Plan, chosen: dict, safety: str | None, seconds: float, down: float | None) -> Table:
    summary = Table("restore", "", title=f"restored {plan.source}/{chosen['id']} into {plan.target}",
                    title_justify="left")
    schema = plan.checked["schema"]
    summary.add_row("nodes", str(plan.checked["nodes"]))
    summary.add_row("repository objects", str(chosen["repository_object_count"]))
    summary.add_row("schema", schema if schema == plan.head else
                    f"[yellow]{schema}, older than this aiida-core's {plan.head}[/]: "
                    f"./stack migrate --profile {plan.target} (backs up first, rolls back on failure)"
                    + ("; the daemon stays stopped until then" if plan.serving else ""))
    summary.add_row("safety backup of the replaced data", safety or "not needed (target held no data)")
    summary.add_row("duration", f"{seconds:.1f} s")
    if down is not None:
        summary.add_row("daemon down", f"{down:.1f} s (stop → swap → check → start)")
    return summary
