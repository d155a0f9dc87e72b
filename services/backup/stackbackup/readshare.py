"""`read-share`: read one N-th of the older backups' files, a different N-th each run, so that every
byte of every kept backup is read at least once every N runs (restic's `check --read-data-subset`).

The scheduled run verifies each new backup in full; that reads every file the new backup shares with
older ones by hard link. What only older backups hold (dumps of their day, objects deleted since)
is never read again, and rot there would be found only at the restore that needs it. So the run
also reads a share: the files of every other published backup whose inode falls in this run's slice
(a hash of the inode number, modulo N), each inode once however many backups link it. The slice
advances in <profile>/.read-share.json; an inode stays in one slice for its whole life, so N
consecutive runs read it.

Checks per file: a dump file's sha256 against its backup's manifest; a loose object's content
hash against its name; a pack, object by object through disk-objectstore (hash of each packed
object's content against its key). A backup holding a rotten file is marked in its manifest
(`verified: false`, `rot`: what was found), so it is never a link target again, and the result fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import zlib
from pathlib import Path

from stackbackup.common import EXIT_FAIL, EXIT_INPUT, EXIT_OK, Fail, files_under, iso, say, sha256_file, utcnow
from stackbackup.layout import check_profile_name, profile_dir, published, reading, write_json_atomic
from stackbackup.locking import global_lock

STATE_FILE = ".read-share.json"
CHUNK = 1 << 20


def in_slice(inode: int, index: int, of: int) -> bool:
    """Whether an inode belongs to slice `index` of `of` (inode numbers are sequential: spread them)."""
    return zlib.crc32(inode.to_bytes(8, "little")) % of == index


def _next_index(profile: str, of: int) -> int:
    try:
        state = json.loads((profile_dir(profile) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return 0
    return int(state.get("next", 0)) % of if state.get("of") == of else 0


def _file_sound(folder: Path, kind: str, path: Path, manifest: dict, hash_type: str) -> str | None:
    """Why this data file of a backup is not sound, or None. kind: database | loose | pack."""
    if kind == "database":
        expected = (manifest.get("database_files") or {}).get(path.relative_to(folder / "database").as_posix())
        if expected is None:
            return "not in the manifest"
        return None if sha256_file(path) == expected else "sha256 differs from the manifest"
    container = folder / "repository" / "container"
    if kind == "loose":
        digest = hashlib.new(hash_type)
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        key = path.relative_to(container / "loose").as_posix().replace("/", "")
        return None if digest.hexdigest() == key else "content does not match its hash"
    return _pack_sound(container, path.name, hash_type)


def _pack_sound(container: Path, pack_id: str, hash_type: str) -> str | None:
    """Read every object the container's index places in this pack, and check each one's hash."""
    from stackbackup.repository import open_backup_container  # disk-objectstore: the image has it

    with open_backup_container(container) as store:
        keys = [key for key, meta in store.get_objects_meta(list(store.list_all_objects()))
                if str(meta.pack_id) == pack_id]
        bad = []
        with store.get_objects_stream_and_meta(keys) as triplets:
            for key, stream, _meta in triplets:
                digest = hashlib.new(hash_type)
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                if digest.hexdigest() != key:
                    bad.append(key)
    return f"{len(bad)} of its {len(keys)} objects do not match their hash ({', '.join(bad[:3])})" if bad else None


def _hash_type(folder: Path) -> str:
    try:
        return json.loads((folder / "repository" / "container" / "config.json").read_text()).get("hash_type",
                                                                                                 "sha256")
    except (OSError, ValueError):
        return "sha256"


def _files(folder: Path) -> list[tuple[str, Path]]:
    """(kind, path) of a backup's data files: the dump, loose objects, packs."""
    container = folder / "repository" / "container"
    found = [("database", p) for p in files_under(folder / "database")] if (folder / "database").is_dir() else []
    for kind, sub in (("loose", "loose"), ("pack", "packs")):
        if (container / sub).is_dir():
            found += [(kind, p) for p in files_under(container / sub)]
    return found


def read_share(profile: str, of: int, skip: set[str]) -> dict:
    """Read this run's slice of the profile's backups (except `skip`, read in full already)."""
    index = _next_index(profile, of)
    started, clock = utcnow(), time.monotonic()
    backups = [(ident, manifest) for ident, manifest in published(profile) if manifest is not None]
    skipped_inodes = {p.stat().st_ino for ident in skip for _, p in _files(profile_dir(profile) / ident)}
    seen: set[int] = set()
    files = size = 0
    rotten: list[dict] = []
    for ident, manifest in backups:
        if ident in skip:
            continue
        folder = profile_dir(profile) / ident
        problems = []
        with reading(folder):
            hash_type = _hash_type(folder)
            for kind, path in _files(folder):
                inode = path.stat()
                if inode.st_ino in seen or inode.st_ino in skipped_inodes or not in_slice(inode.st_ino, index, of):
                    continue
                seen.add(inode.st_ino)
                files += 1
                size += inode.st_size
                try:
                    why = _file_sound(folder, kind, path, manifest, hash_type)
                except (OSError, ValueError, Fail) as exc:
                    why = f"unreadable: {exc}"
                if why:
                    problems.append({"id": ident, "file": str(path.relative_to(folder)), "problem": why})
        if problems:
            rotten += problems
            manifest.update(verified=False, verified_at=iso(utcnow()), rot=problems[:20])
            write_json_atomic(folder / "manifest.json", manifest)
            say(f"read share: {ident}: {len(problems)} rotten file(s), marked unverified")
    write_json_atomic(profile_dir(profile) / STATE_FILE,
                      {"of": of, "next": (index + 1) % of, "last": {"slice": index + 1, "at": iso(started)}})
    return {"profile": profile, "ok": not rotten, "share": f"{index + 1}/{of}",
            "backups": sum(1 for ident, _ in backups if ident not in skip), "files": files, "bytes": size,
            "seconds": round(time.monotonic() - clock, 2), "rotten": rotten}


def cmd_read_share(args: argparse.Namespace) -> tuple[dict, int]:
    check_profile_name(args.profile)
    if not 1 <= args.of <= 1000:
        raise Fail(f"--of {args.of}: expected 1 to 1000", EXIT_INPUT)
    with global_lock(args.wait, f"read share of {args.profile}"):
        result = read_share(args.profile, args.of, set(args.skip or []))
    return result, EXIT_OK if result["ok"] else EXIT_FAIL
