"""profile.*: isolated profiles (own role, database, repository), safe deletion, the default."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from ops import profiles, wait
from ops.services import AIIDA, POSTGRES, SERVICES
from ops.settings import ROOT

from .conftest import SCRIPTS

pytestmark = pytest.mark.stack


def _names(stack) -> list[str]:
    return sorted(p["name"] for p in profiles.info(stack.compose)["profiles"])


def _database_exists(stack, name: str) -> bool:
    return stack.compose.exec_postgres(["stack-profile-db", "exists", name]).returncode == 0


def _repository_exists(stack, name: str) -> bool:
    path = f"/home/aiida/.aiida/repository/{name}"
    return stack.compose.container(AIIDA).exec_run(["test", "-d", path]).exit_code == 0


def _create(stack, name: str, *extra: str) -> None:
    done = stack.cli("profile.create", name, *extra)
    assert done.returncode == 0, done.stdout + done.stderr


def _add_in(stack, profile: str, x: int, y: int) -> subprocess.Popen:
    """./stack run --profile P add.py X Y, in the background: submits to P's daemon and waits for it."""
    return subprocess.Popen([str(ROOT / "stack"), "run", str(SCRIPTS / "add.py"), "--profile", profile, "--",
                             str(x), str(y)], env={**os.environ, "AIIDA_STACK_NAME": stack.name},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sums(stack, profile: str) -> list[int]:
    """The sums of every core.arithmetic.add in the profile's own database."""
    done = stack.compose.run("exec", "-T", "-u", "postgres", POSTGRES, "psql", "-X", "-tA", "-d", f"aiida_{profile}",
                             "-c", "SELECT attributes->>'value' FROM db_dbnode WHERE id IN (SELECT output_id "
                             "FROM db_dblink WHERE label = 'sum') ORDER BY 1", capture=True, check=False)
    assert done.returncode == 0, done.stderr
    return [int(v) for v in done.stdout.split()]


def test_two_profiles_run_calculations_at_once_each_through_its_own_daemon(stack):
    _create(stack, "alpha", "--email", "alpha@example.org")  # not the default: it gets its own daemon
    daemons = json.loads(stack.compose.exec_aiida(["aiida-stack-profile", "workers", "--all"],
                                                   capture=True).stdout)["daemons"]
    running = {d["profile"] for d in daemons if d["running"] >= 1}  # other tests' profiles may be there too
    assert {"default", "alpha"} <= running, daemons
    runs = {"alpha": _add_in(stack, "alpha", 200, 3), "default": _add_in(stack, "default", 100, 4)}
    for profile, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert out.split()[-3:] == ["finished", "0", {"alpha": "203", "default": "104"}[profile]], out + err
    assert 203 in _sums(stack, "alpha") and 203 not in _sums(stack, "default")
    assert 104 in _sums(stack, "default") and 104 not in _sums(stack, "alpha")
    shown = stack.cli("profile.show", "alpha")
    assert "aiida_alpha" in shown.stdout and "/repository/alpha" in shown.stdout
    assert "alpha@example.org" in shown.stdout
    password = profiles.password_file(stack.compose, "alpha").read_text()
    assert password not in shown.stdout + shown.stderr
    status = stack.cli("status")
    assert re.search(r"alpha .* 1 worker\b", status.stdout), status.stdout


def test_a_profile_waits_for_its_own_daemon_and_a_killed_daemon_comes_back(stack):
    if "alpha" not in _names(stack):
        _create(stack, "alpha")
    assert stack.cli("daemon.stop", "--profile", "alpha").returncode == 0
    waiting = _add_in(stack, "alpha", 7, 8)  # alpha's task sits in alpha's queue: default's daemon leaves it
    try:
        time.sleep(15)
        assert waiting.poll() is None and 15 not in _sums(stack, "alpha")
        wait.until_healthy(stack.compose, SERVICES, 60)  # stopped on purpose: the service stays healthy
    finally:
        assert stack.cli("daemon.start", "--profile", "alpha").returncode == 0
    out, err = waiting.communicate(timeout=300)
    assert out.split()[-3:] == ["finished", "0", "15"], out + err
    # kill default's circusd and workers: alpha's daemon keeps running, default's comes back
    alpha_pid, default_pid = _circusd(stack, "alpha"), _circusd(stack, "default")
    assert default_pid is not None
    # circusd by its PID file (forked from the warm process, its command line is not verdi's), then the
    # workers; [-]: the pattern does not match this pkill's own command line
    killed = stack.compose.exec_aiida(["sh", "-c", f"kill -9 {default_pid} && pkill -9 -f '[-]p default daemon'"],
                                      capture=True)
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 90
    while _circusd(stack, "default") in (None, default_pid):
        assert time.monotonic() < deadline, "the killed daemon of default did not come back"
        time.sleep(2)
    assert _circusd(stack, "alpha") == alpha_pid
    wait.until_healthy(stack.compose, SERVICES, 120)


def _circusd(stack, profile: str) -> int | None:
    done = stack.compose.exec_aiida(["sh", "-c", f"cat /home/aiida/.aiida/daemon/circus-{profile}.pid "
                                     "2>/dev/null && kill -0 $(cat /home/aiida/.aiida/daemon/circus-"
                                     f"{profile}.pid)"], capture=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 else None


def test_a_profile_role_cannot_connect_to_another_profiles_database(stack):
    if "alpha" not in _names(stack):
        _create(stack, "alpha")
    password = profiles.password_file(stack.compose, "alpha").read_text()
    probe = stack.compose.container(POSTGRES).exec_run(
        ["psql", "-X", "-h", "127.0.0.1", "-U", "aiida_alpha", "-d", "aiida_default", "-c", "select 1"],
        environment={"PGPASSWORD": password})
    assert probe.exit_code != 0
    assert b"permission denied for database" in probe.output
    own = stack.compose.container(POSTGRES).exec_run(
        ["psql", "-X", "-h", "127.0.0.1", "-U", "aiida_alpha", "-d", "aiida_alpha", "-tAc", "select 1"],
        environment={"PGPASSWORD": password})
    assert own.exit_code == 0 and own.output.strip() == b"1"


def test_delete_without_yes_changes_nothing(stack):
    _create(stack, "keepme")
    before = _names(stack)
    refused = stack.cli("profile.delete", "keepme", input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _names(stack) == before
    assert _database_exists(stack, "keepme") and _repository_exists(stack, "keepme")


def test_delete_with_skip_flags_keeps_database_and_repository(stack):
    _create(stack, "skipper")
    done = stack.cli("profile.delete", "skipper", "--skip-db", "--skip-repository", "--yes")
    assert done.returncode == 0, done.stderr
    assert "skipper" not in _names(stack)
    assert _database_exists(stack, "skipper")
    assert _repository_exists(stack, "skipper")


def test_delete_removes_config_database_repository_and_password(stack):
    _create(stack, "doomed")
    assert _database_exists(stack, "doomed") and _repository_exists(stack, "doomed")
    done = stack.cli("profile.delete", "doomed", "--yes")
    assert done.returncode == 0, done.stderr
    assert "doomed" not in _names(stack)
    assert not _database_exists(stack, "doomed")
    assert not _repository_exists(stack, "doomed")
    assert not profiles.password_file(stack.compose, "doomed").exists()


def test_deleting_the_default_profile_needs_another_default(stack):
    _create(stack, "successor")
    refused = stack.cli("profile.delete", "default", "--yes")
    assert refused.returncode == 2 and "--set-default" in refused.stderr
    assert "default" in _names(stack)


@pytest.mark.parametrize("bad", ["../x", "a;drop", "Alpha", "x y", "1abc", "a" * 42])
def test_create_refuses_unsafe_names(stack, bad):
    before = _names(stack)
    done = stack.cli("profile.create", bad)
    assert done.returncode == 2
    assert "invalid profile name" in done.stderr
    assert _names(stack) == before


def test_create_refuses_an_existing_name(stack):
    done = stack.cli("profile.create", "default")
    assert done.returncode == 2 and "already exists" in done.stderr


@pytest.mark.parametrize("task", ["profile.show", "profile.delete", "profile.set-default"])
def test_unknown_profile_is_named(stack, task):
    done = stack.cli(task, "nosuchprofile", *(["--yes"] if task == "profile.delete" else []))
    assert done.returncode == 2
    assert "--name: profile 'nosuchprofile' does not exist" in done.stderr


def test_profile_secrets_are_private(stack):
    if "alpha" not in _names(stack):
        _create(stack, "alpha")
    assert oct(profiles.password_file(stack.compose, "alpha").stat().st_mode & 0o777) == "0o600"
