"""./stack archive.*: AiiDA archives (`verdi archive`, sqlite_zip), the how-to's way to share data
between profiles and people (backups are for recovery), from and to host paths.

A file crosses the container boundary as a byte stream through `docker compose exec` (stdin or
stdout of `cat`, as the aiida user): no container path for the user to know, no root-owned copy, no
size limit in memory. In the container it lives in a private scratch folder that is removed however
the command ends (a killed ./stack leaves it to the next archive command, which removes old ones).
"""

from __future__ import annotations

import contextlib
import os
import secrets as token
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from rich.table import Table

from ops import console, locking, profiles
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.inputs import InputError
from ops.interrupts import interrupts_held
from ops.services import AIIDA

SCRATCH = PurePosixPath("/tmp")  # the aiida container's own; folders aiida-stack-archive.*
PREFIX = "aiida-stack-archive."
STALE_MINUTES = 60 * 24


@contextlib.contextmanager
def scratch(stack: Stack) -> Iterator[PurePosixPath]:
    """A private folder in the aiida container (0700, the aiida user's), removed afterwards."""
    folder = SCRATCH / f"{PREFIX}{token.token_hex(6)}"
    # leftovers of a killed ./stack go first; then ours
    done = stack.exec_aiida(["sh", "-c", f'find {SCRATCH} -maxdepth 1 -name "{PREFIX}*" -mmin +{STALE_MINUTES} '
                             f'-exec rm -rf {{}} + ; mkdir -m 700 "{folder}"'], capture=True)
    if done.returncode != 0:
        raise StackError(f"could not make a scratch folder in the aiida service: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        stack.exec_aiida(["rm", "-rf", str(folder)], capture=True)


def _exec_argv(stack: Stack, *argv: str) -> list[str]:
    return stack.command("exec", "-T", "--user", "aiida", AIIDA, *argv)


def send(stack: Stack, source: Path, target: PurePosixPath) -> None:
    """Stream a host file into the aiida container."""
    with source.open("rb") as stream:
        done = subprocess.run(_exec_argv(stack, "sh", "-c", f'cat > "{target}"'), stdin=stream, capture_output=True)
    if done.returncode != 0:
        raise StackError(f"copying {source} into the aiida service failed: {done.stderr.decode().strip()[-500:]}")


def fetch(stack: Stack, source: PurePosixPath, target: Path) -> None:
    """Stream a file out of the aiida container to a host path: written beside it, then renamed."""
    partial = target.with_name(f".{target.name}.partial-{token.token_hex(4)}")
    try:
        with partial.open("xb") as stream:
            done = subprocess.run(_exec_argv(stack, "cat", str(source)), stdout=stream, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise StackError(f"copying the archive out of the aiida service failed: "
                                 f"{done.stderr.decode().strip()[-500:]}")
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def info(stack: Stack, path: PurePosixPath, shown: str, flag: str = "--file") -> dict:
    """What the archive holds; a file that is not an AiiDA archive (or a damaged one) is bad input for
    `flag`: exit 2."""
    done = stack.exec_aiida([profiles.PROFILE_CLI, "archive-info", str(path), "--name", shown], capture=True)
    if done.returncode == 2:
        raise InputError(flag, done.stderr.strip().removeprefix(profiles.PROFILE_CLI + ": "))
    return json_result(done.returncode, done.stdout, f"reading {shown}", done.stderr)


# ------------------------------------------------------------------------------------------ tasks


def inspect(stack: Stack, file: Path) -> dict:
    with scratch(stack) as folder:
        send(stack, file, folder / "in.aiida")
        return info(stack, folder / "in.aiida", str(file))


def export(stack: Stack, file: Path, profile: str, groups: list[str] | None, nodes: list[int] | None,
           every: bool) -> dict:
    if not (every or groups or nodes):
        raise StackError("say what to export: --all, --groups LABEL,... or --nodes PK,...; nothing changed", code=2)
    if every and (groups or nodes):
        raise StackError("--all exports everything: without --groups or --nodes; nothing changed", code=2)
    started = time.monotonic()
    selection = ["--all"] if every else [*(["--groups", *groups] if groups else []),
                                         *(["--nodes", *map(str, nodes)] if nodes else [])]
    with scratch(stack) as folder:
        made = folder / "out.aiida"
        console.note(f"verdi -p {profile} archive create {' '.join(selection)}")
        done = stack.exec_aiida(["verdi", "-p", profile, "archive", "create", str(made), *selection], capture=True)
        if done.returncode != 0:
            raise StackError(f"verdi archive create failed: {_reason(done)}; nothing written", code=done.returncode)
        found = info(stack, made, str(file))
        fetch(stack, made, file)
    found.update(profile=profile, bytes=file.stat().st_size, seconds=round(time.monotonic() - started, 1))
    console.step(f"exported {_counts(found)} of {profile} to {file} ({found['bytes'] / 2**20:.1f} MB, "
                 f"{found['seconds']:.1f} s)")
    return found


def import_(stack: Stack, file: Path, profile: str, wait: bool = True) -> dict:
    """Into an existing profile, under the stack's lock (a restore or full maintenance never runs beside it)."""
    with scratch(stack) as folder:
        staged = folder / "in.aiida"
        send(stack, file, staged)
        return _import_staged(stack, staged, file, profile, wait)


def new_profile(stack: Stack, file: Path, create: Callable[[], None], name: str) -> dict:
    """profile.create --from-archive: the archive is read first (nothing is made for a file that is not
    one), then the profile is created and the archive imported; a failed import removes the profile."""
    with scratch(stack) as folder:
        staged = folder / "in.aiida"
        send(stack, file, staged)
        info(stack, staged, str(file), flag="--from-archive")
        create()
        try:
            return _import_staged(stack, staged, file, name, wait=True)
        except BaseException:
            console.note(f"the import failed: removing the new profile {name}")
            with interrupts_held():
                profiles.delete(stack, name, skip_db=False, skip_repository=False, yes=True, new_default="")
            raise


def _import_staged(stack: Stack, staged: PurePosixPath, file: Path, profile: str, wait: bool) -> dict:
    started = time.monotonic()
    found = info(stack, staged, str(file))  # refuses what is not an archive: nothing imported
    if not found["current"]:
        console.note(f"{file}: archive format {found['version']}, older than {found['latest']}: migrated as it "
                     "is imported (verdi archive import)")
    with locking.held(stack, f"archive import into {profile}", wait=wait):
        before = _nodes(stack, profile)
        console.note(f"verdi -p {profile} archive import {file.name}")
        done = stack.exec_aiida(["verdi", "-p", profile, "archive", "import", str(staged)], capture=True)
        if done.returncode != 0:
            raise StackError(f"verdi archive import into {profile} failed: {_reason(done)}", code=done.returncode)
        after = _nodes(stack, profile)
    found.update(profile=profile, nodes_before=before, nodes_after=after, seconds=round(time.monotonic() - started, 1))
    console.step(f"imported {file} into {profile}: {after - before} new node(s) ({before} → {after}), "
                 f"{found['seconds']:.1f} s")
    return found


def _nodes(stack: Stack, profile: str) -> int:
    entry = next(p for p in profiles.info(stack)["profiles"] if p["name"] == profile)
    if entry["nodes"] is None:
        raise StackError(f"the storage of {profile} cannot be read: {entry.get('error')}")
    return entry["nodes"]


def _reason(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    critical = [line for line in lines if "Critical" in line or "Error" in line]
    return (critical or lines or [f"exit {done.returncode}"])[-1].strip()[-500:]


def _counts(found: dict) -> str:
    entities = found.get("entities") or {}
    return f"{entities.get('Nodes', '?')} nodes, {entities.get('Groups', '?')} groups"


def table(found: dict) -> Table:
    shown = Table("archive", "", title=found["file"], title_justify="left")
    shown.add_row("format", found["version"] + ("" if found["current"] else
                                               f" (older than {found['latest']}: migrated on import)"))
    shown.add_row("written by", f"aiida-core {found['aiida_version']}" if found["aiida_version"] else "?")
    shown.add_row("created", str(found["created"] or "?"))
    for name, count in (found.get("entities") or {}).items():
        shown.add_row(name.lower(), str(count))
    if found.get("objects") is not None:
        shown.add_row("repository objects", str(found["objects"]))
    return shown
