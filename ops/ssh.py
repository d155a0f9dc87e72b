"""The aiida user's SSH identity for remote computers: its key, the hosts it trusts, an ssh_config.

One copy, in the stack's state: .stack/<name>/ssh/ (0700, every file 0600). compose.yaml mounts it
read-only into the aiida service, whose `aiida-stack-ssh-install` (run as root by the entrypoint at
every start, and by these tasks after each change) mirrors it into ~aiida/.ssh, owned by aiida. So it
survives container re-creation and upgrades, never enters an image layer, and is in no backup
(backups hold databases and repositories). Trust is explicit: a host key enters known_hosts only
after its fingerprint was shown and confirmed; nothing sets StrictHostKeyChecking off.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops import console
from ops.errors import StackError
from ops.inputs import InputError
from ops.secrets import write_private
from ops.services import AIIDA
from ops.settings import Settings

if TYPE_CHECKING:
    from ops.compose import Stack

MOUNTED_AT = "/run/aiida-stack-ssh"  # in the aiida service (compose.yaml); ssh-install.sh reads it
INSTALLER = "aiida-stack-ssh-install"
KEY_FILES = {"ssh-ed25519": "id_ed25519", "ecdsa": "id_ecdsa", "ssh-rsa": "id_rsa"}  # OpenSSH's default names
KNOWN_HOSTS = "known_hosts"
CONFIG = "config"
SCAN_TIMEOUT = 5
# A host name, an IPv4 address, or an IPv6 address in brackets; then an optional :PORT.
TARGET_RE = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                       r"(?::(?P<port>[0-9]{1,5}))?$")


@dataclass(frozen=True)
class Identity:
    """An SSH identity in the stack's state: a key pair and the hosts it trusts, in one 0700 folder that
    compose.yaml mounts read-only into the one service that connects with it."""
    folder: Path
    service: str  # where it connects from: host keys are scanned there
    comment: str  # the public key's comment, e.g. aiida@<stack>

    def ensure(self) -> Path:
        """The folder (created 0700: Docker would create a missing one as root)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)
        return self.folder


def identity(settings: Settings) -> Identity:
    """The aiida user's identity, for remote computers."""
    return Identity(settings.state_dir / "ssh", AIIDA, f"aiida@{settings.name}")


def folder(settings: Settings) -> Path:
    return identity(settings).folder


def ensure_folder(settings: Settings) -> Path:
    return identity(settings).ensure()


def fingerprint(public_line: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Key:
    path: Path
    public: str  # the OpenSSH public key line, with its comment

    @property
    def kind(self) -> str:
        return self.public.split()[0]

    def describe(self) -> str:
        return f"{self.kind} {fingerprint(self.public)} ({self.path.name})"


def current_key(where: Identity) -> Key | None:
    for name in KEY_FILES.values():
        path = where.folder / name
        pub = path.with_name(f"{name}.pub")
        if path.is_file() and pub.is_file():
            return Key(path, pub.read_text().strip())
    return None


def read_private_key(path: Path) -> tuple[bytes, str]:
    """A private key file as (unencrypted OpenSSH private key, public line); ValueError saying what is wrong."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{path} is open to others (mode {mode:04o}); OpenSSH refuses such keys: chmod 600 {path}")
    data = path.read_bytes()[:65536]
    try:
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except ValueError as openssh_error:
            if b"-----BEGIN" not in data or b"OPENSSH" in data:
                raise openssh_error
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying: encrypted, and no password given
        raise ValueError(f"{path} has a passphrase, and the stack never stores passphrases: make a key for the "
                         "stack with ./stack ssh.keygen (README: 'A key with a passphrase')") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not a private key (OpenSSH or PEM format)") from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ValueError(f"{path} is a {key.key_size}-bit RSA key; use at least 2048 bits, or ed25519")
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"{path} is a {type(key).__name__}; use an ed25519, ECDSA or RSA key")
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _new_key() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _store_key(where: Identity, private: bytes, public: str, replace: bool, show: str) -> Key:
    """Keep the key as the identity's one key; a replaced key is moved aside, never deleted."""
    old = current_key(where)
    if old and not replace:
        raise StackError(f"the stack has a key already: {old.describe()}; ./stack {show} prints it. "
                         "--replace sets a new one (the old one is kept aside in the state folder); nothing changed",
                         code=2)
    path = where.ensure()
    if old:
        aside = where.folder.with_name(f"{where.folder.name}-replaced") / dt.datetime.now(dt.UTC).strftime(
            "%Y%m%dT%H%M%SZ")
        aside.mkdir(parents=True, mode=0o700)
        for file in (old.path, old.path.with_name(f"{old.path.name}.pub")):
            shutil.move(file, aside / file.name)
        console.note(f"the old key {old.describe()} is kept in {aside}")
    name = KEY_FILES[public.split()[0] if public.startswith("ssh-") else "ecdsa"]
    line = f"{public.strip()} {where.comment}"
    write_private(path / f"{name}.pub", line + "\n")
    write_private(path / name, private.decode())
    return Key(path / name, line)


def keygen(where: Identity, replace: bool, show: str = "ssh.show") -> Key:
    private, public = _new_key()
    return _store_key(where, private, public, replace, show)


def import_key(where: Identity, path: Path, replace: bool, show: str = "ssh.show") -> Key:
    private, public = read_private_key(path)
    return _store_key(where, private, public, replace, show)


def parse_target(flag: str, raw: str) -> tuple[str, int]:
    """HOST or HOST:PORT (port 22 by default) as (host, port); InputError naming `flag` otherwise."""
    match = TARGET_RE.fullmatch(raw)
    port = int(match["port"]) if match and match["port"] else 22
    if not match or ".." in raw or not 1 <= port <= 65535:
        raise InputError(flag, f"must be HOST or HOST:PORT with a port 1-65535, e.g. cluster.example.org:22 "
                               f"(got {raw!r})")
    return match["host"], port


def known_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host.strip('[]')}]:{port}"


def known_keys(where: Identity, host: str, port: int) -> list[str]:
    """The known_hosts lines of host:port (unhashed names: the stack writes them)."""
    path = where.folder / KNOWN_HOSTS
    name = known_name(host, port)
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line for line in lines if name in line.split(" ", 1)[0].split(",")]


def write_known(where: Identity, host: str, port: int, scanned: list[str]) -> None:
    """Replace host:port's entries in known_hosts by `scanned` (keyscan lines)."""
    path = where.ensure() / KNOWN_HOSTS
    name = known_name(host, port)
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if name not in line.split(" ", 1)[0].split(",")]
    write_private(path, "".join(f"{line}\n" for line in [*kept, *scanned]))


def stage_config(settings: Settings) -> bool:
    """Copy the user's ssh_config (a setting) into the state folder, or drop an old copy: what the
    aiida user gets. A copy, not a bind mount: editors replace files, which a file mount would not see.
    Returns whether the copy changed."""
    target = ensure_folder(settings) / CONFIG
    source = settings.ssh_config_path
    before = target.read_text() if target.is_file() else None
    if source is None:
        target.unlink(missing_ok=True)
        return before is not None
    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise StackError(f"ssh_config {source}: cannot read it ({exc}); nothing started", code=2) from None
    if text != before:
        write_private(target, text)
    return text != before


# ------------------------------------------------------------------------------ in the aiida service


def install(stack: Stack) -> None:
    """Hand the state folder (with a fresh copy of the ssh_config) to the aiida user now, if the service
    runs; its next start does it anyway."""
    stage_config(stack.settings)
    if not stack.is_running(AIIDA):
        return
    done = stack.run("exec", "-T", "--user", "root", AIIDA, INSTALLER, capture=True, check=False)
    if done.returncode != 0:
        raise StackError(f"could not install the SSH files for the aiida user: {done.stderr.strip()}")


def scan(stack: Stack, where: Identity, flag: str, host: str, port: int) -> list[str]:
    """The host's public keys as the identity's service sees them (ssh-keyscan), as known_hosts lines."""
    if not stack.is_running(where.service):
        raise StackError(f"the {where.service} service is not running (./stack up); nothing changed", code=2)
    done = stack.run("exec", "-T", where.service, "ssh-keyscan", "-T", str(SCAN_TIMEOUT), "-p", str(port),
                     host.strip("[]"), capture=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise InputError(flag, f"{known_name(host, port)} did not answer with an SSH host key within "
                               f"{SCAN_TIMEOUT} s (from the {where.service} service)")
    name = known_name(host, port)
    return [" ".join([name, *line.split()[1:3]]) for line in lines]


def trust(stack: Stack, flag: str, target: str, yes: bool, where: Identity | None = None) -> list[str]:
    """Show host:port's key fingerprints; add them to known_hosts once confirmed (the aiida user's, unless
    `where` names another identity). Returns what was added."""
    where = where or identity(stack.settings)
    host, port = parse_target(flag, target)
    scanned = scan(stack, where, flag, host, port)
    known = known_keys(where, host, port)
    name = known_name(host, port)
    for line in scanned:
        console.out.print(f"{name}  {line.split()[1]}  {fingerprint(' '.join(line.split()[1:]))}")
    if sorted(scanned) == sorted(known):
        console.step(f"{name} is trusted already with these keys; nothing changed")
        return []
    if known:
        console.err.print(f"[bold red]The host key of {name} CHANGED[/] since it was trusted "
                          f"({', '.join(fingerprint(' '.join(k.split()[1:])) for k in known)}). Someone may be "
                          "impersonating it; trust the new key only if the cluster's admins announced a new one.")
    console.confirm(yes, f"Trust {name} with the key fingerprint(s) above (compare them with what its admins "
                         "publish)?", "yes")
    write_known(where, host, port, scanned)
    if where.service == AIIDA:
        install(stack)
    console.step(f"{name} added to known_hosts ({len(scanned)} key(s)); the {where.service} service trusts it now")
    return scanned


def show(settings: Settings) -> str:
    """The public key to install on a cluster (stdout), and what the stack holds (stderr)."""
    key = current_key(identity(settings))
    path = folder(settings) / KNOWN_HOSTS
    hosts = sorted({line.split(" ", 1)[0] for line in path.read_text().splitlines() if line.strip()}) \
        if path.is_file() else []
    console.note(f"key: {key.describe() if key else 'none (./stack ssh.keygen or ./stack ssh.import-key PATH)'}")
    console.note(f"trusted hosts: {', '.join(hosts) or 'none (./stack ssh.trust HOST[:PORT])'}")
    source = settings.ssh_config_path
    console.note(f"ssh_config: {source if source else 'none (the ssh_config setting)'}")
    return key.public if key else ""
