"""Offsite copies over SSH (./stack backup.push, backup.list --from, restore --from, offsite.*): a stand-in
offsite host (tests/cluster/Dockerfile: Debian's sshd and rsync) on the stack's egress network as
`offsite`, where the user alice keeps the copies in ~/offsite. The tests run in file order: key and
trust first, then pushes, then the failures, then a restore from the remote after the local backups are
gone.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from ops import engine, offsite, ssh
from ops.services import AIIDA, BACKUP
from ops.settings import ROOT

from .conftest import authorize, host_key_fingerprint, stand_in_host

pytestmark = pytest.mark.stack

REMOTE = "offsite"
FOLDER = "/home/alice/offsite"
TARGET = f"alice@{REMOTE}:{FOLDER}"
PROFILE = "offsite_src"


@pytest.fixture(scope="module")
def remote(stack, images):
    with stand_in_host(stack, REMOTE) as container:
        yield container


@pytest.fixture(scope="module")
def source(stack):
    """A profile of its own, with a workflow, groups, comments and files (4 MB at most)."""
    assert stack.cli("profile.create", PROFILE).returncode == 0
    done = stack.cli("run", "tests/scripts/populate.py", "--profile", PROFILE, "--", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    yield PROFILE


def _container(stack, service: str):
    ident = stack.compose.run("ps", "-q", service, capture=True).stdout.strip()
    return engine.client().containers.get(ident)


def on_remote(container, script: str) -> str:
    done = container.exec_run(["su", "alice", "-c", script])
    assert done.exit_code == 0, done.output.decode()
    return done.output.decode()


def remote_ids(container) -> list[str]:
    """The published copies on the remote (and `latest`), not the pushes under way."""
    return sorted(on_remote(container, f"ls -1 {FOLDER}/{PROFILE} 2>/dev/null || true").split())


def local_sums(stack, profile: str, ident: str) -> str:
    return stack.compose.run("exec", "-T", "-u", "stack-backup", "backup", "sh", "-c",
                             f"cd /backups/{profile}/{ident} && find . -type f ! -name .reading | sort | "
                             "xargs sha256sum", capture=True).stdout


def remote_sums(container, profile: str, ident: str) -> str:
    return on_remote(container, f"cd {FOLDER}/{profile}/{ident} && find . -type f | sort | xargs sha256sum")


def backup(stack, profile: str) -> str:
    done = stack.cli("backup", "--profile", profile)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(stack.cli("backup.list", "--profile", profile, "--json").stdout)["backups"]
    return next(b["id"] for b in listed if b["latest"])


def digest(stack, profile: str) -> dict:
    done = stack.cli("run", "tests/scripts/digest.py", "--profile", profile)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def pushed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def test_the_offsite_key_is_the_sidecars_alone(stack, remote, source):
    backup(stack, source)
    refused = stack.cli("backup.push", "--to", TARGET, "--profile", source)
    assert refused.returncode == 2 and "no offsite key" in refused.stderr, refused.stderr
    made = stack.cli("offsite.keygen")
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip().splitlines()[-1]
    assert public.startswith("ssh-ed25519 ") and public.endswith(f"offsite@{stack.name}")
    key = offsite.identity(stack.settings).folder / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.parent != ssh.folder(stack.settings)  # not the aiida user's identity
    # the running sidecar's user holds a private copy at once (a scheduled push uses it); the aiida
    # service (workflow code) has none at all
    copy = stack.compose.run("exec", "-T", "-u", "stack-backup", "backup", "sh", "-c",
                             "stat -c '%U %a' /home/stack-backup/.offsite/id_ed25519 && "
                             "cat /home/stack-backup/.offsite/id_ed25519.pub", capture=True)
    assert copy.stdout.split()[:2] == ["stack-backup", "600"], copy.stdout + copy.stderr
    assert copy.stdout.splitlines()[-1] == public
    mounted = {service: {m["Source"] for m in _container(stack, service).attrs["Mounts"]}
               for service in (AIIDA, BACKUP)}
    assert str(key.parent) in mounted[BACKUP] and str(key.parent) not in mounted[AIIDA], mounted
    authorize(remote, public)


def test_first_contact_shows_the_fingerprint_and_needs_accept_host_key(stack, remote, source):
    refused = stack.cli("backup.push", "--to", TARGET, "--profile", source)
    assert refused.returncode == 2 and "--accept-host-key" in refused.stderr, refused.stderr
    assert host_key_fingerprint(remote) in refused.stderr  # shown, to compare with the admins' word
    assert remote_ids(remote) == []  # nothing sent
    accepted = stack.cli("backup.push", "--to", TARGET, "--profile", source, "--accept-host-key")
    assert host_key_fingerprint(remote) in pushed(accepted) + accepted.stdout
    assert ssh.known_keys(offsite.identity(stack.settings), REMOTE, 22)


def test_push_copies_a_backup_that_checks_out_on_the_remote_and_an_unchanged_one_costs_little(stack, remote,
                                                                                               source):
    local = json.loads(stack.cli("backup.list", "--profile", source, "--json").stdout)["backups"]
    first = next(b for b in local if b["latest"])
    assert remote_ids(remote) == [first["id"], "latest"]
    # the remote copy holds every file of the local one, byte for byte (sha256 computed there)
    sums = local_sums(stack, source, first["id"])
    assert remote_sums(remote, source, first["id"]) == sums and len(sums.splitlines()) > 5
    # a second backup with no change: only the new manifest and the dump's table of contents travel
    second = backup(stack, source)
    done = stack.cli("backup.push", "--to", TARGET, "--profile", source, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["pushed"][0]
    print(f"\nunchanged push: {result['bytes_sent']} bytes sent, {result['bytes_added_remote']} bytes new on the "
          f"remote, of {result['bytes_total']}")
    assert result["id"] == second and result["previous"] == first["id"]
    assert result["bytes_added_remote"] < 0.05 * result["bytes_total"], result
    assert on_remote(remote, f"readlink {FOLDER}/{source}/latest").strip() == second
    listed = stack.cli("backup.list", "--from", TARGET, "--profile", source, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["backups"]
    assert [r["id"] for r in rows] == [second, first["id"]] and rows[0]["latest"]
    assert rows[1]["node_count"] == first["node_count"]


def test_a_changed_host_key_is_refused(stack, remote, source):
    where = offsite.identity(stack.settings)
    real = ssh.known_keys(where, REMOTE, 22)
    forged = [f"{REMOTE} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]
    ssh.write_known(where, REMOTE, 22, forged)
    try:
        before = remote_ids(remote)
        refused = stack.cli("backup.push", "--to", TARGET, "--profile", source)
        assert refused.returncode == 2 and "CHANGED" in refused.stderr, refused.stderr
        assert remote_ids(remote) == before
    finally:
        ssh.write_known(where, REMOTE, 22, real)


def test_an_unreachable_host_fails_clearly_within_the_timeout(stack, source):
    where = offsite.identity(stack.settings)
    ssh.write_known(where, "192.0.2.1", 22, ["192.0.2.1 " + " ".join(ssh.known_keys(where, REMOTE, 22)[0].split()[1:])])
    started = time.monotonic()
    done = stack.cli("backup.push", "--to", f"alice@192.0.2.1:{FOLDER}", "--profile", source)
    took = time.monotonic() - started
    assert done.returncode == 1 and "cannot reach alice@192.0.2.1 within 10 s" in done.stderr, done.stderr
    assert took < 30, took


def test_a_push_killed_halfway_leaves_the_remote_copies_intact_and_the_next_completes(stack, remote, source):
    done = stack.cli("run", "tests/backup/scripts/store_files.py", "--profile", source, "--", "6", "2000000")
    assert done.returncode == 0, done.stdout + done.stderr
    third = backup(stack, source)
    before = remote_ids(remote)
    latest = on_remote(remote, f"readlink {FOLDER}/{source}/latest").strip()
    pusher = subprocess.Popen([str(ROOT / "stack"), "backup.push", "--to", TARGET, "--profile", source,
                               "--bwlimit", "1000"], cwd=ROOT, env={**os.environ, "AIIDA_STACK_NAME": stack.name},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while f".incoming-{third}" not in on_remote(remote, f"ls -A {FOLDER}/{source}"):
            assert time.monotonic() < deadline and pusher.poll() is None, "the push never started sending"
            time.sleep(0.5)
        time.sleep(2)
        # the link drops: rsync (and its ssh) die in the sidecar
        stack.compose.run("exec", "-T", "backup", "sh", "-c", "for p in /proc/[0-9]*; do "
                          "[ \"$(cat $p/comm 2>/dev/null)\" = rsync ] && kill -KILL ${p#/proc/}; done; true",
                          capture=True)
        _, err = pusher.communicate(timeout=120)
    finally:
        if pusher.poll() is None:
            pusher.send_signal(signal.SIGKILL)
    assert pusher.returncode == 1, err
    assert remote_ids(remote) == before  # not listed, earlier copies untouched
    assert on_remote(remote, f"readlink {FOLDER}/{source}/latest").strip() == latest
    assert on_remote(remote, f"ls -A {FOLDER}/{source}").count(f".incoming-{third}") >= 1
    on_remote(remote, f"cd {FOLDER}/{source}/{latest} && test -f manifest.json")
    resumed = pushed(stack.cli("backup.push", "--to", TARGET, "--profile", source))
    assert third in resumed
    assert third in remote_ids(remote) and ".incoming-" not in on_remote(remote, f"ls -A {FOLDER}/{source}")


def test_the_remote_keeps_the_same_tiers_as_the_local_backups(stack, remote, source):
    before = [i for i in remote_ids(remote) if i != "latest"]
    assert len(before) >= 3, before
    newest = backup(stack, source)
    keep = {"AIIDA_STACK_BACKUP_KEEP_LAST": "2", "AIIDA_STACK_BACKUP_KEEP_DAILY": "0",
            "AIIDA_STACK_BACKUP_KEEP_WEEKLY": "0", "AIIDA_STACK_BACKUP_KEEP_MONTHLY": "0"}
    done = stack.cli("backup.push", "--to", TARGET, "--profile", source, "--json", env=keep)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["pushed"]
    assert sorted(result["pruned"]) == before[:-1]
    assert remote_ids(remote) == [before[-1], newest, "latest"]
    # what stays is whole: the kept copy, which shared files with the pruned ones, still holds every byte
    assert remote_sums(remote, source, before[-1]) == local_sums(stack, source, before[-1])


def test_the_schedule_pushes_each_new_backup_offsite_once_per_interval(stack, remote, source):
    before = remote_ids(remote)
    env = {"AIIDA_STACK_BACKUP_SCHEDULE": "10s", "AIIDA_STACK_BACKUP_OFFSITE": TARGET,
           "AIIDA_STACK_BACKUP_OFFSITE_INTERVAL": "1h"}
    up = stack.cli("up", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        first = _wait_for_run(stack, None)
        record = first["offsite"]
        assert record["error"] is None and record["target"] == TARGET, record
        [pushed_id] = record["pushed"][source]
        assert pushed_id == first["profiles"][source]["id"] and pushed_id not in before
        assert pushed_id in remote_ids(remote)
        second = _wait_for_run(stack, first["last_run_finished"])  # 10 s later: within the hour, no push
        assert second["offsite"]["last_started"] == record["last_started"]
        assert second["profiles"][source]["id"] not in remote_ids(remote)
    finally:
        assert stack.cli("up").returncode == 0  # the suite's settings again: schedule off, no offsite


def _wait_for_run(stack, after: str | None) -> dict:
    """The scheduler's state once a run finished later than `after`."""
    deadline = time.monotonic() + 300
    while True:
        done = stack.compose.run("exec", "-T", "backup", "stack-backup", "schedule-status", capture=True, check=False)
        state = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else {}
        # runs follow each other at once (each takes longer than 10 s): a finished run shows by its record
        # (last_run_finished, its profiles and push), which stays while the next one runs
        finished = state.get("last_run_finished")
        if finished and finished != after and (after or state.get("offsite")):
            assert state["last_result"] == "ok", state
            return state
        shown = {k: state.get(k) for k in ("running", "last_run_started", "last_run_finished", "last_result", "error",
                                           "next_due", "offsite_target", "offsite", "profiles")}
        assert time.monotonic() < deadline, json.dumps(shown)[-3000:]
        time.sleep(2)


def test_restore_from_the_remote_when_the_local_backups_are_gone(stack, remote, source):
    wanted = digest(stack, source)
    newest = on_remote(remote, f"readlink {FOLDER}/{source}/latest").strip()
    # the disk holding the backups is lost
    stack.compose.run("exec", "-T", "backup", "sh", "-c", f"rm -rf /backups/{source}", capture=True)
    copy = "offsite_copy"
    done = stack.cli("restore", "--from", f"{TARGET}/{newest}", "--profile", source, "--as", copy)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert digest(stack, copy) == wanted
        local = json.loads(stack.cli("backup.list", "--profile", source, "--json").stdout)["backups"]
        assert [b["id"] for b in local] == [newest]  # fetched, checked, published here
    finally:
        stack.cli("profile.delete", copy, "--yes")


def test_an_encrypted_copy_holds_no_plaintext_and_restores_only_with_its_key(stack, remote, source, tmp_path):
    made = stack.cli("offsite.age-keygen")
    assert made.returncode == 0, made.stderr
    recipient = made.stdout.strip().splitlines()[-1]
    assert recipient.startswith("age1")
    kept = offsite.identity(stack.settings).folder / offsite.AGE_IDENTITY
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    key = tmp_path / "age-identity.txt"  # kept off the stack, as the README says
    kept.rename(key)
    marker = f"offsite-marker-{os.getpid()}-{time.time_ns()}"
    stored = stack.cli("run", "tests/scripts/store_text_file.py", "--profile", source, "--", marker)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    ident = backup(stack, source)
    wanted = digest(stack, source)
    sealed = f"alice@{REMOTE}:/home/alice/sealed"
    env = {"AIIDA_STACK_BACKUP_OFFSITE_RECIPIENTS": json.dumps([recipient])}
    pushed(stack.cli("backup.push", "--to", sealed, "--profile", source, env=env))
    pushed(stack.cli("backup.push", "--to", TARGET, "--profile", source))  # plain: the marker is findable
    files = on_remote(remote, f"ls /home/alice/sealed/{source}").split()
    assert files == [f"{ident}.tar.age", f"{ident}.tar.age.sha256", "latest"], files
    assert on_remote(remote, f"grep -rl {marker} {FOLDER}/{source}/{ident} || true").strip()
    assert on_remote(remote, f"grep -rl {marker} /home/alice/sealed || true").strip() == ""
    listed = json.loads(stack.cli("backup.list", "--from", sealed, "--profile", source, "--json").stdout)["backups"]
    assert [(r["id"], r["encrypted"], r["latest"]) for r in listed] == [(ident, True, True)]
    # the local backups are lost; without the key the encrypted copy is refused, and nothing changes
    stack.compose.run("exec", "-T", "backup", "sh", "-c", f"rm -rf /backups/{source}", capture=True)
    copy = "offsite_sealed"
    refused = stack.cli("restore", "--from", f"{sealed}/{ident}", "--profile", source, "--as", copy)
    assert refused.returncode == 2 and "encrypted" in refused.stderr and "--identity" in refused.stderr, refused.stderr
    left = stack.compose.run("exec", "-T", "backup", "sh", "-c", f"ls -A /backups/{source} 2>/dev/null || true",
                             capture=True).stdout
    assert left.strip() == "", left
    done = stack.cli("restore", "--from", f"{sealed}/{ident}", "--profile", source, "--as", copy,
                     "--identity", str(key))
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert digest(stack, copy) == wanted
    finally:
        stack.cli("profile.delete", copy, "--yes")


def test_restore_from_refuses_a_backup_the_remote_does_not_hold(stack, remote, source):
    done = stack.cli("restore", "--from", f"{TARGET}/backup_20200101T000000Z_abcd", "--profile", source,
                     "--as", "offsite_none")
    assert done.returncode == 2 and "holds no backup backup_20200101T000000Z_abcd" in done.stderr, done.stderr
