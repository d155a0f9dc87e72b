"""bench.offsite: pushing a backup offsite, at 1 GB by default. The remote is a throwaway SSH server on
the stack's egress network (the stand-in image of tests/cluster: Debian's sshd and rsync). Figures: a
plain `rsync -a` of the backup folder (the baseline), the first push, an unchanged push, and an
encrypted push (age): time, bytes sent, bytes new on the remote."""

from __future__ import annotations

import re
import secrets as token
import shlex

from rich.table import Table

from ops import backups, console, offsite, ssh, stand_in
from ops.bench import _cleanup, timed
from ops.bench_storage import _populate, _profile
from ops.compose import Stack
from ops.errors import StackError
from ops.services import BACKUP
from ops.settings import Settings

FOLDER = "/home/alice/bench"


def _in_sidecar(stack: Stack, script: str) -> str:
    done = stack.run("exec", "-T", "-u", "stack-backup", "-e", "PYTHONPATH=/opt/backup", BACKUP, "sh", "-c", script,
                     capture=True, check=False)
    if done.returncode != 0:
        raise StackError(f"in the backup service: {done.stderr.strip()[-500:]}")
    return done.stdout


def _baseline(stack: Stack, target: str, profile: str, ident: str) -> dict:
    """A plain `rsync -a` of the backup folder to a fresh folder there, with the offsite key."""
    stack.run("exec", "-T", BACKUP, "backup-offsite-install", capture=True)  # the key and host just trusted
    shell = _in_sidecar(stack, "/opt/backup/bin/python3 -c 'from stackbackup.offsite import Remote; "
                               f'print(Remote("{target}").rsync_shell())\'').strip()
    remote = target.split(":", 1)[0]
    out = _in_sidecar(stack, f"rsync -a --stats -e {shlex.quote(shell)} /backups/{profile}/{ident}/ "
                             f"{remote}:/home/alice/baseline-{ident}/")
    sent = re.search(r"Total bytes sent: ([\d,.]+)", out)
    return {"bytes_sent": int(re.sub(r"[,.]", "", sent[1])) if sent else None}


def _push(stack: Stack, name: str, target: str, recipients: str = "") -> dict:
    done = backups.engine_call(stack, "push", "--profile", name, "--to", target, "--recipients", recipients)
    return done["pushed"][0]


def offsite_benchmark(settings: Settings, megabytes: int, keep: bool) -> None:
    stack = Stack(settings)
    name = f"bench_{token.token_hex(3)}"
    alias = f"bench-offsite-{token.token_hex(3)}"
    target = f"alice@{alias}:{FOLDER}"
    where = offsite.identity(settings)
    made_key = ssh.current_key(where) is None
    container, rows = None, []
    _profile(stack, settings, name)
    try:
        made = _populate(stack, name, 2000, megabytes, max(1, megabytes // 4))
        first = backups.backup(stack, [name], keep=None)[0]["id"]
        container = stand_in.start(settings, alias)
        key = ssh.keygen(where, replace=False, show="offsite.show") if made_key else ssh.current_key(where)
        stand_in.authorize(container, key.public)
        ssh.trust(stack, "--to", alias, yes=True, where=where)
        wall, base = timed(_baseline, stack, target, name, first)
        rows.append(("plain rsync -a of the backup folder", wall, base["bytes_sent"], None))
        wall, one = timed(_push, stack, name, target)
        rows.append(("backup.push, first", wall, one["bytes_sent"], one["bytes_added_remote"]))
        backups.backup(stack, [name], keep=None)
        wall, one = timed(_push, stack, name, target)
        rows.append(("backup.push, unchanged (a new backup, no new data)", wall, one["bytes_sent"],
                     one["bytes_added_remote"]))
        recipient = next(line.split(":", 1)[1].strip() for line in _in_sidecar(stack, "age-keygen 2>/dev/null")
                         .splitlines() if line.startswith("# public key:"))
        wall, one = timed(_push, stack, name, f"alice@{alias}:/home/alice/sealed", recipient)
        rows.append(("backup.push, encrypted (age)", wall, one["bytes_sent"], one["bytes_added_remote"]))
    finally:
        if container is not None:
            container.remove(force=True)
            ssh.write_known(where, alias, 22, [])
        if made_key:
            for path in where.folder.glob("id_*"):
                path.unlink()
        if not keep:
            _cleanup(stack, [name])
    table = Table("offsite copy", "wall", "bytes sent", "new on the remote", title=f"bench.offsite: a backup of "
                  f"{made['bytes_written'] / 2**20:.0f} MB of files ({made['files']} files, {made['nodes_created']} "
                  "nodes) to an SSH server on the stack's network", title_justify="left")
    for label, wall, sent, added in rows:
        table.add_row(label, f"{wall:.1f} s", _mb(sent), _mb(added) if added is not None else "-")
    console.out.print(table)


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"
