"""The software in the stack: plugins come from a committed lock (uv), and the lock is the only way in.

`plugins = ["aiida-shell==0.9.0"]` has its lock in images/aiida-core/locks/ (test_upgrade.py moves a
running stack onto it and runs a ShellJob). Plugins that do not fit aiida-core are refused by
`./stack lock`; an environment without a lock does not start.
"""

from __future__ import annotations

import json

import pytest

from ops import settings
from ops.environment import Environment
from ops.settings import ROOT

from .conftest import project_containers, stack_cli, unique_name

SHELL = ["aiida-shell==0.9.0"]


def test_the_shell_plugin_environment_has_a_committed_hashed_lock():
    env = Environment.of(settings.load(plugins=SHELL))
    text = env.lock.read_text()
    assert json.loads(text.splitlines()[0].split(": ", 1)[1]) == env.as_dict()
    assert "aiida-shell==0.9.0 \\" in text and f"aiida-core=={env.version} \\" in text
    assert "--hash=sha256:" in text


def test_lock_refuses_a_plugin_that_does_not_fit_aiida_core():
    env = Environment.of(settings.load(plugins=["aiida-pseudo==0.6.3"]))
    done = stack_cli(unique_name("lock"), "lock", env={"AIIDA_STACK_PLUGINS": '["aiida-pseudo==0.6.3"]'})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not resolve; nothing written" in done.stderr and "aiida-pseudo" in done.stderr
    assert not env.lock.exists()


@pytest.mark.parametrize(("plugins", "named"), [
    ('["aiida-core==2.5.0"]', "aiida-core is not a plugin"),
    ('["not a requirement!"]', "is not a pip requirement"),
    ('["aiida-shell @ https://example.org/x.whl"]', "not a URL or path"),
    ('"aiida-shell"', "plugins"),
])
def test_bad_plugin_settings_are_refused(plugins, named):
    done = stack_cli(unique_name("bad"), "up", env={"AIIDA_STACK_PLUGINS": plugins})
    assert done.returncode == 2
    assert "invalid settings, nothing started" in done.stderr and named in done.stderr


def test_up_refuses_an_environment_without_a_lock():
    name = unique_name("nolock")
    done = stack_cli(name, "up", env={"AIIDA_STACK_PLUGINS": '["aiida-shell==0.8.0"]'})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "has no lock file" in done.stderr and "./stack lock" in done.stderr
    assert project_containers(name) == []
    assert not (ROOT / ".stack" / name).exists()  # not even secrets were generated
