"""`verify`: a backup's dump checksums, its repository (hash list, presence, digest, content) and,
given a scratch PostgreSQL server, a real restore of the dump (node count, references to objects)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from stackbackup import rot
from stackbackup.common import (
    EXIT_FAIL,
    EXIT_OK,
    Fail,
    files_under,
    iso,
    rand,
    say,
    sha256_file,
    sha256_text,
    utcnow,
)
from stackbackup.database import pg_connect, referenced_keys, restore_dump
from stackbackup.layout import reading, resolve, write_json_atomic
from stackbackup.locking import global_lock
from stackbackup.manifest import MANIFEST_FORMAT, hashes_file, read_manifest
from stackbackup.repository import container_hashes, hashes_text, open_backup_container


class Checks:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        say(f"check {name}: {'ok' if ok else 'FAILED'}: {detail}")
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(item["ok"] for item in self.items)


def few(items: list[str] | set[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_database_files(folder: Path, manifest: dict, checks: Checks) -> None:
    expected: dict = manifest.get("database_files") or {}
    dump = folder / "database"
    actual = {str(p.relative_to(dump)): p for p in files_under(dump)} if dump.is_dir() else {}
    missing = set(expected) - set(actual)
    extra = set(actual) - set(expected)
    changed = {name for name in set(expected) & set(actual) if sha256_file(actual[name]) != expected[name]}
    problems = []
    if missing:
        problems.append(f"missing: {few(missing)}")
    if extra:
        problems.append(f"unexpected: {few(extra)}")
    if changed:
        problems.append(f"checksum mismatch: {few(changed)}")
    if not expected:
        problems.append("the manifest lists no dump files")
    checks.add("database_files", not problems,
               "; ".join(problems)
               or f"{len(expected)} dump files match their sha256")


def check_repository(folder: Path, manifest: dict, checks: Checks, rotten: list[str] | None = None) -> set[str] | None:
    """Checks of the backed-up container; returns its set of object hashes (None if unreadable).
    `rotten` collects the listed objects that are missing or whose loose content does not match."""
    hashes_path = folder / hashes_file(manifest)
    try:
        text = hashes_path.read_text()
    except OSError as exc:
        checks.add("repository_hash_list", False, f"{hashes_path.name} unreadable: {exc}")
        text = None
    if text is not None:
        listed = text.split()
        digest = sha256_text(text)
        checks.add("repository_hash_list",
                   digest == manifest.get("repository_digest") and len(listed) == manifest.get(
                       "repository_object_count"),
                   f"{hashes_path.name}: {len(listed)} hashes, digest "
                   f"{'matches' if digest == manifest.get('repository_digest') else 'DIFFERS from'} the manifest")
    else:
        listed = []
    try:
        with open_backup_container(folder / "repository" / "container") as container:
            present = container.has_objects(listed) if listed else []
            missing = [h for h, here in zip(listed, present, strict=True) if not here]
            checks.add("repository_objects_present", not missing,
                       f"missing from the container: {few(missing)}" if missing
                       else f"all {len(listed)} listed objects are in the container")
            own = container_hashes(container)
            own_digest = sha256_text(hashes_text(own))
            unlisted = set(own) - set(listed)
            checks.add("repository_digest", own_digest == manifest.get("repository_digest"),
                       f"the container's {len(own)} objects match the manifest's digest"
                       if own_digest == manifest.get("repository_digest") else
                       f"the container holds {len(own)} objects (digest {own_digest[:12]}), the manifest "
                       f"{manifest.get('repository_object_count')} "
                       f"(digest {str(manifest.get('repository_digest'))[:12]})"
                       + (f"; not in the list: {few(unlisted)}" if unlisted else "")
                       + (f"; missing: {few(missing)}" if missing else ""))
            issues = container.validate()
            bad = {name: getattr(issues, name) for name in ("invalid_hashes_loose", "invalid_hashes_packed",
                                                            "invalid_sizes_packed", "overlapping_packed")}
            bad = {name: values for name, values in bad.items() if values}
            if rotten is not None:
                rotten.extend([*missing, *issues.invalid_hashes_loose])
            checks.add("repository_content", not bad,
                       "; ".join(f"{name}: {few(values)}" for name, values in bad.items())
                       or "every object's content matches its hash (disk-objectstore validate)")
            return set(own)
    except Fail as exc:
        checks.add("repository_objects_present", False, str(exc))
    except Exception as exc:
        checks.add("repository_content", False, f"cannot read the container: {type(exc).__name__}: {exc}")
    return None


def check_restored_database(folder: Path, manifest: dict, objects: set[str] | None, checks: Checks,
                            host: str, port: int, user: str, password: str) -> None:
    """pg_restore the dump into a fresh database on a scratch server, count nodes, check references."""
    import psycopg
    from psycopg import sql

    name = f"stack_verify_{rand(10)}"
    server = {"host": host, "port": port, "user": user, "password": password or None}
    try:
        with pg_connect("postgres", **server) as admin:
            admin.autocommit = True
            admin.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)))
    except (Fail, psycopg.Error) as exc:
        checks.add("database_restore", False, f"cannot create a scratch database on {host}:{port}: {exc}")
        return
    try:
        env = {**os.environ, "PGHOST": host, "PGPORT": str(port), "PGUSER": user}
        if password:
            env["PGPASSWORD"] = password
        start = time.monotonic()
        try:
            restore_dump(folder, name, env=env)
        except Fail as exc:
            checks.add("database_restore", False, str(exc))
            return
        checks.add("database_restore", True,
                   f"pg_restore -j 2 into {name} on {host}:{port} in {time.monotonic() - start:.1f} s")
        with pg_connect(name, **server) as conn:
            nodes = conn.execute("SELECT count(*) FROM db_dbnode").fetchone()[0]
            checks.add("node_count", nodes == manifest.get("node_count"),
                       f"{nodes} nodes restored, manifest says {manifest.get('node_count')}")
            referenced = referenced_keys(conn)
        if objects is None:
            checks.add("database_references", False,
                       f"{len(referenced)} objects referenced; the backup's container could not be read")
        else:
            missing = referenced - objects
            checks.add("database_references", not missing,
                       f"referenced by nodes but missing from the repository: {few(missing)}" if missing
                       else f"all {len(referenced)} objects referenced by nodes are in the repository")
    finally:
        try:
            with pg_connect("postgres", **server) as admin:
                admin.autocommit = True
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except (Fail, psycopg.Error) as exc:
            say(f"warning: could not drop scratch database {name}: {exc}")


def repair(folder: Path, profile: str, manifest: dict, checks: Checks, rotten: list[str]) -> set[str] | None:
    """Re-copy the rotten loose objects from the live repository, then check the repository again."""
    try:
        recopied, left = rot.recopy(folder / "repository" / "container", rot.live_container(profile), rotten)
    except Fail as exc:
        checks.add("repaired_from_live", False, str(exc))
        return None
    if recopied:
        checks.items[:] = [c for c in checks.items if not c["name"].startswith("repository_")]
        objects = check_repository(folder, manifest, checks)
    else:
        objects = None
    checks.add("repaired_from_live", not left,
               (f"re-copied {len(recopied)} rotten or missing object(s) from the live repository: {few(recopied)}"
                if recopied else "nothing re-copied")
               + (f"; not sound in the live repository either: {few(left)}" if left else ""))
    return objects


def cmd_verify(args: argparse.Namespace) -> tuple[dict, int]:
    folder, ident = resolve(args.profile, args.id)
    password = ""
    if args.scratch_host:
        password = (sys.stdin.readline() or "").rstrip("\r\n")
    started = utcnow()
    checks = Checks()
    with global_lock(args.wait, f"verify of {args.profile} {ident}"), reading(folder):
        try:
            manifest = read_manifest(folder)
        except Fail as exc:
            checks.add("manifest", False, str(exc))
            manifest = None
        if manifest is not None:
            sound = manifest.get("format") == MANIFEST_FORMAT and manifest.get("profile") == args.profile
            checks.add("manifest", sound,
                       f"format {manifest.get('format')}, profile {manifest.get('profile')}")
            check_database_files(folder, manifest, checks)
            rotten: list[str] = []
            objects = check_repository(folder, manifest, checks, rotten)
            if rotten and args.repair_from_live:
                objects = repair(folder, args.profile, manifest, checks, rotten)
            if args.scratch_host:
                check_restored_database(folder, manifest, objects, checks, args.scratch_host, args.scratch_port,
                                        args.scratch_user, password)
        result = {"id": ident, "profile": args.profile, "ok": checks.ok, "database_restored": bool(
            args.scratch_host) and any(c["name"] == "database_restore" and c["ok"] for c in checks.items),
            "checks": checks.items, "started_at": iso(started), "finished_at": iso(utcnow())}
        if not args.scratch_host:
            result["note"] = ("dump checksums and repository checked; the dump was not restored "
                              "(give --scratch-host to restore it and check node count and references)")
        with contextlib.suppress(OSError):
            write_json_atomic(folder / "verify.json", result)
        if manifest is not None:
            manifest["verified"] = checks.ok
            manifest["verified_at"] = result["finished_at"]
            manifest["verified_with_restore"] = result["database_restored"]
            try:
                write_json_atomic(folder / "manifest.json", manifest)
            except OSError as exc:
                say(f"warning: could not record the result in the manifest: {exc}")
    return result, EXIT_OK if checks.ok else EXIT_FAIL
