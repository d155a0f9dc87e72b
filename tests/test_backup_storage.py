"""Where backups live and what happens when that place fails: the sidecar container killed
mid-backup, then (in this order: the last tests move the stack's backups) the `backups_dir`
setting (a host folder instead of the volume) on a full disk and on one with room."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from ops.compose import last_json
from ops.services import BACKUP, SERVICES
from ops.settings import ROOT

from .conftest import table_locked, wait_for_backup_in_progress

pytestmark = pytest.mark.stack

ID_RE = r"backup_\d{8}T\d{6}Z_[a-z0-9]+"


def _digest(stack) -> dict:
    done = stack.run_script("digest.py")
    assert done.returncode == 0, done.stdout + done.stderr
    return last_json(done.stdout)


def _published(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if re.fullmatch(ID_RE, name)) if folder.is_dir() else []


def test_killing_the_backup_container_mid_backup_leaves_latest_intact(stack):
    profile = stack.settings.profile
    first = stack.cli("backup")
    assert first.returncode == 0, first.stdout + first.stderr
    latest = re.findall(ID_RE, first.stderr)[0]
    before = re.findall(ID_RE, stack.cli("backup.list", "--profile", profile).stdout)
    # hold db_dblink so pg_dump waits for its table locks inside "dump database", the in-progress folder
    # created (not db_dbnode: ./stack counts each profile's nodes before it starts)
    with table_locked(stack, f"aiida_{profile}", "db_dblink"):
        victim = subprocess.Popen([str(ROOT / "stack"), "backup"], env={**os.environ, "AIIDA_STACK_NAME": stack.name},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_backup_in_progress(stack, profile)
            stack.compose.container(BACKUP).kill()
            _, err = victim.communicate(timeout=120)
        finally:
            if victim.poll() is None:
                victim.kill()
    assert victim.returncode != 0, err
    up = stack.cli("up")  # the killed sidecar comes back
    assert up.returncode == 0, up.stdout + up.stderr
    listed = stack.cli("backup.list", "--profile", profile).stdout
    assert re.findall(ID_RE, listed) == before  # no half backup listed
    sidecar = stack.compose.container(BACKUP)
    assert sidecar.exec_run(["readlink", f"/backups/{profile}/latest"]).output.decode().strip() == latest
    verified = stack.cli("backup.verify", "--id", latest)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    after = stack.cli("backup")
    assert after.returncode == 0, after.stdout + after.stderr
    assert ".live-" not in sidecar.exec_run(["ls", "-A", f"/backups/{profile}"]).output.decode()
    assert len(re.findall(ID_RE, stack.cli("backup.list", "--profile", profile).stdout)) == len(before) + 1


@pytest.fixture(scope="module")
def tmpfs_backups(stack, tmp_path_factory):
    """The session stack's backups moved (setting backups_dir) to a host folder on a 64 KB tmpfs."""
    folder = tmp_path_factory.mktemp("host") / "backups"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    env = {"AIIDA_STACK_BACKUPS_DIR": str(folder)}
    try:
        up = stack.cli("up", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        yield folder, env
    finally:
        back = stack.cli("up")  # back to the backups volume
        subprocess.run(["umount", "-l", str(folder)], check=False)
        assert back.returncode == 0, back.stdout + back.stderr


def test_backup_on_a_full_disk_fails_clearly_publishes_nothing_and_leaves_data_alone(stack, tmpfs_backups):
    folder, env = tmpfs_backups
    stored = stack.cli("run", "tests/backup/scripts/store_files.py", "--", "1", "1000000")  # > 64 KB to back up
    assert stored.returncode == 0, stored.stdout + stored.stderr
    before = _digest(stack)
    done = stack.cli("backup", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no space left in the backups folder" in done.stderr and "Nothing was published" in done.stderr
    profile_dir = folder / stack.settings.profile
    assert _published(profile_dir) == []
    assert not [name for name in os.listdir(profile_dir) if name.startswith(".live-") or name == "latest"]
    assert _digest(stack) == before
    assert stack.health(env=env) == dict.fromkeys(SERVICES, "healthy")


def test_backups_dir_keeps_backups_in_a_private_host_folder(stack, tmpfs_backups):
    folder, env = tmpfs_backups
    subprocess.run(["mount", "-o", "remount,size=1g", str(folder)], check=True)
    done = stack.cli("backup", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    ident = re.findall(ID_RE, done.stderr)[0]
    profile_dir = folder / stack.settings.profile
    assert _published(profile_dir) == [ident]
    assert os.readlink(profile_dir / "latest") == ident
    for root, dirs, files in os.walk(folder):  # (`latest` is a symlink: its mode means nothing)
        for name in dirs:
            path = Path(root) / name
            assert path.is_symlink() or stat.S_IMODE(os.lstat(path).st_mode) == 0o700, path
        for name in files:
            assert stat.S_IMODE(os.lstat(Path(root) / name).st_mode) == 0o600, Path(root) / name
    assert ident in stack.cli("backup.list", env=env).stdout
    assert str(folder) in stack.cli("status", env=env).stdout
    verified = stack.cli("backup.verify", "--id", ident, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
