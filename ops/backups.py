"""Backups and restores, orchestrated around the backup sidecar's engine (`stack-backup`).

The sidecar does the work (dump, copy, manifest, verify, load); this module orders the runbook's
steps, starts the throwaway PostgreSQL a verification restores into, and stops/starts the daemon.
Restores are ops/restore.py. Each command holds the stack's lock (ops/locking.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets as token
import shutil
from collections.abc import Iterator

from docker.errors import DockerException
from rich.table import Table
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import completion_cache, console, engine, locking, profiles, secrets
from ops.compose import Stack, last_json
from ops.errors import StackError
from ops.rules import LATEST
from ops.services import BACKUP, POSTGRES
from ops.services import BACKUP_ENGINE as ENGINE


def result(done, what: str, failure_has_result: str | None = None) -> dict:
    """The engine's JSON result; StackError with its reason if it failed, unless the failure still
    carries a result with the key `failure_has_result` (verify exits 1 with its checks)."""
    result = last_json(done.stdout) or {}
    if done.returncode != 0 and not (failure_has_result and failure_has_result in result):
        reason = result.get("error") or (done.stderr or "").strip()[-1500:] or f"exit {done.returncode}"
        raise StackError(f"{what}: {reason}", code=2 if done.returncode == 2 else 1)
    return result


def failures(checked: dict) -> str:
    """The failed checks of a verify result, for a message."""
    return "; ".join(f"{c['name']}: {c.get('detail')}" for c in checked["checks"] if not c["ok"])


def engine_call(stack: Stack, *args: str, input: str | None = None, failure_has_result: str | None = None) -> dict:
    """`stack-backup ARGS` in the running sidecar (AiiDA home mounted read-only)."""
    done = stack.run("exec", "-T", *locking.token_args(stack), BACKUP, ENGINE, *args, capture=True, check=False,
                     input=input)
    return result(done, f"{ENGINE} {args[0]}", failure_has_result)


# ------------------------------------------------------------------------------------------ backup


def backup(stack: Stack, names: list[str], keep: int | None, aiida_version: str | None = None,
           wait: bool = True) -> list[dict]:
    """Back up each profile; `aiida_version`: the aiida-core that wrote the data (default: the settings')."""
    if keep is not None and keep < 1:
        raise StackError("--keep must be at least 1 (the newest backup is never pruned)", code=2)
    with locking.held(stack, f"backup of {', '.join(names)}", wait=wait):
        return [_backup_one(stack, name, keep, aiida_version) for name in names]


def _backup_one(stack: Stack, name: str, keep: int | None, aiida_version: str | None) -> dict:
    console.note(f"backing up {name}: lock → dump database → copy repository → manifest → publish → verify")
    args = ["backup", "--profile", name, "--aiida-version", aiida_version or stack.settings.aiida_core_version]
    done = engine_call(stack, *args, *(["--keep", str(keep)] if keep else []))
    m = done["manifest"]
    console.step(f"{name}: {done['id']} — {m['node_count']} nodes, {_size(m['bytes_total'])} "
                 f"({_size(m['bytes_new'])} new) in {m['duration_seconds']:.1f} s"
                 + (f"; pruned {', '.join(done['pruned'])}" if done.get("pruned") else ""))
    # checksums and every object's content, as the scheduled runs do: the next backup links only to a
    # verified one, and a rotten file shows up now rather than at a restore
    checked = verify(stack, name, done["id"], scratch=False, repair=True)
    repaired = next((c for c in checked["checks"] if c["name"] == "repaired_from_live"), None)
    if repaired:
        console.note(f"{name}: rot in the backup: {repaired['detail']}")
    if not checked["ok"]:
        raise StackError(f"backup {done['id']} of {name} was published but FAILED its verification "
                         f"({failures(checked)}); "
                         "no later backup links to it")
    console.step(f"{name}: {done['id']} verified ({len(checked['checks'])} checks)")
    return done


def profile_names(stack: Stack, profile: str, every: bool) -> list[str]:
    listing = profiles.info(stack)
    if every:
        return [p["name"] for p in listing["profiles"]]
    return [profiles.get(stack, profile)["name"] if profile else listing["default"]]


def ids(stack: Stack, profile: str) -> list[str]:
    """The published backup ids of `profile`, newest first."""
    return [b["id"] for b in published(stack, profile)]


def published(stack: Stack, profile: str = "") -> list[dict]:
    args = ["list", *(["--profile", profiles.validate_name(profile)] if profile else [])]
    found = engine_call(stack, *args)["backups"]
    completion_cache.write("backups", [LATEST, *(b["id"] for b in found)])
    return found


def listing(found: list[dict]) -> Table:
    """backup.list's table of `published` backups: profile and id always whole."""
    rows = [[b["profile"], b["id"], "✔" if b["latest"] else "",
             {True: "[green]yes[/]", False: "[red]FAILED[/]", None: "no"}[b["verified"]],
             b["finished_at"][:19].replace("T", " "), _size(b["bytes_total"]), _size(b["bytes_new"]),
             str(b["node_count"])] for b in found]
    columns = [("profile", True), ("id", True), ("latest", False), ("verified", False), ("finished (UTC)", False),
               ("size", False), ("new", False), ("nodes", False)]
    return console.fitted_table("backups", columns, rows)


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
    secrets.write_private(folder / "backup_db_password", token.token_urlsafe(24))
    # The image the stack's PostgreSQL runs (not the current sources' tag): same server, same version.
    image = stack.container(POSTGRES).attrs["Config"]["Image"]
    try:
        container = docker.containers.run(
            image, detach=True, name=name, network=f"{stack.settings.name}_backend",
            environment={"POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
                         "AIIDA_DB_PASSWORD_FILE": "/run/secrets/aiida_db_password", "AIIDA_PROFILE": "scratch",
                         "BACKUP_DB_PASSWORD_FILE": "/run/secrets/backup_db_password"},
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


def verify(stack: Stack, profile: str, ident: str, scratch: bool = True, wait: bool = True,
           repair: bool = False) -> dict:
    """Checksums, repository objects (and content); with `scratch` also a real restore of the dump into a
    throwaway PostgreSQL, its node count and the objects it references. `repair`: re-copy rotten loose
    objects from the live repository (a new backup's verification)."""
    args = ["verify", "--profile", profile, ident, *(["--repair-from-live"] if repair else [])]
    with locking.held(stack, f"verify of {profile} {ident}", wait=wait):
        if not scratch:
            return engine_call(stack, *args, failure_has_result="checks")
        with scratch_postgres(stack) as (host, password):
            return engine_call(stack, *args, "--scratch-host", host, input=password + "\n",
                               failure_has_result="checks")


def checks_table(result: dict) -> Table:
    table = Table("check", "result", "detail", title=f"verify {result.get('id')}", title_justify="left")
    for check in result["checks"]:
        table.add_row(check["name"], "[green]ok[/]" if check["ok"] else "[red]FAILED[/]", str(check.get("detail", "")))
    return table


def find(stack: Stack, profile: str, ident: str) -> dict:
    for b in published(stack, profile):
        if b["id"] == ident or (ident == "latest" and b["latest"]):
            return b
    raise StackError(f"no backup {ident!r} of profile {profile!r}", code=2)


def schedule_state(stack: Stack) -> dict:
    """The scheduler's state (schedule, last run, next due, healthy, the last run's "error") and where
    backups go ("where"); {"where", "unreadable"} when the sidecar does not answer."""
    folder = stack.settings.backups_path
    where = str(folder) if folder else f"volume {stack.settings.name}_backups"
    try:
        return {**engine_call(stack, "schedule-status"), "where": where}
    except StackError as exc:
        return {"where": where, "unreadable": str(exc)}


def schedule_summary(state: dict | None) -> str:
    """One line of a status table from schedule_state: where backups go, the schedule, the last run."""
    if not state:
        return ""
    where = f"backups in {state['where']}"
    if "unreadable" in state:
        return f"{where}; [red]scheduler state unreadable: {state['unreadable']}[/]"
    if state.get("schedule_kind") in (None, "off"):
        return f"{where}; schedule off (./stack backup runs them)"
    parts = [where, f"schedule {state['schedule']}"]
    if state.get("maintenance"):
        parts.append("basic maintenance first")
    if state.get("read_share") not in (None, "off"):
        parts.append(f"each run also reads {state['read_share']} of the older backups")
    if state.get("offsite_target"):
        pushed = state.get("offsite") or {}
        parts.append(f"offsite to {state['offsite_target']} every {_span(state.get('offsite_interval'))}"
                     + (f", last push ok at {_short(pushed.get('last_finished'))}" if pushed and not pushed.get("error")
                        else f", [red]last push FAILED: {pushed['error']}[/]" if pushed.get("error") else ""))
    if state.get("last_result") == "failed":
        parts.append(f"[red]last run FAILED at {_short(state.get('last_run_finished'))}: {state.get('error')}[/]")
    elif state.get("last_result") == "ok":
        parts.append(f"last run ok at {_short(state.get('last_run_finished'))}")
    if state.get("next_due"):
        parts.append(f"next {_short(state['next_due'])}")
    if not state.get("healthy", True):
        parts.append(f"[red]{state.get('reason')}[/]")
    return "; ".join(parts)


def _span(seconds: int | None) -> str:
    if not seconds:
        return "?"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _short(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else "?"


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

