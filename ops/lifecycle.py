"""Bring the stack up, down, built (its status: ops/status.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass

from docker.errors import ImageNotFound, NotFound
from rich.table import Table

from ops import building, compose, console, engine, environment, mounts, secrets, ssh, wait
from ops.compose import Stack
from ops.errors import StackError
from ops.services import AIIDA, AIIDA_HOME_VOLUME, BACKUP_VOLUMES, DATA_VOLUMES, SERVICES
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
    compose.refuse_foreign_backups_dir(settings.backups_path)
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


def profile_details(profile: dict) -> Table:
    table = Table("setting", "value", title=f"profile {profile['name']}", title_justify="left")
    for key, value in profile.items():
        if key != "name":
            table.add_row(key, str(value))
    table.add_row("database_password", "[dim](redacted)[/]")
    return table
