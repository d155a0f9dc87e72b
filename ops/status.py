"""./stack status: one structured report (services, the aiida service's view, profiles, backups), shown as
tables or printed as JSON (`--json`, for scripts and CI: parse it, not the tables)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from rich.console import Group
from rich.table import Column, Table

from ops import backups, daemon, engine, profiles, runbook, wait
from ops.compose import Stack
from ops.errors import StackError
from ops.services import AIIDA, BACKUP, SERVICES
from ops.settings import Settings

HEALTH_COLOURS = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}


def report(settings: Settings) -> dict:
    """{"stack", "services": {service: {state, health, restarts}}, "aiida", "backup", "profiles"}; a part
    that cannot be read holds {"error": why}; a part of a service that is not running is absent. The
    aiida part (one call, aiida imported once) and the backup part are read at the same time."""
    stack = Stack(settings)
    engine.client()
    states = wait.service_states(stack)
    wait.probe_starting(states)  # the rule `up` waits by: a starting service whose own check passes is healthy
    found: dict = {"stack": settings.name, "services": {
        service: ({key: states[service][key] for key in ("state", "health", "restarts")} if service in states
                  else {"state": "absent", "health": None, "restarts": 0}) for service in SERVICES}}
    with ThreadPoolExecutor(max_workers=2) as pool:
        aiida = pool.submit(_aiida_part, stack) if states.get(AIIDA, {}).get("state") == "running" else None
        backup = pool.submit(_backup_part, stack) if states.get(BACKUP, {}).get("state") == "running" else None
        if aiida is not None:
            found.update(aiida.result())
        if backup is not None:
            found["backup"], latest = backup.result()
            for p in found.get("profiles", []):
                p["last_backup"] = latest.get(p["name"])
    return found


def _aiida_part(stack: Stack) -> dict:
    try:
        listing = profiles.info(stack, state=True)
    except StackError as exc:
        return {"aiida": {"error": str(exc)}}
    names = sorted(p["name"] for p in listing["profiles"])
    return {"aiida": {"plugins": listing["plugins"], "aiida_core": listing["aiida_core"], "profile": listing["default"],
                      "default_profile": listing["default"], "profiles": names,
                      "active_processes": sum((p["schema"] or {}).get("active", 0) for p in listing["profiles"]),
                      "last_change": runbook.last_change(stack)},
            "profiles": listing["profiles"]}


def _backup_part(stack: Stack) -> tuple[dict, dict]:
    """(the schedule's state, profile → its newest backup)."""
    latest: dict = {}
    with contextlib.suppress(StackError):
        for b in backups.published(stack):
            latest.setdefault(b["profile"], b)
    return backups.schedule_state(stack), latest


def view(found: dict) -> Group:
    table = Table("service", "state", "health", "detail", title=f"stack {found['stack']}", title_justify="left")
    detail = {AIIDA: _aiida_detail(found.get("aiida")), BACKUP: backups.schedule_summary(found.get("backup"))}
    for service, st in found["services"].items():
        if st["state"] == "absent":
            table.add_row(service, "[dim]absent[/]", "", "")
            continue
        colour = HEALTH_COLOURS.get(st["health"], "white")
        table.add_row(service, st["state"], f"[{colour}]{st['health']}[/]", detail.get(service) or "")
    if not found.get("profiles"):
        return Group(table)
    return Group(table, profiles_table(found["profiles"], with_backups="backup" in found, with_state=True))


def _aiida_detail(aiida: dict | None) -> str:
    if not aiida:
        return ""
    if "error" in aiida:
        return f"[red]{aiida['error']}[/]"
    plugins = f" with {', '.join(aiida['plugins'])}" if aiida.get("plugins") else ""
    return (f"aiida-core {aiida['aiida_core']}{plugins}; default profile: {aiida['default_profile']}; "
            f"active processes: {aiida['active_processes']}; last upgrade: {runbook.describe(aiida['last_change'])}")


def profiles_table(listing: list[dict], with_backups: bool = False, with_state: bool = False) -> Table:
    """with_state (./stack status): schema, daemon and the repository's storage instead of where things are."""
    where = ["schema", "daemon", "repository"] if with_state else ["database", "repository"]
    others = ["default", "nodes", *where, *(["last backup"] if with_backups else [])]
    columns = [Column("profile", no_wrap=True), *(Column(name, overflow="fold") for name in others)]
    table = Table(*columns, title="profiles", title_justify="left")  # names whole, the rest wraps
    for p in listing:
        nodes = str(p["nodes"]) if p.get("nodes") is not None else f"[red]{p.get('error', '?')}[/]"
        row = [p["name"], "✔" if p["is_default"] else "", nodes]
        if with_state:
            row += [schema_state(p.get("schema")), daemon.describe(p.get("daemon")),
                    storage_state(p.get("repository"), p.get("maintained"))]
        else:
            row += [f"{p['database_name']}@{p['database_hostname']}", p["repository_path"]]
        if with_backups:
            row.append(backups.describe(p.get("last_backup")))
        table.add_row(*row)
    return table


def schema_state(state: dict | None) -> str:
    if not state:
        return "?"
    if state["schema"] == state["head"]:
        return f"{state['schema']} (current)"
    return f"[yellow]{state['schema']}: needs ./stack migrate (to {state['head']})[/]"


def storage_state(repository: dict | None, maintained: dict | None) -> str:
    """Three short lines ('1.0 GB', '12 loose, 2000 packed', 'maintained 2026-12-02 04:20 (full)'): a
    narrow column wraps between them, not inside words; --json has the pack count and the exact time."""
    if not repository:
        return "no repository"
    if "error" in repository:
        return f"[red]{repository['error']}[/]"
    size = repository["bytes_on_disk"]
    shown = f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"
    text = f"{shown}\n{repository['loose']} loose, {repository['packed']} packed\n"
    if not maintained:
        return text + "never maintained"
    kind = "full" if maintained["full"] else "basic"
    return text + f"maintained {maintained['when'][:16].replace('T', ' ')} ({kind})"
