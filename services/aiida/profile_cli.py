"""aiida-stack-profile: the aiida side of the stack's profiles (run as user aiida; root drops to it).

  aiida-stack-profile create NAME --email E --first-name F --last-name L --institution I [--set-default]
      DB password on stdin (first line); the role/database aiida_NAME must exist (stack-profile-db).
      `verdi profile setup core.psql_dos` (broker settings copied from an existing profile), the
      `localhost` computer, daemon.default_workers = AIIDA_DAEMON_WORKERS, optionally the default.
      Fails without leaving a half-created profile (the database is the caller's to drop).
  aiida-stack-profile delete NAME [--skip-repository]
      Stop its daemon, remove it from config.json (its database is NOT touched: drop it with
      stack-profile-db), delete its repository folder (only inside $AIIDA_PATH/.aiida/repository/).
  aiida-stack-profile set-default NAME
      Make NAME the default profile (the supervisor then moves the daemon to it). Exit 3: no such profile.
  aiida-stack-profile names
      One JSON line: {"default": name, "profiles": [names], "uuids": {name: uuid}}; from config.json,
      no aiida import (fast).
  aiida-stack-profile activity
      One JSON line: {"profiles": {name: {"schema", "head", "active", "paused"}}}: the stored schema,
      this aiida-core's head, processes not yet terminated (created, waiting, running), paused ones.
  aiida-stack-profile pause NAME / play NAME [PK ...]
      Pause every running process of NAME (its daemon must run), one JSON line with their pks;
      play the given ones again.
  aiida-stack-profile workers [NAME | --all]
      One JSON line: {"profile", "running", "configured", "disabled"}: the daemon's workers now, the
      profile's daemon.default_workers, stopped on purpose or not (NAME: default profile); with --all
      {"daemons": [...]} for every profile. No aiida import.
  aiida-stack-profile info [--state]
      One JSON line: {"default": name, "profiles": [{...,"nodes": count or null (+ "error")}]}. --state
      adds each profile's "schema" (as `activity`, null if unreadable) and "daemon" (as `workers`), and
      "aiida_core" and "plugins": everything ./stack status shows, with one import of aiida.
  aiida-stack-profile adopt NAME --email E [--options JSON]
      DB password on stdin. The config entry of a profile whose storage a restore has just put in
      place (database aiida_NAME, repository/NAME): this stack's credentials and broker, a new
      PROFILE_UUID (its own broker queues), the backed-up profile's options. No storage set-up.
  aiida-stack-profile daemon-stop NAME [--keep-stopped] [--now]
      Stop the profile's daemon now (SIGTERM to circusd, workers given AIIDA_DAEMON_STOP_TIMEOUT s, then
      killed): what `verdi daemon stop` asks, without verdi's second of start-up. --keep-stopped writes
      the stop marker first (the supervisor then leaves it stopped). --now kills circusd and its workers
      at once, as a crash would (a restore: processes go on from their last checkpoint). One JSON line.
  aiida-stack-profile daemon-start NAME [--timeout S]
      Remove the stop marker and wait until the supervisor has started the daemon (circusd with its
      workers). One JSON line: {"profile", "running", "seconds", "workers"}.

  aiida-stack-profile after-restore NAME
      Restored storage: count the nodes; on this aiida-core's schema, `verdi process repair --force`
      (broker state is not in backups). An older schema is left for ./stack migrate, never migrated here.
      One JSON line: {"nodes", "schema", "head", "current"}.

  aiida-stack-profile maintain NAME [--full] [--dry-run] [--timeout S]
      `verdi storage maintain` (--full: the profile must be unused: the host stops its daemon), the
      repository's objects and bytes before and after; recorded in stack/maintained.NAME. One JSON
      line: {"profile", "full", "dry_run", "when", "seconds", "before", "after"}.

  aiida-stack-profile archive-info PATH [--name SHOWN]
      One JSON line: the archive's format version (and the latest), the aiida-core that wrote it, its
      creation time, its entities and repository objects (counted only for the latest format; an
      older one is migrated by `verdi archive import`). Exit 2: not an AiiDA archive.

  aiida-stack-profile schema-check REVISION
      One JSON line: {"revision", "head", "known"}: a revision this aiida-core does not know is newer.

Exit codes: 0 ok, 1 failure (nothing changed), 2 usage, 3 create: profile exists / delete: unknown
profile, 4 delete: NAME is the default and other profiles exist. Errors: one line on stderr.
Progress goes to stdout; passwords are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import time
import uuid

import archives
import common
import compat
import daemon
import maintenance
import profiles
import storage_state
from common import BROKER_FILE, CONFIG_DIR, DAEMON_DIR, REPOSITORY_ROOT, CliError, hold_file, log, read_config, verdi
from profile_info import info, names, workers
from stack_rules import database_name, profile_problem

ME = "aiida-stack-profile"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise CliError(2, f"{message} (see {ME} --help)")


def valid_name(name: str) -> str:
    problem = profile_problem(name)
    if problem:
        raise CliError(2, problem)
    return name


def echo(line: str) -> None:
    print(f"  verdi: {line}", flush=True)


# ------------------------------------------------------------------------------------------ create


def broker_source(config: dict) -> dict:
    """Broker settings of an existing RabbitMQ profile (the default first): all share one RabbitMQ.

    Without any, those the supervisor recorded (BROKER_FILE)."""
    entries = config.get("profiles", {})
    order = sorted(entries, key=lambda n: n != config.get("default_profile"))
    for name in order:
        control = entries[name].get("process_control") or {}
        settings = control.get("config") or {}
        if control.get("backend") in compat.RABBITMQ_NAMES and settings.get("broker_host") and settings.get(
                "broker_password"):
            return {key: settings[key] for key in profiles.BROKER_KEYS if key in settings}
    try:  # no profile left: the settings the supervisor recorded at its start
        return json.loads(BROKER_FILE.read_text())
    except (OSError, ValueError):
        raise CliError(1, f"no profile on RabbitMQ to copy the broker settings from, and no {BROKER_FILE}"
                       ) from None


def read_password() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CliError(2, "no database password on stdin (first line)")
    return line


def new_profile_context(name: str, password: str) -> tuple[dict, dict]:
    """(config, broker settings) for a new profile `name`; exit 3 if it exists; both passwords redacted."""
    config = read_config()
    if name in config.get("profiles", {}):
        raise CliError(3, f"profile {name!r} already exists; nothing changed")
    broker = broker_source(config)
    common.add_secret(password)
    common.add_secret(str(broker.get("broker_password", "")))
    return config, broker


def create(args) -> None:
    name = valid_name(args.name)
    password = read_password()
    config, broker = new_profile_context(name, password)
    repository = REPOSITORY_ROOT / name
    if repository.exists() and any(repository.iterdir()):
        raise CliError(1, f"repository folder {repository} already exists (left by a deleted profile?): "
                          "remove it or choose another name; nothing changed")
    user = {"email": args.email, "first_name": args.first_name, "last_name": args.last_name,
            "institution": args.institution}
    set_default = args.set_default or not common.default_profile(config)  # the first one becomes default
    log(f"setting up profile {name!r} (database {database_name(name)}, repository {repository})")
    hold = hold_file(name)
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()  # the supervisor sees the new profile in config.json: it waits until it is complete
    try:
        profiles.setup_profile(name, password, broker, user, set_default=False, echo=echo)
        workers = common.daemon_workers_setting()
        config_obj = profiles.load_config()
        profile = config_obj.get_profile(name)
        profile.set_option("daemon.default_workers", workers)
        config_obj.update_profile(profile).store()
        profiles.ensure_localhost_computer(name, echo=echo, strict=True)
        if set_default:
            verdi(*compat.set_default_args(name), echo=echo)
    except (Exception, KeyboardInterrupt) as exc:
        undo_create(name, repository)
        reason = str(exc) if isinstance(exc, Exception) else "interrupted"
        raise CliError(1, f"setting up profile {name!r} failed, undone (database kept): {reason}") from None
    finally:
        hold.unlink(missing_ok=True)
    log(f"profile {name!r} created ({workers} daemon worker(s)){', the default' if set_default else ''}")


def undo_create(name: str, repository) -> None:
    with contextlib.suppress(Exception):
        if name in common.profile_names():
            profiles.remove_profile_entry(name)
    with contextlib.suppress(Exception):
        profiles.computer_marker(name).unlink(missing_ok=True)
    with contextlib.suppress(Exception):
        shutil.rmtree(repository)  # it did not exist (or was empty) before: ours


# ------------------------------------------------------------------------------------------ delete


def delete(args) -> None:
    name = valid_name(args.name)
    config = read_config()
    entries = config.get("profiles", {})
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise CliError(3, f"no profile {name!r} (profiles: {known})")
    if config.get("default_profile") == name and len(entries) > 1:
        raise CliError(4, f"{name!r} is the default profile: set another default first "
                          f"(verdi profile set-default OTHER); nothing changed")
    repository = None
    if not args.skip_repository:
        try:
            repository = profiles.deletable_repository(entries[name])
        except ValueError as exc:
            raise CliError(1, f"refusing to delete the repository of {name!r}: {exc} "
                              "(--skip-repository keeps it); nothing changed") from None
    hold = hold_file(name)
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()  # the supervisor leaves this profile's daemon alone meanwhile
    try:
        daemon.stop(name)
        if daemon.circusd_pid(name) is not None:
            raise CliError(1, f"could not stop the daemon of {name!r}; nothing changed")
        profiles.remove_profile_entry(name)
        log(f"profile {name!r} removed from config.json (its database is kept: drop it with stack-profile-db)")
        for path in [*DAEMON_DIR.glob(f"circus-{name}.*"), *DAEMON_DIR.glob(f"aiida-{name}*"),
                     *(DAEMON_DIR / "log").glob(f"*-{name}.log")]:
            path.unlink(missing_ok=True)
        shutil.rmtree(CONFIG_DIR / "access" / name, ignore_errors=True)
        common.disabled_file(name).unlink(missing_ok=True)  # a new profile of that name starts supervised
        if repository is not None and repository.exists():
            shutil.rmtree(repository)
            log(f"repository {repository} deleted")
        elif repository is None:
            log("repository kept (--skip-repository)")
    finally:
        hold.unlink(missing_ok=True)


def set_default(args) -> None:
    name = valid_name(args.name)
    if name not in common.profile_names():
        raise CliError(3, f"no profile {name!r}")
    verdi(*compat.set_default_args(name), echo=echo)


# ----------------------------------------------------------------------------------------- restore


def stop_daemon(args) -> None:
    name = valid_name(args.name)
    if name not in common.profile_names():
        raise CliError(3, f"no profile {name!r}")
    if args.keep_stopped:  # first: the supervisor leaves the daemon alone from now on
        common.disabled_file(name).parent.mkdir(parents=True, exist_ok=True)
        common.disabled_file(name).touch()
    was = daemon.circusd_pid(name)
    daemon.stop(name, now=args.now)
    print(json.dumps({"profile": name, "stopped": was is not None, "running": daemon.circusd_pid(name) is not None}),
          flush=True)


def start_daemon(args) -> None:
    """Drop the stop marker: the supervisor, the one place that starts daemons, starts it at once (it
    looks at the markers every DISABLED_POLL s). Returns when circusd runs with its workers."""
    name = valid_name(args.name)
    if name not in common.profile_names():
        raise CliError(3, f"no profile {name!r}")
    asked = time.monotonic()
    common.disabled_file(name).unlink(missing_ok=True)
    while daemon.circusd_pid(name) is None or daemon.worker_count(name) < 1:
        if time.monotonic() - asked > args.timeout:
            raise CliError(1, f"the daemon of {name} is not running {args.timeout:.0f} s after its start was asked "
                              "for; see the service's log (./stack logs --service aiida)")
        time.sleep(0.05)
    print(json.dumps({"profile": name, "running": True, "seconds": round(time.monotonic() - asked, 2),
                      "workers": daemon.worker_count(name)}), flush=True)


def adopt(args) -> None:
    from aiida.manage.configuration.profile import Profile

    name = valid_name(args.name)
    password = read_password()
    try:
        options = json.loads(args.options or "{}")
    except ValueError as exc:
        raise CliError(2, f"--options is not JSON: {exc}") from None
    _, broker = new_profile_context(name, password)
    options = {key: value for key, value in options.items() if isinstance(key, str)}
    options.setdefault("daemon.default_workers", common.daemon_workers_setting())
    entry = {
        "PROFILE_UUID": uuid.uuid4().hex,
        "default_user_email": args.email,
        "options": options,
        "process_control": {"backend": compat.BROKER_BACKEND,
                            "config": {"broker_protocol": "amqp", "broker_virtual_host": "", **broker}},
        "storage": {"backend": "core.psql_dos", "config": {
            "database_engine": compat.DATABASE_ENGINE, "database_hostname": profiles.DB_HOST,
            "database_port": profiles.DB_PORT, "database_username": database_name(name), "database_password": password,
            "database_name": database_name(name), "repository_uri": profiles.repository_uri(name)}},
        "test_profile": False,
    }
    config_obj = profiles.load_config()
    config_obj.add_profile(Profile(name, entry))
    config_obj.store()
    log(f"profile {name!r} adopted: restored storage {database_name(name)} and {REPOSITORY_ROOT / name}")




# -------------------------------------------------------------------------------------------- main


def parser() -> Parser:
    top = Parser(prog=ME, description="Create, delete and list the stack's AiiDA profiles.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    new = sub.add_parser("create", help="set up a profile (DB password on stdin)")
    new.add_argument("name")
    for option in ("email", "first-name", "last-name", "institution"):
        new.add_argument(f"--{option}", required=True)
    new.add_argument("--set-default", action="store_true")
    new.set_defaults(run=create)
    gone = sub.add_parser("delete", help="remove a profile (not its database)")
    gone.add_argument("name")
    gone.add_argument("--skip-repository", action="store_true")
    gone.set_defaults(run=delete)
    chosen = sub.add_parser("set-default", help="make a profile the default")
    chosen.add_argument("name")
    chosen.set_defaults(run=set_default)
    described = sub.add_parser("info", help="one JSON line describing every profile")
    described.add_argument("--state", action="store_true", help="also schemas, processes, daemons, aiida-core and "
                                                                "plugins (./stack status)")
    described.set_defaults(run=info)
    sub.add_parser("names", help="one JSON line: the default and every profile name").set_defaults(run=names)
    sub.add_parser("activity", help="one JSON line: schemas, active and paused processes per profile").set_defaults(
        run=storage_state.activity)
    for verb, run in (("pause", storage_state.pause), ("play", storage_state.play)):
        paused = sub.add_parser(verb, help=f"{verb} processes of a profile (pause: every running one)")
        paused.add_argument("name")
        if verb == "play":
            paused.add_argument("pks", nargs="*", type=int)
        paused.set_defaults(run=run)
    stop = sub.add_parser("daemon-stop", help="stop a profile's daemon now (SIGTERM to circusd, as `verdi daemon "
                                              "stop` asks; without verdi's start-up); one JSON line")
    stop.add_argument("name")
    stop.add_argument("--keep-stopped", action="store_true", help="write the stop marker first (./stack daemon.stop)")
    stop.add_argument("--now", action="store_true", help="kill circusd and its workers instead of a graceful stop "
                                                        "(a restore: the processes go on from their last checkpoint)")
    stop.set_defaults(run=stop_daemon)
    begin = sub.add_parser("daemon-start", help="drop the stop marker and wait until the supervisor has started the "
                                                "daemon (circusd with its workers); one JSON line")
    begin.add_argument("name")
    begin.add_argument("--timeout", type=float, default=120)
    begin.set_defaults(run=start_daemon)
    counted = sub.add_parser("workers", help="one JSON line: running and configured daemon workers")
    counted.add_argument("name", nargs="?")
    counted.add_argument("--all", action="store_true")
    counted.set_defaults(run=workers)
    adopted = sub.add_parser("adopt", help="config entry for restored storage (DB password on stdin)")
    adopted.add_argument("name")
    adopted.add_argument("--email", required=True)
    adopted.add_argument("--options", default="{}")
    adopted.set_defaults(run=adopt)
    settle = sub.add_parser("after-restore", help="repair process tasks (current schema only), count nodes")
    settle.add_argument("name")
    settle.set_defaults(run=storage_state.after_restore)
    kept = sub.add_parser("maintain", help="verdi storage maintain, measured before and after; one JSON line")
    kept.add_argument("name", type=valid_name)
    kept.add_argument("--full", action="store_true", help="also repack and vacuum (the profile must be unused)")
    kept.add_argument("--dry-run", action="store_true", help="show what would be done; nothing changes")
    kept.add_argument("--timeout", type=float, default=3600)
    kept.set_defaults(run=maintenance.maintain)
    described = sub.add_parser("archive-info", help="one JSON line: an archive's version, aiida-core, counts")
    described.add_argument("path")
    described.add_argument("--name", help="how to call the file in messages (the host's path)")
    described.set_defaults(run=lambda args: archives.archive_info(
        argparse.Namespace(path=args.path, name=args.name or args.path)))
    known = sub.add_parser("schema-check", help="one JSON line: does this aiida-core know schema REVISION")
    known.add_argument("revision")
    known.set_defaults(run=storage_state.schema_check)
    return top


def interrupted(signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    common.LOG_PREFIX[0] = ME
    signal.signal(signal.SIGTERM, interrupted)
    try:
        args = parser().parse_args(argv)
        args.run(args)
    except CliError as exc:
        print(f"{ME}: {common.redact(str(exc))}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print(f"{ME}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"{ME}: {type(exc).__name__}: {common.redact(str(exc))}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
