"""bench.maintain and bench.archive: what basic maintenance does to the next incremental backup, and
how long an archive of N nodes takes to export and import (issue: maintenance and archives)."""

from __future__ import annotations

import secrets as token
import tempfile
from pathlib import Path

from rich.table import Table

from ops import archives, backups, console, maintain, profiles
from ops.bench import _cleanup, timed
from ops.compose import Stack, json_result
from ops.runner import SCRIPTS, run_script
from ops.settings import Settings


def _profile(stack: Stack, settings: Settings, name: str) -> None:
    profiles.create(stack, name, settings.user_email, settings.user_first_name, settings.user_last_name,
                    settings.user_institution, set_default=False)


def _populate(stack: Stack, name: str, nodes: int, megabytes: float, files: int) -> dict:
    code, out = run_script(stack, SCRIPTS / "bench_populate.py",
                           [str(nodes), str(int(megabytes * 1024 * 1024)), str(files)], profile=name, capture=True)
    made = json_result(code, out, "generating the benchmark data")
    console.step(f"{name}: {made['nodes_created']} nodes, {made['files']} files "
                 f"({made['bytes_written'] / 2**20:.1f} MB) in {made['seconds']} s")
    return made


def maintain_benchmark(settings: Settings, files: int, keep: bool) -> None:
    """A profile (2 000 nodes, 200 files, 200 MB) backed up and packed once; then twice FILES new small
    files (4 KB) and an incremental backup after each: the first without maintenance, the second
    after a basic maintenance (the new loose objects packed)."""
    stack = Stack(settings)
    name = f"bench_{token.token_hex(3)}"
    _profile(stack, settings, name)
    rows = []
    try:
        _populate(stack, name, 2000, 200, 200)
        maintain.run(stack, name, full=False)
        backups.backup(stack, [name], keep=None)
        for label, pack_first in (("without maintenance", False), ("after basic maintenance", True)):
            _populate(stack, name, files, files * 4 / 1024, files)
            packed = timed(maintain.run, stack, name, False)[0] if pack_first else None
            wall, made = timed(backups.backup, stack, [name], keep=None)
            manifest = made[0]["manifest"]
            rows.append((label, packed, wall, sum(made[0]["step_seconds"].values()), manifest["bytes_new"]))
    finally:
        if not keep:
            _cleanup(stack, [name])
    table = Table("incremental backup after new files", "maintenance", "backup (engine)", "wall", "new bytes",
                  title=f"bench.maintain: {files} new files of 4 KB, a 200 MB packed repository",
                  title_justify="left")
    for label, packed, wall, engine, new in rows:
        table.add_row(label, f"{packed:.1f} s" if packed is not None else "-", f"{engine:.2f} s", f"{wall:.1f} s",
                      f"{new / 2**20:.1f} MB")
    console.out.print(table)


def archive_benchmark(settings: Settings, nodes: int, megabytes: int, keep: bool) -> None:
    """NODES nodes (a tenth with files, MEGABYTES in all) exported with --all and imported into a new profile."""
    stack = Stack(settings)
    name = f"bench_{token.token_hex(3)}"
    imported = f"{name}_imported"
    folder = Path(tempfile.mkdtemp(prefix="aiida-stack-bench-", dir=stack.state))
    file = folder / "bench.aiida"
    _profile(stack, settings, name)
    try:
        made = _populate(stack, name, nodes, megabytes, max(1, nodes // 10))
        export_wall, found = timed(archives.export, stack, file, name, None, None, True)
        _profile(stack, settings, imported)
        import_wall, _ = timed(archives.import_, stack, file, imported)
    finally:
        file.unlink(missing_ok=True)
        folder.rmdir()
        if not keep:
            _cleanup(stack, [name, imported])
    table = Table("figure", "value", title=f"bench.archive: {made['nodes_created']} nodes, "
                  f"{made['bytes_written'] / 2**20:.0f} MB of files", title_justify="left")
    table.add_row("archive", f"{found['bytes'] / 2**20:.1f} MB, {found['entities']['Nodes']} nodes")
    table.add_row("export (--all, to a host file)", f"{export_wall:.1f} s ({nodes / export_wall:.0f} nodes/s)")
    table.add_row("import (into a new profile)", f"{import_wall:.1f} s ({nodes / import_wall:.0f} nodes/s)")
    console.out.print(table)
