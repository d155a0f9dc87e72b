"""What ./stack hands to Compose: opt-in ports bind to loopback only; each image's tag follows its own inputs."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from ops import compose, settings
from ops.compose import Stack
from ops.environment import Environment
from ops.services import BACKUP, SERVICES

from .conftest import unique_name


def _config(stack: Stack) -> dict:
    return json.loads(stack.run("config", "--format", "json", capture=True).stdout)


def test_no_port_is_published_by_default():
    stack = Stack(settings.load(name=unique_name("cfg")))
    try:
        assert all(not svc.get("ports") for svc in _config(stack)["services"].values())
    finally:
        shutil.rmtree(stack.state)


def test_port_settings_publish_on_loopback_only():
    stack = Stack(settings.load(name=unique_name("cfg"), postgres_port=15432, rabbitmq_port=15672))
    try:
        services = _config(stack)["services"]
        assert services["postgres"]["ports"] == [
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": 5432, "published": "15432", "protocol": "tcp"}]
        assert services["rabbitmq"]["ports"][0]["host_ip"] == "127.0.0.1"
    finally:
        shutil.rmtree(stack.state)


def test_an_edit_to_the_sidecar_changes_only_the_backup_image_tag():
    s = settings.load()
    before = {service: compose.image_tag(service, s) for service in SERVICES}
    probe = compose.ROOT / "services" / "backup" / f".probe-{unique_name()}"
    probe.write_text("x")
    try:
        after = {service: compose.image_tag(service, s) for service in SERVICES}
    finally:
        probe.unlink()
    assert [service for service in SERVICES if after[service] != before[service]] == [BACKUP]
    assert {service: compose.image_tag(service, s) for service in SERVICES} == before


@pytest.mark.parametrize("service", SERVICES)
def test_every_file_an_image_copies_is_one_of_its_tagged_inputs(service):
    first = compose.ROOT / compose.IMAGE_INPUTS[service][0]  # images/<name> or its Dockerfile
    dockerfile = first if first.name == "Dockerfile" else first / "Dockerfile"
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    sources = [src for line in text.splitlines() if line.startswith("COPY ") and "--from" not in line
               for src in line.split()[1:-1]]
    assert sources
    inputs = compose.image_inputs(service, settings.load())
    version = settings.load().aiida_core_version
    for source in sources:
        lock = Environment.of(settings.load()).lock.name
        path = compose.ROOT / source.replace("${AIIDA_CORE_VERSION}", version).replace("${AIIDA_LOCK}", lock)
        assert any(path == top or top in path.parents for top in inputs), f"{source} is not a tagged input"
