"""The daemon of one profile as processes: circusd PID files, orphans, start and stop (no aiida import).

Start: `verdi -p P daemon start-circus` forked from the supervisor's warm process (warm.py), else
`verdi -p P daemon start` (no worker count: the profile's `daemon.default_workers` option decides).
Stop: circusd's SIGTERM. Plus what verdi does not do: remove a stale circus-<profile>.pid (it blocks
`verdi daemon start` after an unclean stop) and kill orphaned workers.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import time
from collections.abc import Callable

import psutil
from common import CIRCUSD_NAME, DAEMON_DIR, log, verdi

STOP_TIMEOUT = float(os.environ.get("AIIDA_DAEMON_STOP_TIMEOUT", "7"))
STARTING_GRACE = 60.0  # a daemon start by someone else that takes longer is taken for dead
START_TIMEOUT = 90.0


def pid_file(profile: str) -> pathlib.Path:
    return DAEMON_DIR / f"circus-{profile}.pid"


def _is_circusd_cmd(cmdline: list[str]) -> bool:
    return any("circusd" in part or "start-circus" in part for part in cmdline)


def _is_circusd(proc: psutil.Process | None, profile: str | None = None) -> bool:
    """A circusd (of `profile`, if given): verdi's (its command line names it and the profile) or one
    forked from the warm process (named CIRCUSD_NAME; the profile is in the name of its log file)."""
    try:
        if proc is None:
            return False
        cmdline = proc.cmdline()
        if _is_circusd_cmd(cmdline):
            return profile is None or profile in cmdline
        if proc.name() != CIRCUSD_NAME:
            return False
        return profile is None or any(pathlib.Path(f.path).name == f"circus-{profile}.log" for f in proc.open_files())
    except psutil.Error:
        return False


def circusd_pid(profile: str) -> int | None:
    """PID of the live circusd of `profile`, or None (no/stale PID file)."""
    try:
        pid = int(pid_file(profile).read_text().strip())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if proc.uids().real == os.getuid() and _is_circusd(proc):  # the file names the profile
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def daemon_processes(profile: str | None) -> list[psutil.Process]:
    """Workers (`verdi -p P daemon worker`) and circusd processes of this user (profile=None: all)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.pid == os.getpid() or proc.info["uids"].real != os.getuid():
                continue
            is_worker = cmd[-2:] == ["daemon", "worker"] and (
                profile is None or f" -p {profile} " in " " + " ".join(cmd) + " "
            )
            is_circus = _is_circusd(proc, profile)
            # circusd's `circus.stats` helper: orphaned (parent gone) once circusd was killed.
            is_stats = "from circus import stats; stats.main()" in cmd and not _is_circusd(proc.parent())
            if is_worker or is_circus or is_stats:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def starting(profile: str, within: float = STARTING_GRACE) -> bool:
    """Someone else (a user's `verdi daemon start` through docker exec) is starting a daemon: a
    `verdi ... daemon start|restart` of this user, or a circusd of `profile` without its PID file yet,
    younger than `within` s. Cleaning up "orphans" now would kill that start half-way."""
    now = time.time()
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "create_time"]):
        try:
            cmd = proc.info["cmdline"] or []
            mine = proc.pid != os.getpid() and proc.info["uids"].real == os.getuid()
            if not mine or now - proc.info["create_time"] > within:
                continue
            verb = cmd[cmd.index("daemon") + 1:cmd.index("daemon") + 2] if "daemon" in cmd else []
            if verb in (["start"], ["restart"]) or _is_circusd(proc, profile):
                return True
        except psutil.Error:
            continue
    return False


def worker_count(profile: str) -> int:
    """Daemon workers of `profile` running now (`verdi -p P daemon worker` processes)."""
    return sum(1 for proc in daemon_processes(profile) if (proc.info.get("cmdline") or [])[-2:] == ["daemon", "worker"])


def kill_processes(procs: list[psutil.Process], what: str, grace: float = 3) -> None:
    if not procs:
        return
    log(f"terminating {len(procs)} {what}: PIDs {[p.pid for p in procs]}")
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)


def clean_stale_state(profile: str | None) -> None:
    """Remove stale PID file(s) and kill orphaned daemon processes (profile=None: every profile)."""
    files = sorted(DAEMON_DIR.glob("circus-*.pid")) if profile is None else [pid_file(profile)]
    for path in files:
        if path.exists():
            log(f"removing stale daemon PID file {path}")
            path.unlink(missing_ok=True)
    kill_processes(daemon_processes(profile), "orphaned daemon process(es)")


def start(profile: str, runner=None, launch: Callable[[str, float], tuple[int, str]] | None = None) -> bool:
    """Start the daemon of `profile`; True when its circusd runs. `launch(profile, timeout)` starts
    circusd from a warm process (the supervisor's warm.launch_circusd); without it, or if it fails,
    `verdi -p P daemon start` (runner: how verdi runs, see common.verdi)."""
    if circusd_pid(profile) is None:
        clean_stale_state(profile)
    log(f"starting the daemon of {profile!r} (workers: its daemon.default_workers option)")
    if launch is not None:
        try:
            code, output = launch(profile, START_TIMEOUT)
        except subprocess.TimeoutExpired:
            code, output = 124, f"no answer within {START_TIMEOUT:.0f} s"
        if code == 0 and _await_circusd(profile):
            log(f"daemon of {profile!r} running, circusd PID {circusd_pid(profile)}")
            return True
        log(f"the warm start of the daemon of {profile!r} failed (exit code {code}): {output.strip()[-500:]}; "
            "starting it with verdi")
        clean_stale_state(profile)
    result = verdi("-p", profile, "daemon", "start", check=False, timeout=START_TIMEOUT, runner=runner)
    pid = circusd_pid(profile)
    if result.returncode != 0 or pid is None:
        log(f"ERROR: daemon start of {profile!r} failed (exit code {result.returncode})")
        return False
    log(f"daemon of {profile!r} running, circusd PID {pid}")
    return True


def _await_circusd(profile: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while circusd_pid(profile) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop(profile: str, now: bool = False) -> None:
    """Stop the daemon of `profile`; also cleans a stale state.

    SIGTERM to circusd does what `verdi daemon stop` asks of it (stop the watchers gracefully:
    workers get SIGTERM, then exit, about a second), without a verdi start-up costing CPU seconds; what
    is left after STOP_TIMEOUT is killed. `now`: SIGKILL to circusd, then its workers, as a crash would
    (a restore that sets the data aside): each process goes on from its last checkpoint, its task goes
    back to the broker the moment the worker's connection drops.
    """
    pid = circusd_pid(profile)
    if pid is None:
        clean_stale_state(profile)
        return
    log(f"stopping the daemon of {profile!r} (circusd PID {pid}{', killed now' if now else ''})")
    with contextlib.suppress(psutil.Error):
        circusd = psutil.Process(pid)
        workers = circusd.children(recursive=True)
        if now:
            for proc in (circusd, *workers):  # circusd first: it would start a new worker for a killed one
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        else:
            circusd.terminate()
        _, alive = psutil.wait_procs([circusd, *workers], timeout=STOP_TIMEOUT)
        kill_processes(alive, "daemon process(es) still running after SIGTERM", grace=1)
    kill_processes(daemon_processes(profile), "remaining daemon process(es)", grace=1)
    pid_file(profile).unlink(missing_ok=True)
    log(f"daemon of {profile!r} stopped")
