"""The state of each profile's storage, read with SQL that every supported aiida-core schema shares.

Nothing here loads a profile's storage through aiida's backend class: that refuses a schema other
than this aiida-core's head, and a profile restored from an older backup (or waiting for
`./stack migrate`) must still be counted, drained and reported. Used by aiida-stack-profile.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings

import compat
import profiles
import storage_sql
from common import log, read_config, verdi

# not yet terminated: what `verdi storage migrate` cannot carry across
ACTIVE = ("node_type LIKE 'process.%' AND attributes->>'process_state' IN ('created', 'waiting', 'running')")
PAUSED = "COALESCE(attributes->>'paused', 'false') = 'true'"
SCHEMA = "SELECT version_num FROM alembic_version"
PLAY_TIMEOUT = 180


@contextlib.contextmanager
def connection(profile):
    """A plain SQLAlchemy connection to the profile's database (no schema check, no writes)."""
    from aiida.storage.psql_dos.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(profile.storage_config)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def scalar(profile, sql: str) -> int:
    from sqlalchemy import text

    with connection(profile) as conn:
        return int(conn.execute(text(sql)).scalar())


def count_nodes(profile) -> int:
    return scalar(profile, "SELECT count(*) FROM db_dbnode")


def schemas(profile) -> tuple[str, str]:
    """(stored schema, this aiida-core's head)."""
    stored, = storage_sql.scalars(profile.storage_config, SCHEMA)
    return stored, storage_sql.schema_versions()[0]


def profile_state(entry: dict, nodes: bool = False) -> dict:
    """{"schema", "head", "active", "paused"} (+ "nodes") of a config.json profile entry, over one
    connection and without importing aiida."""
    queries = [SCHEMA, f"SELECT count(*) FROM db_dbnode WHERE {ACTIVE}",
               f"SELECT count(*) FROM db_dbnode WHERE {ACTIVE} AND {PAUSED}",
               *(["SELECT count(*) FROM db_dbnode"] if nodes else [])]
    values = storage_sql.scalars((entry.get("storage") or {}).get("config") or {}, *queries)
    found = {"schema": values[0], "head": storage_sql.schema_versions()[0], "active": int(values[1]),
             "paused": int(values[2])}
    if nodes:
        found["nodes"] = int(values[3])
    return found


def activity(_args) -> None:
    """Per profile: the stored schema, this aiida-core's head, active processes and how many are paused."""
    config = read_config()
    found = {name: profile_state(entry) for name, entry in sorted((config.get("profiles") or {}).items())}
    print(json.dumps({"profiles": found}), flush=True)


def _running_pks(profile) -> list[int]:
    from sqlalchemy import text

    with connection(profile) as conn:
        rows = conn.execute(text(f"SELECT id FROM db_dbnode WHERE {ACTIVE} AND NOT {PAUSED} ORDER BY id"))
        return [int(row[0]) for row in rows]


def pause(args) -> None:
    """Pause every active, unpaused process of the profile (through its daemon); print their pks."""
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(sys.stderr):
        profile = profiles.load_config().get_profile(args.name)
        pks = _running_pks(profile)
        if pks:
            verdi("-p", args.name, "process", "pause", "-t", "60", *map(str, pks), timeout=180)
            deadline = time.monotonic() + 120
            while set(pks) & set(_running_pks(profile)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"processes {sorted(set(pks) & set(_running_pks(profile)))} did not pause")
                time.sleep(1)
        log(f"paused {len(pks)} process(es) of {args.name!r}: {pks}")
    print(json.dumps({"profile": args.name, "paused": pks}), flush=True)


def _still_paused(profile, pks: list[int]) -> list[int]:
    from sqlalchemy import text

    if not pks:
        return []
    with connection(profile) as conn:
        rows = conn.execute(text(f"SELECT id FROM db_dbnode WHERE id IN ({','.join(str(int(pk)) for pk in pks)}) "
                                 f"AND {ACTIVE} AND {PAUSED} ORDER BY id"))
        return [int(row[0]) for row in rows]


def play(args) -> None:
    """Play the given processes again (those `pause` paused), until none of them is paused. Right after
    a daemon start a process is not reachable until a worker has loaded it again: `verdi process play`
    then reports it unreachable and it stays paused, so the play is repeated."""
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(sys.stderr):
        profile = profiles.load_config().get_profile(args.name)
        deadline = time.monotonic() + PLAY_TIMEOUT
        while waiting := _still_paused(profile, list(args.pks)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {waiting} of {args.name!r} are still paused after {PLAY_TIMEOUT} s "
                                   f"(is its daemon running?)")
            verdi("-p", args.name, "process", "play", "-t", "10", *map(str, waiting), check=False, timeout=60)
            time.sleep(1)
    print(json.dumps({"profile": args.name, "played": args.pks}), flush=True)


def after_restore(args) -> None:
    """Restored storage: count its nodes; when its schema is this aiida-core's, re-create the broker's
    tasks (`verdi process repair`: broker state is not in backups). An older schema is left as it is,
    for `./stack migrate` (backup first, rollback on failure): no migration happens here."""
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
        profile = profiles.load_config().get_profile(args.name)
        schema, head = schemas(profile)
        if schema == head:
            verdi(*compat.repair_args(args.name), echo=lambda line: log(f"verdi: {line}"), timeout=300)
        elif schema != head:
            log(f"schema of {args.name!r} is {schema}, this aiida-core's is {head}: it needs ./stack migrate")
        nodes = count_nodes(profile)
    print(json.dumps({"nodes": nodes, "schema": schema, "head": head, "current": schema == head}), flush=True)


def schema_check(args) -> None:
    """Can this aiida-core open storage of schema REVISION (its own, or an older one it migrates)?
    A revision it does not know comes from a newer aiida-core (or is not AiiDA's)."""
    head, known = storage_sql.schema_versions()
    print(json.dumps({"revision": args.revision, "head": head, "known": args.revision in known}), flush=True)
