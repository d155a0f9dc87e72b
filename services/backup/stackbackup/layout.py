"""Where things are: the mounts, names and ids under /backups, published backups, locks, atomic writes."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# the shared rules (services/common/stack_rules.py, copied into the image beside this package)
from stack_rules import BACKUP_ID_RE as ID_RE
from stack_rules import LATEST, PROFILE_RE, backup_id_problem, profile_problem

from stackbackup.common import EXIT_INPUT, Fail, rand
from stackbackup.manifest import read_manifest

AIIDA_HOME = Path(os.environ.get("STACK_BACKUP_AIIDA_HOME", "/aiida-home"))
AIIDA_HOME_IN_AIIDA = "/home/aiida/.aiida"  # where the aiida service mounts the same volume
# Restores write through a one-off container with the volume mounted read-write HERE: Compose keeps
# the service's `aiida-home:/aiida-home:ro` even when `run -v` names the same target, so use
#   docker compose run --rm -v <project>_aiida-home:/aiida-home-rw backup stack-backup restore-repository ...
AIIDA_HOME_RW = Path(os.environ.get("STACK_BACKUP_AIIDA_HOME_RW", "/aiida-home-rw"))
BACKUPS = Path(os.environ.get("STACK_BACKUP_ROOT", "/backups"))

READING = ".reading"


# ------------------------------------------------------------------------------------------------
# names and atomic writes


def check_profile_name(profile: str) -> None:
    problem = profile_problem(profile)
    if problem:
        raise Fail(problem, EXIT_INPUT)


def check_backup_id(ident: str) -> None:
    problem = backup_id_problem(ident)
    if problem:
        raise Fail(problem, EXIT_INPUT)


def profile_dir(profile: str) -> Path:
    return BACKUPS / profile


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON to a temporary sibling, fsync, rename over `path`: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{rand(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # read-only folders inside (pg_dump writes 0600 files; be thorough anyway)
        for folder, dirs, _ in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(Path(folder) / name, 0o700)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# published backups: listing, resolving


def latest_id(profile: str) -> str | None:
    try:
        target = os.readlink(profile_dir(profile) / LATEST)
    except OSError:
        return None
    return target if ID_RE.fullmatch(target) else None


def published(profile: str) -> list[tuple[str, dict | None]]:
    """(id, manifest or None) of a profile's published backups, newest first."""
    folder = profile_dir(profile)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if ID_RE.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            try:
                manifest = read_manifest(entry)
            except Fail:
                manifest = None
            found.append((entry.name, manifest))
    # ids carry the second; finished_at (microseconds) orders backups of the same second
    found.sort(key=lambda item: (item[0][:23], (item[1] or {}).get("finished_at") or "", item[0]), reverse=True)
    return found


def resolve(profile: str, ident: str) -> tuple[Path, str]:
    """(folder, id) of a profile's backup `ident` ('latest' resolved); Fail (bad input) if there is none."""
    check_profile_name(profile)
    check_backup_id(ident)
    if ident == LATEST:
        resolved = latest_id(profile)
        if resolved is None:
            raise Fail(f"profile {profile!r} has no backup (no {LATEST} in {profile_dir(profile)})", EXIT_INPUT)
        ident = resolved
    folder = profile_dir(profile) / ident
    if folder.is_symlink() or not folder.is_dir():
        raise Fail(f"no backup {ident} for profile {profile!r}", EXIT_INPUT)
    return folder, ident


def cmd_list(args: argparse.Namespace) -> dict:
    """`list`: published backups (of one profile or all), newest first."""
    if args.profile:
        check_profile_name(args.profile)
        profiles = [args.profile]
    else:
        profiles = sorted(p.name for p in BACKUPS.iterdir()
                          if p.is_dir() and not p.is_symlink() and PROFILE_RE.fullmatch(p.name))
    rows = []
    for profile in profiles:
        current = latest_id(profile)
        for ident, manifest in published(profile):
            m = manifest or {}
            row = {"profile": profile, "id": ident, "finished_at": m.get("finished_at"),
                   "bytes_total": m.get("bytes_total"), "bytes_new": m.get("bytes_new"),
                   "node_count": m.get("node_count"), "repository_object_count": m.get("repository_object_count"),
                   "verified": m.get("verified"), "latest": ident == current,
                   "schema_version": m.get("schema_version"), "aiida_version": m.get("aiida_version")}
            if manifest is None:
                row["error"] = "manifest.json missing or unreadable"
            rows.append(row)
    rows.sort(key=lambda r: (r["id"][:23], r["finished_at"] or "", r["id"]), reverse=True)
    return {"backups": rows}


# ------------------------------------------------------------------------------------------------
# readers mark the backup they read (the stack's one lock is stackbackup.locking)


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Shared flock on <backup>/.reading while a backup is read; prune skips backups that have one."""
    path = folder / READING
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise Fail(f"cannot open {path}: {exc}", EXIT_INPUT) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # a prune may have removed the backup between open and lock
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise Fail(f"backup {folder.name} was removed meanwhile", EXIT_INPUT)
        yield
    finally:
        os.close(fd)


def in_use(folder: Path) -> tuple[bool, int | None]:
    """(busy, fd): busy if a reader holds .reading; else fd holds it exclusively (close to release)."""
    try:
        fd = os.open(folder / READING, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError:
        return True, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return True, None
    return False, fd


def repository_path(path: str) -> Path:
    """A repository folder the restore may write: inside the writable AiiDA home's repository/."""
    root = AIIDA_HOME_RW / "repository"
    target = Path(os.path.normpath(path))
    if not os.path.isabs(path) or ".." in Path(path).parts or root not in target.parents:
        raise Fail(f"repository paths must be folders inside {root}/ (got {path!r})", EXIT_INPUT)
    if not AIIDA_HOME_RW.is_dir() or not os.access(AIIDA_HOME_RW, os.W_OK):
        raise Fail(f"{AIIDA_HOME_RW} is not writable here: run this in a one-off container with the "
                   f"aiida-home volume mounted read-write at {AIIDA_HOME_RW}")
    return target
