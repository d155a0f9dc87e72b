"""A second stack on the same host, brought up once for this module (with published ports): its ports
answer on loopback only, it is rebuilt from its backups after a disaster, and removing it with its
volumes leaves the suite's stack intact. The tests run in this order; the last one destroys it."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator

import pytest

from ops import engine, secrets, settings
from ops.compose import Stack, last_json
from ops.services import DATA_VOLUMES, POSTGRES, RABBITMQ, SERVICES

from .conftest import stack_cli, unique_name
from .test_backups import _backup

pytestmark = pytest.mark.stack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _outward_address() -> str:
    """An address of this host that is not loopback (where a port bound to 0.0.0.0 would answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing interface
        return probe.getsockname()[0]


class OtherStack:
    """A second stack, run with its own settings (published ports) at every command."""

    def __init__(self) -> None:
        self.name = unique_name("iso")
        self.ports = {POSTGRES: (_free_port(), 5432), RABBITMQ: (_free_port(), 5672)}
        self.env = {f"AIIDA_STACK_{service.upper()}_PORT": str(port) for service, (port, _) in self.ports.items()}

    def cli(self, *args: str):
        return stack_cli(self.name, *args, env=self.env)

    def json(self, *args: str) -> dict:
        done = self.cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        try:
            return json.loads(done.stdout)  # status --json: one indented document
        except ValueError:
            return last_json(done.stdout)  # a script's result: its last line

    def remove(self) -> None:
        self.cli("down", "--volumes", "--yes")
        for volume in engine.client().volumes.list(filters={"name": f"{self.name}_"}):  # backups too
            volume.remove(force=True)
        shutil.rmtree(settings.load(name=self.name).state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def other(stack) -> Iterator[OtherStack]:
    second = OtherStack()
    try:
        up = second.cli("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert stack.name not in up.stdout
        yield second
    finally:
        second.remove()


def test_published_ports_answer_on_loopback_only(other):
    outward = _outward_address()
    assert not outward.startswith("127.")
    compose = Stack(settings.load(name=other.name))
    for service, (port, target) in other.ports.items():
        bindings = compose.container(service).attrs["NetworkSettings"]["Ports"][f"{target}/tcp"]
        assert [(b["HostIp"], b["HostPort"]) for b in bindings] == [("127.0.0.1", str(port))], bindings
        socket.create_connection(("127.0.0.1", port), timeout=3).close()  # published: it answers here
        with pytest.raises(OSError):
            socket.create_connection((outward, port), timeout=3).close()  # and nowhere else


def test_restore_into_a_new_stack_gives_back_every_node_link_group_and_object(other):
    populated = other.cli("run", "tests/scripts/populate.py", "--", "60")
    assert populated.returncode == 0, populated.stdout + populated.stderr
    before = other.json("run", "tests/scripts/digest.py")
    assert before["objects"] >= 5 and before["groups"] == 2
    backup_id = _backup(other.cli)
    # Disaster: data volumes and secrets gone; only the backups volume is left.
    assert other.cli("down", "--volumes", "--yes").returncode == 0
    shutil.rmtree(secrets.secrets_dir(settings.load(name=other.name)))
    assert other.cli("up").returncode == 0
    restored = other.cli("restore", "--id", backup_id)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert other.json("run", "tests/scripts/digest.py") == before
    added = other.cli("run", "tests/scripts/add.py", "--", "20", "22")
    assert added.stdout.split()[-3:] == ["finished", "0", "42"], added.stdout + added.stderr


def test_two_stacks_side_by_side_and_one_destroyed(stack, other):
    stored = stack.run_script("store_node.py", "777")
    assert stored.returncode == 0, stored.stderr
    node_uuid = stored.stdout.split()[-1]
    shown = other.json("status", "--json")
    assert shown["stack"] == other.name
    assert {s: st["health"] for s, st in shown["services"].items()} == dict.fromkeys(SERVICES, "healthy")
    other_secrets = secrets.secrets_dir(settings.load(name=other.name))
    assert other_secrets != secrets.secrets_dir(stack.settings)
    assert (other_secrets / "postgres_password").read_text() != \
        (secrets.secrets_dir(stack.settings) / "postgres_password").read_text()
    down = other.cli("down", "--volumes", "--yes")
    assert down.returncode == 0, down.stderr
    docker = engine.client()
    for volume in DATA_VOLUMES:
        assert not docker.volumes.list(filters={"name": f"{other.name}_{volume}"})
        assert docker.volumes.list(filters={"name": f"{stack.name}_{volume}"})
    loaded = stack.run_script("load_node.py", node_uuid)
    assert loaded.stdout.split()[-1] == "777", loaded.stdout + loaded.stderr
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")
    for service in SERVICES:  # the suite's stack publishes nothing
        assert not [b for bound in (stack.compose.container(service).attrs["NetworkSettings"]["Ports"] or {}).values()
                    if bound for b in bound], service
