"""./stack upgrade and ./stack migrate on a real stack that starts on aiida-core 2.2.2 (schema main_0001):
refusals that change nothing, waiting for a busy stack, a rollback after a real migration with every
node identical, the upgrade to the pinned version with varied data, a restored old backup that waits
for ./stack migrate, and an upgrade that adds a plugin while a process is paused.

One stack for the module, in file order (each test starts where the previous one left it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from ops import lifecycle, wait
from ops.compose import last_json
from ops.services import AIIDA, BACKUP_VOLUMES, SERVICES
from ops.settings import ROOT

from .conftest import SCRIPTS, TestStack, unique_name

pytestmark = pytest.mark.stack

OLD = {"AIIDA_STACK_AIIDA_CORE_VERSION": "2.2.2"}  # images/aiida-core/locks/aiida-core-2.2.2.txt
SHELL = {"AIIDA_STACK_PLUGINS": '["aiida-shell==0.9.0"]'}
SEEN: dict[str, dict] = {}  # digests a later test compares with


@pytest.fixture(scope="module")
def stack(images):
    test_stack = TestStack(unique_name("upg"))
    up = test_stack.cli("up", env=OLD, timeout=1800)  # builds the 2.2.2 image unless the engine keeps it
    assert up.returncode == 0, up.stdout + up.stderr[-3000:]
    populated = test_stack.cli("run", str(SCRIPTS / "populate.py"), "--", "2")
    assert populated.returncode == 0, populated.stdout + populated.stderr
    try:
        yield test_stack
    finally:
        test_stack.cli("down", "--volumes", "--yes")
        lifecycle.remove_volumes(test_stack.settings, BACKUP_VOLUMES)  # down keeps backups, by design
        shutil.rmtree(test_stack.settings.state_dir, ignore_errors=True)


def _image(stack) -> str:
    return stack.compose.container(AIIDA).attrs["Config"]["Image"]


def _digest(stack, env=None) -> dict:
    done = stack.cli("run", str(SCRIPTS / "digest.py"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return last_json(done.stdout)


def _history(stack) -> list[dict]:
    return json.loads((stack.settings.state_dir / "upgrades.json").read_text())


def test_refusals_change_nothing(stack):
    image = _image(stack)
    assert "2.2.2-" in image.rsplit(":", 1)[-1]
    down = stack.cli("upgrade", "--yes", env={"AIIDA_STACK_AIIDA_CORE_VERSION": "2.2.1"})
    assert down.returncode == 2 and "a downgrade is not possible" in down.stderr, down.stderr
    unlocked = stack.cli("upgrade", "--yes", env={"AIIDA_STACK_PLUGINS": '["aiida-shell==0.8.0"]'})
    assert unlocked.returncode == 2 and "has no lock file" in unlocked.stderr, unlocked.stderr
    silent = stack.cli("up")
    assert silent.returncode == 2 and "./stack upgrade" in silent.stderr, silent.stderr
    paused = stack.cli("upgrade", "--yes", "--pause-running")  # 2.9.4 migrates main_0001: processes must finish
    assert paused.returncode == 2 and "unfinished processes cannot be migrated" in paused.stderr, paused.stderr
    unconfirmed = stack.cli("upgrade", input="")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
    assert "#1 [" not in unconfirmed.stderr  # a progress line per image; BuildKit's log goes to the file
    assert _image(stack) == image
    wait.until_healthy(stack.compose, SERVICES, 60)


def _active(stack) -> int:
    done = stack.compose.exec_aiida(["aiida-stack-profile", "activity"], capture=True)
    return sum(p["active"] or 0 for p in last_json(done.stdout)["profiles"].values())


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_a_busy_stack_is_refused_and_wait_proceeds_once_idle(stack):
    image = _image(stack)
    assert stack.cli("daemon.stop").returncode == 0
    # submitted with the daemon stopped: an active process and a queued task until the daemon runs
    pending = subprocess.Popen([str(ROOT / "stack"), "run", str(SCRIPTS / "add.py"), "--", "1", "2"],
                               env=_env(stack), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: _active(stack) > 0, 120, "the process to be submitted")
    refused = stack.cli("upgrade", "--yes")
    assert refused.returncode == 2 and "the stack is busy" in refused.stderr, refused.stderr
    # --wait: waits; once idle it goes on (and fails on purpose after the backup, which rolls back)
    waiting = subprocess.Popen([str(ROOT / "stack"), "upgrade", "--yes", "--wait"],
                               env=_env(stack, AIIDA_STACK_INJECT_FAULT="back up"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(waiting.stderr), daemon=True)
    reader.start()
    _until(lambda: any("waiting until idle" in line for line in lines), 180, "the upgrade to wait")
    assert waiting.poll() is None and _image(stack) == image  # still waiting, nothing changed
    assert stack.cli("daemon.start").returncode == 0
    waiting.wait(timeout=900)
    reader.join(timeout=30)
    err = "".join(lines)
    assert waiting.returncode == 1, err
    assert "drained" in err and "fault injected after back up" in err
    assert pending.communicate(timeout=300)[0].split()[-3:] == ["finished", "0", "3"]
    assert _image(stack) == image
    assert _history(stack)[-1]["result"] == "rolled back"
    wait.until_healthy(stack.compose, SERVICES, 120)


def test_a_failed_migration_rolls_back_to_the_old_version_with_every_node_identical(stack):
    image, before = _image(stack), _digest(stack)
    done = stack.cli("upgrade", "--yes", env={"AIIDA_STACK_INJECT_FAULT": "migrate"}, timeout=1800)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolled back" in done.stderr and "restore the pre-upgrade backups" in done.stderr
    assert "NOT undone" not in done.stderr, done.stderr
    assert _image(stack) == image
    wait.until_healthy(stack.compose, SERVICES, 120)
    assert _storage_version(stack) == 0  # main_0001 again: the old aiida-core opens it
    assert _digest(stack) == before
    assert stack.cli("up", env=OLD).returncode == 0  # the old environment is still the recorded one


def test_upgrade_from_2_2_2_keeps_every_node_and_runs_a_calculation(stack):
    before = SEEN["before the upgrade"] = _digest(stack)
    done = stack.cli("upgrade", "--yes", timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "2.9.4-" in _image(stack).rsplit(":", 1)[-1]
    assert _storage_version(stack) == 0
    assert _digest(stack) == before
    record = _history(stack)[-1]
    assert record["result"] == "ok" and (record["from"], record["to"]) == ("aiida-core-2.2.2.txt",
                                                                            "aiida-core-2.9.4.txt")
    assert set(record["backups"]) == {"default"} and record["daemon_downtime"] > 0
    assert stack.cli("run", str(SCRIPTS / "add.py"), "--", "4", "5").stdout.split()[-3:] == ["finished", "0", "9"]
    assert stack.cli("up").returncode == 0  # the new environment is the recorded one


def test_a_restored_old_backup_waits_for_migrate_which_keeps_every_node(stack):
    pre_upgrade = _history(stack)[-1]["backups"]["default"]
    restored = stack.cli("restore", "--id", pre_upgrade, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr[-3000:]
    assert "./stack migrate" in restored.stdout
    assert _storage_version(stack) == 4  # needs a migration: nothing migrated it silently
    status = stack.cli("status")
    assert "needs ./stack migrate" in status.stdout, status.stdout
    done = stack.cli("migrate", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert _storage_version(stack) == 0
    assert _digest(stack) == SEEN["before the upgrade"]
    record = _history(stack)[-1]
    assert record["kind"] == "migrate" and record["result"] == "ok" and set(record["backups"]) == {"default"}
    wait.until_healthy(stack.compose, SERVICES, 120)
    again = stack.cli("migrate", "--yes")
    assert again.returncode == 0 and "nothing to migrate" in again.stderr, again.stderr


def test_upgrade_adds_a_plugin_and_plays_a_paused_process_afterwards(stack):
    built = stack.cli("build", env=SHELL, timeout=1800)  # first, so the upgrade's check is quick (the poll waits)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    submitted = stack.cli("run", str(SCRIPTS / "slow_add.py"), "--", "1", "2")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    pk = submitted.stdout.split()[-1]
    done = stack.cli("upgrade", "--yes", "--pause-running", env=SHELL, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert f"played [{pk}]" in done.stderr, done.stderr
    finished = stack.cli("run", str(SCRIPTS / "slow_add.py"), "--", "wait", pk, env=SHELL)
    assert finished.stdout.split()[-3:] == ["finished", "0", "3"], finished.stdout + finished.stderr
    assert _history(stack)[-1]["to"].startswith("aiida-core-2.9.4-plugins-")
    listed = stack.cli("verdi", "--", "plugin", "list", "aiida.calculations", env=SHELL)
    assert "core.shell" in listed.stdout, listed.stdout + listed.stderr
    ran = stack.cli("run", str(SCRIPTS / "shell_job.py"), "--", "after-the-upgrade", env=SHELL)
    assert last_json(ran.stdout) == {"state": "finished", "exit_status": 0, "stdout": "after-the-upgrade\n"}
    status = stack.cli("status", env=SHELL)
    assert "aiida-shell==0.9.0" in status.stdout and "→" in status.stdout, status.stdout
    assert stack.cli("up", env=SHELL).returncode == 0  # the new environment is the recorded one


def _storage_version(stack) -> int:
    return stack.compose.exec_aiida(["verdi", "storage", "version"], capture=True).returncode


def _env(stack, **extra: str) -> dict[str, str]:
    return {**os.environ, "AIIDA_STACK_NAME": stack.name, "COLUMNS": "200", **extra}
