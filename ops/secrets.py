"""Generated credentials: one file per secret in .stack/<name>/secrets/, mode 0600, never printed."""

from __future__ import annotations

import os
import secrets as token
from pathlib import Path

from ops.services import SECRETS
from ops.settings import Settings


def secrets_dir(settings: Settings) -> Path:
    return settings.state_dir / "secrets"


def ensure(settings: Settings) -> list[str]:
    """Create missing secrets (existing ones are kept: the data volumes depend on them)."""
    folder = secrets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    created = []
    for name in SECRETS:
        path = folder / name
        if not path.exists():
            write_private(path, token.token_urlsafe(32))
            created.append(name)
        path.chmod(0o600)
    return created


def write_private(path: Path, text: str) -> None:
    """Write a file that is 0600 from its first byte, atomically: a concurrent ./stack (a scheduled
    backup beside an interactive command) reads the old content or the new, never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{token.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
