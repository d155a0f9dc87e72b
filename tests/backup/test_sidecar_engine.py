"""The backup sidecar's engine (`stack-backup`) against a real stack: pg_dump, rsync, disk-objectstore.

Runs in the session's throwaway stack (fixture `stack`), on its default profile: it only adds nodes
(SinglefileData with random content, so the repository has objects) and its own backups, databases
(`restore_<hex>`, dropped) and repository folders (`restore_<hex>`, removed). The tests run in file
order: later ones build on the backups of earlier ones (list, prune).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ops import secrets

from ..conftest import table_locked, wait_for_backup_in_progress

pytestmark = pytest.mark.stack

SCRIPTS = Path(__file__).parent / "scripts"
ID_RE = re.compile(r"^backup_\d{8}T\d{6}Z_[a-z0-9]{4}$")


# ------------------------------------------------------------------------------------------------
# helpers


def engine(stack, *args: str, input: str | None = None) -> tuple[int, dict, str]:
    """`docker compose exec -T backup stack-backup ARGS` as the host will call it: (exit, JSON, stderr)."""
    done = stack.compose.run("exec", "-T", "backup", "stack-backup", *args, capture=True, check=False,
                             input=input if input is not None else "")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {done.stdout!r}; stderr: {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[0]), done.stderr


def in_backup(stack, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A shell script in the backup container as the backup user."""
    done = stack.compose.run("exec", "-T", "-u", "stack-backup", "backup", "sh", "-c", script, capture=True,
                             check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def sql(stack, database: str, query: str) -> str:
    done = stack.compose.run("exec", "-T", "-u", "postgres", "postgres", "psql", "-X", "-At", "-d", database,
                             "-c", query, capture=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def backup(stack, profile: str, *extra: str) -> dict:
    code, result, err = engine(stack, "backup", "--profile", profile, *extra)
    assert code == 0, (result, err[-2000:])
    return result


def listing(stack, profile: str) -> list[dict]:
    code, result, _ = engine(stack, "list", "--profile", profile)
    assert code == 0, result
    return result["backups"]


def failed(result: dict) -> dict[str, str]:
    return {check["name"]: check["detail"] for check in result["checks"] if not check["ok"]}


@pytest.fixture(scope="module")
def profile(stack) -> str:
    """The stack's default profile, with 8 files of 1 MB of repository objects added."""
    name = stack.settings.profile
    done = stack.cli("run", str(SCRIPTS / "store_files.py"), "--", "8", "1000000")
    assert done.returncode == 0, done.stdout + done.stderr
    return name


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


# ------------------------------------------------------------------------------------------------
# backup, list


def test_backup_publishes_a_backup_with_a_correct_manifest(stack, profile, state):
    result = backup(stack, profile, "--aiida-version", "2.9.4")
    manifest = result["manifest"]
    assert ID_RE.match(result["id"]) and result["profile"] == profile
    assert result["path"] == f"/backups/{profile}/{result['id']}"
    assert manifest["node_count"] == int(sql(stack, f"aiida_{profile}", "SELECT count(*) FROM db_dbnode"))
    assert manifest["schema_version"] == sql(stack, f"aiida_{profile}", "SELECT version_num FROM alembic_version")
    assert manifest["repository_object_count"] >= 8
    assert "toc.dat" in manifest["database_files"] and all(len(v) == 64 for v in manifest["database_files"].values())
    assert manifest["verified"] is None and manifest["aiida_core_version"] == "2.9.4"
    assert manifest["bytes_total"] > 8_000_000
    # published: the folder, the latest link, the private config entry; nothing in progress
    files = in_backup(stack, f"cd /backups/{profile} && readlink latest && ls -A && stat -c '%a %n' "
                             f"{result['id']}/config.json && python3 -c \"import json; c=json.load(open("
                             f"'{result['id']}/config.json')); print(c['default_profile'], list(c['profiles']))\"")
    lines = files.stdout.splitlines()
    assert lines[0] == result["id"]
    assert not any(line.startswith(".live-") for line in lines)
    assert f"600 {result['id']}/config.json" in lines
    assert lines[-1] == f"{profile} ['{profile}']"
    state["first"] = result


def test_second_backup_without_changes_is_hard_linked(stack, profile, state):
    unverified = backup(stack, profile)  # never verified: nothing links to it
    assert unverified["manifest"]["previous"] != state["first"]["id"]
    code, checked, _ = engine(stack, "verify", "--profile", profile, state["first"]["id"])
    assert code == 0 and checked["ok"]
    result = backup(stack, profile)
    manifest = result["manifest"]
    assert manifest["previous"] == state["first"]["id"]  # the newest verified one, not the newest
    assert manifest["repository_digest"] == state["first"]["manifest"]["repository_digest"]
    assert manifest["bytes_new"] < 0.01 * manifest["bytes_total"], manifest
    # unchanged tables' dump files and the hash list are the previous backup's files (hard links);
    # only the table of contents (it names the snapshot) and the manifest are new
    first, second = f"/backups/{profile}/{state['first']['id']}", f"/backups/{profile}/{result['id']}"
    shared = in_backup(stack, f"for f in $(cd {second} && ls database/*.dat.gz repository-hashes.txt); do "
                              f"[ {first}/$f -ef {second}/$f ] && echo \"same $f\" || echo \"new $f\"; done").stdout
    assert "same repository-hashes.txt" in shared and "new " not in shared, shared
    state["second"] = result


def test_list_shows_both_newest_first_with_latest_marked(stack, profile, state):
    rows = listing(stack, profile)
    ids = [row["id"] for row in rows]
    first, second = state["first"]["id"], state["second"]["id"]
    assert ids.index(second) < ids.index(first)
    assert ids[0] == second
    assert [row["latest"] for row in rows] == [row["id"] == second for row in rows]
    top = rows[0]
    assert top["node_count"] == state["second"]["manifest"]["node_count"]
    assert top["bytes_new"] == state["second"]["manifest"]["bytes_new"]
    # list without --profile covers every profile
    code, everything, _ = engine(stack, "list")
    assert code == 0 and second in [row["id"] for row in everything["backups"]]


# ------------------------------------------------------------------------------------------------
# verify


def test_verify_a_good_backup_with_a_real_restore(stack, profile, state):
    password = (secrets.secrets_dir(stack.settings) / "postgres_password").read_text().strip()
    code, result, err = engine(stack, "verify", "--profile", profile, "latest", "--scratch-host", "postgres",
                               input=password + "\n")
    assert code == 0 and result["ok"], (result, err[-2000:])
    assert result["id"] == state["second"]["id"] and result["database_restored"] is True
    names = {check["name"] for check in result["checks"]}
    assert {"database_files", "repository_objects_present", "repository_digest", "repository_content",
            "database_restore", "node_count", "database_references"} <= names
    # recorded in the backup; the scratch database is gone
    assert listing(stack, profile)[0]["verified"] is True
    assert sql(stack, "postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'stack_verify_%'") == "0"


def test_verify_without_scratch_server_checks_files_only(stack, profile, state):
    code, result, _ = engine(stack, "verify", "--profile", profile, state["first"]["id"])
    assert code == 0 and result["ok"] and result["database_restored"] is False


CORRUPTIONS = {
    # name: (shell script in the backup folder printing what it broke, failing check)
    "truncated dump file": (
        "f=$(ls -S database/*.dat.gz | head -1); s=$(stat -c %s $f); truncate -s $((s / 2)) $f; basename $f",
        "database_files"),
    "flipped byte in a dump file": (
        "f=database/toc.dat; python3 -c \"import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); "
        "b[len(b)//2] ^= 1; open(p,'r+b').write(b)\" $f; basename $f",
        "database_files"),
    "deleted object file": (
        "f=$(find repository/container/loose -type f | sort | head -1); rm $f; "
        "echo $(basename $(dirname $f))$(basename $f)",
        "repository_objects_present"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_verify_names_what_is_wrong(stack, profile, corruption):
    script, check = CORRUPTIONS[corruption]
    ident = backup(stack, profile)["id"]
    broken = in_backup(stack, f"cd /backups/{profile}/{ident} && {script}").stdout.strip()
    assert broken
    code, result, _ = engine(stack, "verify", "--profile", profile, ident)
    assert code == 1 and result["ok"] is False
    problems = failed(result)
    assert check in problems and broken in problems[check], problems
    assert next(row for row in listing(stack, profile) if row["id"] == ident)["verified"] is False
    if corruption == "deleted object file":  # hard links: the previous backup keeps its copy
        previous = next(row["id"] for row in listing(stack, profile) if row["id"] < ident)
        _, result, _ = engine(stack, "verify", "--profile", profile, previous)
        assert not [name for name in failed(result) if name.startswith("repository")], result


# ------------------------------------------------------------------------------------------------
# refusals: lock, bad input


def test_concurrent_backup_is_refused_while_the_lock_is_held(stack, profile):
    holder = subprocess.Popen(stack.compose.command("exec", "-T", "-u", "stack-backup", "backup", "flock",
                                                    "/backups/.lock", "cat"),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if in_backup(stack, "flock -n /backups/.lock true", check=False).returncode != 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the lock holder never got the lock")
        code, result, _ = engine(stack, "backup", "--profile", profile)
        assert code == 3 and "the stack's lock is held by another command" in result["error"]
        start = time.monotonic()
        code, result, _ = engine(stack, "backup", "--profile", profile, "--wait", "2")
        assert code == 3 and time.monotonic() - start >= 2
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not [line for line in in_backup(stack, f"ls -A /backups/{profile}").stdout.split() if
                line.startswith(".live-")]


@pytest.mark.parametrize("ident", ["../x", "backup_1/..", "nope", "backup_20250101T000000Z/../x", "..", ""])
def test_bad_ids_exit_2(stack, profile, ident):
    for command in (["verify", "--profile", profile, ident],
                    ["restore-database", "--profile", profile, ident, "--target-db", "x_restore"]):
        code, result, _ = engine(stack, *command)
        assert code == 2 and result["ok"] is False, result


def test_unknown_profile_and_backup_exit_2(stack, profile):
    assert engine(stack, "backup", "--profile", "no_such_profile")[0] == 2
    assert engine(stack, "backup", "--profile", "../etc")[0] == 2
    assert engine(stack, "verify", "--profile", profile, "backup_20000101T000000Z_zzzz")[0] == 2
    assert engine(stack, "verify", "--profile", "no_such_profile", "latest")[0] == 2


# ------------------------------------------------------------------------------------------------
# a backup killed mid-way


def test_killed_backup_leaves_latest_and_backups_intact(stack, profile):
    before = listing(stack, profile)
    latest = next(row["id"] for row in before if row["latest"])
    # hold db_dbnode so the backup blocks inside "dump database", with its live folder created
    with table_locked(stack, f"aiida_{profile}", "db_dbnode"):
        victim = subprocess.Popen(stack.compose.command("exec", "-T", "backup", "sh", "-c",
                                                        f"echo $$ > /tmp/victim.pid; exec stack-backup backup "
                                                        f"--profile {profile}"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_backup_in_progress(stack, profile)
            time.sleep(1)
            stack.compose.run("exec", "-T", "backup", "sh", "-c", "kill -KILL $(cat /tmp/victim.pid)", capture=True)
            victim.wait(timeout=60)
        finally:
            if victim.poll() is None:
                victim.kill()
    after = listing(stack, profile)
    assert after == before
    assert in_backup(stack, f"readlink /backups/{profile}/latest").stdout.strip() == latest
    assert ".live-" in in_backup(stack, f"ls -A /backups/{profile}").stdout  # left behind by the kill...
    result = backup(stack, profile)  # ...and removed by the next backup, under the lock
    assert ".live-" not in in_backup(stack, f"ls -A /backups/{profile}").stdout
    assert result["manifest"]["previous"] == next((row["id"] for row in after if row["verified"]), None)
    assert engine(stack, "verify", "--profile", profile, "latest")[0] == 0


def test_backup_leaves_out_objects_still_being_written_in_the_sandbox(stack, profile):
    # an AiiDA process writes a new object into sandbox/ and renames it into loose/ when complete;
    # a sandbox file may vanish under rsync (exit 24, a failed backup in CI) and is not an object yet
    sandbox = f"/home/aiida/.aiida/repository/{profile}/container/sandbox"
    stack.compose.run("exec", "-T", "-u", "aiida", "aiida", "sh", "-c", f"echo half-written > {sandbox}/in-flight",
                      capture=True)
    try:
        result = backup(stack, profile)
    finally:
        stack.compose.run("exec", "-T", "-u", "aiida", "aiida", "rm", "-f", f"{sandbox}/in-flight", capture=True)
    copied = in_backup(stack, f"ls -A {result['path']}/repository/container/sandbox").stdout
    assert copied == "", copied  # the folder is there (a restored container needs it), empty


def test_a_loose_object_vanishing_during_the_copy_is_not_an_error(stack):
    # packing deletes a loose object after writing it into a pack; the pack index is copied after the
    # loose folder, so the object is still backed up. rsync (slowed to 1 MB/s here) sees the file
    # in its list, and it is gone when its turn comes.
    script = (
        "import os, threading, time\n"
        "from pathlib import Path\n"
        "from stackbackup.repository import RsyncManager\n"
        "root = Path('/tmp/vanish'); src = root / 'loose'; dest = root / 'copy'\n"
        "src.mkdir(parents=True); dest.mkdir()\n"
        "for i in range(12): (src / f'{i:02d}').write_bytes(os.urandom(200_000))\n"
        "threading.Timer(0.5, lambda: (src / '11').unlink()).start()\n"
        "RsyncManager(str(root)).call_rsync(src, dest, extra_args=['--bwlimit=1000'], vanished_ok=VANISHED_OK)\n"
        "print(sorted(p.name for p in (dest / 'loose').iterdir()))\n"
    )
    for vanished_ok, expected in ((True, 0), (False, 1)):
        code = script.replace("VANISHED_OK", str(vanished_ok))
        done = in_backup(stack, f"rm -rf /tmp/vanish; PYTHONPATH=/opt/backup python3 -c \"{code}\"", check=False)
        assert done.returncode == expected, (vanished_ok, done.stdout, done.stderr[-1500:])
        if vanished_ok:
            assert done.stdout.strip() == str([f"{i:02d}" for i in range(11)])
        else:
            assert "exit 24" in done.stderr and "vanished" in done.stderr
    in_backup(stack, "rm -rf /tmp/vanish")


# ------------------------------------------------------------------------------------------------
# restore primitives


def test_restore_database_into_a_new_database(stack, profile):
    target = f"restore_{uuid.uuid4().hex[:8]}"
    try:
        code, result, err = engine(stack, "restore-database", "--profile", profile, "latest", "--target-db", target)
        assert code == 0, (result, err[-2000:])
        manifest = next(row for row in listing(stack, profile) if row["latest"])
        assert result["nodes_restored"] == manifest["node_count"]
        assert int(sql(stack, target, "SELECT count(*) FROM db_dbnode")) == manifest["node_count"]
        assert sql(stack, "postgres", f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{target}'") \
            == f"aiida_{profile}"
        owner = sql(stack, target, "SELECT tableowner FROM pg_tables WHERE tablename = 'db_dbnode'")
        assert owner == f"aiida_{profile}"
        # only ever into a new database: swapping it in is `swap`'s job, with the daemon stopped
        code, result, _ = engine(stack, "restore-database", "--profile", profile, "latest", "--target-db", target)
        assert code == 2 and "exists" in result["error"]
    finally:
        sql(stack, "postgres", f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


def test_restore_repository_in_a_one_off_container(stack, profile):
    name = f"restore_{uuid.uuid4().hex[:8]}"
    volume = f"{stack.name}_aiida-home"

    def restore(*extra: str) -> tuple[int, dict]:
        done = stack.compose.run("run", "--rm", "-T", "-v", f"{volume}:/aiida-home-rw", "backup", "stack-backup",
                                 "restore-repository", "--profile", profile, "latest", "--target-path",
                                 f"/aiida-home-rw/repository/{name}", *extra, capture=True, check=False, input="")
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1, done.stdout + done.stderr[-2000:]
        return done.returncode, json.loads(lines[0])

    try:
        code, result = restore()
        assert code == 0, result
        latest = next(row for row in listing(stack, profile) if row["latest"])
        assert result["objects_restored"] == latest["repository_object_count"]
        code, result = restore()  # only ever into a new folder
        assert code == 2 and "exists" in result["error"]
        listed = stack.compose.exec_aiida(["ls", f"/home/aiida/.aiida/repository/{name}/container"], capture=True)
        assert "packs.idx" in listed.stdout
        # the sidecar itself (read-only AiiDA home) refuses
        code, result, _ = engine(stack, "restore-repository", "--profile", profile, "latest", "--target-path",
                                 f"/aiida-home-rw/repository/{name}-x")
        assert code == 1 and "read-write" in result["error"]
    finally:
        stack.compose.exec_aiida(["rm", "-rf", f"/home/aiida/.aiida/repository/{name}"], capture=True)


# ------------------------------------------------------------------------------------------------
# prune


def test_prune_keeps_the_newest_and_spares_backups_being_read(stack, profile):
    rows = listing(stack, profile)
    assert len(rows) >= 3
    oldest = rows[-1]["id"]
    reader = subprocess.Popen(stack.compose.command("exec", "-T", "-u", "stack-backup", "backup", "flock", "-s",
                                                    f"/backups/{profile}/{oldest}/.reading", "cat"),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        result = backup(stack, profile, "--keep", "2")
        assert oldest not in result["pruned"] and result["pruned"]
        ids = [row["id"] for row in listing(stack, profile)]
        assert ids[:2] == [result["id"], rows[0]["id"]] and ids[2:] == [oldest]
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    result = backup(stack, profile, "--keep", "2")
    rows = listing(stack, profile)
    assert len(rows) == 2 and rows[0]["id"] == result["id"] and rows[0]["latest"]
    assert oldest in result["pruned"]
