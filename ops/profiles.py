"""Profiles: each its own PostgreSQL role + database and file repository, one the default.

The services own the work (postgres: `stack-profile-db`, aiida: `aiida-stack-profile`); this
module validates, orders the steps, keeps the host copy of each profile's database password, and
refuses what would lose data without confirmation.
"""

from __future__ import annotations

import contextlib
import secrets as token
from pathlib import Path

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import completion_cache, console, locking, secrets
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.inputs import InputError
from ops.rules import database_name, profile_problem
from ops.services import AIIDA

PROFILE_CLI = "aiida-stack-profile"
DATABASE_CLI = "stack-profile-db"
SWITCH_TIMEOUT = 120


def validate_name(name: str) -> str:
    problem = profile_problem(name)
    if problem:
        raise StackError(problem, code=2)
    return name


def info(stack: Stack, state: bool = False) -> dict:
    """{"default": name, "profiles": [...]} from the aiida service; passwords are never included.
    `state`: each profile's schema, processes and daemon too, and "aiida_core" and "plugins"."""
    done = stack.exec_aiida([PROFILE_CLI, "info", *(["--state"] if state else [])], capture=True)
    listing = json_result(done.returncode, done.stdout, "listing the profiles", done.stderr)
    completion_cache.write("profiles", (p["name"] for p in listing["profiles"]))
    return listing


def names(stack: Stack) -> dict:
    """{"default": name, "profiles": [names]}: config.json only, no database (fast)."""
    done = stack.exec_aiida([PROFILE_CLI, "names"], capture=True)
    listing = json_result(done.returncode, done.stdout, "listing the profile names", done.stderr)
    completion_cache.write("profiles", listing["profiles"])
    return listing


def get(stack: Stack, name: str) -> dict:
    validate_name(name)
    listing = info(stack)
    for profile in listing["profiles"]:
        if profile["name"] == name:
            return profile
    known = ", ".join(p["name"] for p in listing["profiles"])
    raise StackError(f"no profile {name!r} (profiles: {known})", code=2)


def password_file(stack: Stack, name: str) -> Path:
    return secrets.secrets_dir(stack.settings) / f"profile_{name}_db_password"


def create(stack: Stack, name: str, email: str, first_name: str, last_name: str, institution: str,
           set_default: bool) -> None:
    validate_name(name)
    if any(p["name"] == name for p in info(stack)["profiles"]):
        raise StackError(f"profile {name!r} already exists; nothing changed", code=2)
    password = create_database(stack, name)
    argv = [PROFILE_CLI, "create", name, "--email", email, "--first-name", first_name, "--last-name", last_name,
            "--institution", institution]
    done = stack.exec_aiida(argv, capture=True, input=password + "\n")
    if done.returncode != 0:
        with contextlib.suppress(StackError):
            drop_database(stack, name)
        raise StackError(f"could not set up profile {name}; its database was dropped again: {done.stderr.strip()}")
    console.step(f"profile {name}: repository, broker, localhost computer")
    if set_default:
        set_default_profile(stack, name)
    console.note(f"waiting for the daemon of {name} (the aiida service starts one for every profile)")
    serving(stack, name)
    console.step(f"daemon of {name} running")


def create_database(stack: Stack, name: str) -> str:
    """A new role and empty UTF8 database aiida_NAME with a generated password (kept on the host, 0600)."""
    refuse_existing_database(stack, name)  # before the password file is touched: it may be a kept database's
    password = token.token_urlsafe(32)
    stored = password_file(stack, name)
    secrets.write_private(stored, password)
    console.step(f"database password of {name} kept in {stored} (mode 0600)")
    done = stack.exec_postgres([DATABASE_CLI, "create", name], input=password + "\n")
    if done.returncode != 0:
        stored.unlink(missing_ok=True)
        raise StackError(f"could not create role and database {database_name(name)}: {done.stderr.strip()}",
                         code=2 if done.returncode == 3 else 1)
    console.step(f"PostgreSQL role and database {database_name(name)} (UTF8, owner only)")
    return password


def refuse_existing_database(stack: Stack, name: str) -> None:
    """StackError (exit 2) if role or database aiida_NAME exists, e.g. kept by profile.delete --skip-db."""
    if stack.exec_postgres([DATABASE_CLI, "exists", name]).returncode == 0:
        raise StackError(f"role or database {database_name(name)} exists (a profile deleted with --skip-db keeps "
                         "its database); nothing changed", code=2)


def drop_database(stack: Stack, name: str) -> None:
    done = stack.exec_postgres([DATABASE_CLI, "drop", name])
    if done.returncode != 0:
        raise StackError(f"could not drop database {database_name(name)}: {done.stderr.strip()}")
    password_file(stack, name).unlink(missing_ok=True)


def set_default_profile(stack: Stack, name: str) -> None:
    """Make `name` the default (the profile verdi and ./stack use without --profile; every profile has its
    own daemon either way)."""
    get(stack, name)
    done = stack.exec_aiida([PROFILE_CLI, "set-default", name], capture=True)  # the verdi command differs by release
    if done.returncode != 0:
        raise StackError(f"setting the default profile {name} failed: {done.stderr.strip()}")
    console.step(f"default profile: {name}")


def serving(stack: Stack, name: str) -> None:
    """Wait until the aiida service's own check passes with profile `name` among those it checked
    (Docker's status lags behind); the error quotes that check's last report."""
    last: list[str] = []

    def switched() -> bool:
        done = stack.run("exec", "-T", AIIDA, "aiida-healthcheck", capture=True, check=False)
        last[:] = done.stdout.splitlines() or [done.stderr.strip()]
        return done.returncode == 0 and name in last[0].removeprefix("profiles: ").split(",")

    waiting = Retrying(stop=stop_after_delay(SWITCH_TIMEOUT), wait=wait_fixed(0.25),
                       retry=retry_if_result(lambda ok: not ok), retry_error_callback=lambda _: False)
    if not waiting(switched):
        report = "\n".join(f"  {line}" for line in last if line.strip())
        raise StackError(f"the daemon is not serving profile {name} after {SWITCH_TIMEOUT} s; the service's "
                         f"last check said:\n{report}\nsee ./stack logs --service aiida")


def delete(stack: Stack, name: str, skip_db: bool, skip_repository: bool, yes: bool, new_default: str,
           wait: bool = True) -> None:
    if new_default == name:
        raise InputError("--set-default", f"must name another profile than {name!r}, which is being deleted")
    profile = get(stack, name)
    others = [p["name"] for p in info(stack)["profiles"] if p["name"] != name]
    if not others:
        raise StackError(f"{name} is the only profile; `./stack down --volumes` removes everything", code=2)
    if profile["is_default"] and not new_default:
        raise StackError(f"{name} is the default profile: give --set-default OTHER (one of {', '.join(others)})",
                         code=2)
    doomed = [what for what, skip in (("database and role", skip_db), ("repository", skip_repository)) if not skip]
    console.confirm(yes, f"Delete profile {name!r} ({', '.join(['config entry', *doomed])})?", name,
                    needs="Deleting data needs --yes")
    with locking.held(stack, f"delete of profile {name}", wait=wait):  # never during its backup or restore
        _delete(stack, name, skip_db, skip_repository, new_default)


def _delete(stack: Stack, name: str, skip_db: bool, skip_repository: bool, new_default: str) -> None:
    if new_default:
        set_default_profile(stack, new_default)
    done = stack.exec_aiida([PROFILE_CLI, "delete", name, *(["--skip-repository"] if skip_repository else [])],
                            capture=True)
    if done.returncode != 0:
        raise StackError(f"could not delete profile {name}: {done.stderr.strip()}")
    console.step(f"profile {name} removed from config.json" + ("" if skip_repository else " with its repository"))
    if not skip_db:
        drop_database(stack, name)
        console.step(f"database and role {database_name(name)} dropped")
