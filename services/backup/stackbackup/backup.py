"""`backup`: the runbook lock → dump database → copy repository → write config entry → write manifest →
publish → prune (see the package docstring for the layout it writes)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil

from stackbackup.aiida_config import database_name, load_config, profile_entry, repository_path
from stackbackup.common import EXIT_INPUT, STEP_SECONDS, Fail, rand, run, say, sha256_text, step, utcnow
from stackbackup.database import dump_database
from stackbackup.layout import (
    BACKUPS,
    LATEST,
    READING,
    check_profile_name,
    fsync_dir,
    profile_dir,
    published,
    remove_tree,
    write_json_atomic,
)
from stackbackup.locking import global_lock
from stackbackup.manifest import HASHES_FILE, build_manifest, database_file_checksums, link_unchanged, usage
from stackbackup.prune import prune
from stackbackup.repository import container_hashes, copy_container, hashes_text, open_backup_container


def no_space(exc: BaseException) -> bool:
    """Did a step fail for want of space (our own writes, or pg_dump's and rsync's messages)?"""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, Exception) and any(text in str(exc) for text in ("No space left on device",
                                                                             "Disk quota exceeded"))


def newest_verified(profile: str) -> str | None:
    """The newest published backup whose last verification passed."""
    return next((ident for ident, manifest in published(profile) if (manifest or {}).get("verified") is True), None)


def cmd_backup(args: argparse.Namespace) -> dict:
    check_profile_name(args.profile)
    if args.keep is not None and args.keep < 1:
        raise Fail("--keep must be at least 1", EXIT_INPUT)
    profile = args.profile
    config = load_config()
    entry = profile_entry(config, profile)
    dbname = database_name(entry, profile)
    source = repository_path(entry) / "container"
    folder = profile_dir(profile)

    STEP_SECONDS.clear()  # the scheduler backs up several profiles in one process
    started = utcnow()
    held = contextlib.ExitStack()
    with held:
        with step("lock"):
            held.enter_context(global_lock(args.wait, f"backup of {profile}"))
            folder.mkdir(mode=0o700, exist_ok=True)
            for stale in folder.iterdir():
                if stale.name.startswith((".live-", ".deleting-", ".latest-")):
                    say(f"removing stale {stale.name} (an interrupted backup or prune)")
                    if stale.is_symlink() or not stale.is_dir():
                        stale.unlink(missing_ok=True)
                    else:
                        remove_tree(stale)
        # hard-link only to a backup whose last verification passed: a rotten or unverified file is
        # never carried on into a new backup (and no verified backup at all means a full copy)
        previous_id = newest_verified(profile)
        if previous_id is None and published(profile):
            say("no verified backup to link to: this one is a full copy")
        previous = folder / previous_id if previous_id else None
        live = folder / f".live-{rand(8)}"
        live.mkdir(mode=0o700)
        try:
            with step("dump database"):
                facts = dump_database(dbname, live / "database")
            with step("copy repository"):
                prev_container = previous / "repository" / "container" if previous else None
                copy_container(source, live / "repository" / "container", prev_container)
                with open_backup_container(live / "repository" / "container") as container:
                    hashes = container_hashes(container)
                    counts = container.count_objects()
                text = hashes_text(hashes)
                (live / HASHES_FILE).write_text(text)
                digest = sha256_text(text)  # the manifest's repository_digest
            with step("write config entry"):
                own = {"default_profile": profile, "profiles": {profile: entry}}
                if "CONFIG_VERSION" in config:
                    own["CONFIG_VERSION"] = config["CONFIG_VERSION"]
                write_json_atomic(live / "config.json", own, mode=0o600)
            with step("write manifest"):
                database_files = database_file_checksums(live / "database")
                files = {f"database/{name}": sha for name, sha in database_files.items()}
                files[HASHES_FILE] = digest
                link_unchanged(live, previous, files)
                fd = os.open(live / READING, os.O_WRONLY | os.O_CREAT, 0o600)
                os.close(fd)
                bytes_total, bytes_new = usage(live, previous)
                finished = utcnow()
                manifest = build_manifest(
                    profile=profile, dbname=dbname, aiida_version=args.aiida_version, config=config, facts=facts,
                    object_count=len(hashes), repository_digest=digest, counts=counts,
                    database_files=database_files, previous_id=previous_id, bytes_total=bytes_total,
                    bytes_new=bytes_new, started=started, finished=finished, step_seconds=dict(STEP_SECONDS))
                write_json_atomic(live / "manifest.json", manifest)
            with step("publish"):
                run(["sync", "-f", str(live)], what="sync")  # syncfs: the dump and the copied files
                while True:
                    ident = f"backup_{finished.strftime('%Y%m%dT%H%M%SZ')}_{rand(4)}"
                    if not (folder / ident).exists():
                        break
                os.rename(live, folder / ident)
                fsync_dir(folder)
                tmp_link = folder / f".latest-{rand(6)}"
                os.symlink(ident, tmp_link)
                os.replace(tmp_link, folder / LATEST)  # latest moves last
                fsync_dir(folder)
        except BaseException as exc:
            remove_tree(live)
            if no_space(exc):
                free = shutil.disk_usage(BACKUPS).free
                raise Fail(f"no space left in the backups folder ({free} bytes free after removing the partial "
                           f"backup): {exc}. Nothing was published; the previous backups are untouched. Free "
                           f"space, prune old backups, or move backups elsewhere (setting backups_dir)") from None
            raise
        pruned: list[str] = []
        if args.keep is not None:
            with step("prune"):
                pruned = prune(profile, args.keep, protect={ident})
    say(f"backup {ident} of profile {profile}: {manifest['node_count']} nodes, "
        f"{manifest['repository_object_count']} objects, {bytes_total} bytes ({bytes_new} new), "
        f"{manifest['duration_seconds']} s")
    # every step's duration (the manifest has those before it was written)
    return {"id": ident, "profile": profile, "path": str(folder / ident), "manifest": manifest, "pruned": pruned,
            "step_seconds": dict(STEP_SECONDS)}
