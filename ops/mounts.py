"""Host folders bind-mounted into the aiida container: the `mounts` setting, "HOST:CONTAINER[:ro|:rw]".

Read-only unless `:rw`. The spec's shape and the forbidden places are checked with the settings
(every command); that the host paths exist is checked by `up`, before anything starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from ops.services import AIIDA_HOME_IN_AIIDA

# Container paths a mount must neither be, contain nor lie inside: the AiiDA home (config, repository),
# aiida-core's virtualenv, and the system's own folders.
PROTECTED = (AIIDA_HOME_IN_AIIDA, "/opt/aiida", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var",
             "/proc", "/sys", "/dev", "/run", "/tmp", "/boot", "/root")


@dataclass(frozen=True)
class Mount:
    host: PurePosixPath
    container: PurePosixPath
    writable: bool

    @classmethod
    def parse(cls, spec: str, forbidden_hosts: tuple[PurePosixPath, ...]) -> Mount:
        """`spec` as a Mount; ValueError naming what is wrong. forbidden_hosts: host folders no mount may
        be or contain (the checkout, the state folder)."""
        if spec != spec.strip() or any(ch in spec for ch in "\n\r\t\0"):
            raise ValueError(f"{spec!r}: no surrounding spaces or control characters")
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"{spec!r}: write HOST:CONTAINER, HOST:CONTAINER:ro or HOST:CONTAINER:rw")
        mode = parts[2] if len(parts) == 3 else "ro"
        if mode not in ("ro", "rw"):
            raise ValueError(f"{spec!r}: the mode is ro (default) or rw, not {mode!r}")
        host, container = PurePosixPath(parts[0]), PurePosixPath(parts[1])
        for side, path in (("host", host), ("container", container)):
            if not path.is_absolute() or ".." in path.parts:
                raise ValueError(f"{spec!r}: the {side} path must be absolute, without '..'")
        if host == PurePosixPath("/"):
            raise ValueError(f"{spec!r}: not the host's / ")
        for place in forbidden_hosts:
            if host == place or place.is_relative_to(host) or host.is_relative_to(place / ".stack"):
                raise ValueError(f"{spec!r}: {host} holds the stack's checkout or its state (secrets)")
        for protected in map(PurePosixPath, PROTECTED):
            if container == PurePosixPath("/") or protected.is_relative_to(container) \
                    or container.is_relative_to(protected):
                raise ValueError(f"{spec!r}: {container} would shadow {protected} in the aiida container")
        return cls(host, container, mode == "rw")

    def compose_entry(self) -> str:
        return (f"{{type: bind, source: {json.dumps(str(self.host))}, target: {json.dumps(str(self.container))}, "
                f"read_only: {'false' if self.writable else 'true'}}}")


def parse_all(specs: list[str], forbidden_hosts: tuple[PurePosixPath, ...]) -> list[Mount]:
    mounts = [Mount.parse(spec, forbidden_hosts) for spec in specs]
    targets = [m.container for m in mounts]
    doubled = sorted({str(t) for t in targets if targets.count(t) > 1})
    if doubled:
        raise ValueError(f"two mounts at the same container path: {', '.join(doubled)}")
    return mounts


def missing(mounts: list[Mount]) -> list[str]:
    """Host paths that do not exist (Docker would refuse, or worse, create them as root)."""
    from pathlib import Path

    return [str(m.host) for m in mounts if not Path(m.host).exists()]
