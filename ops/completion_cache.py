"""Values the shell completion offers (profile names, backup ids), cached whenever the stack lists them.

Completing must not wait for containers: a tab press reads these files only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ops import secrets, settings
from ops.errors import StackError


def _path(kind: str):
    return settings.load().state_dir / "complete" / kind


def write(kind: str, values: Iterable[str]) -> None:
    try:
        path = _path(kind)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secrets.write_private(path, "".join(f"{v}\n" for v in sorted(set(values))))
    except (OSError, StackError):  # a cache: never fail a command over it
        pass


def read(kind: str) -> list[str]:
    try:
        return _path(kind).read_text().split()
    except (OSError, StackError):
        return []
