"""What differs between the aiida-core releases the aiida service runs, in this one module.

Two families: LEGACY (before 2.6; tested with 2.2.2, storage schema main_0001, config.json v9) and
current (2.6+; tested with 2.9.4). Before 2.6 a profile is made with `verdi setup` (broker settings as
options, no `verdi profile configure-broker`), the broker backend is called `rabbitmq` in config.json,
the default profile is set with `verdi profile setdefault`, lost process tasks are fixed with
`verdi devel rabbitmq tasks analyze --fix` (no `verdi process repair`), and neither
Manager.get_broker nor DaemonClient.get_number_of_workers exists.

Importing this module does not import aiida; the functions that need it import it themselves.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib

AIIDA_VERSION = importlib.metadata.version("aiida-core")
LEGACY = tuple(int(part) for part in AIIDA_VERSION.split(".")[:2]) < (2, 6)

BROKER_BACKEND = "rabbitmq" if LEGACY else "core.rabbitmq"
# What config.json may call the RabbitMQ broker: 2.6+ still loads a profile set up before 2.6 (`rabbitmq`,
# kept by the config.json migration) with a deprecation warning; the service renames it to BROKER_BACKEND.
RABBITMQ_NAMES = ("rabbitmq", "core.rabbitmq")
DATABASE_ENGINE = "postgresql_psycopg2" if LEGACY else "postgresql_psycopg"


def profile_setup(name: str, *, user: dict, database: dict, repository: pathlib.Path, broker: dict,
                  set_default: bool) -> tuple[list[str], dict, dict]:
    """How to set up a core.psql_dos profile with verdi: (arguments, content of the 0600 --config
    file, extra environment). The passwords go only into the --config file or the environment.

    database: host, port, username, name, password; broker: broker_* settings (process control).
    """
    people = ["--email", user["email"], "--first-name", user["first_name"], "--last-name", user["last_name"],
              "--institution", user["institution"]]
    if LEGACY:
        # `verdi setup` sets the new profile as default only if there is none: set_default is the caller's.
        args = ["setup", "-n", "--profile", name, *people,
                "--db-engine", DATABASE_ENGINE, "--db-backend", "core.psql_dos",
                "--db-host", database["host"], "--db-port", str(database["port"]),
                "--db-username", database["username"], "--db-name", database["name"],
                "--repository", str(repository),
                "--broker-protocol", str(broker.get("broker_protocol") or "amqp"),
                "--broker-username", str(broker["broker_username"]),
                "--broker-host", str(broker["broker_host"]),
                "--broker-port", str(broker.get("broker_port") or 5672),
                "--broker-virtual-host", str(broker.get("broker_virtual_host") or "")]
        return args, {"db_password": database["password"], "broker_password": str(broker["broker_password"])}, {}
    args = ["profile", "setup", "core.psql_dos", "-n", "--profile-name", name,
            "--set-as-default" if set_default else "--no-set-as-default", *people,
            "--database-hostname", database["host"], "--database-port", str(database["port"]),
            "--database-username", database["username"], "--database-name", database["name"],
            "--repository-uri", f"file://{repository}", "--broker", BROKER_BACKEND]
    env = {
        "AIIDA_BROKER_PROTOCOL": str(broker.get("broker_protocol") or "amqp"),
        "AIIDA_BROKER_HOST": str(broker["broker_host"]),
        "AIIDA_BROKER_PORT": str(broker.get("broker_port") or 5672),
        "AIIDA_BROKER_USERNAME": str(broker["broker_username"]),
        "AIIDA_BROKER_PASSWORD": str(broker["broker_password"]),
        "AIIDA_BROKER_VIRTUAL_HOST": str(broker.get("broker_virtual_host") or ""),
    }
    return args, {"database_password": database["password"]}, env


def set_default_args(name: str) -> list[str]:
    return ["profile", "setdefault" if LEGACY else "set-default", name]


def repair_args(name: str) -> list[str]:
    """Re-create the broker tasks of unfinished processes (broker state is not in backups)."""
    if LEGACY:
        return ["-p", name, "devel", "rabbitmq", "tasks", "analyze", "--fix"]
    return ["-p", name, "process", "repair", "--force"]


def check_broker(manager) -> str:
    """Connect to the loaded profile's broker and close again; its description. Raises if it does not answer."""
    if LEGACY:
        communicator = manager.get_communicator()
        manager.reset_communicator()
        return f"RabbitMQ ({type(communicator).__name__})"
    broker = manager.get_broker()
    if broker is None:
        raise RuntimeError("no broker configured for the profile")
    broker.get_communicator()
    broker.close()
    return str(broker)


def daemon_workers(client, timeout: float) -> int:
    """Workers of the running daemon (DaemonClient of the loaded profile); raises if it does not answer."""
    if not LEGACY:
        return client.get_number_of_workers(timeout=timeout)
    response = client.get_numprocesses()
    if "numprocesses" not in response:
        raise RuntimeError(f"the daemon does not answer: {response.get('status', response)}")
    return int(response["numprocesses"])


def config_problem(path: pathlib.Path) -> str | None:
    """Why this aiida-core cannot read config.json (written by a newer one), or None.

    aiida-core migrates an older config.json on its own when it loads it (keeping a copy); a newer one
    it refuses, and so does every verdi command, `verdi --version` included.
    """
    from aiida.manage.configuration.migrations import CURRENT_CONFIG_VERSION

    try:
        versions = json.loads(path.read_text()).get("CONFIG_VERSION") or {}
    except (OSError, ValueError):
        return None
    oldest = versions.get("OLDEST_COMPATIBLE", 0)
    if isinstance(oldest, int) and oldest > CURRENT_CONFIG_VERSION:
        return (f"{path} is version {versions.get('CURRENT')} (readable from version {oldest} on), written by a "
                f"newer aiida-core; aiida-core {AIIDA_VERSION} reads up to version {CURRENT_CONFIG_VERSION}")
    return None


def storage_problem(profile) -> str | None:
    """Why this aiida-core must not run the daemon of `profile` (an aiida Profile): its database schema
    is not this aiida-core's head (needs `verdi storage migrate`, or was written by a newer release).
    None when it is current, or when that cannot be told (unreachable: starting the daemon says why)."""
    if profile.storage_backend != "core.psql_dos":
        return None
    from aiida.storage.psql_dos.backend import PsqlDosBackend

    try:
        stored, head = PsqlDosBackend.version_profile(profile), PsqlDosBackend.version_head()
    except Exception:
        return None
    if stored is None or stored == head:  # None: an empty database (`verdi setup` initialises it)
        return None
    if stored not in PsqlDosBackend.migrator.get_schema_versions():
        return (f"its storage has schema {stored}, unknown to aiida-core {AIIDA_VERSION} (head {head}): "
                "a newer aiida-core wrote it")
    return (f"its storage has schema {stored}, aiida-core {AIIDA_VERSION} expects {head}: it needs `verdi storage "
            "migrate` (the stack never migrates by itself; ./stack upgrade does)")
