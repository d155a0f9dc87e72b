"""Backups and restores, orchestrated around the backup sidecar's engine (`stack-backup`).

The sidecar does the work (dump, copy, manifest, verify, load); this module orders the runbook's
steps, starts the throwaway PostgreSQL a verification restores into, and stops/starts the daemon.
A restore reads: verify → stop daemon → safety backup → load → check → start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets as token
import shutil
import time
from collections.abc import Iterator

from docker.errors import DockerException
from rich.table import Table
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import console, daemon, engine, profiles, secrets
from ops.compose import Stack, last_json
from ops.errors import StackError
from ops.services import BACKUP, POSTGRES

ENGINE = "stack-backup"
BACKUP_WAIT = 600  # seconds a backup waits for a running one to finish


def _result(done, what: str) -> dict:
    result = last_json(done.stdout) or {}
    if done.returncode != 0:
        reason = result.get("error") or (done.stderr or "").strip()[-1500:] or f"exit {done.returncode}"
        raise StackError(f"{what}: {reason}", code=2 if done.returncode == 2 else 1)
    return result


def engine_call(stack: Stack, *args: str, input: str | None = None) -> dict:
    """`stack-backup ARGS` in the running sidecar (AiiDA home mounted read-only)."""
    done = stack.run("exec", "-T", BACKUP, ENGINE, *args, capture=True, check=False, input=input)
    return _result(done, f"{ENGINE} {args[0]}")


def engine_call_writable(stack: Stack, *args: str) -> dict:
    """`stack-backup ARGS` in a one-off sidecar with the AiiDA home mounted read-write (restores)."""
    volume = f"{stack.settings.name}_aiida-home:/aiida-home-rw"
    done = stack.run("run", "--rm", "--no-deps", "-T", "-v", volume, BACKUP, ENGINE, *args, capture=True, check=False)
    return _result(done, f"{ENGINE} {args[0]}")


# ------------------------------------------------------------------------------------------ backup


def backup(stack: Stack, names: list[str], keep: int | None) -> list[dict]:
    if keep is not None and keep < 1:
        raise StackError("--keep must be at least 1 (the newest backup is never pruned)", code=2)
    results = []
    for name in names:
        console.note(f"backing up {name}: lock → dump database → copy repository → manifest → publish")
        args = ["backup", "--profile", name, "--wait", str(BACKUP_WAIT),
                "--aiida-version", stack.settings.aiida_core_version]
        result = engine_call(stack, *args, *(["--keep", str(keep)] if keep else []))
        m = result["manifest"]
        console.step(f"{name}: {result['id']} — {m['node_count']} nodes, {_size(m['bytes_total'])} "
                     f"({_size(m['bytes_new'])} new) in {m['duration_seconds']:.1f} s"
                     + (f"; pruned {', '.join(result['pruned'])}" if result.get("pruned") else ""))
        results.append(result)
    return results


def profile_names(stack: Stack, profile: str, every: bool) -> list[str]:
    listing = profiles.info(stack)
    if every:
        return [p["name"] for p in listing["profiles"]]
    return [profiles.get(stack, profile)["name"] if profile else listing["default"]]


def listing(stack: Stack, profile: str) -> Table:
    args = ["list", *(["--profile", profiles.validate_name(profile)] if profile else [])]
    table = Table("profile", "id", "finished (UTC)", "size", "new", "nodes", "verified", title="backups",
                  title_justify="left")
    for b in engine_call(stack, *args)["backups"]:
        verified = {True: "[green]yes[/]", False: "[red]FAILED[/]", None: "no"}[b["verified"]]
        table.add_row(b["profile"], b["id"] + (" (latest)" if b["latest"] else ""), b["finished_at"],
                      _size(b["bytes_total"]), _size(b["bytes_new"]), str(b["node_count"]), verified)
    return table


# ------------------------------------------------------------------------------------------ verify


@contextlib.contextmanager
def scratch_postgres(stack: Stack) -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL (the stack's own image) on the stack's network: (host, superuser password)."""
    docker = engine.client()
    name = f"{stack.settings.name}-verify-{token.token_hex(3)}"
    password = token.token_urlsafe(24)
    folder = stack.state / f"scratch-{name}"
    folder.mkdir(mode=0o700, parents=True)
    secrets.write_private(folder / "postgres_password", password)
    secrets.write_private(folder / "aiida_db_password", token.token_urlsafe(24))
    # The image the stack's PostgreSQL runs (not the current sources' tag): same server, same version.
    image = stack.container(POSTGRES).attrs["Config"]["Image"]
    try:
        container = docker.containers.run(
            image, detach=True, name=name, network=f"{stack.settings.name}_backend",
            environment={"POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
                         "AIIDA_DB_PASSWORD_FILE": "/run/secrets/aiida_db_password", "AIIDA_PROFILE": "scratch"},
            volumes={str(folder): {"bind": "/run/secrets", "mode": "ro"}},
            labels={"aiida-stack.scratch": stack.settings.name})
    except DockerException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise StackError(f"cannot start a throwaway PostgreSQL from {image}: {exc}") from None
    try:
        ready = Retrying(stop=stop_after_delay(90), wait=wait_fixed(0.5), retry=retry_if_result(lambda ok: not ok),
                         retry_error_callback=lambda _: False)
        if not ready(lambda: container.exec_run(["pg_isready", "-q", "-h", "127.0.0.1"]).exit_code == 0):
            raise StackError(f"the throwaway PostgreSQL {name} did not start:\n{container.logs()[-1500:]!r}")
        yield name, password
    finally:
        container.remove(force=True, v=True)
        shutil.rmtree(folder, ignore_errors=True)


def verify(stack: Stack, profile: str, ident: str) -> dict:
    """Checksums, repository objects, and a real restore of the dump into a throwaway PostgreSQL."""
    with scratch_postgres(stack) as (host, password):
        done = stack.run("exec", "-T", BACKUP, ENGINE, "verify", "--profile", profile, ident,
                         "--scratch-host", host, capture=True, check=False, input=password + "\n")
    result = last_json(done.stdout) or {}
    if "checks" not in result:
        _result(done, f"{ENGINE} verify")  # raises with the engine's reason
    return result


def checks_table(result: dict) -> Table:
    table = Table("check", "result", "detail", title=f"verify {result.get('id')}", title_justify="left")
    for check in result["checks"]:
        table.add_row(check["name"], "[green]ok[/]" if check["ok"] else "[red]FAILED[/]", str(check.get("detail", "")))
    return table


def find(stack: Stack, profile: str, ident: str) -> dict:
    for b in engine_call(stack, "list", "--profile", profile)["backups"]:
        if b["id"] == ident or (ident == "latest" and b["latest"]):
            return b
    raise StackError(f"no backup {ident!r} of profile {profile!r}", code=2)


# ----------------------------------------------------------------------------------------- restore


def restore(stack: Stack, ident: str, source: str, target: str, yes: bool) -> Table:
    start = time.monotonic()
    source = source or profiles.info(stack)["default"]
    target = profiles.validate_name(target or source)
    listing_before = {p["name"]: p for p in profiles.info(stack)["profiles"]}
    existing = listing_before.get(target)
    if existing and existing.get("nodes") and not yes:
        raise StackError(f"profile {target!r} holds {existing['nodes']} nodes: restoring replaces them; confirm with "
                         "--yes (a safety backup is taken first); nothing touched", code=2)

    console.note(f"verify: {source} {ident}")
    checked = verify(stack, profiles.validate_name(source), ident)
    if not checked["ok"]:
        failed = "; ".join(f"{c['name']}: {c.get('detail')}" for c in checked["checks"] if not c["ok"])
        raise StackError(f"backup {checked.get('id', ident)} failed verification, nothing touched: {failed}")
    chosen = find(stack, source, checked["id"])
    console.step(f"verified {chosen['id']} ({chosen['node_count']} nodes)")

    serving = profiles.info(stack)["default"] == target
    if serving:
        daemon.stop(stack)
        console.step("daemon stopped")
    try:
        safety = None
        if existing and existing.get("nodes"):
            safety = backup(stack, [target], keep=None)[0]["id"]
        if not existing:
            profiles.create(stack, target, *_user_of(stack, source, chosen["id"]), set_default=False)
        loaded = _load(stack, source, chosen["id"], target)
        _check(stack, target, chosen, loaded)
    finally:
        if serving:
            daemon.start(stack)
            console.step("daemon started")
    summary = Table("restore", "", title=f"restored {source}/{chosen['id']} into {target}", title_justify="left")
    summary.add_row("nodes", str(loaded["nodes"]))
    summary.add_row("repository objects", str(loaded["objects"]))
    summary.add_row("schema", loaded["schema"])
    summary.add_row("safety backup of the replaced data", safety or "not needed (target held no data)")
    summary.add_row("duration", f"{time.monotonic() - start:.1f} s")
    return summary


def _user_of(stack: Stack, profile: str, ident: str) -> tuple[str, str, str, str]:
    """The backed-up profile's default user (email, first, last, institution) for a new target profile."""
    done = stack.run("exec", "-T", BACKUP, "cat", f"/backups/{profile}/{ident}/config.json", capture=True, check=False)
    entry = json.loads(done.stdout or "{}") if done.returncode == 0 else {}
    entry = entry.get("profiles", {}).get(profile, entry)
    s = stack.settings
    return (entry.get("default_user_email") or s.user_email, s.user_first_name, s.user_last_name, s.user_institution)


def _load(stack: Stack, source: str, ident: str, target: str) -> dict:
    console.note("load: database (pg_restore), repository (rsync), schema migration, process repair")
    database = engine_call(stack, "restore-database", "--profile", source, ident, "--target-db", f"aiida_{target}",
                           "--owner", f"aiida_{target}", "--replace")
    repository = engine_call_writable(stack, "restore-repository", "--profile", source, ident,
                                      "--target-path", f"/aiida-home-rw/repository/{target}", "--replace")
    version = stack.exec_aiida(["verdi", "-p", target, "storage", "version"], capture=True)
    if version.returncode == 4:
        console.note("the backup's schema is older: verdi storage migrate")
        if stack.exec_aiida(["verdi", "-p", target, "storage", "migrate", "--force"], capture=True).returncode:
            raise StackError(f"verdi storage migrate of {target} failed")
    elif version.returncode != 0:
        raise StackError(f"restored storage of {target} is not usable: {version.stdout}{version.stderr}")
    stack.exec_aiida(["verdi", "-p", target, "process", "repair"], capture=True)
    return {"nodes": database["nodes_restored"], "objects": repository["objects_restored"],
            "schema": database.get("schema_version", "?")}


def _check(stack: Stack, target: str, chosen: dict, loaded: dict) -> None:
    nodes = profiles.get(stack, target)["nodes"]
    if nodes != chosen["node_count"] or loaded["objects"] != chosen["repository_object_count"]:
        raise StackError(f"restored {target} does not match the backup: {nodes} nodes (backup: {chosen['node_count']}),"
                         f" {loaded['objects']} objects (backup: {chosen['repository_object_count']})")
    console.step(f"check: {nodes} nodes and {loaded['objects']} repository objects, as in the manifest")


def describe(latest: dict | None) -> str:
    """'3 h ago, 1.2 GB, verified' for a status table."""
    if not latest:
        return "[yellow]none[/]"
    finished = dt.datetime.fromisoformat(latest["finished_at"].replace("Z", "+00:00"))
    hours = (dt.datetime.now(dt.timezone.utc) - finished).total_seconds() / 3600
    age = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.0f} d"
    verified = {True: "verified", False: "[red]verification FAILED[/]", None: "not verified"}[latest["verified"]]
    return f"{age} ago, {_size(latest['bytes_total'])}, {verified}"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

