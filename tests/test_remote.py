"""./stack remote.up / remote.status / remote.down against a real SSH server (tests/remote/Dockerfile)
that runs the stack with a real Docker client.

No nested engine is possible on these machines, so the stand-in uses the host's engine through its
socket; the remote folder lies at the same path in both, so the remote stack's bind mounts resolve. The
images therefore exist on "the remote" already: the test sends them anyway (--images always) and checks
that `docker load` there took every one."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ops import engine, stand_in
from ops.services import SERVICES
from ops.settings import ROOT

from .conftest import project_containers, stack_cli, unique_name

pytestmark = pytest.mark.stack

IMAGE = "aiida-stack-test/remote:latest"


@pytest.fixture(scope="module")
def machine_image(images) -> str:
    built, _ = engine.client().images.build(path=str(ROOT / "tests" / "remote"), tag=IMAGE,
                                            buildargs={"BASE_IMAGE": "debian:bookworm-slim"})
    return built.id


@pytest.fixture
def machine(machine_image):
    """(container, the remote folder): the stand-in machine, and a folder for its stack (as on the host)."""
    docker = engine.client()
    parent = Path(tempfile.mkdtemp(prefix="aiida-stack-remote-"))
    parent.chmod(0o755)
    folder = parent / unique_name("r")
    container = docker.containers.run(machine_image, detach=True, name=f"{folder.name}-machine", volumes={
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
        str(parent): {"bind": str(parent), "mode": "rw"},
        "/etc/ssl/certs/ca-certificates.crt": {"bind": "/etc/ssl/certs/ca-certificates.crt", "mode": "ro"}})
    try:
        assert container.exec_run(["chown", "bob:bob", str(parent)]).exit_code == 0
        yield container, folder
    finally:
        container.remove(force=True)
        _remove_stacks_under(parent, folder.name)
        shutil.rmtree(parent, ignore_errors=True)


def _remove_stacks_under(parent: Path, stack: str) -> None:
    """The remote stack `stack` (its backups volume outlives remote.down --volumes) and any other whose folder
    is below `parent` (left by a failure): containers, volumes, networks."""
    docker = engine.client()
    names = {c.labels.get("com.docker.compose.project") for c in docker.containers.list(all=True)
             if c.labels.get("com.docker.compose.project.working_dir", "").startswith(f"{parent}/")}
    for name in (names | {stack}) - {None}:
        project = {"label": f"com.docker.compose.project={name}"}
        for leftover in docker.containers.list(all=True, filters=project):
            leftover.remove(force=True)
        for leftover in [*docker.volumes.list(filters=project), *docker.networks.list(filters=project)]:
            leftover.remove()


def test_remote_up_ships_project_and_images_and_brings_a_healthy_stack_up_there(machine):
    container, folder = machine
    container.reload()
    host = f"bob@{container.attrs['NetworkSettings']['IPAddress']}:{folder}"
    local = unique_name()  # this side's state: the remote key and known_hosts
    try:
        _remote_up(container, folder, host, local)
    finally:
        shutil.rmtree(ROOT / ".stack" / local, ignore_errors=True)


def _remote_up(container, folder: Path, host: str, local: str) -> None:
    first = stack_cli(local, "remote.up", "--host", host)  # no key yet: one is made and shown
    assert first.returncode == 2, first.stdout + first.stderr
    public = first.stdout.strip().splitlines()[-1]
    assert public.startswith("ssh-ed25519 ") and "authorized_keys" in first.stderr
    stand_in.authorize(container, public, user="bob")

    unknown = stack_cli(local, "remote.up", "--host", host)  # first contact: the fingerprint, nothing sent
    assert unknown.returncode == 2 and "--accept-host-key" in unknown.stderr, unknown.stdout + unknown.stderr
    fingerprint = container.exec_run(["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.split()[1]
    assert fingerprint.decode() in unknown.stderr
    assert not folder.exists()

    theirs = folder.with_name("thesis")  # a folder remote.up did not make: refused, left as it was
    assert container.exec_run(["sh", "-c", f"mkdir {theirs} && echo draft > {theirs}/thesis.tex"],
                              user="bob").exit_code == 0
    refused = stack_cli(local, "remote.up", "--host", f"{host.rpartition(':')[0]}:{theirs}", "--accept-host-key")
    assert refused.returncode == 2 and "did not put there" in refused.stderr, refused.stdout + refused.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]

    done = stack_cli(local, "remote.up", "--host", host, "--accept-host-key", "--images", "always", "--json",
                     timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    status = json.loads(done.stdout)
    assert {name: s["health"] for name, s in status["services"].items()} == dict.fromkeys(SERVICES, "healthy")
    assert "the remote loaded 5" in done.stderr, done.stderr[-3000:]  # four images and the base
    shipped = json.loads((folder / ".aiida-stack-remote").read_text())
    assert shipped["commit"] == _head()
    assert (folder / "stack").is_file() and (folder / ".stack" / folder.name / "secrets").is_dir()

    listed = stack_cli(local, "remote.status", "--host", host, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert {n: s["health"] for n, s in json.loads(listed.stdout)["services"].items()} == dict.fromkeys(
        SERVICES, "healthy")
    assert any(p["name"] for p in json.loads(listed.stdout)["profiles"])

    refused = stack_cli(local, "remote.down", "--host", host, "--volumes")  # data goes only with --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert project_containers(folder.name)
    down = stack_cli(local, "remote.down", "--host", host, "--volumes", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert project_containers(folder.name) == []
    left = engine.client().volumes.list(filters={"label": f"com.docker.compose.project={folder.name}"})
    assert [v.name for v in left] == [f"{folder.name}_backups"]  # as ./stack down --volumes: backups stay
    print(*[line for line in done.stderr.splitlines() if "ship " in line or "after" in line], sep="\n")


def _head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_a_machine_that_never_answers_the_handshake_is_given_up_after_the_timeout(machine_image):
    """A port that accepts the connection and then says nothing (a hung sshd, a wrong service)."""
    listen = "import socket, time; s = socket.socket(); s.bind(('', 22)); s.listen(); c = s.accept(); time.sleep(600)"
    silent = engine.client().containers.run(machine_image, ["python3", "-c", listen], detach=True,
                                            name=unique_name("silent"))
    local = unique_name()
    try:
        silent.reload()
        host = f"bob@{silent.attrs['NetworkSettings']['IPAddress']}:stack"
        made = stack_cli(local, "remote.up", "--host", host)  # the key, made before any contact
        assert made.returncode == 2 and "made the stack's remote key" in made.stderr, made.stdout + made.stderr
        started = time.monotonic()
        done = stack_cli(local, "remote.status", "--host", host)
        seconds = time.monotonic() - started
        assert done.returncode == 1 and "no SSH handshake within 10 s" in done.stderr, done.stderr
        assert 9 < seconds < 14, seconds  # the 10 s timeout, not paramiko's own 15 s or none
    finally:
        silent.remove(force=True)
        shutil.rmtree(ROOT / ".stack" / local, ignore_errors=True)
