"""Shared fixtures: image references, a throwaway stack (testcontainers' DockerCompose), ./stack runner.

Images are built by `./stack test` before pytest starts; tests never rebuild them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ryuk (testcontainers' reaper) is an image pulled from a registry, which these machines lack;
# every fixture here removes what it starts.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
# Test stacks make their backups on demand; the scheduler is tested with its own sidecar.
os.environ.setdefault("AIIDA_STACK_BACKUP_SCHEDULE", "off")
# Every test stack mounts a host folder (read-only), as users mount pseudopotentials (test_stack.py).
os.environ.setdefault("AIIDA_STACK_MOUNTS",
                      json.dumps([f"{Path(__file__).parent}/fixtures/mounted:/home/aiida/mounted"]))

from testcontainers.compose import DockerCompose

from ops import engine, secrets, settings, stand_in
from ops.compose import Stack
from ops.services import BACKUP
from ops.settings import ROOT
from ops.stand_in import authorize  # noqa: F401 (the tests' import of it)

SCRIPTS = Path(__file__).parent / "scripts"
MOUNTED, MOUNTED_IN_AIIDA = Path(__file__).parent / "fixtures" / "mounted", "/home/aiida/mounted"


def project_containers(name: str) -> list:
    """Every container of the Compose project `name`, running or not (one-offs included)."""
    return engine.client().containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"})


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@functools.cache
def image_refs() -> dict[str, str]:
    """service → image reference for the current sources and settings (as ./stack builds them)."""
    return Stack(settings.load()).images()


def image_ref(service: str) -> str:
    return image_refs()[service]


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """service → image reference of the images under test (built by ./stack test)."""
    refs = image_refs()
    docker = engine.client()
    missing = [ref for ref in refs.values() if not docker.images.list(name=ref)]
    if missing:
        pytest.fail(f"images not built: {missing}; run the suite through ./stack test")
    return refs


def stack_cli(name: str, *args: str, env: dict[str, str] | None = None, input: str | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ./stack as a user would, against the stack called `name`."""
    full_env = {**os.environ, "AIIDA_STACK_NAME": name, "COLUMNS": "200", **(env or {})}
    return subprocess.run([str(ROOT / "stack"), *args], cwd=ROOT, env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout)


class TestStack:
    """A running stack under test: its settings, compose helper and ./stack runner."""

    __test__ = False  # a helper, not a test class, wherever a test module imports it

    def __init__(self, name: str) -> None:
        self.name = name
        self.settings = settings.load(name=name)
        self.compose = Stack(self.settings)

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return stack_cli(self.name, *args, **kwargs)

    def run_script(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("run", str(SCRIPTS / script), "--", *args)

    def status(self, **kwargs) -> dict:
        """`./stack status --json`, parsed (scripts read this, not the tables)."""
        done = self.cli("status", "--json", **kwargs)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def health(self, **kwargs) -> dict[str, str]:
        """service → its health as ./stack status reports it."""
        return {service: st["health"] for service, st in self.status(**kwargs)["services"].items()}


@pytest.fixture(scope="session")
def stack(images: dict[str, str]) -> Iterator[TestStack]:
    """A whole stack with its own name, volumes and secrets; removed with its volumes afterwards."""
    test_stack = TestStack(unique_name())
    secrets.ensure(test_stack.settings)
    compose = DockerCompose(context=str(ROOT), compose_file_name=[str(f) for f in test_stack.compose.files],
                            env_file=str(test_stack.compose.env_file), wait=True)
    with compose:
        yield test_stack
    subprocess.run(["rm", "-rf", str(test_stack.settings.state_dir)], check=False)


@contextlib.contextmanager
def table_locked(stack: TestStack, database: str, table: str) -> Iterator[None]:
    """An ACCESS EXCLUSIVE lock on `table`, held by a psql session until the block ends."""
    locker = subprocess.Popen(stack.compose.command("exec", "-T", "-u", "postgres", "postgres", "psql", "-X", "-q",
                                                    "-d", database),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    locker.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n")
    locker.stdin.flush()
    try:
        yield
    finally:
        locker.stdin.write("ROLLBACK;\n")
        locker.stdin.close()
        locker.wait(timeout=60)


def wait_for_backup_in_progress(stack: TestStack, profile: str) -> None:
    """Until a backup of `profile` has its in-progress folder (.live-*) in the sidecar."""
    sidecar = stack.compose.container(BACKUP)
    for _ in range(150):
        if ".live-" in sidecar.exec_run(["ls", "-A", f"/backups/{profile}"]).output.decode():
            return
        time.sleep(0.2)
    pytest.fail("the backup never started")



@contextlib.contextmanager
def stand_in_host(stack: TestStack, alias: str) -> Iterator:
    """ops.stand_in's SSH server as `alias` on the stack's egress network (a cluster's login node, or an
    offsite backup host), removed afterwards."""
    container = stand_in.start(stack.settings, alias)
    try:
        yield container
    finally:
        container.remove(force=True)


def host_key_fingerprint(container) -> str:
    done = container.exec_run(["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"])
    return done.output.decode().split()[1]
