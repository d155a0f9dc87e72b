"""Offsite copies over SSH: push published backups to [user@]host:path, list them there, pull one back.

The remote holds one folder per profile, laid out as /backups (stack_rules: OFFSITE_*):
`<profile>/<id>/` complete and checked, `<profile>/latest`, and `<profile>/.incoming-<id>/` while a push
sends it. A push of one backup reads: connect → send → check → publish → prune.
- send: rsync over OpenSSH into .incoming-<id>, with --link-dest to the remote's newest copy, so remote
  copies share unchanged files as the local ones do; an interrupted push leaves only .incoming-<id>,
  which the next push of that backup resumes (rsync skips what arrived) and any other push removes.
- check: the remote recomputes the sha256 of every file (sha256sum -c) against the sums of the local,
  verified backup, and holds no file more.
- publish: one rename on the remote; `latest` names the newest id there.
- prune: the local tiered retention (BACKUP_KEEP_*), applied to the remote's ids.
SSH: the offsite key and known_hosts only (OFFSITE_HOME), host keys checked strictly, no agent, no
password; fabric (paramiko) runs the remote commands, OpenSSH carries rsync. Connecting and listing
are retried with backoff (tenacity); sending, publishing and pruning are not.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import stack_ssh
from stack_rules import BACKUP_ID_RE, OFFSITE_HOME, OFFSITE_INCOMING, parse_offsite, parse_recipients

from stackbackup.common import EXIT_INPUT, Fail, run, say, sha256_file, step
from stackbackup.layout import (
    BACKUPS,
    READING,
    check_profile_name,
    profile_dir,
    reading,
    resolve,
    write_json_atomic,
)
from stackbackup.manifest import read_manifest
from stackbackup.retention import id_time, select
from stackbackup.schedule import DEFAULTS
from stackbackup.sealed import SUFFIX, sealed_name
from stackbackup.sealed import send as send_sealed

CONNECT_TIMEOUT = stack_ssh.CONNECT_TIMEOUT
SUMS_CACHE = ".offsite-sums.json"  # per profile: sha256 by (inode, size, mtime), hard links hashed once
PUSH_LOCK = BACKUPS / ".offsite.lock"


# ------------------------------------------------------------------------------------------------
# the remote


class Remote(stack_ssh.Session):
    """One offsite target: its SSH session (stack_ssh, shared with the host) and what rsync's ssh needs."""

    def __init__(self, target: str, home: Path = Path(OFFSITE_HOME)) -> None:
        try:
            user, host, port, self.path = parse_offsite(target)
        except ValueError as exc:
            raise Fail(f"offsite target {exc}", EXIT_INPUT) from None
        self.target = target
        key = stack_ssh.find_key(home)
        if key is None:
            raise Fail("the stack has no offsite key: ./stack offsite.keygen makes one (or offsite.import-key)",
                       EXIT_INPUT)
        super().__init__(user or "stack-backup", host, port, key, home / "known_hosts",
                         key_hint=f"add the line ./stack offsite.show prints to ~{user or 'stack-backup'}/"
                                  ".ssh/authorized_keys there",
                         trust_hint="run the command again with --accept-host-key (it shows the host key's "
                                    "fingerprint first)")

    def error(self, message: str, bad_input: bool = False) -> Exception:
        return Fail(message, EXIT_INPUT if bad_input else 1)

    def base(self, profile: str) -> str:
        return f"{self.path}/{profile}"

    def ssh_options(self) -> list[str]:
        """OpenSSH with only the offsite key and known_hosts, never prompting (rsync's and data streams')."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-p", str(self.port)]

    def ssh_argv(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [*self.ssh_options(), f"{self.user}@{host}"]

    def rsync_shell(self) -> str:
        return " ".join(shlex.quote(a) for a in self.ssh_options())

    def spec(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}"

    def entries(self, profile: str) -> tuple[list[str], list[str], set[str]]:
        """(published ids oldest first, the .incoming-* pushes under way, the ids kept encrypted) of a
        profile on the remote."""
        out = self.run(f"cd {shlex.quote(self.base(profile))} 2>/dev/null && ls -1A || true", timeout=60)
        names = out.split()
        sealed = {n[:-len(SUFFIX)] for n in names if n.endswith(SUFFIX) and BACKUP_ID_RE.fullmatch(n[:-len(SUFFIX)])}
        ids = sorted({n for n in names if BACKUP_ID_RE.fullmatch(n)} | sealed)
        return ids, [n for n in names if n.startswith(OFFSITE_INCOMING)], sealed


# ------------------------------------------------------------------------------------------------
# local sums


def sums_text(folder: Path) -> tuple[str, int, int]:
    """`sha256sum` lines of every file of a backup (paths relative to it), the file count and bytes.
    Hashes are cached per profile by (inode, size, mtime): files shared by hard links are read once."""
    cache_path = folder.parent / SUMS_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, str] = {}
    lines, count, total = [], 0, 0
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(current) / name
            if path.parent == folder and name == READING:
                continue
            st = os.lstat(path)
            key = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            digest = cache.get(key) or sha256_file(path)
            fresh[key] = digest
            lines.append(f"{digest}  ./{path.relative_to(folder)}\n")
            count, total = count + 1, total + st.st_size
    write_json_atomic(cache_path, fresh)  # this backup's files: the next backup shares most of them
    return "".join(lines), count, total


# ------------------------------------------------------------------------------------------------
# push


@contextlib.contextmanager
def push_lock() -> Iterator[None]:
    """One push or pull at a time (the stack's lock is not held: a slow link must not hold up backups)."""
    fd = os.open(PUSH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Fail("another offsite push or pull is running", 3) from None
        yield
    finally:
        os.close(fd)


def stats(out: str) -> dict:
    """rsync --stats: bytes sent and files transferred."""
    found = {}
    for key, pattern in (("bytes_sent", r"Total bytes sent: ([\d,.]+)"),
                         ("files_sent", r"Number of regular files transferred: ([\d,.]+)")):
        match = re.search(pattern, out)
        found[key] = int(re.sub(r"[,.]", "", match[1])) if match else None
    return found


def push_one(remote: Remote, profile: str, ident: str, policy: dict, bwlimit: int | None = None,
             recipients: list[str] | None = None) -> dict:
    folder, ident = resolve(profile, ident)
    manifest = read_manifest(folder)
    if manifest.get("verified") is False:
        raise Fail(f"backup {ident} of {profile} failed its verification: it is not pushed", EXIT_INPUT)
    base = remote.base(profile)
    q = shlex.quote
    started = time.monotonic()
    with reading(folder):
        with step("connect"):
            # absolute: rsync 3.2.7 resolves a relative --link-dest wrongly for delta transfers of changed
            # files (measured: "failed verification -- update discarded")
            absolute = remote.run(f"mkdir -p {q(base)} && cd {q(base)} && pwd -P", timeout=60).strip()
            ids, incoming, sealed = remote.entries(profile)
        if ident in ids:
            return {"id": ident, "state": "present", "seconds": round(time.monotonic() - started, 2)}
        plain = [i for i in ids if i not in sealed]
        prev = max((i for i in plain if i < ident), default=None) or (plain[-1] if plain else None)
        part = f"{OFFSITE_INCOMING}{ident}"
        stale = [n for n in incoming if n != part]
        if stale:
            say(f"removing interrupted pushes on the remote: {', '.join(stale)}")
            remote.run(f"cd {q(base)} && rm -rf -- {' '.join(q(n) for n in stale)}")
        newest = max([*ids, ident])
        if recipients:
            sent = send_sealed(remote, folder, base, ident, recipients)
            sealed.add(ident)
            remote.run(f"cd {q(base)} && ln -sfn {q(sealed_name(newest) if newest in sealed else newest)} "
                       f".latest-new && mv -T .latest-new latest")
            with step("prune"):
                pruned = prune_remote(remote, profile, [*ids, ident], newest, policy)
            return {"id": ident, "state": "pushed", "previous": None, "bytes_total": manifest.get("bytes_total"),
                    **sent, "bytes_added_remote": sent["bytes_sent"], "pruned": pruned,
                    "seconds": round(time.monotonic() - started, 2)}
        with step("send"):
            sums, count, total = sums_text(folder)
            argv = ["rsync", "-a", "--delete", "--stats", f"--exclude=/{READING}", "-e", remote.rsync_shell(),
                    *([f"--bwlimit={bwlimit}"] if bwlimit else []),
                    *([f"--link-dest={absolute}/{prev}"] if prev else []), f"{folder}/", remote.spec(f"{base}/{part}/")]
            sent = stats(run(argv, what=f"rsync to {remote.where}"))
            remote.put(sums, f"{base}/{part}.sha256")
        with step("check"):
            remote.run(f"cd {q(f'{base}/{part}')} && sha256sum --quiet --strict -c ../{q(part)}.sha256 "
                       f"&& test \"$(find . -type f | wc -l)\" -eq {count}")
        with step("publish"):
            latest = sealed_name(newest) if newest in sealed else newest
            remote.run(f"cd {q(base)} && sync && mv -T {q(part)} {q(ident)} && rm -f {q(part)}.sha256 && "
                       f"ln -sfn {q(latest)} .latest-new && mv -T .latest-new latest && sync")
        # bytes of the files this copy holds alone (the others are hard links shared with earlier copies)
        added = int(remote.run(f"cd {q(base)} && find {q(ident)} -type f -links 1 -printf '%s\\n' | "
                               "awk '{s += $1} END {print s + 0}'", timeout=600).strip() or 0)
    with step("prune"):
        pruned = prune_remote(remote, profile, [*ids, ident], newest, policy)
    return {"id": ident, "state": "pushed", "previous": prev, "files": count, "bytes_total": total,
            **sent, "bytes_added_remote": added, "pruned": pruned, "seconds": round(time.monotonic() - started, 2)}


def prune_remote(remote: Remote, profile: str, ids: list[str], newest: str, policy: dict) -> list[str]:
    times = {i: id_time(i) for i in ids}
    keep = select(((i, t) for i, t in times.items() if t), last=policy["keep_last"], daily=policy["keep_daily"],
                  weekly=policy["keep_weekly"], monthly=policy["keep_monthly"])
    drop = [i for i in ids if i not in keep and i != newest and times[i] is not None]
    if drop:
        names = [name for i in drop for name in (i, sealed_name(i), f"{sealed_name(i)}.sha256")]
        remote.run(f"cd {shlex.quote(remote.base(profile))} && rm -rf -- {' '.join(shlex.quote(n) for n in names)}")
    return drop


def policy_from(args: argparse.Namespace) -> dict:
    policy = {}
    for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
        value = getattr(args, name, None)
        if value is None:
            env = f"BACKUP_{name.upper()}"
            value = int(os.environ.get(env) or DEFAULTS[env])
        if value < (1 if name == "keep_last" else 0):
            raise Fail(f"--{name.replace('_', '-')} must be at least {1 if name == 'keep_last' else 0}", EXIT_INPUT)
        policy[name] = value
    return policy


def cmd_push(args: argparse.Namespace) -> dict:
    """`push`: send published backups of a profile to an offsite target (oldest first with --all)."""
    check_profile_name(args.profile)
    policy = policy_from(args)
    text = os.environ.get("BACKUP_OFFSITE_RECIPIENTS", "") if args.recipients is None else args.recipients
    try:
        recipients = parse_recipients(text)
    except ValueError as exc:
        raise Fail(f"--recipients: {exc}", EXIT_INPUT) from None
    remote = Remote(args.to)
    if args.all:
        idents = [p.name for p in sorted(profile_dir(args.profile).glob("backup_*")) if BACKUP_ID_RE.fullmatch(p.name)]
        if not idents:
            raise Fail(f"profile {args.profile!r} has no backups to push", EXIT_INPUT)
    else:
        idents = [resolve(args.profile, args.id)[1]]
    results = []
    try:
        with push_lock():
            for ident in idents:
                results.append(push_one(remote, args.profile, ident, policy, args.bwlimit, recipients))
    finally:
        remote.close()
    return {"profile": args.profile, "target": remote.target, "where": remote.where, "policy": policy,
            "encrypted": bool(recipients), "pushed": results}
