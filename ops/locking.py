"""The stack's one lock, held from the host: backups, verifies, restores, profile deletes, upgrades and
migrations wait for each other, and for the sidecar's scheduled runs (services/backup/stackbackup/locking.py).

The lock lives in the sidecar (a flock on /backups/.lock); the host holds it through a
`stack-backup hold-lock` process fed by a pipe, so a killed `./stack` frees it. While it is held,
the host's engine calls carry its token (`Stack.lock_token`) and run under it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator

from ops import console
from ops.compose import Stack
from ops.errors import StackError
from ops.services import BACKUP
from ops.services import BACKUP_ENGINE as ENGINE

TOKEN_ENV = "STACK_LOCK_TOKEN"
WAIT = 6 * 3600  # seconds a command waits for the lock unless --no-wait
EXIT_BUSY = 3


def token_args(stack: Stack) -> list[str]:
    """`docker compose exec/run` options that let an engine call run under the host's lock."""
    return ["-e", f"{TOKEN_ENV}={stack.lock_token}"] if stack.lock_token else []


@contextlib.contextmanager
def held(stack: Stack, what: str, *, wait: bool = True, journal: Callable[[], bool] | None = None,
         take_over: bool = False) -> Iterator[None]:
    """Hold the stack's lock for `what` (re-entrant within one command). `wait=False`: refuse at once
    (exit 3) when another command holds it. `journal` (is a journal of unfinished work still there?): a
    kill, or an exit that leaves the journal behind, leaves the lock marked interrupted, so nothing else
    runs until the journal is resumed (`take_over`)."""
    if stack.lock_token:
        yield
        return
    marked = journal is not None
    holder = _take(stack, what, wait, marked, take_over)
    stack.lock_renewal = lambda: _take(stack, what, True, marked, take_over=False)
    try:
        yield
    finally:
        _release(stack.lock_holder or holder, clean=not (journal and journal()))
        stack.lock_token = stack.lock_holder = stack.lock_renewal = None


def renew(stack: Stack) -> None:
    """Hold the lock again after the sidecar was re-created (its holder process went with it)."""
    if stack.lock_renewal is None:
        return
    _release(stack.lock_holder)  # (gone with the old sidecar already)
    stack.lock_token = None
    stack.lock_renewal()


def _take(stack: Stack, what: str, wait: bool, journal: bool, take_over: bool) -> subprocess.Popen:
    argv = stack.command("exec", "-T", BACKUP, ENGINE, "hold-lock", "--holder", what,
                         "--wait", str(WAIT if wait else 0), *(["--journal"] if journal else []),
                         *(["--take-over"] if take_over else []))
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=_relay, args=(holder.stderr,), daemon=True).start()
    first = holder.stdout.readline()
    try:
        answer = json.loads(first) if first.strip() else {}
    except ValueError:
        answer = {}
    if not answer.get("holding"):
        holder.stdin.close()
        rest = holder.stdout.read()
        code = holder.wait()
        with contextlib.suppress(ValueError, IndexError):
            answer = json.loads(rest.strip().splitlines()[-1]) if rest.strip() else answer
        reason = answer.get("error") or f"the backup service did not answer (exit {code}); is the stack up?"
        raise StackError(f"{reason}; nothing changed", code=EXIT_BUSY if code == EXIT_BUSY else 1)
    if answer.get("took_over"):
        console.note(f"took over the stack's lock from the interrupted {answer['took_over']}")
    stack.lock_token, stack.lock_holder = answer["token"], holder
    return holder


def _relay(stream) -> None:
    """The sidecar's "waiting for the stack's lock, held by ..." lines (its error comes as our own)."""
    for line in stream:
        if "waiting for the stack's lock" in line:
            console.note(line.strip().removeprefix("stack-backup: "))


def _release(holder: subprocess.Popen | None, clean: bool = True) -> None:
    """clean=False: close the pipe without `release`, as a killed command would (the mark stays)."""
    if holder is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if clean:
            holder.stdin.write("release\n")
        holder.stdin.close()
    try:
        holder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        holder.kill()
