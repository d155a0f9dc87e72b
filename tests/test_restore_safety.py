"""A restore that cannot lose data, and the stack's one lock: driven as a user would, with the host
command killed (SIGKILL) at the restore's steps and the next ./stack command left to clean up."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops import backups, profiles, rules
from ops.services import BACKUP, SERVICES

from .test_backups import _backup, _ids, _psql

pytestmark = pytest.mark.stack

KILL = "AIIDA_STACK_INJECT_KILL"


def _journal(stack):
    return stack.compose.state / "restore-journal.json"


def _killed_restore(stack, step: str, *args: str) -> dict:
    """`./stack restore ARGS`, SIGKILLed right after `step`: the journal it leaves behind."""
    done = stack.cli("restore", *args, env={KILL: step})
    assert done.returncode not in (0, 1, 2), done.stdout + done.stderr  # killed, not failed or refused
    return json.loads(_journal(stack).read_text())


def _leftovers(stack) -> list[str]:
    """Staged or set-aside databases and repository folders of any restore."""
    databases = _psql(stack, "postgres", "SELECT datname FROM pg_database WHERE datname ~ '_(staged|old)_'")
    assert databases.returncode == 0, databases.stderr
    folders = stack.compose.exec_aiida(["ls", "-A", "/home/aiida/.aiida/repository"], capture=True)
    return databases.stdout.split() + [f for f in folders.stdout.split() if f.startswith(".")]


def _digest(stack, profile: str | None = None) -> dict:
    done = stack.cli("run", "tests/scripts/digest.py", *(["--profile", profile] if profile else []))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


# the steps a kill can follow, and what the next command makes of it (the completed one last)
KILL_POINTS = [("stage", "staging", "rolled back"), ("swap database", "swapping", "rolled back"),
               ("swap repository", "swapping", "rolled back"), ("check", "checked", "completed")]


def test_restore_killed_at_any_step_leaves_the_profile_entirely_old_or_entirely_new(stack):
    profile = "kill_loop"  # small and its own: five restores of it stay quick
    assert stack.cli("profile.create", profile).returncode == 0
    try:
        _kill_loop(stack, profile)
    finally:
        assert stack.cli("profile.delete", profile, "--yes").returncode == 0


def _kill_loop(stack, profile: str) -> None:
    def store(value: str) -> None:
        done = stack.cli("run", "tests/scripts/store_node.py", "--profile", profile, "--", value)
        assert done.returncode == 0, done.stdout + done.stderr

    store("31")
    backup_id = _backup(stack.cli, "--profile", profile)
    restored = _digest(stack, profile)  # what the backup holds
    store("32")  # a change the restore takes away
    before = _digest(stack, profile)
    assert before != restored
    for step, phase, outcome in KILL_POINTS:
        journal = _killed_restore(stack, step, "--profile", profile, "--id", backup_id, "--yes")
        assert journal["phase"] == phase, step
        if phase == "swapping":  # half swapped: the lock stays marked; a scheduled backup would save a mix
            sidecar = stack.compose.container(BACKUP).exec_run(["stack-backup", "backup", "--profile", profile])
            assert sidecar.exit_code == 3 and b"interrupted" in sidecar.output, sidecar.output
        listed = stack.cli("profile.list", "--json")  # any command completes or rolls back first
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert outcome in listed.stderr, (step, listed.stderr)
        assert not _journal(stack).exists()
        assert _digest(stack, profile) == (before if outcome == "rolled back" else restored), step
        assert _leftovers(stack) == [], step
        assert stack.health() == dict.fromkeys(SERVICES, "healthy"), step
    retried = stack.cli("restore", "--profile", profile, "--id", backup_id, "--yes")  # over the restored data
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert _digest(stack, profile) == restored
    again = stack.cli("restore", "--resume")
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_a_killed_restore_into_a_new_profile_leaves_nothing_and_can_be_retried(stack):
    backup_id = _backup(stack.cli)
    _killed_restore(stack, "swap repository", "--id", backup_id, "--as", "halfway")
    assert stack.cli("status", "--json").returncode == 0  # rolls it back
    names = [p["name"] for p in json.loads(stack.cli("profile.list", "--json").stdout)["profiles"]]
    assert "halfway" not in names
    role = _psql(stack, "postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{rules.database_name('halfway')}'")
    assert role.returncode == 0 and role.stdout.strip() == ""
    assert not list(stack.compose.state.glob("secrets/*halfway*"))
    assert _leftovers(stack) == []
    retried = stack.cli("restore", "--id", backup_id, "--as", "halfway")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    deleted = stack.cli("profile.delete", "halfway", "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr


def test_restore_refuses_a_backup_with_a_newer_schema_and_touches_nothing(stack):
    backup_id = _backup(stack.cli)
    manifest = f"/backups/{stack.settings.profile}/{backup_id}/manifest.json"
    edited = stack.compose.container(BACKUP).exec_run(
        ["sed", "-i", 's/"schema_version": "[^"]*"/"schema_version": "main_9999"/', manifest])
    assert edited.exit_code == 0, edited.output
    count = len(_ids(stack))
    refused = stack.cli("restore", "--id", backup_id, "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "main_9999" in refused.stderr and "newer aiida-core" in refused.stderr
    assert len(_ids(stack)) == count  # not even a safety backup
    assert not _journal(stack).exists()


def test_commands_wait_for_the_stack_lock_or_refuse_with_no_wait(stack):
    holder = subprocess.Popen(stack.compose.command("exec", "-T", BACKUP, "stack-backup", "hold-lock", "--holder",
                                                    "a test holding the lock"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            assert json.loads(holder.stdout.readline())["holding"] is True
            count = len(_ids(stack))
            refused = stack.cli("backup", "--no-wait")
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert "a test holding the lock" in refused.stderr
            assert len(_ids(stack)) == count
            waiting = pool.submit(stack.cli, "backup")
            time.sleep(8)
            assert not waiting.done()  # still waiting for the lock
        finally:
            holder.stdin.write("release\n")
            holder.stdin.close()
            holder.wait(30)
        done = waiting.result(timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "waiting for the stack's lock, held by a test holding the lock" in done.stderr
    assert len(_ids(stack)) == count + 1
    assert backups.published(stack.compose, stack.settings.profile)[0]["latest"]


def test_restore_as_a_name_whose_database_was_kept_refuses_and_keeps_it(stack):
    backup_id = _backup(stack.cli)
    assert stack.cli("profile.create", "kept").returncode == 0
    assert stack.cli("run", "tests/scripts/store_node.py", "--profile", "kept", "--", "7").returncode == 0
    database = rules.database_name("kept")
    try:
        assert stack.cli("profile.delete", "kept", "--skip-db", "--yes").returncode == 0  # the data stays
        refused = stack.cli("restore", "--id", backup_id, "--as", "kept")
        assert refused.returncode == 2 and "exists" in refused.stderr, refused.stdout + refused.stderr
        kept = _psql(stack, database, "SELECT count(*) FROM db_dbnode")
        assert kept.returncode == 0 and int(kept.stdout) >= 1, kept.stdout + kept.stderr  # never dropped
        assert profiles.password_file(stack.compose, "kept").exists()  # nor its password forgotten
        assert not _journal(stack).exists()
    finally:
        profiles.password_file(stack.compose, "kept").unlink(missing_ok=True)
        _psql(stack, "postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        _psql(stack, "postgres", f"DROP ROLE IF EXISTS {database}")
