"""A backup's manifest.json: reading it, building it, and the disk usage it records."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from stackbackup.common import Fail, files_under, iso, sha256_file

MANIFEST_FORMAT = 1
HASHES_FILE = "repository-hashes.txt"  # sorted object hashes of the copied container


def read_manifest(folder: Path) -> dict:
    """The manifest of the backup in `folder`; Fail if it is missing or unreadable."""
    try:
        return json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise Fail(f"{folder.name}: manifest.json missing") from None
    except (OSError, ValueError) as exc:
        raise Fail(f"{folder.name}: manifest.json unreadable: {exc}") from None


def hashes_file(manifest: dict) -> str:
    """The name of a backup's hash list, as its manifest records it."""
    return manifest.get("repository_hashes_file") or HASHES_FILE


def database_file_checksums(dump: Path) -> dict[str, str]:
    """sha256 of every file of a pg_dump directory, by path relative to it."""
    return {str(p.relative_to(dump)): sha256_file(p) for p in files_under(dump)}


def link_unchanged(live: Path, previous: Path | None, checksums: dict[str, str]) -> None:
    """Replace each file of `live` (path relative to it → sha256) that is byte-identical to the previous
    backup's by a hard link to it. pg_dump's per-table files do not change when the table did not
    (gzip without timestamps), so an unchanged database costs only its table of contents. Published
    files are never written in place, so sharing them is safe (as rsync --link-dest does for objects)."""
    if previous is None:
        return
    try:
        manifest = read_manifest(previous)
    except Fail:
        return
    before = {f"database/{name}": digest for name, digest in (manifest.get("database_files") or {}).items()}
    before[hashes_file(manifest)] = manifest.get("repository_digest")
    for name, digest in checksums.items():
        old, new = previous / name, live / name
        if before.get(name) != digest or old.is_symlink() or not old.is_file():
            continue
        if os.stat(old).st_size == os.stat(new).st_size:
            tmp = new.with_name(f".{new.name}.link")
            os.link(old, tmp)
            os.replace(tmp, new)


def usage(folder: Path, previous: Path | None) -> tuple[int, int]:
    """(bytes_total, bytes_new): new = files whose inode is not shared with the previous backup."""
    old: set[tuple[int, int]] = set()
    if previous is not None and previous.is_dir():
        for path in files_under(previous):
            st = os.lstat(path)
            old.add((st.st_dev, st.st_ino))
    total = new = 0
    for path in files_under(folder):
        st = os.lstat(path)
        total += st.st_size
        if (st.st_dev, st.st_ino) not in old:
            new += st.st_size
    return total, new


def build_manifest(*, profile: str, dbname: str, aiida_version: str | None, config: dict, facts: dict,
                   object_count: int, repository_digest: str, counts: Any, database_files: dict[str, str],
                   previous_id: str | None, bytes_total: int, bytes_new: int, started: dt.datetime,
                   finished: dt.datetime, step_seconds: dict[str, float]) -> dict:
    """The manifest of a new backup (format MANIFEST_FORMAT); `verified` stays None until `verify`."""
    return {
        "format": MANIFEST_FORMAT,
        "profile": profile,
        "database_name": dbname,
        "aiida_core_version": aiida_version or None,
        "config_version": config.get("CONFIG_VERSION"),
        "schema_version": facts["schema_version"],
        "node_count": facts["node_count"],
        "repository_object_count": object_count,
        "repository_objects": {"loose": counts.loose, "packed": counts.packed,
                               "pack_files": counts.pack_files},
        "repository_digest": repository_digest,
        "repository_hashes_file": HASHES_FILE,
        "database_format": "pg_dump directory (pg_restore -j N)",
        "database_files": database_files,
        "previous": previous_id,
        "bytes_total": bytes_total,
        "bytes_new": bytes_new,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "step_seconds": step_seconds,
        "verified": None,
    }
