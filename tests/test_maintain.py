"""./stack maintain: AiiDA's storage maintenance, basic while the daemon runs, --full with it stopped
under the stack's lock; on a profile of its own with a few thousand loose objects."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import SCRIPTS

pytestmark = pytest.mark.stack

PROFILE = "maint"
FILES = 1000


def _run(stack, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.cli("run", str(SCRIPTS.parent / script), "--profile", PROFILE, "--", *args)


@pytest.fixture(scope="module")
def loose(stack) -> None:
    """The profile, with FILES small files stored as loose objects."""
    if PROFILE not in [p["name"] for p in stack.status()["profiles"]]:
        created = stack.cli("profile.create", PROFILE)
        assert created.returncode == 0, created.stdout + created.stderr
    stored = _run(stack, "backup/scripts/store_files.py", str(FILES), "256")
    assert stored.returncode == 0, stored.stdout + stored.stderr


def _profile(stack) -> dict:
    return next(p for p in stack.status()["profiles"] if p["name"] == PROFILE)


def _circusd(stack) -> str:
    done = stack.compose.exec_aiida(["cat", f"/home/aiida/.aiida/daemon/circus-{PROFILE}.pid"], capture=True)
    return done.stdout.strip()


def _digest(stack) -> str:
    done = _run(stack, "scripts/digest.py")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()[-1]


def test_maintain_packs_the_loose_objects_while_the_daemon_runs(stack, loose):
    before = _profile(stack)["repository"]
    assert before["loose"] >= FILES, before
    daemon = _circusd(stack)
    done = stack.cli("maintain", "--profile", PROFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _profile(stack)
    assert after["repository"]["loose"] == 0 and after["repository"]["packed"] >= FILES, after["repository"]
    assert after["maintained"]["full"] is False and after["maintained"]["before"] == before
    assert _circusd(stack) == daemon  # online: the daemon was not stopped


def test_dry_run_changes_nothing(stack, loose):
    stored = _run(stack, "backup/scripts/store_files.py", "50", "256")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    before = _profile(stack)
    done = stack.cli("maintain", "--profile", PROFILE, "--full", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run" in done.stdout and "--full would also repack" in done.stderr
    after = _profile(stack)
    assert after["repository"] == before["repository"] and after["maintained"] == before["maintained"]


def test_full_maintenance_refuses_while_a_process_runs_then_keeps_every_object(stack, loose):
    submitted = _run(stack, "scripts/slow_add.py", "1", "2", "20")  # waits 20 s for its scheduler's poll
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    pk = submitted.stdout.split()[-1]
    daemon = _circusd(stack)
    refused = stack.cli("maintain", "--profile", PROFILE, "--full", "--yes")
    assert refused.returncode == 2 and "the stack is busy" in refused.stderr, refused.stdout + refused.stderr
    assert _circusd(stack) == daemon
    # (not `verdi process kill`: a CalcJob waiting for its scheduler's poll takes the kill's whole 300 s
    # timeout to refuse it, then finishes anyway)
    finished = _run(stack, "scripts/slow_add.py", "wait", pk)  # ended by the scheduler's next poll
    assert finished.stdout.split()[-3:] == ["finished", "0", "3"], finished.stdout + finished.stderr
    digest = _digest(stack)
    done = stack.cli("maintain", "--profile", PROFILE, "--full", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    after = _profile(stack)
    # (recorded right after the maintenance: the calculation run after the start stores new objects)
    assert after["maintained"]["full"] is True and after["maintained"]["after"]["loose"] == 0, after["maintained"]
    assert after["daemon"]["running"] >= 1 and _circusd(stack) not in ("", daemon)  # stopped, started again
    assert _digest(stack) == digest


def test_a_backup_during_full_maintenance_waits_for_it(stack, loose):
    with ThreadPoolExecutor(max_workers=2) as pool:
        maintaining = pool.submit(stack.cli, "maintain", "--profile", PROFILE, "--full", "--yes")
        deadline = time.monotonic() + 120
        while True:  # until the maintenance holds the lock
            assert not maintaining.done(), maintaining.result().stdout + maintaining.result().stderr
            assert time.monotonic() < deadline, "the maintenance never held the stack's lock"
            probe = stack.cli("backup", "--profile", PROFILE, "--no-wait")
            if probe.returncode == 3:
                assert "full maintenance of maint" in probe.stderr, probe.stderr
                break
            time.sleep(0.5)
        backing_up = pool.submit(_timed, stack.cli, "backup", "--profile", PROFILE)
        maintained = maintaining.result(timeout=600)
        maintenance_ended = time.monotonic()
        backed_up, backup_ended = backing_up.result(timeout=600)
    assert maintained.returncode == 0, maintained.stdout + maintained.stderr
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    assert "waiting for the stack's lock, held by full maintenance of maint" in backed_up.stderr
    assert backup_ended > maintenance_ended - 1  # (the maintenance's ./stack exits right after it lets go)


def _timed(call, *args):
    return call(*args), time.monotonic()
