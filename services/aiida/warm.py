"""aiida imported once: the supervisor's verdi commands and full health checks run in children of one
warm process instead of each paying Python's import of aiida (over a CPU-second every time).

multiprocessing's forkserver with aiida preloaded: start() launches the server, which imports PRELOAD
while PostgreSQL and RabbitMQ still boot; each call forks a child from it. The child has the modules
but nothing loaded by them (no config.json read, no profile, no connection): it runs one job and exits,
like a fresh `verdi` (a config.json the import read is forgotten first). A full health check takes
about 0.4 s this way instead of 1.6 s. If the server dies, multiprocessing starts a new one at the next
call.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from multiprocessing import forkserver

from common import CIRCUSD_NAME

# Missing modules are skipped by the server (aiida-core releases differ); they load in the child then.
PRELOAD = [
    "aiida.cmdline.commands.cmd_verdi",
    "aiida.cmdline.commands.cmd_daemon",
    "aiida.manage.manager",
    "aiida.engine.daemon.client",
    "aiida.storage.psql_dos.backend",
    "aiida.brokers.rabbitmq.broker",
    "health",
]



def _verdi_python() -> str:
    """The interpreter of the `verdi` script. aiida records the one that started a daemon and warns
    (`verdi status`: not ✔) when verdi runs with another: `python` and `python3` of one venv differ."""
    try:
        with open(shutil.which("verdi") or "", encoding="utf-8") as script:
            first = script.readline()
    except OSError:
        return sys.executable
    return first[2:].split()[0] if first.startswith("#!") and first[2:].split() else sys.executable


_context = multiprocessing.get_context("forkserver")
_context.set_executable(_verdi_python())
_context.set_forkserver_preload(PRELOAD)


def start() -> None:
    """Launch the warm process now: its imports run in the background."""
    forkserver.ensure_running()


def _forget_loaded_config() -> None:
    """Some releases read config.json while being imported (2.2.2 does): the server's copy is stale
    (a profile created since, a config migrated). The child reads the file as it is now."""
    try:
        from aiida.manage import configuration
    except ImportError:
        return
    configuration.reset_config()


def _child(sender, job: Callable, args: tuple, env: dict | None) -> None:
    os.environ.update(env or {})
    _forget_loaded_config()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            code = job(*args) or 0
        except SystemExit as exc:  # click commands end this way
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            traceback.print_exc()
            code = 1
    sender.send((code, output.getvalue()))


def call(job: Callable, *args, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """job(*args) in a child of the warm process: (exit code, what it printed). job must be a
    module-level function (the server imports it by name). Raises subprocess.TimeoutExpired."""
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(target=_child, args=(sender, job, args, env), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            child.kill()
            raise subprocess.TimeoutExpired(getattr(job, "__name__", "job"), timeout)
        try:
            return receiver.recv()
        except EOFError:  # died without an answer (killed, out of memory)
            child.join(5)
            return (child.exitcode if child.exitcode is not None else 1), ""
    finally:
        receiver.close()
        child.join(5)


def _verdi_main(*args: str) -> None:
    from aiida.cmdline.commands.cmd_verdi import verdi

    verdi.main(args=list(args), prog_name="verdi")


def run_verdi(args: tuple[str, ...], env: dict | None, timeout: float) -> subprocess.CompletedProcess:
    """`verdi ARGS` in a warm child, as common.verdi's runner."""
    code, output = call(_verdi_main, *args, timeout=timeout, env=env)
    return subprocess.CompletedProcess(["verdi", *args], code, output)


def _start_circus(profile: str) -> None:
    """`verdi -p PROFILE daemon start-circus`, the command `verdi daemon start` runs as a new Python
    process (about 1.4 s of imports) and then waits for. circusd daemonizes (double fork): this child
    exits at the first fork, which ends the call. The daemon is named CIRCUSD_NAME for daemon.py, as
    its command line is the warm server's; it stops through SIGTERM like any circusd."""
    import ctypes

    ctypes.CDLL(None).prctl(15, CIRCUSD_NAME.encode(), 0, 0, 0)  # PR_SET_NAME: inherited by the forks
    launcher = os.getpid()
    try:
        _verdi_main("-p", profile, "daemon", "start-circus")  # no count: daemon.default_workers
    finally:
        if os.getpid() != launcher:  # circusd itself, once it stopped: no reply to send, nothing to run
            os._exit(0)


def launch_circusd(profile: str, timeout: float) -> tuple[int, str]:
    """Start the circusd of `profile` from the warm process: (exit code, output); 0 once it daemonized."""
    return call(_start_circus, profile, timeout=timeout)
