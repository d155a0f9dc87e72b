"""Two stacks on one host share nothing: removing one with its volumes leaves the other intact."""

from __future__ import annotations

import json
import shutil

import pytest

from ops import engine, secrets, settings
from ops.services import DATA_VOLUMES, SERVICES

from .conftest import stack_cli, unique_name

pytestmark = pytest.mark.stack


def test_two_stacks_side_by_side_and_one_destroyed(stack):
    stored = stack.run_script("store_node.py", "777")
    assert stored.returncode == 0, stored.stderr
    node_uuid = stored.stdout.split()[-1]
    other = unique_name("iso")
    try:
        up = stack_cli(other, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert stack.name not in up.stdout
        shown = stack_cli(other, "status", "--json")
        assert json.loads(shown.stdout)["stack"] == other
        assert {s: st["health"] for s, st in json.loads(shown.stdout)["services"].items()} == \
            dict.fromkeys(SERVICES, "healthy")
        other_secrets = secrets.secrets_dir(settings.load(name=other))
        assert other_secrets != secrets.secrets_dir(stack.settings)
        assert (other_secrets / "postgres_password").read_text() != \
            (secrets.secrets_dir(stack.settings) / "postgres_password").read_text()
        down = stack_cli(other, "down", "--volumes", "--yes")
        assert down.returncode == 0, down.stderr
    finally:
        stack_cli(other, "down", "--volumes", "--yes")
        shutil.rmtree(settings.load(name=other).state_dir, ignore_errors=True)
        for leftover in engine.client().volumes.list(filters={"name": f"{other}_"}):
            leftover.remove()
    docker = engine.client()
    for volume in DATA_VOLUMES:
        assert not docker.volumes.list(filters={"name": f"{other}_{volume}"})
        assert docker.volumes.list(filters={"name": f"{stack.name}_{volume}"})
    loaded = stack.run_script("load_node.py", node_uuid)
    assert loaded.stdout.split()[-1] == "777", loaded.stdout + loaded.stderr
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")
