"""`invoke` run by another Python (system-wide, pipx, another venv) continues as ./stack.

tasks.py imports this first, with the standard library only. ./stack is the one bootstrap: it
creates or refreshes .venv from requirements.lock and runs the tasks there, so `invoke TASK` and
`./stack TASK` are the same command (arguments, stdin, prompts and exit codes pass through exec).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
WRAPPER = ROOT / "stack"
MARK = "AIIDA_STACK_HANDED_OVER"  # set across the exec: a second hand-over would be a loop


def _inside_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def into_venv() -> None:
    """Return at once inside .venv; elsewhere replace this process with ./stack and the same arguments."""
    if _inside_venv():
        os.environ.pop(MARK, None)  # commands started from here may hand over again
        return
    if os.environ.get(MARK):
        sys.stderr.write(f"aiida-stack: ./stack did not run the tasks inside {VENV} (this is {sys.executable}); "
                         f"remove {VENV} and run ./stack again to recreate it\n")
        raise SystemExit(1)
    os.environ[MARK] = "1"
    try:
        os.execv(WRAPPER, [str(WRAPPER), *sys.argv[1:]])
    except OSError as exc:
        sys.stderr.write(f"aiida-stack: cannot hand over to {WRAPPER} ({exc.strerror}); it needs a POSIX sh "
                         f"and must be executable: chmod +x {WRAPPER}, then run it directly\n")
        raise SystemExit(1) from None
