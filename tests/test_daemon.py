"""daemon.*: status, stop/start that stick, worker count changes, persistence across re-creation."""

from __future__ import annotations

import json
import re
import time

import pytest

from ops import wait
from ops.profiles import PROFILE_CLI
from ops.services import AIIDA, SERVICES

pytestmark = pytest.mark.stack


def _workers(stack) -> int:
    done = stack.cli("daemon.status")
    assert done.returncode == 0, done.stdout + done.stderr
    return int(re.search(r"Active workers \[(\d+)\]", done.stdout).group(1))


def test_incr_and_decr_change_the_worker_count(stack):
    before = _workers(stack)
    assert stack.cli("daemon.incr", "--number", "2").returncode == 0
    assert _workers(stack) == before + 2
    assert stack.cli("daemon.decr", "--number", "2").returncode == 0
    assert _workers(stack) == before


def _running_workers(stack) -> dict:
    done = stack.compose.exec_aiida(["aiida-stack-profile", "workers"], capture=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _workers_become(stack, wanted: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_workers(stack)["running"] == wanted:
            return True
        time.sleep(1)
    return False


def test_service_brings_back_configured_workers_and_keeps_added_ones(stack):
    configured = _running_workers(stack)["configured"]
    assert stack.cli("daemon.incr").returncode == 0
    time.sleep(18)  # longer than the service's grace period (AIIDA_WORKER_GRACE, 10 s) plus a check interval
    assert _running_workers(stack)["running"] == configured + 1  # an added worker stays
    removed = stack.cli("verdi", "--", "daemon", "decr", str(configured + 1))  # verdi itself: no floor
    assert removed.returncode == 0, removed.stdout + removed.stderr
    # the workers exit after verdi returns; the service adds them back only after its 10 s grace
    assert _workers_become(stack, 0, timeout=8)
    assert _workers_become(stack, configured, timeout=60)
    wait.until_healthy(stack.compose, SERVICES, timeout=120)


def test_decr_refuses_to_go_below_the_configured_workers(stack):
    configured = _running_workers(stack)["configured"]
    done = stack.cli("daemon.decr", "--number", str(configured))
    assert done.returncode == 2
    assert "--number: would leave 0 worker(s), fewer than daemon.default_workers" in done.stderr
    assert _running_workers(stack)["running"] == configured


def test_stopped_daemon_stays_stopped_across_a_restart_until_started(stack):
    assert stack.cli("daemon.stop").returncode == 0
    try:
        stack.compose.container(AIIDA).restart(timeout=30)
        wait.until_healthy(stack.compose, SERVICES, timeout=120)  # a daemon stopped on purpose is no failure
        time.sleep(12)  # longer than the service's supervision interval
        assert stack.cli("daemon.status").returncode != 0
        verdi = stack.cli("verdi", "--", "daemon", "status")
        assert "not running" in (verdi.stdout + verdi.stderr).lower()
    finally:
        started = stack.cli("daemon.start")
    assert started.returncode == 0, started.stderr
    assert _workers(stack) >= 1
    wait.until_healthy(stack.compose, SERVICES, timeout=120)


def test_a_stop_now_kills_the_daemon_and_it_stays_stopped_until_started(stack):
    """A restore's stop (`daemon-stop --now`): circusd and its workers are killed, not asked to stop
    (circus never logs a SIGTERM), nothing of the daemon is left, and the supervisor leaves it stopped."""
    circus = "/home/aiida/.aiida/daemon/circus-default.pid"
    pid = stack.compose.exec_aiida(["cat", circus], capture=True).stdout.strip()
    assert pid, "the daemon of default does not run"
    done = stack.compose.exec_aiida([PROFILE_CLI, "daemon-stop", "--keep-stopped", "--now", "default"], capture=True)
    try:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == {"profile": "default", "stopped": True, "running": False}
        time.sleep(3)  # the supervisor looks at its markers every 0.1 s
        left = stack.compose.exec_aiida(["ps", "-eo", "pid=,comm=,args="], capture=True).stdout.splitlines()
        assert not [row for row in left if row.split()[0] == pid or "-p default daemon" in row], left
        log = stack.compose.exec_aiida(["cat", "/home/aiida/.aiida/daemon/log/circus-default.log"], capture=True)
        since = log.stdout.rsplit(f"Starting master on pid {pid}", 1)
        assert len(since) == 2 and "Got signal SIG_TERM" not in since[1], since[-1]
    finally:
        started = stack.cli("daemon.start")
    assert started.returncode == 0, started.stderr
    assert _workers(stack) >= 1


def test_default_workers_option_survives_container_recreation(stack):
    assert stack.cli("config.set", "daemon.default_workers", "2").returncode == 0
    try:
        assert stack.compose.run("up", "-d", "--force-recreate", "--wait", AIIDA, capture=True).returncode == 0
        assert _workers(stack) == 2
    finally:
        stack.cli("config.unset", "daemon.default_workers")
        stack.compose.run("up", "-d", "--force-recreate", "--wait", AIIDA, capture=True)
    assert _workers(stack) == stack.settings.daemon_workers


WARM_JOBS = """
import os, subprocess, sys, time
sys.path.insert(0, "/usr/local/lib/aiida-stack")
import warm


def main():
    r = warm.run_verdi(("--version",), None, 60)
    print("version", r.returncode, r.stdout.split()[-1])
    print("refused", warm.run_verdi(("-p", "no-such-profile", "daemon", "status"), None, 60).returncode)
    began = time.monotonic()
    try:
        warm.call(time.sleep, 60, timeout=2)
    except subprocess.TimeoutExpired:
        print("timed-out", round(time.monotonic() - began))
    print("crashed", warm.call(os._exit, 7, timeout=30)[0])


if __name__ == "__main__":  # children of the forkserver import this file again
    main()
"""


def test_supervisor_jobs_run_in_children_of_one_warm_process(stack):
    """Daemon starts and health checks fork from a process with aiida imported: each child gives its exit
    code and output back, a hung one is killed at its timeout, a crashed one is reported."""
    processes = stack.compose.exec_aiida(["ps", "-eo", "pid=,comm=,args="], capture=True).stdout
    rows = [line.split(None, 2) for line in processes.splitlines()]
    servers = [args for _, comm, args in rows if "multiprocessing.forkserver" in args and comm != "circusd"]
    assert len(servers) == 1, processes
    # the daemons' circusd are forked from it too (no second of verdi start-up): named circusd
    circus = stack.compose.exec_aiida(["cat", "/home/aiida/.aiida/daemon/circus-default.pid"], capture=True).stdout
    assert [comm for pid, comm, _ in rows if pid == circus.strip()] == ["circusd"], (circus, processes)
    # verdi's own interpreter: aiida warns when a daemon was started by another (`verdi status` not ✔)
    shebang = stack.compose.exec_aiida(["sh", "-c", "head -n 1 \"$(command -v verdi)\""], capture=True).stdout
    assert servers[0].split()[0] == shebang.removeprefix("#!").split()[0], (servers, shebang)
    script = ("cat > /tmp/warm_jobs.py && /opt/aiida/bin/python /tmp/warm_jobs.py; status=$?; "
              "rm /tmp/warm_jobs.py; exit $status")
    done = stack.compose.exec_aiida(["sh", "-c", script], input=WARM_JOBS, capture=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    version = stack.compose.exec_aiida(["verdi", "--version"], capture=True).stdout.split()[-1]
    assert lines["version"] == f"0 {version}"
    assert lines["refused"] != "0"
    assert lines["timed-out"] == "2"
    assert lines["crashed"] == "7"
