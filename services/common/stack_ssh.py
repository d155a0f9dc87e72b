"""SSH to another machine, one way for the whole stack: the backup sidecar's offsite copies and the
host's remote stacks (ops/remote.py) both connect through `Session` (fabric over paramiko).

- One key, given; no agent, no ssh_config, no password ever (nothing to leak into argv or logs).
- Host keys only from the stack's own known_hosts, checked strictly (paramiko's RejectPolicy): an
  unknown or changed key is refused, never added.
- Timeouts for connecting, the banner, authentication and every command.
- Connecting is retried with backoff (tenacity): it is idempotent; commands are not retried here.

Copied into the backup image next to stack_rules.py; the host loads this same file (ops/rules.py).
"""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path
from typing import IO

CONNECT_TIMEOUT = 10  # seconds to reach the host and finish the SSH handshake
COMMAND_TIMEOUT = 3600  # seconds for one remote command
KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


class SSHError(Exception):
    """What went wrong, said for the user; `bad_input`: the user's setup must change (exit 2)."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def find_key(folder: Path) -> Path | None:
    return next((folder / name for name in KEY_NAMES if (folder / name).is_file()), None)


class Session:
    """A strict SSH session to user@host:port. `key_hint` says how to get the key accepted there,
    `trust_hint` how to trust the host (both end up in error messages)."""

    def __init__(self, user: str, host: str, port: int, key: Path, known_hosts: Path, *,
                 key_hint: str, trust_hint: str) -> None:
        self.user, self.host, self.port = user, host, port
        self.key, self.known_hosts = key, known_hosts
        self.key_hint, self.trust_hint = key_hint, trust_hint
        self._conn = None

    def error(self, message: str, bad_input: bool = False) -> Exception:
        """The exception to raise (the sidecar makes its own kind)."""
        return SSHError(message, bad_input)

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")

    def connection(self):  # -> fabric.Connection
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self):
        import paramiko
        from fabric import Config, Connection
        from paramiko.ssh_exception import NoValidConnectionsError
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        if not self.known_hosts.is_file():
            raise self.error(f"{self.where} is not a trusted host yet: {self.trust_hint}", True)
        conn = Connection(self.host, user=self.user, port=self.port, connect_timeout=CONNECT_TIMEOUT,
                          config=Config(overrides={"load_ssh_configs": False}),
                          connect_kwargs={"key_filename": str(self.key), "look_for_keys": False,
                                          "allow_agent": False, "banner_timeout": CONNECT_TIMEOUT,
                                          "auth_timeout": CONNECT_TIMEOUT})
        conn.client.load_host_keys(str(self.known_hosts))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            for attempt in Retrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=1, max=4),
                                    retry=retry_if_exception_type((NoValidConnectionsError, ConnectionResetError)),
                                    reraise=True):
                with attempt:
                    conn.open()
        except paramiko.BadHostKeyException:
            raise self.error(f"the host key of {self.where} CHANGED since it was trusted: refusing to connect "
                             "(someone may be impersonating it; if its admins announced a new key, "
                             f"{self.trust_hint})", True) from None
        except paramiko.AuthenticationException:
            raise self.error(f"{self.where} refused the key {self.key.name}: {self.key_hint}", True) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise self.error(f"{self.where} is not a trusted host yet: {self.trust_hint}", True) from None
            raise self.error(f"SSH to {self.where} failed: {exc}") from None
        except socket.gaierror as exc:
            raise self.error(f"cannot resolve {self.host} ({exc.strerror})") from None
        except (TimeoutError, OSError) as exc:
            raise self.error(f"cannot reach {self.where} within {CONNECT_TIMEOUT} s: "
                             f"{exc or type(exc).__name__}") from None
        return conn

    def run(self, command: str, *, timeout: int = COMMAND_TIMEOUT, check: bool = True, show: bool = False) -> str:
        """A POSIX shell command on the remote; its stdout (`show`: both its streams also go to our stderr as
        they come, leaving our stdout to results). The error names its stderr if it fails."""
        from invoke.exceptions import CommandTimedOut

        streams = {"out_stream": sys.stderr, "err_stream": sys.stderr} if show else {}
        try:
            done = self.connection().run(command, hide=not show, warn=True, timeout=timeout, in_stream=False,
                                         **streams)
        except CommandTimedOut:
            raise self.error(f"{self.where}: a remote command took longer than {timeout} s") from None
        if check and done.exited != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise self.error(f"{self.where}: remote command failed (exit {done.exited}): {tail or 'no message'}")
        return done.stdout

    def put(self, data: str | IO[bytes], path: str) -> None:
        """Write a remote file over SFTP (invoke's stdin forwarding reads a byte per 10 ms)."""
        stream = io.BytesIO(data.encode()) if isinstance(data, str) else data
        try:
            self.connection().put(stream, path)
        except OSError as exc:
            raise self.error(f"{self.where}: cannot write {path} over SFTP: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def host_keys(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> list[tuple[str, str]]:
    """The host's public key as (type, base64), read from its SSH handshake (a first contact: nothing is
    trusted or sent; the caller shows the fingerprint and asks)."""
    import paramiko

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise SSHError(f"cannot resolve {host} ({exc.strerror})") from None
    except OSError as exc:
        raise SSHError(f"cannot reach {host}:{port} within {timeout:.0f} s: {exc or type(exc).__name__}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return [(key.get_name(), key.get_base64())]
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"{host}:{port} gave no SSH handshake within {timeout:.0f} s ({exc or type(exc).__name__})") \
            from None
    finally:
        transport.close()
