"""Restore: a backup put back so that no data can be lost, whatever happens on the way.

verify → safety backup → stage → stop daemon → swap → check → start → drop the old copy.
The backup's database and repository are loaded under new names while the daemon still runs, and
each copy is checked against the manifest there. The daemon stops only for the swap (two renames
each); the replaced copies stay until the checks after the swap pass. The phase reached is written
to a journal in the stack's state before each step, and the stack's lock stays marked while it
runs: a restore killed anywhere is completed (once its checks had passed) or rolled back by the
next ./stack command, or `./stack restore --resume`. Never half old, half new.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets as token
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from rich.table import Table

from ops import backups, console, daemon, engine, locking, profiles, secrets
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.interrupts import interrupts_held
from ops.rules import database_name, restore_names
from ops.services import AIIDA, AIIDA_HOME_IN_AIIDA, AIIDA_HOME_RW_IN_BACKUP, BACKUP, BACKUP_ENGINE, POSTGRES

KILL = "AIIDA_STACK_INJECT_KILL"  # tests only: SIGKILL this command right after the named step
LABEL = "aiida-stack.restore"  # on every container a restore starts: a resume removes leftovers
STAGING, SWAPPING, SWAPPED, CHECKED = "staging", "swapping", "swapped", "checked"


@dataclass
class Plan:
    """One restore: what goes where under which names, and how far it got (the journal's content)."""

    id: str
    source: str
    backup: str
    target: str
    database: str  # the target's own database and role, from its config entry
    owner: str
    repository: str  # the target's repository folder, relative to the AiiDA home
    new_profile: bool
    serving: bool  # its daemon ran before: start it at the end
    names: dict = field(default_factory=dict)
    head: str = ""  # this aiida-core's schema
    phase: str = STAGING
    database_created: bool = False  # a new profile's role and database: made by this restore, so undone by it
    adopted: bool = False
    checked: dict = field(default_factory=dict)  # what the live database held after the swap
    started: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    def path(self, key: str) -> str:
        """A repository folder as the one-off sidecar sees it (live, staged_folder, old_folder)."""
        folder = PurePosixPath(AIIDA_HOME_RW_IN_BACKUP) / self.repository
        return str(folder if key == "live" else folder.with_name(self.names[key]))


def _journal(stack: Stack):
    return stack.state / "restore-journal.json"


def _save(stack: Stack, plan: Plan, phase: str | None = None) -> None:
    if phase:
        plan.phase = phase
    secrets.write_private(_journal(stack), json.dumps(asdict(plan), indent=1) + "\n")


def pending(stack: Stack) -> Plan | None:
    try:
        return Plan(**json.loads(_journal(stack).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StackError(f"{_journal(stack)} (an interrupted restore's journal) cannot be read: {exc}; it is "
                         "kept as it is: look at it, then move it away") from None


def _killed_after(step: str) -> None:
    if os.environ.get(KILL) == step:
        console.note(f"killed after {step} ({KILL})")
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------ restore


@dataclass
class Restored:
    """What a restore did, for its summary and the benchmark."""

    plan: Plan
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
    listing = profiles.info(stack)
    source = profiles.validate_name(source or listing["default"])
    target = profiles.validate_name(target or source)
    with locking.held(stack, f"restore of {source}/{ident} into {target}", wait=wait,
                      journal=_journal(stack).exists):
        existing = next((p for p in listing["profiles"] if p["name"] == target), None)
        holds_data = _confirmed(existing, target, yes)
        if existing is None:
            profiles.refuse_existing_database(stack, target)
        chosen, head = _verified(stack, source, ident)
        plan = _plan(stack, chosen, source, target, existing, during_rollback)
        plan.head = head
        safety = None
        if holds_data and not during_rollback:
            console.note(f"safety backup of {target} (online: its daemon keeps running)")
            safety = backups.backup(stack, [target], keep=None)[0]["id"]
        _save(stack, plan, STAGING)
        try:
            if plan.new_profile:
                password = profiles.create_database(stack, target)  # refuses a role or database that exists
                plan.database_created = True
                _save(stack, plan)
            _stage(stack, plan)
            _killed_after("stage")
            stopped = time.monotonic()
            if plan.serving:
                daemon.stop(stack, target)
            elif plan.new_profile:
                daemon.keep_stopped(stack, target)  # the service starts a daemon for a new entry at once
            _save(stack, plan, SWAPPING)
            swapped = _swap(stack, plan, "in")
            _save(stack, plan, SWAPPED)
            if plan.new_profile:
                _adopt(stack, target, password, _backed_up_entry(stack, source, chosen["id"]))
                plan.adopted = True
                _save(stack, plan)
            _check(plan, chosen, swapped)
            _save(stack, plan, CHECKED)
            _killed_after("check")
        except BaseException as exc:
            with interrupts_held():
                _roll_back(stack, plan)
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


def _verified(stack: Stack, source: str, ident: str) -> tuple[dict, str]:
    console.note(f"verify: {source} {ident} (checksums, repository objects and their content)")
    checked = backups.verify(stack, source, ident, scratch=False)
    if not checked["ok"]:
        raise StackError(f"backup {checked.get('id', ident)} failed verification, nothing touched: "
                         f"{backups.failures(checked)}")
    chosen = backups.find(stack, source, checked["id"])
    known = _schema_known(stack, chosen.get("schema_version"))
    if not known["known"]:
        raise StackError(f"backup {chosen['id']} holds schema {chosen.get('schema_version')}, which this "
                         f"aiida-core ({stack.settings.aiida_core_version}, schema {known['head']}) does not know: "
                         f"it was written by a newer aiida-core ({chosen.get('aiida_version') or 'unknown'}); "
                         "upgrade the stack first (./stack upgrade); nothing touched", code=2)
    console.step(f"verified {chosen['id']} ({chosen['node_count']} nodes, schema {chosen.get('schema_version')})")
    return chosen, known["head"]


def _schema_known(stack: Stack, revision: str | None) -> dict:
    if not revision:
        raise StackError("the backup's manifest records no schema version; nothing touched")
    done = stack.exec_aiida([profiles.PROFILE_CLI, "schema-check", revision], capture=True)
    return json_result(done.returncode, done.stdout, "reading the schemas this aiida-core knows", done.stderr)


def _plan(stack: Stack, chosen: dict, source: str, target: str, existing: dict | None,
          during_rollback: bool) -> Plan:
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
    return Plan(id=restore_id, source=source, backup=chosen["id"], target=target, database=database, owner=owner,
                repository=repository, new_profile=existing is None, serving=serving,
                names=restore_names(database, PurePosixPath(repository).name, restore_id))


# -------------------------------------------------------------------------------------------- steps


_workers: dict[str, object] = {}  # restore id → its one-off sidecar container


def _worker(stack: Stack, plan: Plan):
    """This restore's worker: a one-off sidecar with the AiiDA home writable, labelled with the restore
    (started once: each step is then an exec, not a container start)."""
    worker = _workers.get(plan.id)
    if worker is None:
        volume = f"{stack.settings.name}_aiida-home:{AIIDA_HOME_RW_IN_BACKUP}"
        stack.run("run", "-d", "--rm", "--no-deps", "-T", f"--label={LABEL}={plan.id}", "-v", volume, BACKUP,
                  "sleep", "infinity", capture=True)
        worker = _workers[plan.id] = engine.client().containers.list(filters={"label": f"{LABEL}={plan.id}"})[0]
    return worker


def _oneoff(stack: Stack, plan: Plan, *args: str) -> dict:
    """`stack-backup ARGS` in this restore's worker."""
    worker = _worker(stack, plan)
    done = subprocess.run(["docker", "exec", *locking.token_args(stack), worker.id, BACKUP_ENGINE, *args],
                          capture_output=True, text=True)
    return backups.result(done, f"{BACKUP_ENGINE} {args[0]}")


def _stage(stack: Stack, plan: Plan) -> None:
    console.note(f"stage: database as {plan.names['staged_database']}, repository as "
                 f"{plan.names['staged_folder']} (in parallel; the daemon keeps running)")
    _worker(stack, plan)  # one, before the two steps share it
    with ThreadPoolExecutor(max_workers=2) as pool:
        database = pool.submit(_oneoff, stack, plan, "restore-database", "--profile", plan.source, plan.backup,
                               "--target-db", plan.names["staged_database"], "--owner", plan.owner)
        repository = pool.submit(_oneoff, stack, plan, "restore-repository", "--profile", plan.source, plan.backup,
                                 "--target-path", plan.path("staged_folder"))
        database, repository = database.result(), repository.result()
    console.step(f"staged and checked against the manifest: {database['nodes_restored']} nodes in "
                 f"{database['seconds']:.1f} s, {repository['objects_restored']} objects in "
                 f"{repository['seconds']:.1f} s")


def _swap_args(plan: Plan) -> list[str]:
    return ["--database", plan.database, plan.names["staged_database"], plan.names["old_database"],
            "--repository", plan.path("live"), plan.path("staged_folder"), plan.path("old_folder")]


def _swap(stack: Stack, plan: Plan, action: str) -> dict:
    """Swap in (database, then repository: two calls, so that a kill between them is a state the
    tests reach) or back; the swap-in's result says what the live database holds now."""
    if action == "back":
        done = _oneoff(stack, plan, "swap", action, *_swap_args(plan))
        console.step(f"swapped back: {', '.join(done['database'] + done['repository']) or 'nothing to undo'}")
        return done
    swapped = {}
    for part in ("database", "repository"):
        done = _oneoff(stack, plan, "swap", "in", "--part", part, *_swap_args(plan))
        console.step(f"swapped {part}: {', '.join(done[part]) or 'already done'}")
        swapped.update(done)
        _killed_after(f"swap {part}")
    return swapped


def _check(plan: Plan, chosen: dict, swapped: dict) -> None:
    """The live database (the target's own, by its config entry's name) holds what the backup does."""
    if swapped.get("nodes") != chosen["node_count"] or swapped.get("schema") != chosen.get("schema_version"):
        raise StackError(f"{plan.database} holds {swapped.get('nodes')} nodes of schema {swapped.get('schema')} "
                         f"after the swap, the backup {chosen['node_count']} of {chosen.get('schema_version')}")
    plan.checked = {key: swapped[key] for key in ("nodes", "schema", "active_processes")}
    console.step(f"check: {plan.database} holds the backup's {swapped['nodes']} nodes, schema {swapped['schema']}")


def _finish(stack: Stack, plan: Plan, start_daemon: bool = True) -> float | None:
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
    if start_daemon and current and (plan.serving or plan.new_profile):
        running = daemon.start(stack, plan.target)
        console.step(f"daemon of {plan.target} started")
    _drop(stack, plan, "old_database", "old_folder")
    _journal(stack).unlink(missing_ok=True)
    _remove_workers(plan)
    return running


def _drop(stack: Stack, plan: Plan, database: str, folder: str) -> None:
    done = _oneoff(stack, plan, "swap", "drop", *_swap_args(plan), "--drop-database", plan.names[database],
                   "--drop-folder", plan.path(folder))
    if done["database"] or done["repository"]:
        console.step(f"dropped: {', '.join(done['database'] + done['repository'])}")


def _roll_back(stack: Stack, plan: Plan) -> None:
    """Put the target back as it was: swap back, drop the staged copies, undo a new profile, start."""
    console.note(f"rolling back the restore into {plan.target} (phase {plan.phase})")
    _remove_workers(plan)
    if plan.phase != STAGING:
        _swap(stack, plan, "back")
    _drop(stack, plan, "staged_database", "staged_folder")
    if plan.new_profile:
        _undo_new_profile(stack, plan)
    elif plan.serving:
        daemon.start(stack, plan.target)
        console.step(f"daemon of {plan.target} started")
    _journal(stack).unlink(missing_ok=True)
    _remove_workers(plan)


def _remove_workers(plan: Plan) -> None:
    """One-off containers of this restore still running (their ./stack was killed)."""
    known = _workers.pop(plan.id, None)
    for container in engine.client().containers.list(filters={"label": f"{LABEL}={plan.id}"}):
        with contextlib.suppress(Exception):
            container.remove(force=True)
            if known is None:
                console.note(f"removed the leftover worker {container.name}")


def _undo_new_profile(stack: Stack, plan: Plan) -> None:
    if plan.adopted or plan.target in profiles.names(stack)["profiles"]:
        done = stack.exec_aiida([profiles.PROFILE_CLI, "delete", plan.target], capture=True)
        if done.returncode != 0:
            raise StackError(f"could not remove the half-made profile entry {plan.target}: {done.stderr.strip()}")
    if plan.database_created:  # never one that was there before (a profile deleted with --skip-db keeps it)
        profiles.drop_database(stack, plan.target)
    daemon.forget_marker(stack, plan.target)
    console.note(f"removed the half-made profile {plan.target}")


# ------------------------------------------------------------------------------------------- resume


def resume(stack: Stack, asked: bool = False) -> bool:
    """Complete or roll back an interrupted restore (its journal in the state folder); True if one was.
    `asked` (./stack restore --resume): also clear the lock's mark of a restore killed before its journal."""
    plan = pending(stack)
    if plan is None and not asked:
        return False
    if not all(stack.is_running(service) for service in (BACKUP, AIIDA, POSTGRES)):
        if asked:
            raise StackError("the stack is not running: ./stack up first (it completes or rolls back the "
                             "interrupted restore once the services answer)", code=2)
        console.note(f"an interrupted restore into {plan.target} waits: it is completed or rolled back by the "
                     "first ./stack command once the stack runs")
        return False
    with locking.held(stack, "resume of an interrupted restore", journal=_journal(stack).exists, take_over=True):
        plan = pending(stack)  # re-read under the lock
        if plan is None:
            return False
        console.note(f"an interrupted restore of {plan.source}/{plan.backup} into {plan.target} was found "
                     f"(phase {plan.phase}, started {plan.started[:19]} UTC)")
        _remove_workers(plan)
        if plan.phase == CHECKED:
            _finish(stack, plan)
            console.step(f"completed: {plan.target} holds the backup {plan.backup}")
        else:
            with interrupts_held():
                _roll_back(stack, plan)
            console.step(f"rolled back: {plan.target} " + ("was removed (the restore was creating it)"
                                                           if plan.new_profile else "holds its data from before"))
    return True


def discard(stack: Stack) -> None:
    """The data volumes are gone (./stack down --volumes): so is what an interrupted restore was doing."""
    if _journal(stack).exists():
        _journal(stack).unlink()
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


def _summary(plan: Plan, chosen: dict, safety: str | None, seconds: float, down: float | None) -> Table:
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
