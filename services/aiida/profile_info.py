"""The read-only commands of aiida-stack-profile (info, names, workers): JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from importlib import metadata

import common
import daemon
import profiles
import storage_state
from common import CliError, read_config


def info(args) -> None:
    """Every profile described; with --state also its schema and processes, its daemon, and the
    installation (aiida-core, plugins): all of ./stack status in one call, aiida imported once."""
    warnings.filterwarnings("ignore")
    listing: dict = {"default": None, "profiles": []}
    if common.CONFIG_FILE.exists():
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
            config = profiles.load_config()
            raw = read_config()
            listing["default"] = config.default_profile_name
            for profile in config.profiles:
                entry = describe(profile, config.default_profile_name)
                if getattr(args, "state", False):
                    entry["schema"] = _storage_state(profile)
                    entry["daemon"] = daemon_state(profile.name, raw)
                listing["profiles"].append(entry)
    if getattr(args, "state", False):
        listing["aiida_core"] = metadata.version("aiida-core")
        listing["plugins"] = plugins()
    print(json.dumps(listing), flush=True)


def _storage_state(profile) -> dict | None:
    """{"schema", "head", "active", "paused"}, or None when the storage cannot be read."""
    try:
        schema, head = storage_state.schemas(profile)
        return {"schema": schema, "head": head,
                "active": storage_state.scalar(profile, f"SELECT count(*) FROM db_dbnode WHERE {storage_state.ACTIVE}"),
                "paused": storage_state.scalar(profile, f"SELECT count(*) FROM db_dbnode WHERE {storage_state.ACTIVE} "
                                                        f"AND {storage_state.PAUSED}")}
    except Exception:
        return None


def plugins() -> list[str]:
    """Installed distributions other than aiida-core that register AiiDA entry points."""
    return sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                   if d.metadata["Name"].lower() != "aiida-core"
                   and any(ep.group.startswith("aiida.") for ep in d.entry_points)})


def names(_args) -> None:
    config = read_config()
    uuids = {name: entry.get("PROFILE_UUID") for name, entry in config.get("profiles", {}).items()}
    print(json.dumps({"default": common.default_profile(config), "profiles": common.profile_names(config),
                      "uuids": uuids}), flush=True)


def daemon_state(name: str, config: dict) -> dict:
    return {"profile": name, "running": daemon.worker_count(name),
            "configured": common.configured_workers(name, config), "disabled": common.disabled_file(name).exists()}


def workers(args) -> None:
    """One profile's daemon (NAME, default: the default profile), or with --all every profile's."""
    config = read_config()
    if args.all:
        print(json.dumps({"daemons": [daemon_state(n, config) for n in common.profile_names(config)]}), flush=True)
        return
    name = args.name or common.default_profile(config)
    if name not in common.profile_names(config):
        raise CliError(3, f"no profile {name!r}")
    print(json.dumps(daemon_state(name, config)), flush=True)


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
        entry["nodes"] = storage_state.count_nodes(profile)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return entry
