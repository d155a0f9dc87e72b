"""Backups of a packed repository, and corrupted backups refused before any live data is touched;
a stack whose settings schedule backups makes verified ones by itself."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops.services import BACKUP, SERVICES

from .conftest import table_locked
from .test_backups import _backup, _ids, _psql
from .test_restore_safety import _digest, _journal

pytestmark = pytest.mark.stack


def _in_backup(stack, script: str) -> str:
    done = stack.compose.container(BACKUP).exec_run(["sh", "-c", script])
    assert done.exit_code == 0, done.output.decode()
    return done.output.decode()


def _corrupt(stack, path: str, how: str) -> None:
    """Change one backed-up file without touching the backups that share it by a hard link: the
    changed copy replaces the path, the shared inode stays as it was."""
    edit = {"flip": "printf '\\x5a' | dd of=\"$f.tmp\" bs=1 seek=100 conv=notrunc 2>/dev/null",
            "truncate": "truncate -s 100 \"$f.tmp\""}[how]
    _in_backup(stack, f'f="{path}"; cp -p "$f" "$f.tmp"; {edit}; mv "$f.tmp" "$f"')


def _pack(stack) -> None:
    """Objects of the default profile in a pack: a full maintenance, the daemon stopped."""
    assert stack.cli("daemon.stop").returncode == 0  # full maintenance needs the profile unused
    try:
        packed = stack.cli("verdi", "--", "storage", "maintain", "--full", "--force")
        assert packed.returncode == 0, packed.stdout + packed.stderr
    finally:
        assert stack.cli("daemon.start").returncode == 0


def test_a_packed_repository_is_backed_up_verified_and_restored(stack):
    assert stack.run_script("populate.py", "1").returncode == 0
    _pack(stack)
    before = _digest(stack)
    backup_id = _backup(stack.cli)
    folder = f"/backups/{stack.settings.profile}/{backup_id}/repository/container"
    packs = _in_backup(stack, f"find {folder}/packs -type f -size +0 | wc -l; find {folder}/loose -type f | wc -l")
    pack_files, loose_files = (int(n) for n in packs.split())
    assert pack_files >= 1 and loose_files == 0, packs
    verified = stack.cli("backup.verify", "--id", backup_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = stack.cli("restore", "--id", backup_id, "--as", "packed")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    copy = stack.cli("run", "tests/scripts/digest.py", "--profile", "packed")
    assert copy.returncode == 0, copy.stderr
    assert json.loads(copy.stdout.splitlines()[-1]) == before
    assert stack.cli("profile.delete", "packed", "--yes").returncode == 0


CORRUPTIONS = ("a flipped byte in a pack", "a missing loose object", "a truncated dump file")


def test_corrupted_backups_are_refused_before_live_data_is_touched(stack):
    # a pack of its own (CI once found none left by the test above: a file run earlier on the same
    # worker's stack can change the default profile), then loose objects besides it
    packed = stack.cli("run", "tests/backup/scripts/store_files.py", "--", "2", "50000")
    assert packed.returncode == 0, packed.stdout + packed.stderr
    _pack(stack)
    stored = stack.cli("run", "tests/backup/scripts/store_files.py", "--", "3", "5000")  # loose objects besides packs
    assert stored.returncode == 0, stored.stdout + stored.stderr
    # one backup each, all verified when made, then each corrupted alone (the changed copy replaces its
    # path: the backups sharing that file by a hard link keep the good one)
    corrupted = {corruption: _backup(stack.cli) for corruption in CORRUPTIONS}
    for corruption, backup_id in corrupted.items():
        root = f"/backups/{stack.settings.profile}/{backup_id}"
        if corruption == "a flipped byte in a pack":
            target = _in_backup(stack, f"find {root}/repository/container/packs -type f -size +200c | head -1").strip()
            assert target, "no pack in the backup (the packed-repository test runs first)"
            _corrupt(stack, target, "flip")
        elif corruption == "a missing loose object":
            target = _in_backup(stack, f"find {root}/repository/container/loose -type f | head -1").strip()
            assert target
            _in_backup(stack, f'rm "{target}"')
        else:
            _corrupt(stack, f"{root}/database/toc.dat", "truncate")
    before = _digest(stack)
    count = len(_ids(stack))
    for corruption, backup_id in corrupted.items():
        refused = stack.cli("restore", "--id", backup_id, "--yes")
        assert refused.returncode == 1, (corruption, refused.stdout + refused.stderr)
        assert "failed verification" in refused.stderr and "nothing touched" in refused.stderr, corruption
        assert not _journal(stack).exists()
    assert _digest(stack) == before
    assert len(_ids(stack)) == count  # not even a safety backup
    verify = stack.cli("backup.verify", "--id", corrupted[CORRUPTIONS[0]])
    assert verify.returncode == 1 and "FAILED" in verify.stdout
    later = _backup(stack.cli)  # verified, and linked to a verified backup only: the rot does not spread
    manifest = json.loads(_in_backup(stack, f"cat /backups/{stack.settings.profile}/{later}/manifest.json"))
    assert manifest["previous"] not in corrupted.values()


def test_rot_shared_by_hard_links_is_found_by_the_next_backup_and_recopied_from_the_live_repository(stack):
    stored = stack.cli("run", "tests/backup/scripts/store_files.py", "--", "1", "5000")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    first = _backup(stack.cli)
    loose = f"/backups/{stack.settings.profile}/{{}}/repository/container/loose"
    rotten = _in_backup(stack, f"cd {loose.format(first)} && find . -type f | head -1").strip()
    assert rotten
    # silent rot: one byte flipped in place, size and mtime kept (rsync's quick check links it again)
    _in_backup(stack, f'f="{loose.format(first)}/{rotten}"; cp -p "$f" /tmp/ref; '
                      f'printf "\\x5a" | dd of="$f" bs=1 seek=10 conv=notrunc 2>/dev/null; touch -r /tmp/ref "$f"')
    second = stack.cli("backup")
    assert second.returncode == 0, second.stdout + second.stderr  # verified, after the re-copy
    assert "re-copied 1 rotten or missing object(s) from the live repository" in second.stderr
    inodes = _in_backup(stack, f"stat -c %i {loose.format(first)}/{rotten} {loose.format(_ids(stack)[0])}/{rotten}")
    assert len(set(inodes.split())) == 2  # the new backup has its own sound copy
    older = stack.cli("backup.verify", "--id", first)
    assert older.returncode == 1 and "FAILED" in older.stdout  # reported, not rewritten: it is not the newest


def test_a_node_stored_between_the_dump_and_the_repository_copy_is_wholly_absent(stack):
    profile = stack.settings.profile
    with ThreadPoolExecutor(max_workers=1) as pool:
        # pg_dump waits for db_dbcomment's lock, its snapshot taken: the node is stored after the
        # snapshot and before the repository is copied
        with table_locked(stack, f"aiida_{profile}", "db_dbcomment"):
            running = pool.submit(stack.cli, "backup")
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' " \
                      "AND wait_event_type = 'Lock'"
            deadline = time.monotonic() + 120
            while _psql(stack, "postgres", waiting).stdout.strip() in ("", "0"):
                assert time.monotonic() < deadline and not running.done(), "pg_dump never waited for the lock"
                time.sleep(0.3)
            stored = stack.run_script("store_file_node.py")
            assert stored.returncode == 0, stored.stdout + stored.stderr
            node = stored.stdout.split()[-1]
        done = running.result(timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr  # verified too: its object is there, unreferenced
    backup_id = re.findall(r"(backup_\d{8}T\d{6}Z_[a-z0-9]+)", done.stderr)[0]
    restored = stack.cli("restore", "--id", backup_id, "--as", "midway")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    try:
        absent = stack.cli("run", "tests/scripts/load_node.py", "--profile", "midway", "--", node)
        assert absent.returncode != 0 and "NotExistent" in absent.stdout + absent.stderr
        present = stack.cli("run", "tests/scripts/load_node.py", "--", node)  # the live profile has it
        assert present.returncode == 0, present.stdout + present.stderr
    finally:
        assert stack.cli("profile.delete", "midway", "--yes").returncode == 0


def test_the_settings_schedule_maintains_then_makes_verified_backups_in_a_real_stack(stack):
    stored = stack.cli("run", "tests/backup/scripts/store_files.py", "--", "20", "500")  # loose objects
    assert stored.returncode == 0, stored.stdout + stored.stderr
    before = set(_ids(stack))
    # the state outlives the container: an earlier scheduled run on this stack left its result there
    earlier_run = stack.status()["backup"].get("last_run_finished")
    switched_on = dt.datetime.now(dt.timezone.utc).isoformat()[:19]
    try:
        # (the read share would find the rot other tests left in older backups on purpose)
        up = stack.cli("up", env={"AIIDA_STACK_BACKUP_SCHEDULE": "10s", "AIIDA_STACK_BACKUP_VERIFY_READ_SHARE": "off",
                                  "AIIDA_STACK_BACKUP_MAINTENANCE": "on"})
        assert up.returncode == 0, up.stdout + up.stderr
        deadline = time.monotonic() + 240  # (every profile of the suite's stack: maintained, backed up)
        while time.monotonic() < deadline:
            state = stack.status()["backup"]
            if state.get("last_run_finished") not in (None, earlier_run):
                break
            time.sleep(3)
        assert state.get("last_result") == "ok", state
        assert state["schedule"] == "10s" and state["read_share"] == "off" and not state.get("unreadable")
        made = state["profiles"][stack.settings.profile]["id"]
        listed = json.loads(stack.compose.run("exec", "-T", BACKUP, "stack-backup", "list", "--profile",
                                              stack.settings.profile, capture=True).stdout)["backups"]
        assert made not in before, (made, state)
        assert [row["verified"] for row in listed if row["id"] == made] == [True], (made, listed[:3])
        # basic maintenance by the aiida service first: the 20 loose objects went into a pack
        maintained = state["profiles"][stack.settings.profile]["maintenance"]
        assert state["maintenance"] is True and maintained["state"] == "done", state
        assert maintained["loose_before"] >= 20 and maintained["loose_after"] == 0, maintained
        profile = next(p for p in stack.status()["profiles"] if p["name"] == stack.settings.profile)
        record = profile["maintained"]  # the same record as ./stack maintain's
        # made by a run of this schedule (the next run may have started by now: a run can outlast 10 s)
        assert record["full"] is False and record["when"][:19] >= switched_on, (record, switched_on)
    finally:
        assert stack.cli("up").returncode == 0  # the suite's stack: schedule off again
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")


def _read_share(stack, profile: str, of: int, skip: str) -> tuple[int, dict]:
    done = stack.compose.container(BACKUP).exec_run(["stack-backup", "read-share", "--profile", profile,
                                                     "--of", str(of), "--skip", skip], demux=True)
    return done.exit_code, json.loads(done.output[0].decode().splitlines()[-1])


def test_a_rotating_read_share_reads_every_older_byte_once_in_n_runs_and_finds_rot_there(stack):
    profile = f"rs_{uuid.uuid4().hex[:6]}"  # its own backups: no rot left by other tests
    assert stack.cli("profile.create", profile).returncode == 0
    try:
        ids = []
        for _ in range(3):
            stored = stack.cli("run", "tests/backup/scripts/store_files.py", "--profile", profile, "--", "2", "3000")
            assert stored.returncode == 0, stored.stdout + stored.stderr
            ids.append(_backup(stack.cli, "--profile", profile))
        root = f"/backups/{profile}"
        # rot that no full verification of the newest backup can see: the changed copy is a new inode
        loose = _in_backup(stack, f"cd {root}/{ids[0]} && find repository/container/loose -type f | head -1").strip()
        _corrupt(stack, f"{root}/{ids[0]}/{loose}", "flip")
        _corrupt(stack, f"{root}/{ids[1]}/database/toc.dat", "truncate")
        listing = _in_backup(stack, f"cd {root} && for b in {' '.join(ids)}; do find $b/database "
                                    f"$b/repository/container/loose $b/repository/container/packs -type f "
                                    f"-printf '%i %s %p\\n'; done")
        newest_inodes = {line.split()[0] for line in listing.splitlines() if line.split()[2].startswith(ids[-1])}
        older = {inode: int(size) for inode, size, _ in (line.split() for line in listing.splitlines())
                 if inode not in newest_inodes}
        runs = [_read_share(stack, profile, 3, ids[-1]) for _ in range(3)]
        assert [out["share"] for _, out in runs] == ["1/3", "2/3", "3/3"]
        assert sum(out["files"] for _, out in runs) == len(older)  # each older inode once, in 3 runs
        assert sum(out["bytes"] for _, out in runs) == sum(older.values())
        found = {(r["id"], r["file"]) for _, out in runs for r in out["rotten"]}
        assert found == {(ids[0], loose), (ids[1], "database/toc.dat")}
        assert [code for code, _ in runs] == [1 if out["rotten"] else 0 for _, out in runs]
        listed = json.loads(stack.compose.run("exec", "-T", BACKUP, "stack-backup", "list", "--profile", profile,
                                              capture=True).stdout)["backups"]
        assert {b["id"]: b["verified"] for b in listed} == {ids[0]: False, ids[1]: False, ids[2]: True}
    finally:
        assert stack.cli("profile.delete", profile, "--yes").returncode == 0
        _in_backup(stack, f"rm -rf /backups/{profile}")
