"""`swap`: the restore's renames, run with the daemon stopped, each step idempotent so that an
interrupted restore can be completed or rolled back from whatever state it was left in.

    swap in    live → old, staged → live    (database and repository folder)
    swap back  live → staged, old → live    (only what `in` did; a no-op if nothing was swapped)
    swap drop  drop the named staged/old copies (only names of the restore's shape)

The host orchestrates (ops/restore.py) and keeps the journal of which step it reached.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from stack_rules import RESTORE_DATABASE_RE, RESTORE_FOLDER_RE

from stackbackup.common import EXIT_INPUT, Fail, say
from stackbackup.database import ADMIN, pg_connect
from stackbackup.layout import fsync_dir, remove_tree, repository_path

RENAME_TRIES = 20  # a connection can slip in between terminating the sessions and renaming


def cmd_swap(args: argparse.Namespace) -> dict:
    live_db, staged_db, old_db = args.database
    live, staged, old = (repository_path(p) for p in args.repository)
    for name in (staged_db, old_db):
        if not RESTORE_DATABASE_RE.fullmatch(name):
            raise Fail(f"{name!r} is not a staged or set-aside database name", EXIT_INPUT)
    for path in (staged, old):
        if not RESTORE_FOLDER_RE.fullmatch(path.name) or path.parent != live.parent:
            raise Fail(f"{path} is not a staged or set-aside folder beside {live}", EXIT_INPUT)
    databases: list = []
    folders: list = []
    facts: dict = {}
    with pg_connect("postgres", user=ADMIN) as admin:
        admin.autocommit = True
        if args.action in ("in", "back"):
            swap_database, swap_folder = ((_swap_in_database, _swap_in_folder) if args.action == "in"
                                          else (_swap_back_database, _swap_back_folder))
            if args.part in ("database", "both"):
                databases = swap_database(admin, live_db, staged_db, old_db)
                if args.action == "in":
                    facts = _facts(live_db)
            if args.part in ("repository", "both"):
                folders = swap_folder(live, staged, old)
        else:
            databases = [_drop_database(admin, name) for name in args.drop_database]
            folders = [_drop_folder(path, (staged, old)) for path in (repository_path(p) for p in args.drop_folder)]
    return {"action": args.action, "database": [d for d in databases if d],
            "repository": [f for f in folders if f], **facts}


ACTIVE_SQL = ("SELECT count(*) FROM db_dbnode WHERE node_type LIKE 'process.%%' "
              "AND attributes->>'process_state' IN ('created', 'running', 'waiting')")


def _facts(live: str) -> dict:
    """What the live database holds after the swap: the restore's check reads these."""
    with pg_connect(live, user=ADMIN) as conn:
        return {"nodes": conn.execute("SELECT count(*) FROM db_dbnode").fetchone()[0],
                "schema": conn.execute("SELECT version_num FROM alembic_version").fetchone()[0],
                "active_processes": conn.execute(ACTIVE_SQL).fetchone()[0]}


# ------------------------------------------------------------------------------------- databases


def _exists(admin, name: str) -> bool:
    return bool(admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def _rename(admin, old: str, new: str, allow_connections: bool) -> str:
    """Rename a database nobody may use meanwhile (its sessions are ended, new ones refused)."""
    from psycopg import errors, sql

    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(old)))
    for attempt in range(RENAME_TRIES):
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (old,))
        try:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
            break
        except errors.ObjectInUse:
            if attempt == RENAME_TRIES - 1:
                raise
            time.sleep(0.25)
    if allow_connections:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(new)))
    say(f"database {old} → {new}")
    return f"{old} → {new}"


def _swap_in_database(admin, live: str, staged: str, old: str) -> list[str]:
    done = []
    if _exists(admin, staged):
        if _exists(admin, live):
            if _exists(admin, old):
                raise Fail(f"both {live} and {old} exist while {staged} is still staged: resolve by hand")
            done.append(_rename(admin, live, old, allow_connections=False))
        done.append(_rename(admin, staged, live, allow_connections=True))
    elif not _exists(admin, live):
        raise Fail(f"neither the staged {staged} nor {live} exists: nothing to swap in")
    return done


def _swap_back_database(admin, live: str, staged: str, old: str) -> list[str]:
    # Called only once staging has finished (the journal's order), so a staged copy that is gone was
    # renamed to live: the live one is then the restored copy, whether or not one was set aside.
    done = []
    if not _exists(admin, staged) and _exists(admin, live):
        done.append(_rename(admin, live, staged, allow_connections=False))
    if _exists(admin, old):
        if _exists(admin, live):
            raise Fail(f"{live}, {staged} and {old} all exist: resolve by hand")
        done.append(_rename(admin, old, live, allow_connections=True))
    return done


def _drop_database(admin, name: str) -> str | None:
    from psycopg import sql

    if not RESTORE_DATABASE_RE.fullmatch(name):
        raise Fail(f"{name!r} is not a staged or set-aside database name: not dropped", EXIT_INPUT)
    if not _exists(admin, name):
        return None
    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    say(f"dropped database {name}")
    return f"dropped {name}"


# --------------------------------------------------------------------------------------- folders


def _move(src: Path, dest: Path) -> str:
    os.rename(src, dest)
    fsync_dir(dest.parent)
    say(f"folder {src.name} → {dest.name}")
    return f"{src.name} → {dest.name}"


def _swap_in_folder(live: Path, staged: Path, old: Path) -> list[str]:
    done = []
    if staged.is_dir():
        if live.exists():
            if old.exists():
                raise Fail(f"both {live} and {old} exist while {staged} is still staged: resolve by hand")
            done.append(_move(live, old))
        done.append(_move(staged, live))
    elif not live.is_dir():
        raise Fail(f"neither the staged {staged} nor {live} exists: nothing to swap in")
    return done


def _swap_back_folder(live: Path, staged: Path, old: Path) -> list[str]:
    done = []  # as for the database: a staged folder that is gone was moved to live
    if not staged.exists() and live.exists():
        done.append(_move(live, staged))
    if old.exists():
        if live.exists():
            raise Fail(f"{live}, {staged} and {old} all exist: resolve by hand")
        done.append(_move(old, live))
    return done


def _drop_folder(path: Path, allowed: tuple[Path, ...]) -> str | None:
    if path not in allowed:
        raise Fail(f"{path} is not this restore's staged or set-aside folder: not removed", EXIT_INPUT)
    if not path.exists():
        return None
    remove_tree(path)
    say(f"removed {path.name}")
    return f"removed {path.name}"
