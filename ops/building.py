"""Image builds that show progress, not logs: one line per image, the full log in a file.

`docker compose build --progress plain` writes BuildKit's step lines ("#12 [aiida 3/8] RUN ...");
each image's line shows its latest step. The whole log goes to .stack/<name>/build.log; a failed
build prints its last lines and that path. `verbose` also streams the log as it comes.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence

from rich.live import Live
from rich.table import Table

from ops import console
from ops.compose import Stack
from ops.errors import StackError

STEP = re.compile(r"^#\d+ \[(?P<service>[\w-]+) (?P<step>\d+/\d+)\] (?P<what>.*)$")
BUILT = re.compile(r"^\s*(?P<service>[\w-]+)\s+Built\s*$")
FAILED_TAIL = 30


def _table(progress: dict[str, dict], start: float) -> Table:
    table = Table("image", "step", "", title=f"building images: {time.monotonic() - start:.0f} s",
                  title_justify="left", box=None)
    for service, state in progress.items():
        if state["built"]:
            table.add_row(service, "[green]✔ built[/]", f"{state['seconds']:.0f} s")
        else:
            table.add_row(service, state["step"], state["what"][:70])
    return table


def build(stack: Stack, services: Sequence[str], verbose: bool = False) -> None:
    """Build `services`' images with a progress line each; StackError with the log's tail on failure."""
    log = stack.state / "build.log"
    start = time.monotonic()
    progress = {s: {"step": "waiting", "what": "", "built": False, "seconds": 0.0} for s in services}
    tail: list[str] = []
    command = stack.command("build", "--progress", "plain", *services)
    with log.open("w") as out, Live(_table(progress, start), console=console.err, transient=not verbose,
                                    refresh_per_second=2) as live:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        for line in proc.stdout:
            out.write(line)
            tail = [*tail[-(FAILED_TAIL - 1):], line.rstrip("\n")]
            if verbose:
                live.console.print(line.rstrip("\n"), markup=False, highlight=False)
            step, built = STEP.match(line), BUILT.match(line)
            if step and step["service"] in progress and not progress[step["service"]]["built"]:
                progress[step["service"]].update(step=step["step"], what=step["what"])
            elif built and built["service"] in progress:
                progress[built["service"]].update(built=True, seconds=time.monotonic() - start)
            live.update(_table(progress, start))
        code = proc.wait()
    if code != 0:
        raise StackError(f"building {', '.join(services)} failed (exit {code}); last lines of the build log:\n"
                         + "\n".join(tail) + f"\nfull log: {log}")
    console.step(f"images built: {', '.join(services)} in {time.monotonic() - start:.0f} s (log: {log})")
