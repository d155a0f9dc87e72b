"""./stack maintain: AiiDA's storage maintenance (`verdi storage maintain`), as the how-to asks for it.

basic (online):  lock → maintain → record: unreferenced objects deleted, loose objects packed while the
                 daemon runs.
--full:          lock → drain → stop daemon → maintain --full → start: also repacks and vacuums, which
                 needs the profile unused. AiiDA's own profile lock sees only processes in its container;
                 the stack's lock keeps backups, restores and other maintenance of every container out.
--dry-run:       what would be done (verdi's own dry run), the repository as it is; nothing changes.
"""

from __future__ import annotations

from rich.table import Table

from ops import console, locking, profiles, runbook
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.lifecycle import Deployed
from ops.settings import Settings


def maintain(settings: Settings, profile: str | None, every: bool, full: bool, dry_run: bool, yes: bool,
             wait_idle: bool, wait_lock: bool = True) -> Table:
    stack = Stack(settings)
    names = _names(stack, profile, every)
    if dry_run:  # verdi's full dry run takes AiiDA's profile lock: it would fail beside the running daemon
        if full:
            console.note("--full would also repack the packs and vacuum the index, with the daemon stopped; the "
                         "dry run shows what the maintenance of the objects does")
        return _table([run(stack, name, full=False, dry_run=True) for name in names], dry_run=True)
    if full:
        console.confirm(yes, f"Full maintenance of {', '.join(names)}: the daemon of each stops until it is done "
                        "(active processes are waited for with --wait, else refused).", "maintain")
    with locking.held(stack, f"{'full ' if full else ''}maintenance of {', '.join(names)}", wait=wait_lock):
        if not full:
            return _table([run(stack, name, full=False) for name in names])
        return _table(_full(stack, names, wait_idle))


def _names(stack: Stack, profile: str | None, every: bool) -> list[str]:
    if profile and every:
        raise StackError("--profile and --all exclude each other", code=2)
    listing = profiles.names(stack)
    if every:
        return listing["profiles"]
    name = profiles.validate_name(profile or listing["default"])
    if name not in listing["profiles"]:
        raise StackError(f"no profile {name!r} (profiles: {', '.join(listing['profiles'])}); nothing changed", code=2)
    return [name]


def run(stack: Stack, name: str, full: bool, dry_run: bool = False) -> dict:
    """`aiida-stack-profile maintain` in the aiida service: verdi's maintenance, measured before and after."""
    console.note(f"{name}: verdi storage maintain{' --full' if full else ''}{' --dry-run' if dry_run else ''}")
    done = stack.exec_aiida([profiles.PROFILE_CLI, "maintain", name, *(["--full"] if full else []),
                             *(["--dry-run"] if dry_run else [])], capture=True)
    result = json_result(done.returncode, done.stdout, f"maintaining the storage of {name}", done.stderr)
    for line in done.stdout.splitlines():
        if line.startswith("  verdi: ") and dry_run:
            console.note(line.strip())
    console.step(f"{name}: {_reclaimed(result)}")
    return result


def _full(stack: Stack, names: list[str], wait_idle: bool) -> list[dict]:
    running = Deployed.running(stack)
    change = runbook.Change(stack, "maintain", names, running.version)
    change.drain(wait_idle, pause=False)  # refuses (or waits) while processes are active: nothing changed
    results: list[dict] = []
    try:
        change.stop_daemon()
        with change.journal.step("maintain --full"):
            results = [run(stack, name, full=True) for name in names]
        change.start()
    except BaseException as exc:
        raise change.roll_back(exc, f"full maintenance of {', '.join(names)}") from None
    change.succeeded()
    return results


def _reclaimed(result: dict) -> str:
    before, after = result.get("before"), result.get("after")
    if not before or not after:
        return f"no repository to measure ({result['seconds']:.1f} s)"
    if result["dry_run"]:
        return (f"{before['loose']} loose and {before['packed']} packed objects, {_mb(before['bytes_on_disk'])} "
                "on disk (dry run: nothing changed)")
    return (f"{before['loose'] - after['loose']} loose object(s) packed or deleted, "
            f"{_mb(before['bytes_on_disk'])} → {_mb(after['bytes_on_disk'])} on disk in {result['seconds']:.1f} s")


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _table(results: list[dict], dry_run: bool = False) -> Table:
    table = Table("profile", "loose", "packed", "packs", "on disk", "seconds",
                  title="storage maintenance" + (" (dry run: nothing changed)" if dry_run else ""),
                  title_justify="left")
    for result in results:
        before, after = result.get("before") or {}, result.get("after") or {}
        row = [f"{before.get(key, '?')} → {after.get(key, '?')}" for key in ("loose", "packed", "packs")]
        disk = f"{_mb(before.get('bytes_on_disk', 0))} → {_mb(after.get('bytes_on_disk', 0))}"
        table.add_row(result["profile"] + (" (full)" if result["full"] else ""), *row, disk, f"{result['seconds']:.1f}")
    return table
