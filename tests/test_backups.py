"""backup / backup.list / backup.verify / restore, driven the way ops staff do, on real data."""

from __future__ import annotations

import json
import re

import pytest

from ops import backups, profiles, rules
from ops.compose import last_json
from ops.services import BACKUP, POSTGRES, SERVICES

pytestmark = pytest.mark.stack


def _json(done) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    return last_json(done.stdout)


def _backup(run, *extra: str) -> str:
    done = run("backup", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.findall(r"(backup_\d{8}T\d{6}Z_[a-z0-9]+)", done.stderr)[0]  # then come pruned ids, if any


def _ids(stack) -> list[str]:
    return re.findall(r"(backup_\d{8}T\d{6}Z_[a-z0-9]+)", stack.cli("backup.list").stdout)


def test_restore_refuses_a_corrupted_backup_and_touches_nothing(stack):
    backup_id = _backup(stack.cli)
    before = _json(stack.run_script("digest.py"))
    backup = stack.compose.container(BACKUP)
    toc = f"/backups/default/{backup_id}/database/toc.dat"
    assert backup.exec_run(["sh", "-c", f"truncate -s 100 {toc}"]).exit_code == 0
    refused = stack.cli("restore", "--id", backup_id, "--yes")
    assert refused.returncode != 0
    assert "failed verification" in refused.stderr and "toc.dat" in refused.stderr
    assert _json(stack.run_script("digest.py")) == before
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")
    verify = stack.cli("backup.verify", "--id", backup_id)
    assert verify.returncode != 0 and "FAILED" in verify.stdout


def _psql(stack, database: str, sql: str):
    """One SQL statement as the PostgreSQL superuser (peer authentication: as the postgres user)."""
    return stack.compose.run("exec", "-T", "-u", "postgres", POSTGRES, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA",
                             "-d", database, "-c", sql, capture=True, check=False)


def _node_value(stack, node_uuid: str) -> str | None:
    done = stack.run_script("load_node.py", node_uuid)
    return done.stdout.split()[-1] if done.returncode == 0 else None


def test_restore_replaces_changed_data_and_the_safety_backup_holds_the_change(stack):
    assert stack.run_script("store_node.py", "11").returncode == 0
    backup_id = _backup(stack.cli)
    changed = stack.run_script("store_node.py", "12")  # after the backup: the restore takes it away
    assert changed.returncode == 0, changed.stderr
    change = changed.stdout.split()[-1]
    refused = stack.cli("restore", "--id", backup_id)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _node_value(stack, change) == "12"  # refused: nothing touched
    restored = stack.cli("restore", "--id", backup_id, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _node_value(stack, change) is None
    safety = re.search(r"safety backup of the replaced data\s+│?\s*(backup_\S+)", restored.stdout)
    assert safety, restored.stdout
    counts = {b["id"]: b["node_count"] for b in backups.published(stack.compose, stack.settings.profile)}
    assert counts[safety[1]] == counts[backup_id] + 1  # the replaced data, change included
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")


def test_restore_over_a_profile_whose_state_cannot_be_read_needs_yes(stack):
    backup_id = _backup(stack.cli)
    database = rules.database_name(stack.settings.profile)
    hide = _psql(stack, database, f"REVOKE SELECT ON db_dbnode FROM {database}")
    assert hide.returncode == 0, hide.stdout + hide.stderr
    listed = {p["name"]: p for p in profiles.info(stack.compose)["profiles"]}
    assert listed[stack.settings.profile]["nodes"] is None  # unreadable: not "empty"
    refused = stack.cli("restore", "--id", backup_id)
    assert refused.returncode == 2 and "cannot be read" in refused.stderr and "--yes" in refused.stderr
    count = len(_ids(stack))
    restored = stack.cli("restore", "--id", backup_id, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert len(_ids(stack)) == count + 1  # a safety backup of what could not be read
    listed = {p["name"]: p for p in profiles.info(stack.compose)["profiles"]}
    assert listed[stack.settings.profile]["nodes"] is not None
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")


def test_backup_taken_while_the_daemon_runs_restores_consistently(stack):
    submitted = stack.run_script("submit_adds.py", "15")
    assert submitted.returncode == 0, submitted.stderr
    backup_id = _backup(stack.cli)
    restored = stack.cli("restore", "--id", backup_id, "--as", "snapshot")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "staged and checked against the manifest" in restored.stderr
    assert re.search(r"check: aiida_snapshot holds the backup's \d+ nodes", restored.stderr), restored.stderr
    digest = stack.cli("run", "tests/scripts/digest.py", "--profile", "snapshot")
    assert digest.returncode == 0, digest.stderr
    # the copy's daemon would run the restored processes all through the rest of the suite
    deleted = stack.cli("profile.delete", "snapshot", "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr


def test_retention_keeps_the_newest_backups_and_they_verify(stack):
    made = [_backup(stack.cli, "--keep", "2") for _ in range(4)]
    listed = stack.cli("backup.list", "--profile", "default").stdout
    assert re.findall(r"backup_\d{8}T\d{6}Z_[a-z0-9]+", listed) == made[:1:-1], listed
    for backup_id in made[-2:]:
        verified = stack.cli("backup.verify", "--id", backup_id)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_backup_list_never_cuts_an_id_on_a_narrow_terminal(stack):
    _backup(stack.cli)
    listed = json.loads(stack.cli("backup.list", "--json").stdout)["backups"]
    assert listed and all(b["id"].startswith("backup_") for b in listed)
    narrow = stack.cli("backup.list", env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert re.findall(r"backup_\d{8}T\d{6}Z_[a-z0-9]+", narrow) == [b["id"] for b in listed]
    assert "left out for the terminal's width" in narrow


@pytest.mark.parametrize("args", [
    ("restore", "--id", "../x"), ("restore", "--id", "backup_1/.."), ("backup.verify", "--id", "nope"),
    ("backup", "--profile", "nosuch"), ("restore", "--profile", "a;drop"),
])
def test_bad_backup_ids_and_profiles_are_refused(stack, args):
    done = stack.cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr


def test_backup_benchmark_prints_its_figures_and_removes_what_it_made(stack):
    done = stack.cli("bench.backup", "--nodes", "60", "--megabytes", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "60 nodes, 48 links, 6 files (2 MB)" in done.stderr, done.stderr
    for figure in ("pg_dump + cp -a (baseline)", "full backup", "unchanged incremental", "new bytes ÷ full",
                   "restore into a new profile", "÷ full backup (wall)", "restore over the profile", "daemon down"):
        assert figure in done.stdout, done.stdout
    assert re.search(r"check: aiida_bench_\w+_restored holds the backup's 60 nodes", done.stderr), done.stderr
    profiles_left = stack.cli("profile.list").stdout
    assert "bench_" not in profiles_left, profiles_left
    assert "bench_" not in stack.compose.container(BACKUP).exec_run(["ls", "/backups"]).output.decode()
