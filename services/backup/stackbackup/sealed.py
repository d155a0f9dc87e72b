"""Encrypted offsite copies: a backup as one age-encrypted tar stream, so the remote never sees plaintext.

age (Debian's `age` binary, X25519 recipients `age1...`): a small, fixed format (C2SP age v1) with one
job, and a binary that streams; GnuPG is as well kept but brings keyrings, trust models and an agent
that an unattended sidecar has no use for. The recipients are the setting backup_offsite_recipients
(stack_rules.AGE_RECIPIENT_RE); the identity that decrypts is kept off the remote: in the state folder
(offsite/age-identity.txt, reaching the sidecar as the SSH files do) or given to a restore on stdin.

On the remote: `<profile>/<id>.tar.age` and `<id>.tar.age.sha256` (the ciphertext's sha256, computed
here while sending and checked there by sha256sum), `.incoming-<id>.tar.age` while it is sent. The
cost: encrypted copies share nothing, each is the backup's full size (age adds 16 bytes per 64 KiB),
and an interrupted one is sent again from the start.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from stack_rules import OFFSITE_HOME, OFFSITE_INCOMING

from stackbackup.common import EXIT_INPUT, Fail, run, step
from stackbackup.layout import READING

SUFFIX = ".tar.age"
IDENTITY = Path(OFFSITE_HOME) / "age-identity.txt"
CHUNK = 1 << 20


def sealed_name(ident: str) -> str:
    return f"{ident}{SUFFIX}"


def _wait(proc: subprocess.Popen, what: str) -> None:
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.wait() != 0:
        raise Fail(f"{what} failed (exit {proc.returncode}): {err[-500:] or 'no message'}")


def send(remote, folder: Path, base: str, ident: str, recipients: list[str]) -> dict:
    """tar | age | ssh cat > .incoming-<id>.tar.age, hashing the ciphertext on the way; then checked
    there and published (renamed, with its .sha256 beside it)."""
    part = f"{OFFSITE_INCOMING}{sealed_name(ident)}"
    q = shlex.quote
    digest, sent = hashlib.sha256(), 0
    with step("send (encrypted)"):
        tar = subprocess.Popen(["tar", "-C", str(folder), f"--exclude=./{READING}", "-cf", "-", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        age = subprocess.Popen(["age", "--encrypt", *(a for r in recipients for a in ("-r", r))], stdin=tar.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tar.stdout.close()
        ssh = subprocess.Popen([*remote.ssh_argv(), f"cat > {q(f'{base}/{part}')}"], stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            for chunk in iter(lambda: age.stdout.read(CHUNK), b""):
                digest.update(chunk)
                ssh.stdin.write(chunk)
                sent += len(chunk)
        except BrokenPipeError:
            pass
        finally:
            ssh.stdin.close()
        _wait(tar, "tar")
        _wait(age, "age --encrypt")
        _wait(ssh, f"ssh to {remote.where}")
    with step("check"):
        there = remote.run(f"sha256sum {q(f'{base}/{part}')}").split()[0]
        if there != digest.hexdigest():
            raise Fail(f"{remote.where}: the encrypted copy's sha256 is {there}, {digest.hexdigest()} was sent")
    with step("publish"):
        remote.put(f"{digest.hexdigest()}  {sealed_name(ident)}\n", f"{base}/{part}.sha256")
        remote.run(f"cd {q(base)} && sync && mv -T {q(part)}.sha256 {q(sealed_name(ident))}.sha256 && "
                   f"mv -T {q(part)} {q(sealed_name(ident))} && sync")
    return {"bytes_sent": sent, "encrypted": True, "sha256": digest.hexdigest()}


def identity_file(given: str | None, scratch: Path) -> Path:
    """The age identity to decrypt with: given on stdin (written 0600 to `scratch`), else the state folder's."""
    if given:
        path = scratch / "identity.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(given)
        return path
    if IDENTITY.is_file():
        return IDENTITY
    raise Fail("this offsite copy is encrypted, and no key to decrypt it was given: pass the age identity file "
               "with --identity FILE, or keep it as .stack/<name>/offsite/age-identity.txt", EXIT_INPUT)


def fetch(remote, base: str, ident: str, live: Path, identity: str | None) -> dict:
    """Download <id>.tar.age, check its sha256 against the remote's record, decrypt and unpack into `live`."""
    q = shlex.quote
    live.mkdir(mode=0o700)
    with tempfile.TemporaryDirectory(prefix="stack-backup-pull-", dir=live.parent) as tmp:
        key = identity_file(identity, Path(tmp))
        blob = Path(tmp) / sealed_name(ident)
        with step("fetch"):
            run(["rsync", "--chmod=F0600", "-e", remote.rsync_shell(), remote.spec(f"{base}/{sealed_name(ident)}"),
                 str(blob)], what=f"rsync from {remote.where}")
            want = remote.run(f"cat {q(f'{base}/{sealed_name(ident)}.sha256')}").split()[0]
            digest = hashlib.sha256()
            with open(blob, "rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(chunk)
            if digest.hexdigest() != want:
                raise Fail(f"the encrypted copy of {ident} from {remote.where} is damaged (sha256 "
                           f"{digest.hexdigest()}, recorded {want})")
        with step("decrypt"), open(blob, "rb") as source:
            age = subprocess.Popen(["age", "--decrypt", "-i", str(key)], stdin=source, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
            tar = subprocess.Popen(["tar", "-C", str(live), "--no-same-owner", "-xf", "-"], stdin=age.stdout,
                                   stderr=subprocess.PIPE)
            age.stdout.close()
            err = age.stderr.read().decode(errors="replace").strip()
            if age.wait() != 0:
                tar.wait()
                if "no identity matched" in err:
                    raise Fail(f"the key given cannot decrypt {ident}: it was encrypted to other recipients "
                               "(backup_offsite_recipients at the time)", EXIT_INPUT)
                raise Fail(f"age --decrypt failed: {err[-500:] or 'no message'}")
            _wait(tar, "tar")
        return {"bytes_received": blob.stat().st_size, "encrypted": True}
