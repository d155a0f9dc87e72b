"""The read-only commands of aiida-stack-profile (info, names, activity, workers): JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings

import common
import daemon
import profiles
from common import CliError, read_config


def count_nodes(profile) -> int:
    from sqlalchemy import text

    if profile.storage_backend == "core.psql_dos":  # direct import: the entry-point scan costs seconds
        from aiida.storage.psql_dos.backend import PsqlDosBackend as storage_cls
    else:
        storage_cls = profile.storage_cls
    storage = storage_cls(profile)  # validates the schema version; writes nothing
    try:
        return int(storage.get_session().execute(text("SELECT count(*) FROM db_dbnode")).scalar())
    finally:
        storage.close()


def info(_args) -> None:
    warnings.filterwarnings("ignore")
    listing: dict = {"default": None, "profiles": []}
    if common.CONFIG_FILE.exists():
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
            config = profiles.load_config()
            listing["default"] = config.default_profile_name
            for profile in config.profiles:
                listing["profiles"].append(describe(profile, config.default_profile_name))
    print(json.dumps(listing), flush=True)


def names(_args) -> None:
    config = read_config()
    uuids = {name: entry.get("PROFILE_UUID") for name, entry in config.get("profiles", {}).items()}
    print(json.dumps({"default": common.default_profile(config), "profiles": common.profile_names(config),
                      "uuids": uuids}), flush=True)


ACTIVE_SQL = ("SELECT count(*) FROM db_dbnode WHERE node_type LIKE 'process.%' "
              "AND attributes->>'process_state' IN ('created', 'waiting', 'running')")


def activity(_args) -> None:
    """Per profile: processes not yet terminated, the stored schema and this aiida-core's schema head."""
    from aiida.storage.psql_dos.backend import PsqlDosBackend
    from sqlalchemy import text

    warnings.filterwarnings("ignore")
    found = {}
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
        for profile in profiles.load_config().profiles:
            entry = {"schema": PsqlDosBackend.version_profile(profile), "head": PsqlDosBackend.version_head(),
                     "active": None}
            if entry["schema"] == entry["head"]:
                storage = PsqlDosBackend(profile)
                try:
                    entry["active"] = int(storage.get_session().execute(text(ACTIVE_SQL)).scalar())
                finally:
                    storage.close()
            found[profile.name] = entry
    print(json.dumps({"profiles": found}), flush=True)


def workers(args) -> None:
    config = read_config()
    name = args.name or common.default_profile(config)
    if name not in common.profile_names(config):
        raise CliError(3, f"no profile {name!r}")
    print(json.dumps({"profile": name, "running": daemon.worker_count(name),
                      "configured": common.configured_workers(name, config)}), flush=True)


def describe(profile, default: str | None) -> dict:
    storage = profile.storage_config
    broker = profile.process_control_config or {}
    repository = profiles.repository_path_of(profile.dictionary)
    entry = {
        "name": profile.name,
        "storage_backend": profile.storage_backend,
        "database_name": storage.get("database_name"),
        "database_hostname": storage.get("database_hostname"),
        "database_port": storage.get("database_port"),
        "database_username": storage.get("database_username"),
        "repository_path": str(repository) if repository else None,
        "broker_host": broker.get("broker_host"),
        "broker_port": broker.get("broker_port"),
        "broker_username": broker.get("broker_username"),
        "user_email": profile.default_user_email,
        "is_default": profile.name == default,
        "nodes": None,
    }
    try:
        entry["nodes"] = count_nodes(profile)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return entry
