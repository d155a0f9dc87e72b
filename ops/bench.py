"""Benchmarks that print their figures (targets are met here, never in a timed test)."""

from __future__ import annotations

import os
import secrets as token
import time

from packaging.version import Version
from rich.table import Table

from ops import backups, console, lifecycle, profiles, restore
from ops.compose import Stack, json_result
from ops.environment import Environment
from ops.errors import StackError
from ops.inputs import InputError
from ops.runner import SCRIPTS, run_script
from ops.services import AIIDA_HOME_IN_AIIDA, AIIDA_HOME_IN_BACKUP, BACKUP, BACKUP_USER
from ops.settings import Settings, load


def engine_benchmark(settings: Settings, n: int, workers: int, time_up: bool) -> None:
    if n < 1 or workers < 1:
        raise StackError("-n and --workers must be at least 1", code=2)
    table = Table("figure", "value", title="aiida-stack benchmark", title_justify="left")
    if time_up:
        from ops import warmstart  # its breakdown: ./stack bench.up

        seconds = warmstart.warm_up(settings)[0]
        table.add_row("warm ./stack up → healthy", f"{seconds:.1f} s (target ≤ {warmstart.TARGET:.0f} s)")
    console.note(f"submitting {n} core.arithmetic.add calculations to {workers} daemon workers")
    code, out = run_script(Stack(settings), SCRIPTS / "bench_arithmetic.py", [str(n), str(workers)], capture=True)
    result = json_result(code, out, "the engine benchmark")
    table.add_row("processes / workers", f"{result['processes']} / {result['workers']}")
    table.add_row("finished ok", f"{result['finished_ok']} of {result['processes']}")
    table.add_row("submission", f"{result['submit_seconds']} s")
    table.add_row("submit → all terminated", f"{result['seconds']} s")
    table.add_row("seconds per process", f"[bold]{result['seconds_per_process']}[/] s "
                  "(docs: 0.47/0.28/0.16 s for 1/2/4 workers on a 6-core desktop)")
    console.out.print(table)
    if result["finished_ok"] != n:
        raise StackError(f"only {result['finished_ok']} of {n} calculations finished ok")


# ------------------------------------------------------------------------------------ bench.backup

BASELINE = """set -eu
export PGUSER="${BACKUP_DB_USER:-stack_backup}"  # the role backups dump as
out=/backups/.bench-baseline-$$
trap 'rm -rf "$out"' EXIT
mkdir -m 0700 "$out"
t0=$(date +%s%N)
pg_dump --file="$out/database.sql" "$1"
t1=$(date +%s%N)
cp -a "$2" "$out/container"
t2=$(date +%s%N)
sync
t3=$(date +%s%N)
printf '{"pg_dump": %s, "cp": %s, "sync": %s, "bytes": %s}\\n' "$(( (t1 - t0) / 1000000 ))" \
    "$(( (t2 - t1) / 1000000 ))" "$(( (t3 - t2) / 1000000 ))" "$(du -sb "$out" | cut -f1)"
"""


def baseline(stack: Stack, profile: dict) -> dict:
    """Plain `pg_dump` (SQL, as the AiiDA how-to) + `cp -a` of the repository, timed inside the sidecar;
    then the `sync` that makes the copy durable (a backup syncs before it publishes), timed apart."""
    container = profile["repository_path"].replace(AIIDA_HOME_IN_AIIDA, AIIDA_HOME_IN_BACKUP, 1) + "/container"
    done = stack.run("exec", "-T", "-u", BACKUP_USER, BACKUP, "sh", "-c", BASELINE, "baseline",
                     profile["database_name"], container, capture=True, check=False)
    result = json_result(done.returncode, done.stdout, "the pg_dump + cp -a baseline", done.stderr)
    return {"seconds": (result["pg_dump"] + result["cp"]) / 1000, "pg_dump": result["pg_dump"] / 1000,
            "cp": result["cp"] / 1000, "sync": result["sync"] / 1000, "bytes": result["bytes"]}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(wall seconds, value) of fn(...), after a sync: no phase pays for flushing the previous one's writes."""
    os.sync()
    start = time.monotonic()
    value = fn(*args, **kwargs)
    return time.monotonic() - start, value


def backup_benchmark(settings: Settings, nodes: int, megabytes: int, files: int, keep: bool) -> None:
    """Generate a profile, then time full backup, unchanged incremental, restore, and the baseline."""
    if nodes < 10 or megabytes < 1:
        raise StackError("--nodes must be at least 10 and --megabytes at least 1", code=2)
    stack = Stack(settings)
    name = f"bench_{token.token_hex(3)}"
    restored = f"{name}_restored"
    s = settings
    console.note(f"creating profile {name}")
    profiles.create(stack, name, s.user_email, s.user_first_name, s.user_last_name, s.user_institution,
                    set_default=False)
    try:
        console.note(f"generating {nodes} nodes and {megabytes} MB of files (random bytes) in {name}")
        code, out = run_script(stack, SCRIPTS / "bench_populate.py",
                               [str(nodes), str(megabytes * 1024 * 1024), *([str(files)] if files else [])],
                               profile=name, capture=True)
        made = json_result(code, out, "generating the benchmark profile")
        console.step(f"{made['nodes_created']} nodes, {made['links_created']} links, {made['files']} files "
                     f"({made['bytes_written'] / 2**20:.0f} MB) in {made['seconds']} s")
        profile = profiles.get(stack, name)

        console.note("baseline: pg_dump + cp -a of the repository")
        base = [timed(baseline, stack, profile)[1]]
        console.step(f"baseline {base[0]['seconds']:.1f} s")
        full_wall, full = timed(backups.backup, stack, [name], keep=None)
        incr_wall, incr = timed(backups.backup, stack, [name], keep=None)
        console.note(f"restore {name}/latest as {restored}")
        restore_wall, _ = timed(restore.restore, stack, "latest", name, restored, False)
        console.note(f"restore {name}/latest over {name} itself (--yes: safety backup, its daemon stops for the swap)")
        over = restore.restore(stack, "latest", name, name, True)
        console.note("baseline again (the machine's state after the runs)")
        base.append(timed(baseline, stack, profile)[1])
    finally:
        if not keep:
            _cleanup(stack, [name, restored])
    console.out.print(_backup_table(nodes, megabytes, base, full[0], full_wall, incr[0], incr_wall, restore_wall,
                                    over))


def _cleanup(stack: Stack, names: list[str]) -> None:
    existing = {p["name"] for p in profiles.info(stack)["profiles"]}
    for name in names:
        if name in existing:
            profiles.delete(stack, name, skip_db=False, skip_repository=False, yes=True, new_default="")
        done = stack.run("exec", "-T", "-u", BACKUP_USER, BACKUP, "rm", "-rf", f"/backups/{name}", capture=True,
                         check=False)
        if done.returncode != 0:
            raise StackError(f"could not remove the benchmark's backups /backups/{name} in the backup service: "
                             f"{done.stderr.strip() or done.returncode}; remove them by hand")
    console.step(f"removed {', '.join(names)} and their backups (--keep keeps them)")


def _backup_table(nodes: int, megabytes: int, base: list[dict], full_run: dict, full_wall: float, incr_run: dict,
                  incr_wall: float, restore_wall: float, over: restore.Restored) -> Table:
    full, incr = full_run["manifest"], incr_run["manifest"]
    # the sum of the steps: the manifest's duration stops where the manifest is written, before publish
    full_s, incr_s = sum(full_run["step_seconds"].values()), sum(incr_run["step_seconds"].values())
    baseline_s = sum(b["seconds"] for b in base) / len(base)
    synced_s = sum(b["seconds"] + b["sync"] for b in base) / len(base)
    table = Table("figure", "value", "target", title=f"backup benchmark: {nodes} nodes, {megabytes} MB of files",
                  title_justify="left")
    table.add_row("pg_dump + cp -a (baseline)", " / ".join(
        f"{b['seconds']:.2f} s (pg_dump {b['pg_dump']:.2f} + cp {b['cp']:.2f}), then sync {b['sync']:.2f} s"
        for b in base), "")
    table.add_row("full backup", f"{full_s:.2f} s ({full_wall:.1f} s wall), {_mb(full['bytes_total'])} written", "")
    table.add_row("  steps", _steps(full_run), "")
    table.add_row("  ÷ baseline (mean)", _verdict(full_s / baseline_s, 1.3), "≤ 1.3")
    table.add_row("  ÷ baseline + its sync", _verdict(full_s / synced_s, 1.3), "")
    table.add_row("unchanged incremental", f"{incr_s:.2f} s ({incr_wall:.1f} s wall), "
                  f"{_mb(incr['bytes_new'])} new of {_mb(incr['bytes_total'])}", "")
    table.add_row("  steps", _steps(incr_run), "")
    table.add_row("  time ÷ full", _verdict(incr_s / full_s, 0.10), "≤ 10 %")
    table.add_row("  new bytes ÷ full", _verdict(incr["bytes_new"] / full["bytes_total"], 0.01), "≤ 1 %")
    table.add_row("restore into a new profile (verify, stage, swap, check)", f"{restore_wall:.1f} s wall", "")
    table.add_row("  ÷ full backup (wall)", _verdict(restore_wall / full_wall, 2.0), "≤ 2")
    table.add_row("restore over the profile (+ safety backup)", f"{over.seconds:.1f} s", "")
    table.add_row("  daemon down (stop → swap → check → start)", f"{over.downtime:.1f} s", "≤ 2 s + the swap")
    return table


def _steps(run: dict) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in (run.get("step_seconds") or {}).items())


def _verdict(ratio: float, target: float) -> str:
    shown = f"{ratio * 100:.2f} %" if target < 1 else f"{ratio:.2f}"
    return f"[green]{shown}[/]" if ratio <= target else f"[red]{shown}[/]"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


# ----------------------------------------------------------------------------------- bench.upgrade


def upgrade_benchmark(settings: Settings, nodes: int, megabytes: int, from_version: str, keep: bool) -> None:
    """A throwaway stack on aiida-core FROM with NODES nodes and MEGABYTES of files, upgraded to the
    settings' environment by ./stack upgrade: its duration, each step's share, the daemon's downtime."""
    from ops import runbook, upgrade  # upgrade builds on lifecycle, which this module also uses

    if Version(from_version) >= Version(settings.aiida_core_version):
        raise InputError("--from-version", f"must be older than the settings' {settings.aiida_core_version}")
    start = Environment(from_version)
    if not start.lock.is_file():
        raise InputError("--from-version", f"aiida-core {from_version} has no lock ({start.lock.name}): ./stack lock "
                         "with that version first")
    name = f"{settings.name}-bench-upgrade"
    old = load(name=name, aiida_core_version=from_version, plugins=[], backup_schedule="off")
    new = load(name=name, backup_schedule="off")
    try:
        console.note(f"throwaway stack {name} on aiida-core {from_version}")
        lifecycle.up(old)
        stack = Stack(old)
        console.note(f"generating {nodes} nodes and {megabytes} MB of files")
        code, out = run_script(stack, SCRIPTS / "bench_populate.py", [str(nodes), str(megabytes * 1024 * 1024)],
                               capture=True)
        made = json_result(code, out, "generating the benchmark data")
        console.step(f"{made['nodes_created']} nodes, {made['bytes_written'] / 2**20:.0f} MB in {made['seconds']} s")
        wall, _ = timed(upgrade.upgrade, new, yes=True, wait_idle=False, pause=False)
        record = runbook.history(stack)[-1]
    finally:
        if not keep:
            lifecycle.remove_throwaway(old)
    table = Table("figure", "value", title=f"upgrade aiida-core {from_version} → {new.aiida_core_version}",
                  title_justify="left")
    table.add_row("data", f"{made['nodes_created']} nodes, {made['bytes_written'] / 2**20:.0f} MB of files")
    table.add_row("./stack upgrade, whole command", f"{wall:.1f} s")
    table.add_row("  check (new image built or found, smoke test)", f"{wall - record['seconds']:.1f} s")
    table.add_row("  the runbook, drain → record", f"[bold]{record['seconds']:.1f} s[/] (100 %)")
    for step, seconds in record["steps"].items():
        table.add_row(f"    {step}", f"{seconds:.1f} s ({100 * seconds / record['seconds']:.0f} %)")
    rest = record["seconds"] - sum(record["steps"].values())
    table.add_row("    drain + record", f"{rest:.1f} s ({100 * rest / record['seconds']:.0f} %)")
    table.add_row("daemon downtime (stop → started)", f"[bold]{record['daemon_downtime']:.1f} s[/]")
    console.out.print(table)
