"""The stack's one lock: a flock on /backups/.lock, shared by every backup, prune, verify, restore,
profile delete, upgrade and migration, whether it runs in the sidecar or is driven from the host.

Who holds it is recorded in /backups/.lock-holder.json (atomic writes; the flock is on .lock, whose
inode never changes). The host holds the lock through `stack-backup hold-lock`, a process that keeps
it until its stdin says `release` or closes: a host command that is killed closes the pipe, so the
lock is freed with it. The host's own engine calls pass the holder's token (STACK_LOCK_TOKEN) and
run under its lock instead of waiting for it.

A holder that journals its work (a restore) and goes away without `release` leaves its record
"held": every later taker then refuses until the host completes or rolls back that work
(`--take-over`, which only the resume uses).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator

from stackbackup.common import EXIT_BUSY, EXIT_INPUT, Fail, iso, rand, say, utcnow
from stackbackup.layout import BACKUPS, write_json_atomic

LOCK = BACKUPS / ".lock"
HOLDER = BACKUPS / ".lock-holder.json"
TOKEN_ENV = "STACK_LOCK_TOKEN"
WAIT_NOTE_EVERY = 15  # seconds between "still waiting" lines


def holder() -> dict:
    """The last taker's record ({} if none or unreadable)."""
    try:
        return json.loads(HOLDER.read_text())
    except (OSError, ValueError):
        return {}


def describe(record: dict) -> str:
    if record.get("state") != "held":
        return "another command (it did not record itself)"
    return f"{record.get('holder') or 'another command'} (since {str(record.get('since', '?'))[:19]} UTC)"


def interrupted(record: dict) -> bool:
    return record.get("state") == "held" and bool(record.get("journal"))


@contextlib.contextmanager
def global_lock(wait: float, what: str = "", journal: bool = False, take_over: bool = False,
                tick: Callable[[], None] | None = None) -> Iterator[dict]:
    """The stack's lock for `what`: waits up to `wait` seconds (0: refuse at once, exit 3), calling
    `tick` while it waits. Held until the process ends (SIGKILL frees it). Yields this holder's record."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        record = holder()
        if record.get("token") != token or record.get("state") != "held":
            raise Fail(f"{TOKEN_ENV} does not match the holder of the stack's lock ({describe(record)})", EXIT_INPUT)
        yield record  # the host's hold-lock covers this command
        return
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    record: dict = {}
    try:
        _take(fd, wait, what, tick)
        previous = holder()
        if interrupted(previous) and not take_over:
            raise Fail(f"an interrupted {describe(previous)} must be completed or rolled back first: run any "
                       "./stack command on the host (or ./stack restore --resume)", EXIT_BUSY)
        record = {"holder": what or "stack-backup", "since": iso(utcnow()), "state": "held", "journal": journal,
                  "token": rand(24), "host": socket.gethostname(), "pid": os.getpid()}
        if interrupted(previous):
            record["took_over"] = previous.get("holder")
        write_json_atomic(HOLDER, record)
        yield record
    finally:
        if record and record.get("clean", True):
            write_json_atomic(HOLDER, {**record, "state": "released", "released": iso(utcnow()), "token": None})
        os.close(fd)


def _take(fd: int, wait: float, what: str, tick: Callable[[], None] | None) -> None:
    deadline = time.monotonic() + max(wait, 0)
    noted = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                raise Fail(f"the stack's lock is held by {describe(holder())}"
                           + (f"; {what} did not start" if what else ""), EXIT_BUSY) from None
            if now - noted >= WAIT_NOTE_EVERY:
                say(f"waiting for the stack's lock, held by {describe(holder())} "
                    f"(up to {deadline - now:.0f} s more)")
                noted = now
            if tick is not None:
                tick()
            time.sleep(0.25)


def cmd_hold_lock(args: argparse.Namespace, announce: Callable[[dict], None]) -> dict:
    """Take the lock, announce the token (first JSON line), keep it until stdin says `release` or closes."""
    if not args.holder.strip() or len(args.holder) > 300:
        raise Fail("--holder must name the command holding the lock (1-300 characters)", EXIT_INPUT)
    with global_lock(args.wait, args.holder, journal=args.journal, take_over=args.take_over) as record:
        announce({"ok": True, "holding": True, "token": record["token"], "took_over": record.get("took_over")})
        line = sys.stdin.readline()
        record["clean"] = line.strip() == "release" or not args.journal
        if not record["clean"]:
            say(f"the holder of the stack's lock went away without releasing it: {args.holder} stays recorded "
                "as interrupted")
    return {"holding": False, "released": record["clean"]}
