"""Offsite copies over SSH, from the host's side: the offsite identity, host trust, and the sidecar's
push / remote-list / pull (services/backup/stackbackup/offsite.py does the work, with fabric and rsync).

The offsite key and known_hosts live in the state folder's offsite/ (0700, files 0600), apart from the
aiida user's SSH identity (ops/ssh.py): compose.yaml mounts them into the backup sidecar only, so
workflow code in the aiida service can never read them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rich.table import Table

from ops import backups, console, ssh
from ops.compose import Stack
from ops.errors import StackError
from ops.inputs import InputError
from ops.rules import BACKUP_ID_RE, LATEST, parse_offsite
from ops.secrets import write_private
from ops.services import BACKUP
from ops.settings import Settings

AGE_IDENTITY = "age-identity.txt"  # stackbackup.sealed.IDENTITY in the sidecar


def identity(settings: Settings) -> ssh.Identity:
    return ssh.Identity(settings.state_dir / "offsite", BACKUP, f"offsite@{settings.name}")


def split_source(flag: str, raw: str) -> tuple[str, str]:
    """A --from value `TARGET[/ID]` as (TARGET, ID or latest)."""
    head, _, last = raw.rstrip("/").rpartition("/")
    if BACKUP_ID_RE.fullmatch(last) and head and not head.endswith(":"):
        return head, last
    if BACKUP_ID_RE.fullmatch(last):
        raise InputError(flag, f"names a backup but no folder before it (got {raw!r})")
    return raw, LATEST


def install(stack: Stack) -> None:
    """Hand the state folder's offsite files to the sidecar's user now, if it runs (its next start does it
    anyway): a scheduled push uses a key or host trusted since at once."""
    if not stack.is_running(BACKUP):
        return
    done = stack.run("exec", "-T", BACKUP, "backup-offsite-install", capture=True, check=False)
    if done.returncode != 0:
        raise StackError(f"could not hand the offsite files to the backup service: {done.stderr.strip()}")


def trusted(stack: Stack, flag: str, target: str, accept: bool) -> None:
    """Make sure the target's host key is in the offsite known_hosts. First contact (or a changed key)
    needs `accept`; the fingerprints are shown either way, for comparing with what the host's admins say."""
    _, host, port, _ = parse_offsite(target)
    where = identity(stack.settings)
    if ssh.current_key(where) is None:
        raise StackError("the stack has no offsite key: ./stack offsite.keygen makes one (or ./stack "
                         "offsite.import-key PATH); put its public line in the remote user's authorized_keys; "
                         "nothing changed", code=2)
    bracketed = f"[{host}]" if ":" in host else host  # an IPv6 address, as ssh.parse_target reads it
    if ssh.known_keys(where, bracketed, port) and not accept:
        return
    if accept:
        ssh.trust(stack, flag, f"{bracketed}:{port}", yes=True, where=where)
        install(stack)
        return
    scanned = ssh.scan(stack, where, flag, bracketed, port)
    for line in scanned:
        console.err.print(f"{ssh.known_name(host, port)}  {line.split()[1]}  "
                          f"{ssh.fingerprint(' '.join(line.split()[1:]))}")
    raise StackError(f"first contact with {ssh.known_name(host, port)}: its host key fingerprint(s) are shown above. "
                     "Compare them with what its admins publish, then run the command again with "
                     "--accept-host-key; nothing was sent", code=2)


def push(stack: Stack, profile: str, ident: str, every: bool, target: str, accept: bool,
         bwlimit: int | None = None) -> dict:
    trusted(stack, "--to", target, accept)
    console.note(f"pushing {'every backup' if every else ident} of {profile} to {target}: connect → send → "
                 "check (sha256 of every file, on the remote) → publish → prune")
    recipients = stack.settings.backup_offsite_recipients
    if recipients:
        console.note(f"encrypted to {len(recipients)} age recipient(s): a full copy each time, no hard links there")
    args = ["push", "--profile", profile, "--to", target, *(["--all"] if every else ["--id", ident]),
            *(["--bwlimit", str(bwlimit)] if bwlimit else []), "--recipients", " ".join(recipients),
            *(f"--keep-{tier}={getattr(stack.settings, f'backup_keep_{tier}')}"
              for tier in ("last", "daily", "weekly", "monthly"))]
    done = backups.engine_call(stack, *args)
    for one in done["pushed"]:
        if one["state"] == "present":
            console.step(f"{one['id']}: on {done['where']} already; nothing sent")
            continue
        added = one.get("bytes_added_remote")
        what = (f"encrypted, {_mb(one.get('bytes_sent'))} sent; its sha256 checked there" if one.get("encrypted") else
                f"{one['files']} files, {_mb(one['bytes_total'])}; sent {_mb(one.get('bytes_sent'))}"
                + (f", {_mb(added)} new on the remote" if added is not None else "") + "; every file checked there")
        console.step(f"{one['id']} → {done['where']}: {what}; {one['seconds']:.1f} s"
                     + (f"; pruned {', '.join(one['pruned'])}" if one.get("pruned") else ""))
    return done


def remote_list(stack: Stack, profile: str, source: str, accept: bool) -> list[dict]:
    trusted(stack, "--from", source, accept)
    return backups.engine_call(stack, "remote-list", "--profile", profile, "--from", source)["backups"]


def pull(stack: Stack, profile: str, source: str, ident: str, accept: bool, wait: bool = True,
         identity: Path | None = None) -> str:
    """Fetch a backup into this stack's backups (checked there); its id, for the normal restore.
    `identity`: the age identity that decrypts an encrypted copy (else the state folder's)."""
    trusted(stack, "--from", source, accept)
    console.note(f"fetching {ident} of {profile} from {source}: connect → fetch → check → publish")
    key = identity.read_text() if identity else None
    done = backups.engine_call(stack, "pull", "--profile", profile, "--from", source, "--id", ident,
                               "--wait", "86400" if wait else "0", *(["--identity-stdin"] if key else []),
                               input=key)
    if done["state"] == "present":
        console.step(f"{done['id']} is in this stack's backups already; nothing fetched")
    else:
        console.step(f"{done['id']} fetched from {done['where']} ({_mb(done.get('bytes_received'))} received), "
                     f"{len(done['checks'])} checks passed")
    return done["id"]


def age_keygen(stack: Stack, replace: bool) -> str:
    """An age identity for encrypted offsite copies, made by the sidecar's age-keygen and kept in the state
    folder (0600); returns its recipient (public key)."""
    path = identity(stack.settings).ensure() / AGE_IDENTITY
    if path.exists() and not replace:
        raise StackError(f"{path} exists already; --replace makes a new one (the old one is kept aside); nothing "
                         "changed", code=2)
    if not stack.is_running(BACKUP):
        raise StackError("the backup service is not running (./stack up); nothing changed", code=2)
    made = stack.run("exec", "-T", BACKUP, "age-keygen", capture=True, check=False)
    recipient = next((line.split(":", 1)[1].strip() for line in made.stdout.splitlines()
                      if line.startswith("# public key:")), "")
    if made.returncode != 0 or not recipient:
        raise StackError(f"age-keygen failed: {made.stderr.strip()[-500:]}")
    if path.exists():
        aside = path.with_name(f"{AGE_IDENTITY}.replaced-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
        path.rename(aside)
        console.note(f"the old identity is kept as {aside}")
    write_private(path, made.stdout)
    install(stack)
    return recipient


def show(settings: Settings) -> str:
    key = ssh.current_key(identity(settings))
    console.note(f"offsite key: {key.describe() if key else 'none (./stack offsite.keygen)'}")
    known = identity(settings).folder / ssh.KNOWN_HOSTS
    hosts = sorted({line.split(" ", 1)[0] for line in known.read_text().splitlines() if line.strip()}) \
        if known.is_file() else []
    console.note(f"trusted offsite hosts: {', '.join(hosts) or 'none (first push with --accept-host-key)'}")
    return key.public if key else ""


def listing(rows: list[dict]) -> Table:
    return backups.listing(rows)


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"
