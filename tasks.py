"""aiida-stack tasks: `./stack --list`, `./stack <task> --help`.

A menu: each task is a few lines calling the library in ops/.
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from ops import bench as bench_ops
from ops import console, lifecycle, runner, settings
from ops.compose import Stack
from ops.errors import StackError
from ops.services import SERVICES
from ops.settings import ROOT


def reported(fn):
    """StackError → its message in red and its exit code, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StackError as exc:
            console.err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise Exit(code=exc.code) from None

    return wrapper


def _remainder(c) -> list[str]:
    """Arguments after a standalone `--`, with their quoting intact."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


@task
@reported
def up(c):
    """Start the stack: set up what is missing, start, wait until healthy, show the status.

    Missing set-up steps are done first: Docker engine (Debian as root: installs docker.io and starts
    dockerd), Compose v2, base image (pull, or debootstrap without a registry), images, secrets."""
    s = settings.load()
    lifecycle.up(s)
    console.out.print(lifecycle.status(s))


@task(help={"volumes": "also delete the data volumes (databases, broker, repositories); backups are kept",
            "yes": "confirm --volumes without a prompt"})
@reported
def down(c, volumes=False, yes=False):
    """Stop the stack (containers removed); data volumes stay unless --volumes (asks to confirm)."""
    lifecycle.down(settings.load(), volumes=volumes, yes=yes)


@task
@reported
def status(c):
    """Show each service's state/health, aiida-core version, profiles, daemon workers, active processes."""
    console.out.print(lifecycle.status(settings.load()))


@task(help={"service": f"one of {', '.join(SERVICES)} (default: all)", "follow": "keep following"})
@reported
def logs(c, service="", follow=False):
    """Show the services' logs."""
    if service and service not in SERVICES:
        raise StackError(f"unknown service {service!r}; one of {', '.join(SERVICES)}", code=2)
    Stack(settings.load()).run("logs", *(["--follow"] if follow else []), *([service] if service else []))


@task
@reported
def build(c):
    """Build the four images (sets up engine, Compose and base image first if needed)."""
    lifecycle.build(lifecycle.prepare(settings.load()))


@task(help={"profile": "AiiDA profile (default: the default profile)"})
@reported
def verdi(c, profile=""):
    """Run verdi in the aiida container: ./stack verdi [--profile P] -- ARGS (stdin, exit code pass through)."""
    argv = ["verdi", *(["-p", profile] if profile else []), *_remainder(c)]
    raise Exit(code=Stack(settings.load()).exec_aiida(argv, interactive=True).returncode)


@task(help={"script": "local Python script", "profile": "AiiDA profile (default: the default profile)"})
@reported
def run(c, script, profile=""):
    """Run a local Python script in the aiida container with the profile loaded (like verdi run).

    ./stack run SCRIPT [--profile P] [-- ARGS]. The exit code passes through."""
    stack = Stack(settings.load())
    code, _ = runner.run_script(stack, Path(script), _remainder(c), profile=profile or None)
    raise Exit(code=code)


@task(help={"n": "number of core.arithmetic.add calculations", "workers": "daemon workers during the run",
            "time-up": "first stop the stack (volumes kept) and time a warm `up` until healthy"})
@reported
def bench(c, n=100, workers=2, time_up=False):
    """Engine benchmark (AiiDA docs): N ArithmeticAdd calculations through the daemon, seconds/process.

    Submits N core.arithmetic.add calculations to the daemon with W workers, waits for all, prints seconds
    per process and how many finished ok, then deletes what it created. --time-up also times a warm `up`."""
    bench_ops.engine_benchmark(settings.load(), n=n, workers=workers, time_up=time_up)


@task(help={"k": "only tests matching this pytest -k expression"})
@reported
def test(c, k=""):
    """Run the whole test suite (unit + testcontainers integration), preparing engine and images first.

    Extra pytest arguments go after `--`, e.g. ./stack test -- -x -k restart."""
    lifecycle.build(lifecycle.prepare(settings.load()), only_missing=True)
    argv = [sys.executable, "-m", "pytest", *(["-k", k] if k else []), *_remainder(c)]
    raise Exit(code=subprocess.run(argv, cwd=ROOT).returncode)


ns = Collection(up, down, status, logs, build, verdi, run, bench, test)
