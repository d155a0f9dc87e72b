"""What ./stack hands to Compose: opt-in ports bind to loopback only; image tags follow content."""

from __future__ import annotations

import json
import shutil

from ops import compose, settings
from ops.compose import Stack

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


def test_image_tag_changes_with_the_build_inputs():
    before = compose.image_tag()
    probe = compose.ROOT / "services" / "backup" / f".probe-{unique_name()}"
    probe.write_text("x")
    try:
        assert compose.image_tag() != before
    finally:
        probe.unlink()
    assert compose.image_tag() == before
