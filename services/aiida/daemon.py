"""The daemon of one profile as processes: circusd PID files, orphans, start and stop (no aiida import).

`verdi -p P daemon start` (no worker count: the profile's `daemon.default_workers` option decides),
stop through circusd's SIGTERM, plus what verdi does not do: remove a stale circus-<profile>.pid
(it blocks `verdi daemon start` after an unclean stop) and kill orphaned workers.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time

import psutil
from common import DAEMON_DIR, log, verdi

STOP_TIMEOUT = float(os.environ.get("AIIDA_DAEMON_STOP_TIMEOUT", "7"))
STARTING_GRACE = 60.0  # a daemon start by someone else that takes longer is taken for dead


def pid_file(profile: str) -> pathlib.Path:
    return DAEMON_DIR / f"circus-{profile}.pid"


def _is_circusd_cmd(cmdline: list[str]) -> bool:
    return any("circusd" in part or "start-circus" in part for part in cmdline)


def circusd_pid(profile: str) -> int | None:
    """PID of the live circusd of `profile`, or None (no/stale PID file)."""
    try:
        pid = int(pid_file(profile).read_text().strip())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if _is_circusd_cmd(proc.cmdline()) and proc.uids().real == os.getuid():
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _is_circusd(proc: psutil.Process | None) -> bool:
    try:
        return proc is not None and _is_circusd_cmd(proc.cmdline())
    except psutil.Error:
        return False


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
            is_circus = _is_circusd_cmd(cmd) and (profile is None or profile in cmd)
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
            if verb in (["start"], ["restart"]) or (_is_circusd_cmd(cmd) and profile in cmd):
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


def start(profile: str, runner=None) -> bool:
    """`verdi -p P daemon start` (runner: how verdi runs, see common.verdi); True when circusd runs."""
    if circusd_pid(profile) is None:
        clean_stale_state(profile)
    log(f"starting the daemon of {profile!r} (workers: its daemon.default_workers option)")
    result = verdi("-p", profile, "daemon", "start", check=False, timeout=90, runner=runner)
    pid = circusd_pid(profile)
    if result.returncode != 0 or pid is None:
        log(f"ERROR: daemon start of {profile!r} failed (exit code {result.returncode})")
        return False
    log(f"daemon of {profile!r} running, circusd PID {pid}")
    return True


def stop(profile: str) -> None:
    """Stop the daemon of `profile`; also cleans a stale state.

    SIGTERM to circusd does what `verdi daemon stop` asks of it (stop the watchers gracefully:
    workers get SIGTERM, then exit), without a verdi start-up costing CPU seconds; what is left
    after STOP_TIMEOUT is killed.
    """
    pid = circusd_pid(profile)
    if pid is None:
        clean_stale_state(profile)
        return
    log(f"stopping the daemon of {profile!r} (circusd PID {pid})")
    with contextlib.suppress(psutil.Error):
        circusd = psutil.Process(pid)
        workers = circusd.children(recursive=True)
        circusd.terminate()
        _, alive = psutil.wait_procs([circusd, *workers], timeout=STOP_TIMEOUT)
        kill_processes(alive, "daemon process(es) still running after SIGTERM", grace=1)
    kill_processes(daemon_processes(profile), "remaining daemon process(es)", grace=1)
    pid_file(profile).unlink(missing_ok=True)
    log(f"daemon of {profile!r} stopped")
