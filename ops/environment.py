"""The software in the aiida image: settings (aiida-core version + plugins) → a committed lock → the image.

Each environment has one fully pinned lock with hashes, images/aiida-core/locks/<id>.txt, made by
`./stack lock` with uv (`uv pip compile` for the image's Python and platform) and committed. The
image installs only from it (`pip install --no-deps --require-hashes`), so a plugin can never move
aiida-core underneath the data, and a rebuild next year installs the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from ops import console
from ops.errors import StackError
from ops.settings import ROOT, Settings

LOCKS = ROOT / "images" / "aiida-core" / "locks"
IMAGE_PYTHON = "3.11"  # Debian bookworm's, what images/aiida-core builds on
IMAGE_PLATFORM = "x86_64-manylinux_2_28"  # glibc 2.36 on bookworm: manylinux_2_28 wheels and older fit
HEADER = "# aiida-stack environment: "


def _canonical(requirement: str) -> str:
    return str(Requirement(requirement))


@dataclass(frozen=True)
class Environment:
    """aiida-core's version and the plugin requirements, canonical and sorted."""

    version: str
    plugins: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Environment:
        return cls(settings.aiida_core_version, tuple(sorted({_canonical(p) for p in settings.plugins})))

    @property
    def id(self) -> str:
        if not self.plugins:
            return f"aiida-core-{self.version}"
        digest = hashlib.sha256(json.dumps(self.plugins).encode()).hexdigest()[:8]
        return f"aiida-core-{self.version}-plugins-{digest}"

    @property
    def lock(self) -> Path:
        return LOCKS / f"{self.id}.txt"

    @property
    def lock_digest(self) -> str | None:
        """What the lock pins (its content): a re-lock under the same name is another environment."""
        return digest_of(self.lock.read_bytes()) if self.lock.is_file() else None

    def describe(self) -> str:
        return f"aiida-core {self.version}" + (f" with {', '.join(self.plugins)}" if self.plugins else "")

    def as_dict(self) -> dict:
        return {"aiida_core_version": self.version, "plugins": list(self.plugins)}


def digest_of(lock_text: bytes) -> str:
    return hashlib.sha256(lock_text).hexdigest()[:12]


def require_lock(env: Environment) -> Path:
    """The environment's lock file, or a StackError that says how to make it."""
    if not env.lock.is_file():
        raise StackError(f"{env.describe()} has no lock file ({env.lock.relative_to(ROOT)}): run `./stack lock` to "
                         "resolve it, commit the file, then start again; nothing started", code=2)
    return env.lock


def _uv_environment() -> dict[str, str]:
    """uv behind the same proxy, CA bundle and index settings as pip and the image builds."""
    from ops.compose import pip_settings

    cert, values = pip_settings()
    env = dict(os.environ)
    if cert.stat().st_size:
        env["SSL_CERT_FILE"] = str(cert)
    renamed = {"PIP_INDEX_URL": "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL"}
    env.update({renamed.get(key, key): value for key, value in values.items()
                if key in renamed or key.endswith("_PROXY")})
    return env


def lock(settings: Settings, exclude_newer: dt.date | None = None) -> Path:
    """Resolve aiida-core==VERSION plus the plugins into the environment's lock (uv pip compile)."""
    env = Environment.of(settings)
    LOCKS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wanted = Path(scratch) / "requirements.in"
        wanted.write_text("".join(f"{r}\n" for r in (f"aiida-core=={env.version}", *env.plugins)))
        output = Path(scratch) / "lock.txt"
        base = Environment(env.version).lock
        if env.lock.is_file() or base.is_file():  # uv keeps the pins of an existing output where it can
            output.write_text((env.lock if env.lock.is_file() else base).read_text())
        argv = [str(Path(sys.executable).with_name("uv")), "pip", "compile", "--quiet", "--generate-hashes",
                "--no-header", "--python-version", IMAGE_PYTHON, "--python-platform", IMAGE_PLATFORM,
                str(wanted), "-o", str(output)]
        if exclude_newer:
            argv += ["--exclude-newer", f"{exclude_newer.isoformat()}T00:00:00Z"]
        console.note(f"resolving {env.describe()} for Python {IMAGE_PYTHON} ({IMAGE_PLATFORM}) with uv")
        done = subprocess.run(argv, capture_output=True, text=True, env=_uv_environment(), timeout=600)
        if done.returncode != 0:
            raise StackError(f"{env.describe()} does not resolve; nothing written:\n{_conflict(done.stderr)}", code=2)
        pinned = output.read_text()
    found = re.search(r"^aiida-core==(\S+)", pinned, re.M)
    if not found or found.group(1) != env.version:
        raise StackError(f"the plugins would change aiida-core to {found.group(1) if found else '?'}; "
                         f"nothing written", code=2)
    header = (f"{HEADER}{json.dumps(env.as_dict())}\n"
              f"# Made by `./stack lock` (uv pip compile, Python {IMAGE_PYTHON}, {IMAGE_PLATFORM}"
              + (f", packages up to {exclude_newer}" if exclude_newer else "") + "); commit it. "
              "The image installs exactly this (pip --no-deps --require-hashes).\n")
    env.lock.write_text(header + pinned)
    console.step(f"locked {env.describe()}: {env.lock.relative_to(ROOT)} "
                 f"({len(re.findall(r'^[A-Za-z0-9].*==', pinned, re.M))} packages)")
    return env.lock


def _conflict(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return "\n".join(lines[-15:]) or "(uv printed nothing)"

