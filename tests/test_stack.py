"""The whole stack, driven the way a user drives it: ./stack against a real running stack."""

from __future__ import annotations

import os
import re
import signal
import stat
import time

import pytest

from ops import engine, secrets, wait
from ops.services import AIIDA, BACKUP, SECRETS, SERVICES

from .conftest import MOUNTED, MOUNTED_IN_AIIDA

pytestmark = pytest.mark.stack


def test_stack_comes_up_healthy(stack):
    # `up` returns once each service's own check passes; Docker's next run of it (one interval) agrees.
    deadline = time.monotonic() + 10
    while True:
        health = {s: st["health"] for s, st in wait.service_states(stack.compose).items()}
        if health == dict.fromkeys(SERVICES, "healthy") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert health == dict.fromkeys(SERVICES, "healthy")


def test_verdi_status_reports_storage_broker_and_daemon(stack):
    done = stack.cli("verdi", "--", "status")
    assert done.returncode == 0, done.stderr
    for component in ("storage", "broker", "daemon"):
        assert re.search(rf"✔ {component}:", done.stdout), done.stdout
    assert "Daemon is running" in done.stdout


def test_calculation_runs_through_the_daemon(stack):
    done = stack.run_script("add.py", "4", "38")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["finished", "0", "42"]


def test_run_passes_the_exit_code_through(stack):
    assert stack.run_script("exit_with.py", "3").returncode == 3
    assert stack.run_script("exit_with.py", "0").returncode == 0


def test_verdi_passes_stdin_and_exit_code_through(stack):
    done = stack.cli("verdi", "--", "run", "/dev/stdin", input="import sys; print('from stdin'); sys.exit(5)\n")
    assert done.returncode == 5
    assert "from stdin" in done.stdout
    assert stack.cli("verdi", "--", "profile", "show", "no-such-profile").returncode != 0


def test_status_shows_version_profile_and_daemon_workers(stack):
    done = stack.cli("status")
    assert done.returncode == 0, done.stderr
    assert f"aiida-core {stack.settings.aiida_core_version}" in done.stdout
    assert "default profile: default" in done.stdout
    workers = stack.settings.daemon_workers
    assert f"{workers} worker{'s' if workers != 1 else ''}" in done.stdout  # the default profile's daemon
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")


def test_status_reports_an_unhealthy_service_as_unhealthy(stack):
    sidecar = stack.compose.container(BACKUP)
    # what the sidecar leaves when a scheduled backup failed: its healthcheck fails from then on
    assert sidecar.exec_run(["sh", "-c", "echo 'disk full' > /tmp/schedule-failed"]).exit_code == 0
    try:
        deadline = time.monotonic() + 60
        while stack.health()[BACKUP] != "unhealthy" and time.monotonic() < deadline:
            time.sleep(2)
        health = stack.health()
        # (a table's "unhealthy" contains "healthy": the JSON tells them apart)
        assert health == {**dict.fromkeys(SERVICES, "healthy"), BACKUP: "unhealthy"}, health
    finally:
        sidecar.exec_run(["rm", "-f", "/tmp/schedule-failed"])
    wait.until_healthy(stack.compose, SERVICES, timeout=60)


# capability numbers (linux/capability.h) of what the entrypoints need; nothing else may be in reach
NEEDED_CAPABILITIES = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7}


def test_every_service_runs_without_new_privileges_with_few_capabilities_and_bounded_logs(stack):
    for service in SERVICES:
        container = stack.compose.container(service)
        status = dict(line.split(":\t", 1) for line in container.exec_run(["cat", "/proc/1/status"]).output.decode()
                      .splitlines() if ":\t" in line)
        assert status["NoNewPrivs"].strip() == "1", (service, status["NoNewPrivs"])
        bounding = int(status["CapBnd"], 16)
        assert bounding == sum(1 << bit for bit in NEEDED_CAPABILITIES.values()), (service, hex(bounding))
        logs = container.attrs["HostConfig"]["LogConfig"]
        assert logs["Type"] == "json-file" and logs["Config"] == {"max-size": "10m", "max-file": "3"}, (service, logs)


def test_secrets_are_private_files_and_not_in_container_config(stack):
    folder = secrets.secrets_dir(stack.settings)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    docker = engine.client()
    for name in SECRETS:
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        value = path.read_text()
        assert len(value) >= 32
        for service in SERVICES:
            container = stack.compose.container(service)
            assert value not in str(container.attrs["Config"]), f"{name} in {service}'s config"
            image = docker.images.get(container.attrs["Config"]["Image"])
            assert value not in str(image.attrs) + str(image.history()), f"{name} in {service}'s image"


def _daemon_pid(aiida) -> str | None:
    """PID of the running circus daemon (from its PID file), or None."""
    found = aiida.exec_run(["sh", "-c", 'pid=$(cat "$AIIDA_PATH/.aiida/daemon/circus-default.pid") '
                            '&& kill -0 "$pid" && echo "$pid"'])
    return found.output.decode().strip() if found.exit_code == 0 else None


def test_killed_daemon_is_restarted_and_stack_turns_healthy(stack):
    aiida = stack.compose.container(AIIDA)
    deadline = time.monotonic() + 60  # an earlier test's PostgreSQL restart may have the daemon recovering
    while not (before := _daemon_pid(aiida)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert before, "no daemon running in the aiida container"
    assert aiida.exec_run(["kill", "-KILL", before]).exit_code == 0
    deadline = time.monotonic() + 120
    after = None
    while time.monotonic() < deadline:
        after = _daemon_pid(aiida)
        if after and after != before:
            break
        time.sleep(1)
    assert after and after != before, "the daemon was not restarted"
    wait.until_healthy(stack.compose, SERVICES, timeout=180)
    done = stack.run_script("add.py", "1", "2")
    assert done.stdout.split()[-3:] == ["finished", "0", "3"], done.stdout + done.stderr


def _crash(container) -> None:
    """SIGKILL the container's main process from the host (a crash: the restart policy restarts it)."""
    container.reload()
    restarts = container.attrs["RestartCount"]
    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["RestartCount"] > restarts and container.status == "running":
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} was not restarted after a crash")


def test_restarts_long_past_are_no_crash_loop(stack):
    backup = stack.compose.container(BACKUP)
    for _ in range(wait.CRASH_LOOP):
        _crash(backup)
    up = stack.cli("up")  # recovered: healthy again, whatever its restart count
    assert up.returncode == 0, up.stdout + up.stderr
    assert stack.compose.container(BACKUP).attrs["RestartCount"] >= wait.CRASH_LOOP


def test_down_and_up_keep_profile_and_data_and_trim_config_copies(stack):
    stored = stack.run_script("store_node.py", "1234")
    assert stored.returncode == 0, stored.stderr
    node_uuid = stored.stdout.split()[-1]
    # aiida-core leaves a timestamped config.json copy per store; the service keeps the newest 20
    old_copies = "for i in $(seq 10 40); do touch /home/aiida/.aiida/config.json.20000101-000000.$i; done"
    assert stack.compose.exec_aiida(["sh", "-c", old_copies]).returncode == 0
    down = stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert stack.compose.ps() == []
    up = stack.cli("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert re.search(r"healthy after \d+\.\d s", up.stderr)
    loaded = stack.run_script("load_node.py", node_uuid)
    assert loaded.stdout.split()[-1] == "1234", loaded.stdout + loaded.stderr
    copies = stack.compose.exec_aiida(["sh", "-c", "ls /home/aiida/.aiida | grep '^config.json[.]'"],
                                      capture=True).stdout.split()
    assert len(copies) == 20 and "config.json.20000101-000000.10" not in copies, copies
    assert stack.compose.exec_aiida(["test", "-s", "/home/aiida/.aiida/config.json"]).returncode == 0


def test_a_host_folder_is_mounted_read_only(stack):
    read = stack.compose.exec_aiida(["cat", f"{MOUNTED_IN_AIIDA}/Si.upf"], capture=True)
    assert read.returncode == 0 and read.stdout == (MOUNTED / "Si.upf").read_text(), read.stderr
    written = stack.compose.exec_aiida(["touch", f"{MOUNTED_IN_AIIDA}/new-file"], capture=True)
    assert written.returncode != 0 and "Read-only file system" in written.stderr, written.stdout + written.stderr
    assert not (MOUNTED / "new-file").exists()
