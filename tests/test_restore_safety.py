"""A restore that cannot lose data, and the stack's one lock: driven as a user would, with the host
command killed (SIGKILL) at the restore's steps and the next ./stack command left to clean up."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops import backups, rules
from ops.services import BACKUP, SERVICES

from .test_backups import _backup, _ids, _node_value, _psql

pytestmark = pytest.mark.stack

KILL = "AIIDA_STACK_INJECT_KILL"


def _journal(stack):
    return stack.compose.state / "restore-journal.json"


def _killed_restore(stack, step: str, *args: str) -> dict:
    """`./stack restore ARGS`, SIGKILLed right after `step`: the journal it leaves behind."""
    done = stack.cli("restore", *args, env={KILL: step})
    assert done.returncode not in (0, 1, 2), done.stdout + done.stderr  # killed, not failed or refused
    return json.loads(_journal(stack).read_text())


def _leftovers(stack, profile: str) -> list[str]:
    """Staged or set-aside databases and repository folders of any restore."""
    databases = _psql(stack, "postgres", "SELECT datname FROM pg_database WHERE datname ~ '_(staged|old)_'")
    assert databases.returncode == 0, databases.stderr
    folders = stack.compose.exec_aiida(["ls", "-A", "/home/aiida/.aiida/repository"], capture=True)
    return databases.stdout.split() + [f for f in folders.stdout.split() if f.startswith(".")]


def _changed_after_backup(stack) -> tuple[str, str]:
    """(backup id, uuid of a node stored after it): the node is there exactly when the old data is."""
    assert stack.run_script("store_node.py", "31").returncode == 0
    backup_id = _backup(stack.cli)
    changed = stack.run_script("store_node.py", "32")
    assert changed.returncode == 0, changed.stderr
    return backup_id, changed.stdout.split()[-1]


def test_restore_killed_mid_swap_is_rolled_back_by_the_next_command(stack):
    backup_id, change = _changed_after_backup(stack)
    journal = _killed_restore(stack, "swap database", "--id", backup_id, "--yes")
    assert journal["phase"] == "swapping"
    # half swapped: the lock stays marked, so a scheduled backup refuses rather than save the mix
    sidecar = stack.compose.container(BACKUP).exec_run(
        ["stack-backup", "backup", "--profile", stack.settings.profile])
    assert sidecar.exit_code == 3 and b"interrupted" in sidecar.output, sidecar.output
    listed = stack.cli("profile.list", "--json")  # any command completes or rolls back first
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "rolled back" in listed.stderr
    assert not _journal(stack).exists()
    assert _node_value(stack, change) == "32"  # the data from before the restore, all of it
    assert _leftovers(stack, stack.settings.profile) == []
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")


def test_restore_killed_after_its_checks_is_completed_by_the_next_command(stack):
    backup_id, change = _changed_after_backup(stack)
    journal = _killed_restore(stack, "check", "--id", backup_id, "--yes")
    assert journal["phase"] == "checked"
    resumed = stack.cli("restore", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "completed" in resumed.stderr
    assert _node_value(stack, change) is None  # the backup's data, all of it
    assert _leftovers(stack, stack.settings.profile) == []
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")
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
    assert _leftovers(stack, "halfway") == []
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
