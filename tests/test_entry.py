"""`invoke <task>` is `./stack <task>` (from any invoke, on a fresh clone), and tab completion works.

The clone is made from the checkout's committed state; the foreign invoke lives in a venv of its
own that holds nothing else, as a user's `pip install invoke` would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops import wait
from ops.services import SERVICES
from ops.settings import ROOT

PROFILE_TASKS = ["profile.create", "profile.delete", "profile.list", "profile.set-default", "profile.show"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("entry") / "checkout"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    return folder


@pytest.fixture(scope="module")
def foreign_invoke(tmp_path_factory) -> Path:
    """A venv with invoke and nothing else (the version ./stack pins, so no network surprise)."""
    venv = tmp_path_factory.mktemp("invoke-venv")
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pinned = re.search(r"^invoke==\S+$", (ROOT / "requirements.lock").read_text(), re.M).group(0)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", pinned], check=True)
    return venv / "bin"


def _user_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "COLUMNS": "200", **extra}


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_invoke_without_a_python_for_the_venv_names_the_fix(clone, foreign_invoke):
    # Runs first, while the clone has no .venv: the hand-over must say what to do, not trace back.
    done = _run(["invoke", "--list"], clone, _user_env(foreign_invoke, PYTHON="/nonexistent/python3"))
    assert done.returncode == 1
    assert "set PYTHON=/path/to/python" in done.stderr and "Traceback" not in done.stderr
    assert not (clone / ".venv").exists()


def test_invoke_list_on_a_fresh_clone_matches_stack(clone, foreign_invoke):
    env = _user_env(foreign_invoke)
    via_invoke = _run(["invoke", "--list"], clone, env)  # creates .venv through ./stack
    assert via_invoke.returncode == 0, via_invoke.stderr
    assert (clone / ".venv" / "bin" / "python").exists()
    via_stack = _run(["./stack", "--list"], clone, env)
    assert (via_invoke.returncode, via_invoke.stdout) == (via_stack.returncode, via_stack.stdout)
    assert "profile.create" in via_stack.stdout


def test_invoke_refuses_bad_input_exactly_like_stack(clone, foreign_invoke):
    env = _user_env(foreign_invoke)
    via_invoke = _run(["invoke", "profile.create", "bad/name"], clone, env)
    via_stack = _run(["./stack", "profile.create", "bad/name"], clone, env)
    assert via_invoke.returncode == via_stack.returncode == 2
    assert via_invoke.stderr == via_stack.stderr
    assert "--name: invalid profile name 'bad/name'" in via_invoke.stderr


def test_invoke_from_a_subfolder_keeps_relative_paths(clone, foreign_invoke):
    # invoke finds tasks.py in a parent folder; arguments stay relative to where the user is
    done = _run(["invoke", "run", "no-such-script.py"], clone / "tests", _user_env(foreign_invoke))
    assert done.returncode == 2
    assert "--script: no such file: no-such-script.py" in done.stderr


@pytest.mark.stack
def test_invoke_status_matches_stack(stack, clone, foreign_invoke):
    # the session's stack may still be coming back from an earlier file's outage (same worker)
    wait.until_healthy(stack.compose, SERVICES, timeout=180)
    # the clone drives the session's stack: same name, and a copy of its state (secrets, compose env)
    shutil.copytree(stack.settings.state_dir, clone / ".stack" / stack.name, dirs_exist_ok=True)
    env = _user_env(foreign_invoke, AIIDA_STACK_NAME=stack.name)
    via_invoke = _run(["invoke", "status"], clone, env)
    via_stack = _run(["./stack", "status"], clone, env)
    assert via_invoke.returncode == via_stack.returncode == 0, via_invoke.stderr + via_stack.stderr
    assert _no_ages(via_invoke.stdout) == _no_ages(via_stack.stdout)  # a minute may pass between the two
    assert re.search(r"│ aiida +│ running +│ healthy", via_invoke.stdout)


def _no_ages(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? (min|h|d) ago", "AGE ago", text)


def _complete(words: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """What bash offers at the end of `words` (the last one being typed) with the stack's script."""
    script = (f"source <({ROOT / 'stack'} --print-completion-script bash)\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_aiida_stack_complete; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_completion_completes_prof_to_the_profile_tasks():
    assert _complete(["./stack", "prof"], ROOT, {**os.environ}) == PROFILE_TASKS


def test_completion_works_for_invoke_too(clone, foreign_invoke):
    assert _complete(["invoke", "prof"], clone, _user_env(foreign_invoke)) == PROFILE_TASKS
    assert "--keep" in _complete(["invoke", "backup", "--k"], clone, _user_env(foreign_invoke))


@pytest.mark.stack
def test_completion_offers_the_stacks_profiles(stack):
    assert stack.cli("profile.list").returncode == 0  # listing refreshes what completion offers
    env = {**os.environ, "AIIDA_STACK_NAME": stack.name}
    assert "default" in _complete(["./stack", "profile.show", ""], ROOT, env)
    assert "default" in _complete(["./stack", "backup", "--profile", "de"], ROOT, env)
