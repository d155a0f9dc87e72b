"""config.*: options at profile and global level, validated before anything is written."""

from __future__ import annotations

import hashlib

import pytest

from ops.services import AIIDA

pytestmark = pytest.mark.stack


def _config_digest(stack) -> str:
    out = stack.compose.container(AIIDA).exec_run(["cat", "/home/aiida/.aiida/config.json"]).output
    return hashlib.sha256(out).hexdigest()


def _get(stack, option: str) -> str:
    done = stack.cli("config.get", option)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_set_get_unset_with_profile_over_global_over_default(stack):
    option = "db.batch_size"
    assert _get(stack, option) == "100000"  # AiiDA's default
    assert stack.cli("config.set", option, "5000", "--global").returncode == 0
    assert _get(stack, option) == "5000"
    assert stack.cli("config.set", option, "300").returncode == 0  # the default profile
    assert _get(stack, option) == "300"
    listed = stack.cli("config.list", "--prefix", "db.")
    assert "db.batch_size" in listed.stdout and "profile" in listed.stdout
    assert stack.cli("config.unset", option).returncode == 0
    assert _get(stack, option) == "5000"
    assert stack.cli("config.unset", option, "--global").returncode == 0
    assert _get(stack, option) == "100000"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("daemon.default_workers", "-1", "--value: invalid value '-1' for daemon.default_workers: must be at least 1"),
    ("daemon.timeout", "abc", "--value: invalid value 'abc'"),
    ("daemon.nonsense", "1", "--option: unknown option 'daemon.nonsense'"),
    ("caching.default_enabled", "maybe", "--value: invalid value 'maybe'"),
])
def test_invalid_values_and_unknown_options_leave_config_unchanged(stack, option, value, message):
    before = _config_digest(stack)
    done = stack.cli("config.set", option, value)
    assert done.returncode == 2
    assert message in done.stderr and "nothing changed" in done.stderr
    assert _config_digest(stack) == before


def test_unknown_option_is_refused_by_get_and_unset(stack):
    before = _config_digest(stack)
    assert stack.cli("config.get", "no.such.option").returncode == 2
    assert stack.cli("config.unset", "no.such.option").returncode == 2
    assert _config_digest(stack) == before


def test_options_affecting_the_daemon_say_so(stack):
    done = stack.cli("config.set", "daemon.worker_process_slots", "150")
    assert done.returncode == 0, done.stderr
    assert "affects the daemon" in done.stderr
    assert stack.cli("config.unset", "daemon.worker_process_slots").returncode == 0
