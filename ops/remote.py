"""A stack on another machine: ./stack remote.up ships this project at its commit and the images it runs,
then runs ./stack up there; remote.status and remote.down drive that copy.

remote.up reads: connect → check → ship project → ship images → up → status.
- ship project: `git archive HEAD` over SFTP, unpacked into the remote folder. A folder this command made
  carries MARKER; its project files are replaced, its state (.stack/: secrets, settings) and .venv stay.
  Any other non-empty folder is refused untouched.
- ship images: `docker save` of the images (and base image) the remote lacks or holds in another version,
  streamed over the SSH channel into `docker load` there (no registry, no temporary files).
- up: the remote's own ./stack up, its output shown as it comes.

SSH (services/common/stack_ssh.py): the host's own identity in the state folder's remote/ (a key made on
first use, 0600; a known_hosts that only an explicit --accept-host-key fills), apart from the aiida user's
(ops/ssh.py) and the backup sidecar's offsite identity (ops/offsite.py).
"""

from __future__ import annotations

import getpass
import io
import json
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ops import console, ssh
from ops.compose import Stack
from ops.errors import StackError
from ops.inputs import InputError
from ops.rules import load_common, parse_offsite
from ops.settings import ROOT, Settings

stack_ssh = load_common("stack_ssh")

DEFAULT_PATH = "aiida-stack"
MARKER = ".aiida-stack-remote"  # in a remote folder remote.up made: JSON of what it shipped, when
KEPT = (".stack", ".venv", MARKER)  # what a new ship leaves in place
UP_TIMEOUT = 3600
CHUNK = 1 << 20
PROGRESS_EVERY = 10  # seconds between two progress lines of a long transfer


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int
    path: str  # relative: to the remote user's home

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "") + f":{self.path}"

    @property
    def name(self) -> str:
        """The remote stack's name: its folder's (./stack's default there)."""
        return PurePosixPath(self.path).name


def parse_target(raw: str, flag: str = "--host") -> Target:
    """[user@]host[:path] or ssh://[user@]host[:port]/path (path: aiida-stack in the home)."""
    text = raw.strip()
    if not text.startswith("ssh://") and ":" not in text.rpartition("@")[2].rpartition("]")[2]:
        text = f"{text}:{DEFAULT_PATH}"
    try:
        user, host, port, path = parse_offsite(text)
    except ValueError as exc:
        message = str(exc).replace("[user@]host:path", "[user@]host[:path]").replace(repr(text), repr(raw))
        raise InputError(flag, message) from None
    return Target(user or getpass.getuser(), host, port, path)


def identity(settings: Settings) -> ssh.Identity:
    return ssh.Identity(settings.state_dir / "remote", "host", f"remote@{settings.name}")


class Remote(stack_ssh.Session):
    def error(self, message: str, bad_input: bool = False) -> Exception:
        return StackError(message, code=2 if bad_input else 1)


def connect(settings: Settings, target: Target, accept: bool, key_path: Path | None = None,
            make_key: bool = False) -> Remote:
    """connect: the key (`make_key`: made on first use), the host trusted (first contact needs `accept`), a
    session."""
    where = identity(settings)
    if key_path:
        key = key_path  # checked as an --identity (ops.inputs.PrivateKeyFile)
    else:
        current = ssh.current_key(where)
        if current is None and not make_key:
            raise StackError("the stack has no remote key yet: ./stack remote.up makes one; nothing changed", code=2)
        if current is None:
            current = ssh.keygen(where, replace=False, show="remote.up")
            console.out.print(current.public)
            raise StackError(f"made the stack's remote key {current.describe()} (printed above): add that line to "
                             f"~{target.user}/.ssh/authorized_keys on {target.host}, then run this again", code=2)
        key = current.path
    _trust(where, target, accept)
    return Remote(target.user, target.host, target.port, key, where.folder / ssh.KNOWN_HOSTS,
                  key_hint=f"add the public key (in {key}.pub) to ~{target.user}/.ssh/authorized_keys there",
                  trust_hint="run again with --accept-host-key (it shows the host key's fingerprint first)")


def _trust(where: ssh.Identity, target: Target, accept: bool) -> None:
    host = f"[{target.host}]" if ":" in target.host else target.host
    if ssh.known_keys(where, host, target.port) and not accept:
        return
    try:
        found = stack_ssh.host_keys(target.host, target.port)
    except stack_ssh.SSHError as exc:
        raise StackError(f"{exc}; nothing sent") from None
    name = ssh.known_name(host, target.port)
    lines = [f"{name} {kind} {blob}" for kind, blob in found]
    for kind, blob in found:
        console.err.print(f"{name}  {kind}  {ssh.fingerprint(f'{kind} {blob}')}")
    known = ssh.known_keys(where, host, target.port)
    if known and not set(lines) <= set(known):
        console.err.print(f"[bold red]The host key of {name} CHANGED[/] since it was trusted: trust the new one only "
                          "if its admins announced it")
    if not accept:
        raise StackError(f"first contact with {name}: its host key fingerprint is shown above. Compare it with what "
                         "its admins publish, then run again with --accept-host-key; nothing was sent", code=2)
    ssh.write_known(where, host, target.port, lines)
    console.step(f"{name} added to the remote known_hosts")


# ---------------------------------------------------------------------------------------------- up


def up(stack: Stack, target: Target, accept: bool, key_path: Path | None, images: str) -> dict:
    remote = connect(stack.settings, target, accept, key_path, make_key=True)
    try:
        console.note(f"remote.up on {target.where}: connect → check → ship project → ship images → up → status")
        check(remote, target)
        commit = ship_project(remote, target)
        ship_images(remote, stack, images)
        remote.run(f"cd {_q(target.path)} && ./stack up", timeout=UP_TIMEOUT, show=True)
        console.step(f"stack {target.name} is up on {target.where} (commit {commit[:12]})")
        return status(remote, target)
    finally:
        remote.close()


def check(remote: Remote, target: Target) -> None:
    """What the remote needs: Python 3 (./stack's own virtualenv) and a Docker engine this user may use."""
    found = remote.run("command -v python3 >/dev/null && echo python; docker version --format '{{.Server.Version}}' "
                       "2>/dev/null || true", timeout=60).split()
    if "python" not in found:
        raise StackError(f"{remote.where} has no python3 (./stack needs Python >= 3.10 there); nothing shipped",
                         code=2)
    if len(found) < 2:
        raise StackError(f"{remote.where}: no Docker engine answers to {target.user} (install docker.io and add "
                         f"{target.user} to the docker group, or start dockerd); nothing shipped", code=2)
    console.step(f"check: python3 and Docker {found[1]} on {remote.where}")


def ship_project(remote: Remote, target: Target) -> str:
    """The project at HEAD into the remote folder; returns the commit."""
    commit = _git("rev-parse", "HEAD").strip()
    if _git("status", "--porcelain", "--untracked-files=no").strip():
        console.note("uncommitted changes stay here: the remote gets the last commit")
    folder = _q(target.path)
    state = remote.run(f"if [ -e {folder}/{MARKER} ]; then echo ours; elif [ -d {folder} ] && "
                       f"[ -n \"$(ls -A {folder})\" ]; then echo foreign; else echo new; fi", timeout=60).strip()
    if state == "foreign":
        raise StackError(f"{remote.where}: {target.path} holds files that remote.up did not put there; name a new or "
                         "empty folder (--host ...:PATH); nothing shipped", code=2)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True)
    if archive.returncode != 0:
        raise StackError(f"git archive failed: {archive.stderr.decode(errors='replace').strip()}")
    staged = f"{target.path}/.ship-{commit[:12]}.tar"
    remote.run(f"mkdir -p {folder}", timeout=60)
    started = time.monotonic()
    remote.put(io.BytesIO(archive.stdout), staged)
    kept = " ".join(f"! -name {_q(name)}" for name in KEPT)
    remote.run(f"cd {folder} && find . -mindepth 1 -maxdepth 1 {kept} ! -name {_q(PurePosixPath(staged).name)} "
               f"-exec rm -rf {{}} + && tar -xf {_q(PurePosixPath(staged).name)} && rm -f "
               f"{_q(PurePosixPath(staged).name)}", timeout=300)
    remote.put(json.dumps({"commit": commit, "shipped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n",
               f"{target.path}/{MARKER}")
    console.step(f"ship project: commit {commit[:12]}, {len(archive.stdout) / 1e6:.1f} MB in "
                 f"{time.monotonic() - started:.1f} s")
    return commit


def ship_images(remote: Remote, stack: Stack, mode: str) -> list[str]:
    """The stack's images and the base image, each sent unless the remote holds that very image (same id);
    `mode` always: send every one. Returns what was sent."""
    import docker.errors

    from ops import engine

    client = engine.client()
    refs = [*stack.images().values(), stack.settings.base_image]
    local = {}
    for ref in refs:
        try:
            local[ref] = client.images.get(ref).id
        except docker.errors.ImageNotFound:
            console.note(f"{ref} is not built here: the remote builds it (./stack build here ships it next time)")
    quoted = " ".join(_q(ref) for ref in local)
    there = remote.run(f"for r in {quoted}; do docker image inspect --format '{{{{.Id}}}}' \"$r\" 2>/dev/null || "
                       "echo none; done", timeout=120).split() if local else []
    wanted = [ref for ref, theirs in zip(local, there, strict=True) if mode == "always" or theirs != local[ref]]
    if not wanted:
        console.step("ship images: the remote holds every image already")
        return []
    console.note(f"sending {', '.join(wanted)}")
    sent, seconds, loaded = _stream(remote, ["docker", "save", *wanted], "docker load")
    console.step(f"ship images: {len(wanted)} sent, {sent / 1e6:.0f} MB in {seconds:.1f} s "
                 f"({sent / 1e6 / max(seconds, 1e-3):.0f} MB/s); the remote loaded {loaded}")
    return wanted


def _stream(remote: Remote, argv: list[str], command: str) -> tuple[int, float, int]:
    """`argv`'s stdout here into `command`'s stdin there, over one SSH channel; (bytes, seconds, images loaded)."""
    channel = remote.connection().client.get_transport().open_session()
    channel.set_combine_stderr(True)
    channel.exec_command(command)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(_drain(channel)), daemon=True)
    reader.start()
    started, sent = time.monotonic(), 0
    shown = started
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as source:
        for chunk in iter(lambda: source.stdout.read(CHUNK), b""):
            channel.sendall(chunk)
            sent += len(chunk)
            if time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                console.note(f"  {sent / 1e6:.0f} MB sent ({sent / 1e6 / (shown - started):.0f} MB/s)")
        errors = source.stderr.read().decode(errors="replace")
    channel.shutdown_write()
    status = channel.recv_exit_status()
    reader.join(timeout=60)
    said = b"".join(output).decode(errors="replace")
    if source.returncode != 0:
        raise StackError(f"{' '.join(argv[:2])} failed (exit {source.returncode}): {errors.strip()[-500:]}")
    if status != 0:
        raise StackError(f"{remote.where}: {command} failed (exit {status}): {said.strip()[-500:]}")
    return sent, time.monotonic() - started, said.count("Loaded image")


def _drain(channel) -> bytes:
    return b"".join(iter(lambda: channel.recv(65536), b""))


# ------------------------------------------------------------------------------------- status, down


def status(remote: Remote, target: Target) -> dict:
    out = remote.run(f"cd {_q(target.path)} && ./stack status --json", timeout=300, check=False)
    try:
        return json.loads(out)
    except ValueError:
        raise StackError(f"{remote.where}: ./stack status in {target.path} gave no status (is a stack there? "
                         f"./stack remote.up first): {out.strip()[-300:]}") from None


def remote_status(settings: Settings, target: Target) -> dict:
    remote = connect(settings, target, accept=False)
    try:
        return status(remote, target)
    finally:
        remote.close()


def down(settings: Settings, target: Target, volumes: bool, yes: bool) -> None:
    if volumes and not yes:
        raise StackError(f"remote.down --volumes deletes every database, broker state and file repository of the "
                         f"stack on {target.where}: confirm with --yes; nothing changed", code=2)
    remote = connect(settings, target, accept=False)
    try:
        if remote.run(f"[ -e {_q(target.path)}/{MARKER} ] && echo ours || true", timeout=60).strip() != "ours":
            raise StackError(f"{remote.where}: {target.path} holds no stack that remote.up made; nothing changed",
                             code=2)
        remote.run(f"cd {_q(target.path)} && ./stack down" + (" --volumes --yes" if volumes else ""),
                   timeout=600, show=True)
    finally:
        remote.close()
    console.step(f"stack {target.name} on {target.where} is down" + (" and its data deleted" if volumes else ""))


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"remote.up ships the project's git commit, and git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def _q(text: str) -> str:
    return shlex.quote(text)
