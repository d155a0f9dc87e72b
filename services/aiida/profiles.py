"""Profiles in config.json: set-up (psql_dos + RabbitMQ), per-start re-sync, `localhost` computer, removal.

Shared by the supervisor (bootstrap of $AIIDA_PROFILE, re-sync of the secrets) and the profile
CLI (aiida-stack-profile create/delete). Every profile of the stack: database aiida_<name> on the
stack's PostgreSQL, repository file://$AIIDA_PATH/.aiida/repository/<name>, the stack's RabbitMQ.
Passwords never reach a command line: they go to verdi in a 0600 --config file or its environment
(compat.profile_setup: how depends on the aiida-core release).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import tempfile

import compat
from common import (
    APPLIED_WORKERS_FILE,
    CONFIG_DIR,
    CONFIG_FILE,
    REPOSITORY_ROOT,
    STACK_DIR,
    WORK_DIR,
    log,
    profile_names,
    read_config,
    verdi,
)
from stack_rules import database_name

DB_HOST = os.environ.get("AIIDA_DB_HOST", "postgres")
DB_PORT = int(os.environ.get("AIIDA_DB_PORT", "5432"))
BROKER_KEYS = ("broker_protocol", "broker_username", "broker_password", "broker_host", "broker_port",
               "broker_virtual_host")


def repository_uri(name: str) -> str:
    return f"file://{REPOSITORY_ROOT / name}"


def setup_profile(name: str, db_password: str, broker: dict, user: dict, *, set_default: bool,
                  db_user: str | None = None, db_name: str | None = None, echo=None) -> None:
    """Set up profile `name` (core.psql_dos on the stack's PostgreSQL and RabbitMQ) with verdi, as this
    aiida-core does it (compat.profile_setup); user: email, first_name, last_name, institution."""
    database = {"host": DB_HOST, "port": DB_PORT, "username": db_user or database_name(name),
                "name": db_name or database_name(name), "password": db_password}
    args, secret_values, env = compat.profile_setup(name, user=user, database=database,
                                                    repository=REPOSITORY_ROOT / name, broker=broker,
                                                    set_default=set_default)
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    fd, secret_config = tempfile.mkstemp(prefix=".profile-setup-", suffix=".yaml", dir=STACK_DIR)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            json.dump(secret_values, handle)  # JSON is valid YAML
        verdi(*args, "--config", secret_config, env=env, timeout=300, echo=echo)
    finally:
        pathlib.Path(secret_config).unlink(missing_ok=True)
    if name not in profile_names():
        raise RuntimeError(f"`verdi {' '.join(args[:2])}` did not create profile {name!r}")


def computer_marker(name: str) -> pathlib.Path:
    return STACK_DIR / f"localhost-computer.{name}"


def ensure_localhost_computer(name: str, echo=None, strict: bool = False, runner=None) -> None:
    """Create the `localhost` computer (core.local / core.direct, safe_interval 0) once per profile.

    A marker holding the profile UUID saves the verdi calls on warm starts. strict: raise on failure.
    runner: how verdi runs (common.verdi; the supervisor's warm.run_verdi).
    """
    marker = computer_marker(name)
    uuid = read_config()["profiles"][name].get("PROFILE_UUID", "")
    if marker.exists() and marker.read_text().strip() == uuid:
        return
    shown = verdi("-p", name, "computer", "show", "localhost", check=False, quiet=True, log_failure=False,
                  runner=runner)
    if shown.returncode == 0:
        marker.write_text(uuid + "\n")
        return
    log(f"creating computer localhost for {name!r} (core.local / core.direct, work dir {WORK_DIR})")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        verdi(
            '-p', name, 'computer', 'setup', '-n',
            '--label', 'localhost', '--hostname', 'localhost',
            '--description', 'this container (aiida-stack)',
            '--transport', 'core.local', '--scheduler', 'core.direct',
            '--work-dir', str(WORK_DIR), '--mpiprocs-per-machine', '1',
            echo=echo, runner=runner,
        )  # fmt: skip
        verdi("-p", name, "computer", "configure", "core.local", "localhost", "-n", "--safe-interval", "0",
              echo=echo, runner=runner)
        marker.write_text(uuid + "\n")
    except RuntimeError as exc:
        if strict:
            raise
        log(f"WARNING: could not create computer localhost for {name!r}: {exc}")


def load_config():
    from aiida.manage.configuration.config import Config

    return Config.from_file(str(CONFIG_FILE))


def remove_profile_entry(name: str) -> None:
    """Remove `name` from config.json, keeping its data (database and repository are not touched)."""
    config = load_config()
    if name in config.profile_names:
        config.remove_profile(name)
        if config.default_profile_name == name:
            config._default_profile = None  # the caller set another default first, or none remain
        config.store()
    computer_marker(name).unlink(missing_ok=True)


def _sync_broker(profile, broker: dict) -> bool:
    current = dict(profile.process_control_config)
    wanted = {**current, **broker, "broker_protocol": current.get("broker_protocol") or "amqp"}
    if profile.process_control_backend == compat.BROKER_BACKEND and wanted == current:
        return False
    profile.set_process_controller(compat.BROKER_BACKEND, wanted)
    return True


def sync_config(bootstrap: str, db_password: str, broker: dict, workers: int) -> None:
    """Per-start re-sync of config.json with the secrets and settings (no verdi call).

    - the bootstrap profile's DB password, if that profile still exists;
    - the broker settings of every profile on RabbitMQ (all use the stack's RabbitMQ);
    - AIIDA_DAEMON_WORKERS into daemon.default_workers of the default profile, only when the setting
      changed since it was last applied or the profile has no value (so `verdi config set
      daemon.default_workers N` survives until the setting changes; `unset` returns to the setting);
    - warnings.rabbitmq_version False; a default profile if none is set.
    """
    config = load_config()
    changed: list[str] = []
    names = config.profile_names

    if bootstrap in names:
        profile = config.get_profile(bootstrap)
        storage = dict(profile.storage_config)
        if storage.get("database_password") != db_password:
            storage["database_password"] = db_password
            profile.set_storage(profile.storage_backend, storage)
            config.update_profile(profile)
            changed.append(f"database password of {bootstrap!r}")

    for name in names:
        profile = config.get_profile(name)
        if profile.process_control_backend not in (None, *compat.RABBITMQ_NAMES):
            log(f"profile {name!r} uses broker {profile.process_control_backend!r}: leaving it alone")
        elif _sync_broker(profile, broker):
            config.update_profile(profile)
            changed.append(f"broker settings of {name!r}")

    if names and config.default_profile_name not in names:
        config.set_default_profile(bootstrap if bootstrap in names else names[0], overwrite=True)
        changed.append(f"default profile {config.default_profile_name!r}")

    try:
        applied = int(APPLIED_WORKERS_FILE.read_text().strip())
    except (OSError, ValueError):
        applied = None
    default = config.default_profile_name
    # Unset by the user (`verdi config unset daemon.default_workers`): back to the stack's setting.
    unset = bool(default) and "daemon.default_workers" not in config.get_profile(default).options
    apply_workers = bool(default) and (applied != workers or unset)
    if apply_workers:
        profile = config.get_profile(default)
        if profile.get_option("daemon.default_workers") != workers or unset:
            profile.set_option("daemon.default_workers", workers)
            config.update_profile(profile)
            why = "unset" if unset and applied == workers else "AIIDA_DAEMON_WORKERS changed"
            changed.append(f"daemon.default_workers={workers} for {default!r} ({why})")

    if config.options.get("warnings.rabbitmq_version", True) is not False:
        # Only because the rabbitmq image verifies that consumer_timeout is disabled.
        config.set_option("warnings.rabbitmq_version", False)
        changed.append("warnings.rabbitmq_version=False (global)")

    if changed:
        config.store()
        log(f"config.json updated: {', '.join(changed)}")
    else:
        log("config.json is up to date with the secrets and settings")
    if apply_workers:
        APPLIED_WORKERS_FILE.write_text(f"{workers}\n")


def repository_path_of(profile: dict) -> pathlib.Path | None:
    """Local path of a profile's repository (config.json entry as a dict), or None."""
    uri = profile.get("storage", {}).get("config", {}).get("repository_uri") or ""
    return pathlib.Path(uri[len("file://"):]) if uri.startswith("file://") else None


def deletable_repository(profile: dict) -> pathlib.Path:
    """The repository folder of a profile, only if it lies strictly inside REPOSITORY_ROOT."""
    path = repository_path_of(profile)
    root = REPOSITORY_ROOT.resolve()
    if path is None:
        raise ValueError("its repository_uri is not a local file:// path")
    resolved = path.resolve()
    if resolved == root or root not in resolved.parents:
        raise ValueError(f"its repository {path} is not inside {REPOSITORY_ROOT}/")
    return resolved


CONFIG_COPY_RE = re.compile(r"^config\.json\.\d{8}-\d{6}\.\d+$")


def prune_config_copies(keep: int = 20) -> int:
    """aiida-core writes a timestamped copy of config.json (credentials included) on every store, so
    profile and config operations pile them up; keep the newest `keep`. Returns how many went."""
    copies = sorted(path for path in CONFIG_DIR.iterdir() if CONFIG_COPY_RE.fullmatch(path.name))
    for old in copies[:-keep] if keep > 0 else copies:
        old.unlink(missing_ok=True)
    return max(0, len(copies) - keep)

