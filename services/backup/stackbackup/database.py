"""PostgreSQL: connections, the consistent dump of a profile's database, and `restore-database`."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack_rules import database_name

from stackbackup.common import EXIT_INPUT, Fail, run, step
from stackbackup.layout import reading, resolve
from stackbackup.manifest import hashes_file, read_manifest

if TYPE_CHECKING:
    import psycopg

PG_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Dumps connect as the read-only role (PGUSER, pg_read_all_data); restores need the superuser.
ADMIN = "postgres"
READER = os.environ.get("BACKUP_DB_USER", "stack_backup")
# the repository keys every node references (its repository_metadata's `k` values, at any depth)
REFERENCED_KEYS_SQL = """
SELECT DISTINCT jsonb_path_query(repository_metadata, 'lax $.**.k ? (@.type() == "string")') #>> '{}'
FROM db_dbnode WHERE repository_metadata IS NOT NULL AND repository_metadata != '{}'::jsonb
"""


def restore_dump(folder: Path, dbname: str, *, role: str | None = None, env: dict[str, str] | None = None) -> None:
    """pg_restore a backup's dump (2 jobs, no owner or privileges from the source) into database `dbname`
    (as the superuser unless `env` names another server)."""
    env = env or {**os.environ, "PGUSER": ADMIN}
    run(["pg_restore", "--jobs=2", "--no-owner", "--no-privileges", *([f"--role={role}"] if role else []),
         "--exit-on-error", f"--dbname={dbname}", str(folder / "database")], env=env, what="pg_restore")


def referenced_keys(conn: psycopg.Connection) -> set[str]:
    """Every repository object key the nodes of a (restored) AiiDA database reference."""
    return {row[0] for row in conn.execute(REFERENCED_KEYS_SQL)}


def backed_up_hashes(folder: Path, manifest: dict) -> list[str]:
    """The object hashes a backup's repository holds, from its hash list (checked against the manifest)."""
    path = folder / hashes_file(manifest)
    try:
        return path.read_text().split()
    except OSError as exc:
        raise Fail(f"{folder.name}: {path.name} unreadable: {exc}") from None


def pg_connect(dbname: str = "postgres", **params: Any) -> psycopg.Connection:
    """psycopg connection; host/user/password from PG* environment and ~/.pgpass unless given."""
    import psycopg

    params = {key: value for key, value in params.items() if value not in (None, "")}
    try:
        return psycopg.connect(dbname=dbname, connect_timeout=15, **params)
    except psycopg.OperationalError as exc:
        raise Fail(f"cannot connect to database {dbname!r}: {str(exc).strip()}") from None


def dump_database(dbname: str, target: Path) -> dict:
    """pg_dump (directory format, 2 jobs) of one database, and facts read from the SAME snapshot."""
    conn = pg_connect(dbname)
    # Every statement below must read the snapshot pg_dump dumps: the BEGIN here starts the transaction
    # (autocommit: the driver opens none of its own), and its level is checked rather than assumed.
    conn.autocommit = True
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        level = conn.execute("SHOW transaction_isolation").fetchone()[0]
        if level != "repeatable read":
            raise Fail(f"{dbname}: the dump's transaction runs at {level!r}, not repeatable read")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        try:
            schema = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except Exception as exc:
            raise Fail(f"{dbname} has no alembic_version table: not an AiiDA database? ({exc})") from None
        node_count = conn.execute("SELECT count(*) FROM db_dbnode").fetchone()[0]
        run(["pg_dump", "--format=directory", "--jobs=2", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot}", f"--dbname={dbname}", f"--file={target}"], what="pg_dump")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"schema_version": schema[0] if schema else None, "node_count": node_count}


# ------------------------------------------------------------------------------------------------
# restore-database (the host orchestrates; superuser connection from PG* and ~/.pgpass)


def cmd_restore_database(args: argparse.Namespace) -> dict:
    """Load a backup's dump into a new database (`--target-db`, which must not exist) and check it
    against the manifest. Nothing else is touched: swapping it in is `stack-backup swap`'s job."""
    from psycopg import sql

    folder, ident = resolve(args.profile, args.id)
    target = args.target_db
    owner = args.owner or database_name(args.profile)
    for what, value in (("--target-db", target), ("--owner", owner)):
        if not PG_NAME_RE.fullmatch(value):
            raise Fail(f"invalid {what} {value!r}: use ^[a-z_][a-z0-9_]{{0,62}}$", EXIT_INPUT)
    if target in ("postgres", "template0", "template1"):
        raise Fail(f"refusing to restore into {target}", EXIT_INPUT)
    started = time.monotonic()
    with reading(folder):
        manifest = read_manifest(folder)
        with pg_connect("postgres", user=ADMIN) as admin:
            admin.autocommit = True
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone():
                raise Fail(f"role {owner} does not exist: create the profile's role first", EXIT_INPUT)
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone():
                raise Fail(f"database {target} exists: a restore loads into a new database only", EXIT_INPUT)
            with step("create database"):
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(target), sql.Identifier(owner)))
                admin.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(target)))
                with contextlib.suppress(Exception):  # the reader dumps it once swapped in
                    admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(target), sql.Identifier(READER)))
            loaded = False
            try:
                with step("load dump"):
                    restore_dump(folder, target, role=owner)
                with step("check"), pg_connect(target, user=ADMIN) as conn:
                    nodes = conn.execute("SELECT count(*) FROM db_dbnode").fetchone()[0]
                    schema = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
                    if nodes != manifest.get("node_count"):
                        raise Fail(f"{nodes} nodes restored, the manifest says {manifest.get('node_count')}")
                    referenced = referenced_keys(conn)
                    objects = set(backed_up_hashes(folder, manifest))
                    if referenced - objects:
                        raise Fail(f"{len(referenced - objects)} objects referenced by nodes are not in the "
                                   f"backup's repository, e.g. {sorted(referenced - objects)[0]}")
                loaded = True
            finally:
                if not loaded:
                    with contextlib.suppress(Exception):
                        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(target)))
    return {"id": ident, "profile": args.profile, "target_db": target, "owner": owner,
            "nodes_restored": nodes, "schema_version": schema, "seconds": round(time.monotonic() - started, 3)}
