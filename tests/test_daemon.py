"""daemon.*: status, stop/start that stick, worker count changes, persistence across re-creation."""

from __future__ import annotations

import re
import time

import pytest

from ops import wait
from ops.services import AIIDA, SERVICES

pytestmark = pytest.mark.stack


def _workers(stack) -> int:
    done = stack.cli("daemon.status")
    assert done.returncode == 0, done.stdout + done.stderr
    return int(re.search(r"Active workers \[(\d+)\]", done.stdout).group(1))


def test_incr_and_decr_change_the_worker_count(stack):
    before = _workers(stack)
    assert stack.cli("daemon.incr", "--number", "2").returncode == 0
    assert _workers(stack) == before + 2
    assert stack.cli("daemon.decr", "--number", "2").returncode == 0
    assert _workers(stack) == before


def test_stopped_daemon_stays_stopped_until_started(stack):
    assert stack.cli("daemon.stop").returncode == 0
    try:
        time.sleep(12)  # longer than the service's supervision interval
        assert stack.cli("daemon.status").returncode != 0
        verdi = stack.cli("verdi", "--", "daemon", "status")
        assert "not running" in (verdi.stdout + verdi.stderr).lower()
    finally:
        started = stack.cli("daemon.start")
    assert started.returncode == 0, started.stderr
    assert _workers(stack) >= 1
    wait.until_healthy(stack.compose, SERVICES, timeout=120)


def test_default_workers_option_survives_container_recreation(stack):
    assert stack.cli("config.set", "daemon.default_workers", "2").returncode == 0
    try:
        assert stack.compose.run("up", "-d", "--force-recreate", "--wait", AIIDA, capture=True).returncode == 0
        assert _workers(stack) == 2
    finally:
        stack.cli("config.unset", "daemon.default_workers")
        stack.compose.run("up", "-d", "--force-recreate", "--wait", AIIDA, capture=True)
    assert _workers(stack) == stack.settings.daemon_workers
