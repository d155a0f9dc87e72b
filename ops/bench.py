"""Benchmarks that print their figures (targets are met here, never in a timed test)."""

from __future__ import annotations

import time

from rich.table import Table

from ops import console, lifecycle
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.runner import SCRIPTS, run_script
from ops.settings import Settings


def warm_up(settings: Settings) -> float:
    """Stop the stack (containers removed, volumes kept) and time `up` until healthy."""
    lifecycle.down(settings, volumes=False, yes=False)
    start = time.monotonic()
    lifecycle.up(settings)
    return time.monotonic() - start


def engine_benchmark(settings: Settings, n: int, workers: int, time_up: bool) -> None:
    if n < 1 or workers < 1:
        raise StackError("-n and --workers must be at least 1", code=2)
    table = Table("figure", "value", title="aiida-stack benchmark", title_justify="left")
    if time_up:
        table.add_row("warm ./stack up → healthy", f"{warm_up(settings):.1f} s (target ≤ 20 s)")
    console.note(f"submitting {n} core.arithmetic.add calculations to {workers} daemon workers")
    code, out = run_script(Stack(settings), SCRIPTS / "bench_arithmetic.py", [str(n), str(workers)], capture=True)
    result = json_result(code, out, "the engine benchmark")
    table.add_row("processes / workers", f"{result['processes']} / {result['workers']}")
    table.add_row("finished ok", f"{result['finished_ok']} of {result['processes']}")
    table.add_row("submission", f"{result['submit_seconds']} s")
    table.add_row("submit → all terminated", f"{result['seconds']} s")
    table.add_row("seconds per process", f"[bold]{result['seconds_per_process']}[/] s "
                  "(docs: 0.47/0.28/0.16 s for 1/2/4 workers on a 6-core desktop)")
    console.out.print(table)
    if result["finished_ok"] != n:
        raise StackError(f"only {result['finished_ok']} of {n} calculations finished ok")
