"""A restore's steps and its journal: the plan (what goes where under which names, how far it got),
staging, the swap and its way back, the checks, dropping the set-aside copies, the one-off worker
container that does them (ops/restore.py orders them)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from ops import backups, console, daemon, engine, locking, profiles, secrets
from ops.compose import Stack
from ops.errors import StackError
from ops.services import AIIDA_HOME_RW_IN_BACKUP, BACKUP, BACKUP_ENGINE

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


def journal(stack: Stack):
    return stack.state / "restore-journal.json"


def save(stack: Stack, plan: Plan, phase: str | None = None) -> None:
    if phase:
        plan.phase = phase
    secrets.write_private(journal(stack), json.dumps(asdict(plan), indent=1) + "\n")


def pending(stack: Stack) -> Plan | None:
    try:
        return Plan(**json.loads(journal(stack).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StackError(f"{journal(stack)} (an interrupted restore's journal) cannot be read: {exc}; it is "
                         "kept as it is: look at it, then move it away") from None


def killed_after(step: str) -> None:
    if os.environ.get(KILL) == step:
        console.note(f"killed after {step} ({KILL})")
        os.kill(os.getpid(), signal.SIGKILL)



_workers: dict[str, object] = {}  # restore id → its one-off sidecar container


def worker(stack: Stack, plan: Plan):
    """This restore's worker: a one-off sidecar with the AiiDA home writable, labelled with the restore
    (started once: each step is then an exec, not a container start)."""
    worker = _workers.get(plan.id)
    if worker is None:
        volume = f"{stack.settings.name}_aiida-home:{AIIDA_HOME_RW_IN_BACKUP}"
        stack.run("run", "-d", "--rm", "--no-deps", "-T", f"--label={LABEL}={plan.id}", "-v", volume, BACKUP,
                  "sleep", "infinity", capture=True)
        worker = _workers[plan.id] = engine.client().containers.list(filters={"label": f"{LABEL}={plan.id}"})[0]
    return worker


def oneoff(stack: Stack, plan: Plan, *args: str) -> dict:
    """`stack-backup ARGS` in this restore's worker."""
    container = worker(stack, plan)
    done = subprocess.run(["docker", "exec", *locking.token_args(stack), container.id, BACKUP_ENGINE, *args],
                          capture_output=True, text=True)
    if done.returncode == 128 + signal.SIGKILL:  # killed: say what became of the worker (seen once in CI)
        done.stderr += f"\n(SIGKILLed; the worker container {container.name}: {_worker_state(container)})"
    return backups.result(done, f"{BACKUP_ENGINE} {args[0]}")


def _worker_state(container) -> str:
    try:
        container.reload()
    except Exception as exc:
        return f"gone ({exc})"
    state = container.attrs["State"]
    return (f"{state.get('Status')}, exit code {state.get('ExitCode')}, OOM-killed {state.get('OOMKilled')}, "
            f"finished at {state.get('FinishedAt')}")


def stage(stack: Stack, plan: Plan, verify: Callable[[], None]) -> str | None:
    """Load the database and copy the repository under new names while `verify` reads the backup, all
    three at once (the staged copies are new names: a failed verification drops them, nothing touched).
    A new profile's role and database are made first; returns that role's password."""
    console.note(f"stage: database as {plan.names['staged_database']}, repository as "
                 f"{plan.names['staged_folder']}, while the backup is verified (in parallel; the daemon keeps "
                 "running)")
    password = None
    with ThreadPoolExecutor(max_workers=3) as pool:
        verified = pool.submit(verify)
        try:
            started = pool.submit(worker, stack, plan)  # one, before the two steps share it
            if plan.new_profile:  # the service starts a daemon for a new entry at once: not before the end
                daemon.keep_stopped(stack, plan.target)
                password = profiles.create_database(stack, plan.target)  # refuses a role or database that exists
                plan.database_created = True
                save(stack, plan)
            started.result()
            database = pool.submit(oneoff, stack, plan, "restore-database", "--profile", plan.source, plan.backup,
                                   "--target-db", plan.names["staged_database"], "--owner", plan.owner)
            repository = pool.submit(oneoff, stack, plan, "restore-repository", "--profile", plan.source,
                                     plan.backup, "--target-path", plan.path("staged_folder"))
            database, repository = database.result(), repository.result()
        finally:
            verified.result()  # a failed verification is the reason given, whatever the staging said
    console.step(f"staged and checked against the manifest: {database['nodes_restored']} nodes in "
                 f"{database['seconds']:.1f} s, {repository['objects_restored']} objects in "
                 f"{repository['seconds']:.1f} s")
    return password


def swap_args(plan: Plan) -> list[str]:
    return ["--database", plan.database, plan.names["staged_database"], plan.names["old_database"],
            "--repository", plan.path("live"), plan.path("staged_folder"), plan.path("old_folder")]


def swap(stack: Stack, plan: Plan, action: str) -> dict:
    """Swap in (database, then repository: two calls, so that a kill between them is a state the
    tests reach) or back; the swap-in's result says what the live database holds now."""
    if action == "back":
        done = oneoff(stack, plan, "swap", action, *swap_args(plan))
        console.step(f"swapped back: {', '.join(done['database'] + done['repository']) or 'nothing to undo'}")
        return done
    swapped = {}
    for part in ("database", "repository"):
        done = oneoff(stack, plan, "swap", "in", "--part", part, *swap_args(plan))
        console.step(f"swapped {part}: {', '.join(done[part]) or 'already done'}")
        swapped.update(done)
        killed_after(f"swap {part}")
    return swapped


def check(plan: Plan, chosen: dict, swapped: dict) -> None:
    """The live database (the target's own, by its config entry's name) holds what the backup does."""
    if swapped.get("nodes") != chosen["node_count"] or swapped.get("schema") != chosen.get("schema_version"):
        raise StackError(f"{plan.database} holds {swapped.get('nodes')} nodes of schema {swapped.get('schema')} "
                         f"after the swap, the backup {chosen['node_count']} of {chosen.get('schema_version')}")
    plan.checked = {key: swapped[key] for key in ("nodes", "schema", "active_processes")}
    console.step(f"check: {plan.database} holds the backup's {swapped['nodes']} nodes, schema {swapped['schema']}")


def drop(stack: Stack, plan: Plan, database: str, folder: str, remove_worker: bool = False) -> None:
    done = oneoff(stack, plan, "swap", "drop", *swap_args(plan), "--drop-database", plan.names[database],
                   "--drop-folder", plan.path(folder))
    if done["database"] or done["repository"]:
        console.step(f"dropped: {', '.join(done['database'] + done['repository'])}")
    if remove_worker:
        remove_workers(plan)


def roll_back(stack: Stack, plan: Plan) -> None:
    """Put the target back as it was: swap back, drop the staged copies, undo a new profile, start."""
    console.note(f"rolling back the restore into {plan.target} (phase {plan.phase})")
    remove_workers(plan)
    if plan.phase != STAGING:
        swap(stack, plan, "back")
    drop(stack, plan, "staged_database", "staged_folder")
    if plan.new_profile:
        undo_new_profile(stack, plan)
    elif plan.serving:
        daemon.start(stack, plan.target)
        console.step(f"daemon of {plan.target} started")
    journal(stack).unlink(missing_ok=True)
    remove_workers(plan)


def remove_workers(plan: Plan) -> None:
    """One-off containers of this restore still running (their ./stack was killed)."""
    known = _workers.pop(plan.id, None)
    for container in engine.client().containers.list(filters={"label": f"{LABEL}={plan.id}"}):
        with contextlib.suppress(Exception):
            container.remove(force=True)
            if known is None:
                console.note(f"removed the leftover worker {container.name}")


def undo_new_profile(stack: Stack, plan: Plan) -> None:
    if plan.adopted or plan.target in profiles.names(stack)["profiles"]:
        done = stack.exec_aiida([profiles.PROFILE_CLI, "delete", plan.target], capture=True)
        if done.returncode != 0:
            raise StackError(f"could not remove the half-made profile entry {plan.target}: {done.stderr.strip()}")
    if plan.database_created:  # never one that was there before (a profile deleted with --skip-db keeps it)
        profiles.drop_database(stack, plan.target)
    daemon.forget_marker(stack, plan.target)
    console.note(f"removed the half-made profile {plan.target}")


