"""disk-objectstore: copy a live container consistently, read a backed-up one without touching it,
its object hashes, and `restore-repository`."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stackbackup.common import EXIT_INPUT, Fail, run, say, sha256_file, sha256_text, step
from stackbackup.layout import fsync_dir, reading, remove_tree, repository_path, resolve
from stackbackup.manifest import read_manifest

try:  # the image has it; `list` and argument errors work without
    from disk_objectstore import Container
    from disk_objectstore.backup_utils import BackupError, BackupManager
except ImportError:  # pragma: no cover
    Container = BackupManager = None  # type: ignore[assignment,misc]
    BackupError = Exception  # type: ignore[assignment,misc]


RSYNC_VANISHED = 24  # rsync: "some files vanished before they could be transferred"

if BackupManager is not None:

    class RsyncManager(BackupManager):
        """disk-objectstore's BackupManager (rsync checks, local destination), rsync output to stderr.

        Upstream's call_rsync prints rsync's progress on stdout (ours is the JSON result) and drops
        rsync's error message; this one keeps stdout clean and puts rsync's reason in the error.
        Flags: -a (times: unchanged files match the previous backup and are hard-linked) and
        --link-dest as upstream; no -z (local copy); --chmod: a backup holds folders 0700 and files
        0600 whatever the source's modes (restore gives the usual 0755/0644 back).
        With no previous backup there is nothing to link to: a plain copy of a folder or file is then
        `cp -a` (in-kernel copy_file_range; rsync pipes every byte through user space, measured 4-7x
        slower for 1 GB here), in the same order, with the same modes.
        """

        def call_rsync(self, src: Path, dest: Path, link_dest: Path | None = None,  # type: ignore[override]
                       src_trailing_slash: bool = False, dest_trailing_slash: bool = False,
                       extra_args: list | None = None, vanished_ok: bool = False) -> None:
            if (link_dest is None or not Path(link_dest).is_dir()) and not extra_args and not src_trailing_slash:
                try:
                    copy_private(Path(src), Path(dest) / Path(src).name)
                    return
                except BackupError:
                    if not vanished_ok:
                        raise
                    say(f"cp {src}: a file vanished while copying; copying again with rsync")
                    shutil.rmtree(Path(dest) / Path(src).name, ignore_errors=True)
            argv = [self.rsync_exe, "-a", "--chmod=D0700,F0600", *(extra_args or [])]
            if link_dest is not None and Path(link_dest).is_dir():
                argv.append(f"--link-dest={Path(link_dest).resolve()}")
            argv += [str(src) + ("/" if src_trailing_slash else ""), str(dest) + ("/" if dest_trailing_slash else "")]
            try:
                run(argv, what=f"rsync {src}", accept=(RSYNC_VANISHED,) if vanished_ok else ())
            except Fail as exc:
                raise BackupError(str(exc)) from None


def copy_tree(src: Path, dest: Path, dir_mode: int, file_mode: int) -> None:
    """`cp -a src dest` (dest must not exist), then every folder `dir_mode` and every file `file_mode`."""
    try:
        run(["cp", "-a", "--", str(src), str(dest)], what=f"cp {src}")
    except Fail as exc:
        raise BackupError(str(exc)) from None
    if dest.is_file():
        os.chmod(dest, file_mode)
        return
    os.chmod(dest, dir_mode)
    for folder, dirs, files in os.walk(dest):  # (symlinks are not followed: a container has none)
        for names, mode in ((dirs, dir_mode), (files, file_mode)):
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, mode)


def copy_private(src: Path, dest: Path) -> None:
    copy_tree(src, dest, 0o700, 0o600)


def snapshot_pack_index(source: Path, target: Path) -> None:
    """Consistent copy of a container's SQLite pack index (packs.idx) into `target`.

    As disk-objectstore's backup_utils: SQLite's online backup API, here through a read-only
    connection (the AiiDA home is mounted read-only). A WAL database on a read-only mount opens only
    while its -wal/-shm exist (an AiiDA process has the container open). Otherwise nobody has it
    open: copy the file, and accept the copy only if no -wal appeared and the file did not change
    meanwhile (any writer creates the -wal first); then SQLite checks the copy.
    """
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(str(target))
            with dst:
                src.backup(dst)
            dst.close()
        finally:
            src.close()
        os.chmod(target, 0o600)
        return
    except sqlite3.OperationalError as exc:
        say(f"packs.idx: online backup through a read-only connection refused ({exc}); copying the idle file")
        target.unlink(missing_ok=True)
    wal = source.with_name(source.name + "-wal")
    for attempt in range(10):
        before = os.stat(source)
        if not wal.exists():
            shutil.copyfile(source, target)
            after = os.stat(source)
            same = (before.st_ino, before.st_size, before.st_mtime_ns) == (after.st_ino, after.st_size,
                                                                            after.st_mtime_ns)
            if same and not wal.exists():
                check = sqlite3.connect(str(target))
                try:
                    result = check.execute("PRAGMA integrity_check").fetchone()[0]
                finally:
                    check.close()
                if result == "ok":
                    os.chmod(target, 0o600)
                    return
                raise Fail(f"the copy of {source} is not a sound SQLite database: {result}")
        time.sleep(0.2 * (attempt + 1))
    raise Fail(f"{source} kept changing while being copied; try again")


def reuse_unchanged(fresh: Path, previous: Path | None) -> None:
    """Give `fresh` the previous copy's mode and times when the bytes are the same, so rsync's
    --link-dest hard-links it (the pack index is large on big repositories and rarely changes)."""
    if previous is None or not previous.is_file():
        return
    old = os.stat(previous)
    if old.st_size != os.stat(fresh).st_size or sha256_file(previous) != sha256_file(fresh):
        return
    os.chmod(fresh, old.st_mode & 0o7777)
    os.utime(fresh, ns=(old.st_atime_ns, old.st_mtime_ns))


def copy_container(source: Path, dest: Path, prev: Path | None) -> None:
    """Copy the disk-objectstore container `source` into `dest` (a new folder), hard-linking to `prev`.

    The order of disk_objectstore.backup_utils.backup_container (1.5.0), which is safe while AiiDA
    uses the container: 1) loose objects, 2) pack index through SQLite's online backup, 3) packs,
    4) the rest. Two deviations, both needed here: upstream passes `<prev>/loose` as --link-dest
    for the loose folder, so rsync looks for `<prev>/loose/loose/..` and never hard-links loose
    objects (checked with 1.5.0: every loose object copied again); and its SQLite backup opens the
    index read-write, which fails on the read-only AiiDA home (see snapshot_pack_index).
    """
    container = Container(source)
    root = container.get_folder()
    loose = container._get_loose_folder()  # the accessors backup_utils uses
    packs = container._get_pack_folder()
    index = container._get_pack_index_path()
    if not (root / "config.json").is_file() or not index.is_file():
        raise Fail(f"{root} is not an initialised disk-objectstore container")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    manager = RsyncManager(str(dest.parent))
    dest.mkdir(mode=0o700)

    # 1) loose objects: written once, atomically (sandbox → rename); hard-linked to prev when unchanged.
    #    A loose object vanishes only when packing has moved it into a pack, and the pack index is
    #    copied after this step, so a vanished file is harmless (the verify checks every key).
    manager.call_rsync(loose, dest, link_dest=prev, vanished_ok=True)
    # 2) the pack index, consistently, after the loose objects (packing moves loose → packs:
    #    an object missing from the loose copy is then in this index and in the packs copied next)
    with tempfile.TemporaryDirectory(prefix="stack-backup-") as tmp:
        snapshot = Path(tmp) / index.name
        snapshot_pack_index(index, snapshot)
        reuse_unchanged(snapshot, prev / index.name if prev else None)
        manager.call_rsync(snapshot, dest, link_dest=prev)
    # 3) packs: append-only; the index copied before references only bytes already written
    manager.call_rsync(packs, dest, link_dest=prev)
    # 4) the rest (config.json, duplicates, an empty sandbox): the sandbox holds only objects being
    #    written, which vanish under rsync (exit 24) and are not objects yet
    sandbox = container._get_sandbox_folder()
    manager.call_rsync(root, dest, link_dest=prev, src_trailing_slash=True,
                       extra_args=["--exclude", f"/{loose.name}", "--exclude", f"/{index.name}",
                                   "--exclude", f"/{index.name}-*", "--exclude", f"/{packs.name}",
                                   "--exclude", f"/{sandbox.name}/*"])


@contextlib.contextmanager
def open_backup_container(path: Path) -> Iterator[Any]:
    """A disk-objectstore Container reading a backed-up container without writing into the backup.

    Opening a Container sets the pack index to WAL mode and creates -wal/-shm files beside it; a
    backup must stay byte-identical (its files are hard-linked into other backups). So the Container
    is opened on a scratch folder whose loose/packs/... are symlinks into the backup and whose
    packs.idx is a private copy.
    """
    if not (path / "config.json").is_file() or not (path / "packs.idx").is_file():
        raise Fail(f"{path} is not a disk-objectstore container (config.json / packs.idx missing)")
    with tempfile.TemporaryDirectory(prefix="stack-backup-view-") as tmp:
        view = Path(tmp) / "container"
        view.mkdir()
        for entry in path.iterdir():
            if entry.name == "packs.idx":
                shutil.copyfile(entry, view / "packs.idx")
            elif not entry.name.startswith("packs.idx-"):
                (view / entry.name).symlink_to(entry)
        for folder in ("loose", "packs", "duplicates", "sandbox"):
            if not (view / folder).exists():
                (view / folder).mkdir()
        container = Container(view)
        try:
            yield container
        finally:
            container.close()


def container_hashes(container: Any) -> list[str]:
    return sorted(set(container.list_all_objects()))


def hashes_text(hashes: list[str]) -> str:
    return "".join(f"{h}\n" for h in hashes)


# ------------------------------------------------------------------------------------------------
# restore-repository (run with the aiida-home volume mounted read-write; the host orchestrates)


def cmd_restore_repository(args: argparse.Namespace) -> dict:
    """Copy a backup's repository into a new folder (`--target-path`, which must not exist) and check
    it against the manifest. Swapping it in is `stack-backup swap`'s job."""
    folder, ident = resolve(args.profile, args.id)
    target = repository_path(args.target_path)
    if target.exists() or target.is_symlink():
        raise Fail(f"{target} exists: a restore copies into a new folder only", EXIT_INPUT)
    started = time.monotonic()
    with reading(folder):
        manifest = read_manifest(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(mode=0o755)
        try:
            with step("copy repository"):
                copy_tree(folder / "repository" / "container", target / "container", 0o755, 0o644)
            with step("check"), Container(target / "container") as container:
                hashes = container_hashes(container)
                digest = sha256_text(hashes_text(hashes))
                if digest != manifest.get("repository_digest"):
                    raise Fail(f"the copied container holds {len(hashes)} objects, not the "
                               f"{manifest.get('repository_object_count')} of the backup (digest differs)")
            fsync_dir(target.parent)
        except BaseException:
            remove_tree(target)
            raise
    return {"id": ident, "profile": args.profile, "target_path": str(target),
            "objects_restored": len(hashes), "seconds": round(time.monotonic() - started, 3)}
