"""A profile's database read with the PostgreSQL driver alone: no aiida import (over two CPU-seconds
in this container), for the commands ./stack runs often (`info`: ./stack status, profile.list, the
start of every restore) and `schema-check`.

The schema this aiida-core writes (its alembic head) and the ones it can migrate from are fixed by
the image: the build writes them to SCHEMA_FILE, read here instead of importing aiida's migrator.
aiida-core 2.x ships psycopg (3); 2.2.2 psycopg2: whichever is installed is used.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator
from typing import Any

SCHEMA_FILE = pathlib.Path("/opt/aiida-schema.json")  # {"head": rev, "known": [revs]}: images/aiida-core
CONNECT_TIMEOUT = 5


def schema_versions() -> tuple[str, list[str]]:
    """(head, every revision this aiida-core knows), from the build's record (or aiida's migrator)."""
    try:
        recorded = json.loads(SCHEMA_FILE.read_text())
        return recorded["head"], recorded["known"]
    except (OSError, ValueError, KeyError):
        from aiida.storage.psql_dos.migrator import PsqlDosMigrator

        return PsqlDosMigrator.get_schema_version_head(), list(PsqlDosMigrator.get_schema_versions())


@contextlib.contextmanager
def connection(storage: dict) -> Iterator[Any]:
    """A read-only connection to a profile's database, from its config.json storage entry."""
    params = {"host": storage.get("database_hostname"), "port": storage.get("database_port") or 5432,
              "user": storage.get("database_username"), "password": storage.get("database_password") or None,
              "dbname": storage.get("database_name"), "connect_timeout": CONNECT_TIMEOUT}
    try:
        import psycopg as driver
    except ImportError:
        import psycopg2 as driver
    conn = driver.connect(**params)
    try:
        conn.autocommit = True
        yield conn
    finally:
        conn.close()


def scalars(storage: dict, *queries: str) -> list[Any]:
    """The first column of the first row of each query, over one connection."""
    with connection(storage) as conn:
        found = []
        for query in queries:
            cursor = conn.cursor()
            cursor.execute(query)
            row = cursor.fetchone()
            found.append(row[0] if row else None)
            cursor.close()
        return found
