"""Run local Python scripts inside the aiida container, like `verdi run` with the profile loaded."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from ops.compose import Stack
from ops.errors import StackError
from ops.services import AIIDA

SCRIPTS = Path(__file__).parent / "scripts"
AIIDA_UID = 1000


def copy_into_aiida(stack: Stack, script: Path) -> str:
    """Copy a script into a fresh folder of the aiida container; returns its path there."""
    if not script.is_file():
        raise StackError(f"no such script: {script}", code=2)
    folder = f"/tmp/stack-run-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in ((folder.lstrip("/"), None, 0o700), (f"{folder.lstrip('/')}/{script.name}",
                                                                      script.read_bytes(), 0o600)):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = AIIDA_UID
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    stack.container(AIIDA).put_archive("/", buffer.getvalue())
    return f"{folder}/{script.name}"


def run_script(stack: Stack, script: Path, args: Sequence[str] = (), profile: str | None = None,
               capture: bool = False, plain: bool = False) -> tuple[int, str]:
    """`verdi [-p PROFILE] run SCRIPT ARGS` in the aiida container (`plain`: `python SCRIPT ARGS`, no
    profile loaded for it); exit code passes through."""
    remote = copy_into_aiida(stack, script)
    runner = ["python"] if plain else ["verdi", *(["-p", profile] if profile else []), "run"]
    try:
        done = stack.exec_aiida([*runner, remote, *args], interactive=not capture, capture=capture)
    finally:
        stack.exec_aiida(["rm", "-rf", str(Path(remote).parent)], capture=True)
    return done.returncode, done.stdout if capture else ""
