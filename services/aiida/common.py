"""Shared by the supervisor, the profile CLI and the health check: paths, logging, verdi, config.json.

Nothing here imports aiida (the supervisor's warm start and the cheap checks stay fast).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time

from stack_rules import daemon_stop_marker

AIIDA_PATH = pathlib.Path(os.environ.get("AIIDA_PATH", "/home/aiida"))
CONFIG_DIR = AIIDA_PATH / ".aiida"
CONFIG_FILE = CONFIG_DIR / "config.json"
DAEMON_DIR = CONFIG_DIR / "daemon"
STACK_DIR = CONFIG_DIR / "stack"
REPOSITORY_ROOT = CONFIG_DIR / "repository"
WORK_DIR = CONFIG_DIR / "work"
# Files in STACK_DIR: daemon.disabled.<profile> (intentional stop, set by the host), bootstrapped (the
# first profile was set up once: an empty config later means "all deleted", not "first start"),
# applied-daemon-workers (AIIDA_DAEMON_WORKERS last written), hold.<profile> (a profile CLI
# operation owns that profile's daemon: the supervisor leaves it alone).
LEGACY_DISABLED_FILE = STACK_DIR / "daemon.disabled"  # one marker for the default profile, before daemons per profile
BOOTSTRAPPED_FILE = STACK_DIR / "bootstrapped"
APPLIED_WORKERS_FILE = STACK_DIR / "applied-daemon-workers"
# The stack's broker settings (with password, mode 0600, like config.json), written by the
# supervisor at each start: the profile CLI's source when no profile is left to copy them from.
BROKER_FILE = STACK_DIR / "broker.json"
HOLD_MAX_AGE = 600  # a hold left by a killed CLI expires
# The process name (comm) of a circusd the supervisor forks from its warm process (its command line is
# the warm server's, so daemon.py knows it by this name and its PID or log file).
CIRCUSD_NAME = "circusd"


# Values never printed: anything logged or relayed from verdi is passed through redact().
SECRETS: list[str] = []


def add_secret(value: str) -> None:
    if value and value not in SECRETS:
        SECRETS.append(value)


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "********")
    return text


def write_atomic(path: pathlib.Path | str, text: str, mode: int = 0o644) -> None:
    """Write a sibling, rename it over `path`: a reader sees the old content or the new, never half."""
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


LOG_PREFIX = ["aiida-supervisor"]  # the profile CLI replaces it


def log(message: str) -> None:
    now = time.time()  # milliseconds: ./stack bench.up reads the start-up's milestones from this log
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    print(f"{stamp} {LOG_PREFIX[0]}: {redact(message)}", flush=True)


class CliError(Exception):
    """A profile CLI command refused or failed: exit `code`, `message` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class VerdiError(RuntimeError):
    """A verdi command failed; `output` holds its (redacted) output."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def verdi(
    *args: str,
    check: bool = True,
    quiet: bool = False,
    log_failure: bool = True,
    env: dict | None = None,
    timeout: float = 120,
    echo=None,
    runner=None,
) -> subprocess.CompletedProcess:
    """Run verdi with captured output; the output is shown (through `echo`, default log) redacted.

    runner(args, env, timeout) runs it (default: a new process; the supervisor's warm.run_verdi forks it
    from a process with aiida imported) and raises subprocess.TimeoutExpired."""
    echo = echo or (lambda line: log(f"  verdi: {line}"))
    try:
        result = (runner or run_verdi_process)(args, env, timeout)
    except subprocess.TimeoutExpired as exc:
        if check:
            raise VerdiError(f"`verdi {' '.join(args[:4])} ...` timed out after {timeout:.0f} s") from exc
        echo(f"`verdi {' '.join(args)}` timed out after {timeout:.0f} s")
        return subprocess.CompletedProcess(["verdi", *args], 124, "")
    result.stdout = redact(result.stdout)
    if not quiet or (result.returncode != 0 and log_failure):
        for line in result.stdout.splitlines():
            if line.strip():
                echo(line)
    if check and result.returncode != 0:
        raise VerdiError(
            f"`verdi {' '.join(args[:4])} ...` failed with exit code {result.returncode}: {reason(result.stdout)}",
            result.stdout,
        )
    return result


def run_verdi_process(args: tuple[str, ...], env: dict | None, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["verdi", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def reason(output: str) -> str:
    """The most telling line of a failed verdi's output (a PostgreSQL FATAL, else the last error)."""
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and not line.strip().startswith("(Background on this error")]
    for line in reversed(lines):
        if "FATAL:" in line:
            return line[line.index("FATAL:"):]
    for line in reversed(lines):
        if line.startswith(("Error:", "Critical:")) or "Error" in line.split(":")[0]:
            return line
    return lines[-1] if lines else "(no output)"


def daemon_workers_setting() -> int:
    """AIIDA_DAEMON_WORKERS (the stack's daemon_workers setting), at least 1; 1 if it is not an integer."""
    try:
        return max(1, int(os.environ.get("AIIDA_DAEMON_WORKERS", "1")))
    except ValueError:
        log(f"AIIDA_DAEMON_WORKERS={os.environ['AIIDA_DAEMON_WORKERS']!r} is not an integer; using 1")
        return 1


def read_config() -> dict:
    """config.json as a dict ({} if it does not exist yet); cheap, no aiida import."""
    try:
        return json.loads(CONFIG_FILE.read_text())
    except FileNotFoundError:
        return {}


def profile_names(config: dict | None = None) -> list[str]:
    return list((read_config() if config is None else config).get("profiles", {}))


def default_profile(config: dict | None = None) -> str | None:
    """The default profile recorded in config.json, if it names an existing profile."""
    config = read_config() if config is None else config
    name = config.get("default_profile")
    return name if name in config.get("profiles", {}) else None


DEFAULT_WORKERS = 1  # aiida-core's default of daemon.default_workers


def configured_workers(profile: str, config: dict | None = None) -> int:
    """The profile's daemon.default_workers as verdi resolves it: profile option > global option > default."""
    config = read_config() if config is None else config
    profile_options = (config.get("profiles", {}).get(profile) or {}).get("options") or {}
    for options in (profile_options, config.get("options") or {}):
        value = options.get("daemon.default_workers")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return DEFAULT_WORKERS


def disabled_file(profile: str) -> pathlib.Path:
    """Present: the profile's daemon is stopped on purpose (./stack daemon.stop), not to be restarted."""
    return STACK_DIR / daemon_stop_marker(profile)


def hold_file(profile: str) -> pathlib.Path:
    return STACK_DIR / f"hold.{profile}"


def is_held(profile: str) -> bool:
    try:
        return time.time() - hold_file(profile).stat().st_mtime < HOLD_MAX_AGE
    except OSError:
        return False
