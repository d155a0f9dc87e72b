"""The read-only commands of aiida-stack-profile (info, names, workers): JSON on stdout."""

from __future__ import annotations

import json
from importlib import metadata

import common
import daemon
import maintenance
import profiles
import storage_state
from common import CliError, read_config


def info(args) -> None:
    """Every profile described; with --state also its schema and processes, its daemon, and the
    installation (aiida-core, plugins): all of ./stack status in one call, without importing aiida
    (config.json and SQL: storage_state, storage_sql)."""
    state = getattr(args, "state", False)
    config = read_config() if common.CONFIG_FILE.exists() else {}
    default = common.default_profile(config) if config else None
    listing: dict = {"default": default, "profiles": [describe(name, config, default, state)
                                                      for name in sorted(config.get("profiles") or {})]}
    if state:
        listing["aiida_core"] = metadata.version("aiida-core")
        listing["plugins"] = plugins()
    print(json.dumps(listing), flush=True)


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


def describe(name: str, config: dict, default: str | None, state: bool = False) -> dict:
    """A profile of config.json (the whole file: global options count for its daemon) for ./stack, with
    its node count (and `state`: schema, processes, daemon); an unreadable storage gives nodes None
    and "error"."""
    entry = config["profiles"][name]
    storage = entry.get("storage") or {}
    connection = storage.get("config") or {}
    broker = (entry.get("process_control") or {}).get("config") or {}
    repository = profiles.repository_path_of(entry)
    found = {
        "name": name,
        "storage_backend": storage.get("backend"),
        "database_name": connection.get("database_name"),
        "database_hostname": connection.get("database_hostname"),
        "database_port": connection.get("database_port"),
        "database_username": connection.get("database_username"),
        "repository_path": str(repository) if repository else None,
        "broker_host": broker.get("broker_host"),
        "broker_port": broker.get("broker_port"),
        "broker_username": broker.get("broker_username"),
        "user_email": entry.get("default_user_email"),
        "is_default": name == default,
        "nodes": None,
    }
    if state:
        found["schema"] = None
        found["daemon"] = daemon_state(name, config)
        found["maintained"] = maintenance.last_run(name)
        try:
            found["repository"] = maintenance.repository_stats(entry)
        except Exception as exc:  # a container being written: status shows what it can
            found["repository"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        if storage.get("backend") != "core.psql_dos":
            raise ValueError(f"storage {storage.get('backend')!r} is not read by the stack (only core.psql_dos)")
        read = storage_state.profile_state(entry, nodes=True)
        found["nodes"] = read.pop("nodes")
        if state:
            found["schema"] = read
    except Exception as exc:
        found["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return found
