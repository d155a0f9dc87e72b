"""Bring the stack up, down, built; report its status."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass

from docker.errors import ImageNotFound, NotFound
from rich.console import Group
from rich.table import Table

from ops import backups, building, console, daemon, engine, environment, mounts, profiles, runbook, secrets, ssh, wait
from ops.compose import Stack
from ops.errors import StackError
from ops.runner import aiida_info
from ops.services import AIIDA, AIIDA_HOME_VOLUME, BACKUP, BACKUP_VOLUMES, DATA_VOLUMES, SERVICES
from ops.settings import Settings


def prepare(settings: Settings) -> Stack:
    """Every missing host-side step: engine, Compose, base image, secrets."""
    docker = engine.ensure_engine()
    console.step(f"engine: Docker {docker.version()['Version']}")
    console.step(f"compose: {engine.ensure_compose()}")
    console.step(f"base image {settings.base_image}: {engine.ensure_base_image(settings, docker)}")
    created = secrets.ensure(settings)
    console.step(f"secrets: {'generated ' + ', '.join(created) if created else 'present'} "
                 f"({secrets.secrets_dir(settings)}, mode 0600)")
    return Stack(settings)


def build(stack: Stack, only_missing: bool = False, verbose: bool = False) -> list[str]:
    environment.require_lock(environment.Environment.of(stack.settings))
    docker = engine.client()
    wanted = []
    for service, image in stack.images().items():
        try:
            if only_missing:
                docker.images.get(image)
                continue
        except ImageNotFound:
            pass
        wanted.append(service)
    if wanted:
        building.build(stack, wanted, verbose=verbose)
    return wanted


ENVIRONMENT_RECORD = "environment.json"  # in the state folder: the environment the stack's data last ran with
LOCK_IN_IMAGE = "/opt/aiida-lock.txt"


@dataclass(frozen=True)
class Deployed:
    """The environment the stack's aiida service runs (or, when it is down, last ran)."""

    version: str
    lock: str  # the lock file's name
    digest: str | None  # its content's (None: recorded before digests were kept)
    image: str | None = None  # the running container's image reference

    @classmethod
    def running(cls, stack: Stack) -> Deployed:
        """From the running aiida container; StackError when it does not run."""
        try:
            container = stack.container(AIIDA)
        except StackError:
            container = None
        if container is None or container.status != "running":
            state = container.status if container else "not there"
            raise StackError(f"stack {stack.settings.name} is not running (its aiida service is {state}): start it "
                             "first (./stack up); nothing changed", code=2)
        labels = container.image.labels or {}
        version = labels.get("org.aiida.core.version", "?")
        pinned = container.exec_run(["cat", LOCK_IN_IMAGE])
        return cls(version, labels.get("org.aiida-stack.lock") or f"aiida-core-{version}.txt",
                   environment.digest_of(pinned.output) if pinned.exit_code == 0 else None,
                   container.attrs["Config"]["Image"])

    @classmethod
    def of(cls, stack: Stack) -> Deployed | None:
        """Running, else recorded; None when the stack holds no data yet (any environment may start)."""
        with contextlib.suppress(StackError):
            return cls.running(stack)
        try:
            engine.client().volumes.get(f"{stack.settings.name}_{AIIDA_HOME_VOLUME}")
        except NotFound:
            return None
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads((stack.state / ENVIRONMENT_RECORD).read_text())
            return cls(record["aiida_core_version"], record["lock"], record.get("digest"))
        return None

    def same_software(self, target: environment.Environment) -> bool:
        digest = target.lock_digest
        return self.lock == target.lock.name and (None in (self.digest, digest) or self.digest == digest)

    def compose_env(self) -> dict[str, str]:
        """Compose variables that select this image again (they override the env file)."""
        tag = (self.image or "").rsplit(":", 1)[-1].removeprefix(f"{self.version}-")
        return {"AIIDA_CORE_VERSION": self.version, "AIIDA_LOCK": self.lock, "STACK_TAG_AIIDA": tag}


def refuse_silent_upgrade(stack: Stack) -> None:
    target = environment.Environment.of(stack.settings)
    current = Deployed.of(stack)
    if current and not current.same_software(target):
        changed = (f"the settings now name {target.lock.name} ({target.describe()})" if current.lock != target.lock.name
                   else f"{target.lock.name} was re-locked since (other pins)")
        raise StackError(f"the stack's data runs on {current.lock}; {changed}. Changing the software under existing "
                         "data is an upgrade: ./stack upgrade (checks, backs up, migrates, rolls back on failure); "
                         "nothing started", code=2)


def record_environment(stack: Stack) -> None:
    env = environment.Environment.of(stack.settings)
    secrets.write_private(stack.state / ENVIRONMENT_RECORD, json.dumps(
        {"lock": env.lock.name, "digest": env.lock_digest, **env.as_dict()}))


def up(settings: Settings, verbose: bool = False) -> Stack:
    environment.require_lock(environment.Environment.of(settings))  # before any set-up step writes anything
    absent = mounts.missing(settings.host_mounts)
    if absent:
        raise StackError(f"mounts: no such host path: {', '.join(absent)}; nothing started", code=2)
    ssh_changed = ssh.stage_config(settings)  # an unreadable ssh_config stops here, before anything starts
    stack = prepare(settings)
    refuse_silent_upgrade(stack)
    built = build(stack, only_missing=True, verbose=verbose)
    if not built:
        console.step("images: present")
    start = time.monotonic()
    stack.run("up", "--detach", "--remove-orphans", "--quiet-pull", capture=True)
    wait.until_healthy(stack, SERVICES, settings.up_timeout)
    if ssh_changed:  # a service that was not re-created gets the edited ssh_config too
        ssh.install(stack)
    record_environment(stack)
    console.step(f"stack {settings.name} healthy after {time.monotonic() - start:.1f} s")
    return stack


def down(settings: Settings, volumes: bool, yes: bool) -> None:
    stack = Stack(settings)
    if volumes and not yes:
        if not sys.stdin.isatty():
            raise StackError("`down --volumes` deletes the databases, broker state and file repositories "
                             f"of stack {settings.name}: confirm with --yes", code=2)
        answer = console.err.input(f"Delete all data of stack [bold]{settings.name}[/]? Type its name: ")
        if answer.strip() != settings.name:
            raise StackError("not confirmed; nothing deleted", code=2)
    engine.client()  # a clear error when no engine answers
    stack.run("down", "--remove-orphans")
    console.step(f"stack {settings.name} stopped")
    if volumes:
        removed = remove_volumes(settings, DATA_VOLUMES)
        console.step(f"data volumes removed: {', '.join(removed) or 'none'}; kept: {', '.join(BACKUP_VOLUMES)}")


def remove_throwaway(settings: Settings) -> None:
    """A stack a benchmark made for itself, gone entirely: containers, every volume (backups too), its state."""
    down(settings, volumes=True, yes=True)
    remove_volumes(settings, BACKUP_VOLUMES)
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    console.step(f"removed the throwaway stack {settings.name} (--keep keeps it)")


def remove_volumes(settings: Settings, names: tuple[str, ...]) -> list[str]:
    docker = engine.client()
    removed = []
    for name in names:
        try:
            docker.volumes.get(f"{settings.name}_{name}").remove()
            removed.append(name)
        except NotFound:
            pass
    return removed


def status(settings: Settings) -> Group:
    """Services (state, health), the aiida service's view (version, daemon, processes), the profiles."""
    stack = Stack(settings)
    engine.client()
    states = wait.service_states(stack)
    table = Table("service", "state", "health", "detail", title=f"stack {settings.name}", title_justify="left")
    detail, listing, schemas, daemons = {}, None, {}, {}
    if states.get(AIIDA, {}).get("state") == "running":
        try:
            info = aiida_info(stack)
            listing = profiles.info(stack)
            schemas = runbook.activity(stack)
            daemons = daemon.every_state(stack)
            plugins = f" with {', '.join(info['plugins'])}" if info.get("plugins") else ""
            active = sum(p["active"] for p in schemas.values())
            detail[AIIDA] = (f"aiida-core {info['aiida_core']}{plugins}; default profile: {info['default_profile']}; "
                             f"active processes: {active}; last upgrade: {runbook.last_change(stack)}")
        except StackError as exc:
            detail[AIIDA] = f"[red]{exc}[/]"
    if states.get(BACKUP, {}).get("state") == "running":
        detail[BACKUP] = backups.schedule_summary(stack)
    for service in SERVICES:
        st = states.get(service)
        if st is None:
            table.add_row(service, "[dim]absent[/]", "", "")
            continue
        colour = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}.get(st["health"], "white")
        table.add_row(service, st["state"], f"[{colour}]{st['health']}[/]", detail.get(service, ""))
    if not listing:
        return Group(table)
    latest = {}
    if states.get(BACKUP, {}).get("state") == "running":
        with contextlib.suppress(StackError):
            for b in backups.published(stack):
                latest.setdefault(b["profile"], b)
    return Group(table, profiles_table(listing, latest, schemas, daemons))


def profiles_table(listing: dict, latest: dict | None = None, schemas: dict | None = None,
                   daemons: dict | None = None) -> Table:
    columns = ["profile", "default", "nodes", *(["schema"] if schemas else []), *(["daemon"] if daemons else []),
               "database", "repository"]
    table = Table(*columns, *(["last backup"] if latest is not None else []), title="profiles", title_justify="left")
    for p in listing["profiles"]:
        nodes = str(p["nodes"]) if p.get("nodes") is not None else f"[red]{p.get('error', '?')}[/]"
        row = [p["name"], "✔" if p["is_default"] else "", nodes]
        if schemas:
            row.append(schema_state(schemas.get(p["name"])))
        if daemons:
            row.append(daemon.describe(daemons.get(p["name"])))
        row += [f"{p['database_name']}@{p['database_hostname']}", p["repository_path"]]
        if latest is not None:
            row.append(backups.describe(latest.get(p["name"])))
        table.add_row(*row)
    return table


def schema_state(state: dict | None) -> str:
    if not state:
        return "?"
    if state["schema"] == state["head"]:
        return f"{state['schema']} (current)"
    return f"[yellow]{state['schema']}: needs ./stack migrate (to {state['head']})[/]"


def profile_details(profile: dict) -> Table:
    table = Table("setting", "value", title=f"profile {profile['name']}", title_justify="left")
    for key, value in profile.items():
        if key != "name":
            table.add_row(key, str(value))
    table.add_row("database_password", "[dim](redacted)[/]")
    return table
