"""Shared by every command: Fail and the exit codes, progress on stderr, runbook steps, running tools."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_BUSY = 0, 1, 2, 3


class Fail(Exception):
    """A refusal or failure: message for humans and JSON, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    """Progress for humans: one line on stderr (stdout carries only the JSON result)."""
    print(f"stack-backup: {message}", file=sys.stderr, flush=True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rand(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    """n random characters for unique names (ids, staging folders, temporary files)."""
    return "".join(secrets.choice(alphabet) for _ in range(n))


STEP_SECONDS: dict[str, float] = {}  # this process's finished steps and their durations


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """One named step of a runbook: announced on stderr, timed (STEP_SECONDS), failures named after it."""
    say(f"{name} ...")
    start = time.monotonic()
    try:
        yield
    except Fail as exc:
        raise Fail(f"{name}: {exc}", exc.code) from exc
    except Exception as exc:
        raise Fail(f"{name}: {type(exc).__name__}: {exc}") from exc
    STEP_SECONDS[name] = round(time.monotonic() - start, 3)
    say(f"{name}: done in {STEP_SECONDS[name]:.1f} s")


def run(argv: list[str], *, env: dict[str, str] | None = None, what: str | None = None,
        accept: tuple[int, ...] = ()) -> str:
    """Run a tool; its stdout is returned, its stderr goes to ours; failure → Fail with the tail.
    Exit codes in `accept` count as success (the caller knows why they are harmless)."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if done.stderr.strip():
        sys.stderr.write(done.stderr)
    if done.returncode != 0 and done.returncode not in accept:
        tail = " | ".join(line for line in done.stderr.strip().splitlines()[-3:])
        raise Fail(f"{what or argv[0]} failed (exit {done.returncode}): {tail or 'no message'}")
    return done.stdout


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(root: Path) -> Iterator[Path]:
    """Every file below `root`, in a stable (sorted) order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name
