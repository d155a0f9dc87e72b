"""aiida service supervisor: profile bootstrap + daemon supervision (runs as user aiida).

Started by entrypoint.sh after it has read the compose secrets as root; the passwords arrive in
AIIDA_STACK_DB_PASSWORD / AIIDA_STACK_BROKER_PASSWORD and are removed from the environment at
once, so verdi sub-commands, circusd and the daemon workers never inherit them.

1. wait for PostgreSQL (pg_isready) and RabbitMQ (TCP) until a deadline;
2. remove stale circus PID files ($AIIDA_PATH/.aiida/daemon/circus-<profile>.pid) and orphaned
   workers: nothing of the daemon can be alive in a fresh container;
3. first start: `verdi profile setup core.psql_dos` (DB password through a 0600 --config file,
   broker credentials through AIIDA_BROKER_* env: no password on a command line);
4. every start: write the current secrets, broker address and worker count into config.json
   (regenerated secrets are honoured), default profile, warnings.rabbitmq_version False (the
   rabbitmq image verifies consumer_timeout is off), `localhost` computer if missing;
5. `verdi daemon start N`, then every AIIDA_SUPERVISE_INTERVAL s: if circusd is gone, clean up
   and start it again - unless $AIIDA_PATH/.aiida/stack/daemon.disabled exists (intentional stop);
6. SIGTERM/SIGINT: `verdi daemon stop` (hard kill after a few seconds), exit 0.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psutil

PROFILE = os.environ.get("AIIDA_PROFILE") or "default"
AIIDA_PATH = pathlib.Path(os.environ.get("AIIDA_PATH", "/home/aiida"))
CONFIG_DIR = AIIDA_PATH / ".aiida"
CONFIG_FILE = CONFIG_DIR / "config.json"
DAEMON_DIR = CONFIG_DIR / "daemon"
STACK_DIR = CONFIG_DIR / "stack"
DISABLED_FILE = STACK_DIR / "daemon.disabled"
WORK_DIR = CONFIG_DIR / "work"

DB_HOST = os.environ.get("AIIDA_DB_HOST", "postgres")
DB_PORT = int(os.environ.get("AIIDA_DB_PORT", "5432"))
DB_USER = os.environ.get("AIIDA_DB_USER") or f"aiida_{PROFILE}"
DB_NAME = os.environ.get("AIIDA_DB_NAME") or f"aiida_{PROFILE}"
BROKER_HOST = os.environ.get("RABBITMQ_HOST", "rabbitmq")
BROKER_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))
BROKER_USER = os.environ.get("RABBITMQ_USER", "aiida")
BROKER_VHOST = os.environ.get("RABBITMQ_VHOST", "")

WAIT_TIMEOUT = float(os.environ.get("AIIDA_WAIT_TIMEOUT", "120"))
INTERVAL = float(os.environ.get("AIIDA_SUPERVISE_INTERVAL", "5"))
# Full health check (storage, broker, daemon) recorded for the cheap Docker healthcheck to read.
HEALTH_FILE = pathlib.Path(os.environ.get("AIIDA_HEALTH_FILE", "/run/aiida-stack/health"))
HEALTH_INTERVAL = float(os.environ.get("AIIDA_HEALTH_INTERVAL", "30"))
HEALTH_SCRIPT = pathlib.Path(__file__).with_name("health.py")
STOP_TIMEOUT = float(os.environ.get("AIIDA_DAEMON_STOP_TIMEOUT", "7"))

DB_PASSWORD = os.environ.pop("AIIDA_STACK_DB_PASSWORD", "")
BROKER_PASSWORD = os.environ.pop("AIIDA_STACK_BROKER_PASSWORD", "")
SECRETS = [s for s in (DB_PASSWORD, BROKER_PASSWORD) if s]

stopping = threading.Event()


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} aiida-supervisor: {redact(message)}", flush=True)


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "********")
    return text


def workers_wanted() -> int:
    try:
        return max(1, int(os.environ.get("AIIDA_DAEMON_WORKERS", "1")))
    except ValueError:
        log(f"AIIDA_DAEMON_WORKERS={os.environ['AIIDA_DAEMON_WORKERS']!r} is not an integer; using 1")
        return 1


def verdi(
    *args: str,
    check: bool = True,
    quiet: bool = False,
    log_failure: bool = True,
    env: dict | None = None,
    timeout: float = 120,
):
    """Run verdi with captured output; output is logged with secrets redacted."""
    try:
        result = subprocess.run(
            ["verdi", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        log(f"`verdi {' '.join(args)}` timed out after {timeout:.0f} s")
        if check:
            raise RuntimeError(f"verdi {args[0:3]} timed out") from exc
        return subprocess.CompletedProcess(exc.cmd, 124, "")
    if not quiet or (result.returncode != 0 and log_failure):
        for line in result.stdout.splitlines():
            if line.strip():
                log(f"  verdi: {line}")
    if check and result.returncode != 0:
        raise RuntimeError(f"`verdi {' '.join(args[:4])} ...` failed with exit code {result.returncode}")
    return result


# ---------------------------------------------------------------------------------------------- wait


def wait_for_services() -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    pg_ok = rmq_ok = False
    last_report = 0.0
    while not (pg_ok and rmq_ok):
        if stopping.is_set():
            sys.exit(0)
        if not pg_ok:
            pg_ok = (
                subprocess.run(
                    ["pg_isready", "-q", "-h", DB_HOST, "-p", str(DB_PORT), "-t", "2"], check=False
                ).returncode
                == 0
            )
        if not rmq_ok:
            try:
                socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2).close()
                rmq_ok = True
            except OSError:
                pass
        if pg_ok and rmq_ok:
            break
        now = time.monotonic()
        missing = [
            n
            for n, ok in ((f"PostgreSQL {DB_HOST}:{DB_PORT}", pg_ok), (f"RabbitMQ {BROKER_HOST}:{BROKER_PORT}", rmq_ok))
            if not ok
        ]
        if now > deadline:
            log(f"ERROR: gave up after {WAIT_TIMEOUT:.0f} s waiting for {' and '.join(missing)} (AIIDA_WAIT_TIMEOUT)")
            sys.exit(1)
        if now - last_report > 10:
            log(f"waiting for {' and '.join(missing)} ...")
            last_report = now
        stopping.wait(1)
    log(f"PostgreSQL {DB_HOST}:{DB_PORT} and RabbitMQ {BROKER_HOST}:{BROKER_PORT} are reachable")


# --------------------------------------------------------------------------------------- processes


def pid_file(profile: str = PROFILE) -> pathlib.Path:
    return DAEMON_DIR / f"circus-{profile}.pid"


def circusd_pid() -> int | None:
    """PID of the live circusd of PROFILE, or None (no/stale PID file)."""
    try:
        pid = int(pid_file().read_text().strip())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
        if any("circusd" in part or "start-circus" in part for part in cmdline) and proc.uids().real == os.getuid():
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _is_circusd(proc: psutil.Process | None) -> bool:
    try:
        return proc is not None and any("circusd" in p or "start-circus" in p for p in proc.cmdline())
    except psutil.Error:
        return False


def daemon_processes(profile: str | None = PROFILE) -> list[psutil.Process]:
    """Workers (`verdi -p P daemon worker`) and circusd processes of this user (profile=None: all)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.pid == os.getpid() or proc.info["uids"].real != os.getuid():
                continue
            is_worker = cmd[-2:] == ["daemon", "worker"] and (
                profile is None or f"-p {profile} " in " ".join(cmd) + " "
            )
            is_circus = any("circusd" in part or "start-circus" in part for part in cmd) and (
                profile is None or profile in cmd
            )
            # circusd's `circus.stats` helper: orphaned (parent gone) once circusd was killed.
            is_stats = "from circus import stats; stats.main()" in cmd and not _is_circusd(proc.parent())
            if is_worker or is_circus or is_stats:
                found.append(proc)
        except psutil.Error:
            continue
    return found


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


def clean_stale_daemon_state(all_profiles: bool = False) -> None:
    """Remove stale PID file(s) and kill orphaned daemon processes (circusd must be dead)."""
    files = sorted(DAEMON_DIR.glob("circus-*.pid")) if all_profiles else [pid_file()]
    for path in files:
        if path.exists():
            log(f"removing stale daemon PID file {path}")
            path.unlink(missing_ok=True)
    kill_processes(daemon_processes(None if all_profiles else PROFILE), "orphaned daemon process(es)")


# ----------------------------------------------------------------------------------------- profile


def profile_exists() -> bool:
    try:
        return PROFILE in json.loads(CONFIG_FILE.read_text()).get("profiles", {})
    except FileNotFoundError:
        return False


def broker_env() -> dict:
    return {
        "AIIDA_BROKER_PROTOCOL": "amqp",
        "AIIDA_BROKER_HOST": BROKER_HOST,
        "AIIDA_BROKER_PORT": str(BROKER_PORT),
        "AIIDA_BROKER_USERNAME": BROKER_USER,
        "AIIDA_BROKER_PASSWORD": BROKER_PASSWORD,
        "AIIDA_BROKER_VIRTUAL_HOST": BROKER_VHOST,
    }


def setup_profile() -> None:
    log(f"profile {PROFILE!r} not in {CONFIG_FILE}: first start, setting it up")
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    fd, secret_config = tempfile.mkstemp(prefix=".profile-setup-", suffix=".yaml", dir=STACK_DIR)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            json.dump({"database_password": DB_PASSWORD}, handle)  # JSON is valid YAML
        verdi(
            'profile', 'setup', 'core.psql_dos', '-n',
            '--profile-name', PROFILE,
            '--set-as-default',
            '--email', os.environ.get('AIIDA_USER_EMAIL', 'aiida@localhost'),
            '--first-name', os.environ.get('AIIDA_USER_FIRST_NAME', 'AiiDA'),
            '--last-name', os.environ.get('AIIDA_USER_LAST_NAME', 'User'),
            '--institution', os.environ.get('AIIDA_USER_INSTITUTION', 'aiida-stack'),
            '--database-hostname', DB_HOST,
            '--database-port', str(DB_PORT),
            '--database-username', DB_USER,
            '--database-name', DB_NAME,
            '--repository-uri', f'file://{CONFIG_DIR}/repository/{PROFILE}',
            '--broker', 'core.rabbitmq',
            '--config', secret_config,
            env=broker_env(),
            timeout=300,
        )  # fmt: skip
    finally:
        pathlib.Path(secret_config).unlink(missing_ok=True)
    if not profile_exists():
        raise RuntimeError(f"`verdi profile setup` did not create profile {PROFILE!r}")
    log(f"profile {PROFILE!r} created")


def sync_config() -> None:
    """Write the current secrets / broker address / worker count into config.json (no verdi call)."""
    from aiida.manage.configuration.config import Config

    config = Config.from_file(str(CONFIG_FILE))
    profile = config.get_profile(PROFILE)
    changed = []

    storage = dict(profile.storage_config)
    if storage.get("database_password") != DB_PASSWORD:
        storage["database_password"] = DB_PASSWORD
        profile.set_storage(profile.storage_backend, storage)
        changed.append("database password")

    backend = profile.process_control_backend
    if backend in (None, "core.rabbitmq"):
        current = dict(profile.process_control_config)
        wanted = {
            **current,
            "broker_protocol": current.get("broker_protocol") or "amqp",
            "broker_username": BROKER_USER,
            "broker_password": BROKER_PASSWORD,
            "broker_host": BROKER_HOST,
            "broker_port": BROKER_PORT,
            "broker_virtual_host": BROKER_VHOST,
        }
        if backend != "core.rabbitmq" or wanted != current:
            profile.set_process_controller("core.rabbitmq", wanted)
            changed.append("broker settings")
    else:
        log(f"profile {PROFILE!r} uses broker {backend!r}: leaving its broker settings alone")

    workers = workers_wanted()
    if profile.get_option("daemon.default_workers") != workers:
        profile.set_option("daemon.default_workers", workers)
        changed.append(f"daemon.default_workers={workers}")

    if config.options.get("warnings.rabbitmq_version", True) is not False:
        # Only because the rabbitmq image verifies that consumer_timeout is disabled.
        config.set_option("warnings.rabbitmq_version", False)
        changed.append("warnings.rabbitmq_version=False (global)")

    if not config.default_profile_name:
        config.set_default_profile(PROFILE)
        changed.append("default profile")

    if changed:
        config.update_profile(profile)
        config.store()
        log(f"config.json updated for {PROFILE!r}: {', '.join(changed)}")
    else:
        log(f"config.json of {PROFILE!r} is up to date with the secrets and settings")


def profile_uuid() -> str:
    return json.loads(CONFIG_FILE.read_text())["profiles"][PROFILE].get("PROFILE_UUID", "")


def ensure_localhost_computer() -> None:
    """Create the `localhost` computer once per profile (a marker saves a verdi call on warm starts)."""
    marker = STACK_DIR / f"localhost-computer.{PROFILE}"
    uuid = profile_uuid()
    if marker.exists() and marker.read_text().strip() == uuid:
        return
    if (
        verdi("-p", PROFILE, "computer", "show", "localhost", check=False, quiet=True, log_failure=False).returncode
        == 0
    ):
        marker.write_text(uuid + "\n")
        return
    log(f"creating computer localhost (core.local / core.direct, work dir {WORK_DIR})")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        verdi(
            '-p', PROFILE, 'computer', 'setup', '-n',
            '--label', 'localhost', '--hostname', 'localhost',
            '--description', 'this container (aiida-stack)',
            '--transport', 'core.local', '--scheduler', 'core.direct',
            '--work-dir', str(WORK_DIR), '--mpiprocs-per-machine', '1',
        )  # fmt: skip
        verdi("-p", PROFILE, "computer", "configure", "core.local", "localhost", "-n", "--safe-interval", "0")
        marker.write_text(uuid + "\n")
    except RuntimeError as exc:
        log(f"WARNING: could not create computer localhost: {exc}")


# ------------------------------------------------------------------------------------------ daemon


def start_daemon() -> bool:
    if circusd_pid() is None:
        clean_stale_daemon_state()
    workers = workers_wanted()
    log(f"starting the daemon of {PROFILE!r} with {workers} worker(s)")
    result = verdi("-p", PROFILE, "daemon", "start", str(workers), check=False, timeout=90)
    if result.returncode != 0 or circusd_pid() is None:
        log(f"ERROR: daemon start failed (exit code {result.returncode})")
        return False
    log(f"daemon running, circusd PID {circusd_pid()}")
    return True


def stop_daemon() -> None:
    if circusd_pid() is None:
        clean_stale_daemon_state()
        return
    log("stopping the daemon")
    result = verdi("-p", PROFILE, "daemon", "stop", check=False, timeout=STOP_TIMEOUT)
    if result.returncode != 0 or circusd_pid() is not None:
        pid = circusd_pid()
        if pid is not None:
            kill_processes([psutil.Process(pid)], "circusd", grace=1)
    leftovers = daemon_processes(PROFILE)
    _, leftovers = psutil.wait_procs(leftovers, timeout=2)  # circusd exits just after answering `quit`
    kill_processes(leftovers, "remaining daemon process(es)", grace=1)
    pid_file().unlink(missing_ok=True)
    log("daemon stopped")


def record_health() -> bool:
    done = subprocess.run([sys.executable, str(HEALTH_SCRIPT), "--record", str(HEALTH_FILE)],
                          capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def supervise() -> None:
    failures = 0
    was_disabled = False
    next_check = 0.0
    next_health = 0.0
    while not stopping.is_set():
        if time.monotonic() >= next_health:
            # A failing verdict is re-checked soon: right after a start the workers may still be coming up.
            next_health = time.monotonic() + (HEALTH_INTERVAL if record_health() else INTERVAL / 2)
        if time.monotonic() >= next_check:
            disabled = DISABLED_FILE.exists()
            if disabled != was_disabled:
                log(
                    f"{DISABLED_FILE} present: the daemon is intentionally stopped, not restarting it"
                    if disabled
                    else f"{DISABLED_FILE} removed: supervising the daemon again"
                )
                was_disabled = disabled
            delay = INTERVAL
            if not disabled and circusd_pid() is None:
                log("daemon is not running (circusd gone or PID file stale): restarting it")
                if start_daemon():
                    failures = 0
                    next_health = 0.0  # record the recovery at once
                else:
                    failures += 1
                    delay = min(60.0, INTERVAL * 2**failures)
                    log(f"retrying in {delay:.0f} s")
            next_check = time.monotonic() + delay
        stopping.wait(1)


def on_signal(signum, _frame) -> None:
    if not stopping.is_set():
        log(f"received {signal.Signals(signum).name}: shutting down")
    stopping.set()
    if phase == "init":  # nothing of ours to stop yet: leave at once (verdi children are killed)
        raise SystemExit(0)


phase = "init"


def main() -> int:
    global phase
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not DB_PASSWORD or not BROKER_PASSWORD:
        log("ERROR: database or broker password missing (run through the entrypoint with the secrets)")
        return 1
    log(f"aiida-core {importlib.metadata.version('aiida-core')}, profile {PROFILE!r}, AIIDA_PATH={AIIDA_PATH}")

    HEALTH_FILE.unlink(missing_ok=True)  # a restarted container must not inherit the last verdict
    DAEMON_DIR.mkdir(parents=True, exist_ok=True)
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    # Fresh container: no daemon of any profile can be running; their PID files are stale.
    clean_stale_daemon_state(all_profiles=True)

    wait_for_services()
    if not profile_exists():
        setup_profile()
    sync_config()
    ensure_localhost_computer()

    phase = "run"
    if stopping.is_set():
        return 0
    if DISABLED_FILE.exists():
        log(f"{DISABLED_FILE} present: not starting the daemon")
    else:
        start_daemon()
    supervise()
    phase = "stop"
    stop_daemon()
    log("bye")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        log(f"ERROR: {exc}")
        sys.exit(1)
