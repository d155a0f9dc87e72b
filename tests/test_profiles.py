"""profile.*: isolated profiles (own role, database, repository), safe deletion, the default."""

from __future__ import annotations

import pytest

from ops import profiles
from ops.services import AIIDA, POSTGRES

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


def test_two_profiles_each_run_a_calculation_through_the_daemon(stack):
    _create(stack, "alpha", "--set-default", "--email", "alpha@example.org")
    try:
        listed = stack.cli("profile.list")
        assert listed.returncode == 0 and "alpha" in listed.stdout and "default" in listed.stdout
        added = stack.run_script("add.py", "2", "3")  # in the default profile, now alpha
        assert added.stdout.split()[-3:] == ["finished", "0", "5"], added.stdout + added.stderr
        shown = stack.cli("profile.show", "alpha")
        assert "aiida_alpha" in shown.stdout and "/repository/alpha" in shown.stdout
        assert "alpha@example.org" in shown.stdout
        password = profiles.password_file(stack.compose, "alpha").read_text()
        assert password not in shown.stdout + shown.stderr + listed.stdout
    finally:
        assert stack.cli("profile.set-default", "default").returncode == 0
    added = stack.run_script("add.py", "4", "5")
    assert added.stdout.split()[-3:] == ["finished", "0", "9"], added.stdout + added.stderr
    assert "alpha" in stack.cli("status").stdout


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
