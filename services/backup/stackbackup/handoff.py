"""The sidecar's side of the handoff volume (stack_rules.HANDOFF_*): it asks the aiida service for a
profile's basic maintenance before that profile's scheduled backup, and waits for the answer.

The sidecar reads the AiiDA home read-only and never writes a repository itself: the aiida service
runs `verdi storage maintain` (services/aiida/handoff.py). The caller holds the stack's lock
meanwhile. A request nobody takes within PICKUP seconds (the aiida service down, or an image
without the handoff) is withdrawn, and the backup goes on without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import stack_rules

from stackbackup.common import rand
from stackbackup.layout import write_json_atomic

REQUESTS = Path(stack_rules.HANDOFF_REQUESTS)
RESULTS = Path(stack_rules.HANDOFF_RESULTS)
PICKUP = 30.0
LIMIT = 3600.0


def _answer(profile: str, token: str) -> dict | None:
    try:
        answer = json.loads((RESULTS / f"{profile}.json").read_text())
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) and answer.get("token") == token else None


def ask_maintenance(profile: str, tick: Callable[[], None], give_up: Callable[[], bool], pickup: float = PICKUP,
                    limit: float = LIMIT) -> dict:
    """The aiida service's answer: {"state": "done", "before", "after", "seconds", ...} or
    {"state": "failed" | "not taken" | "timed out" | "interrupted", "error"}. `tick` runs every second
    while waiting; `give_up()` true ends the wait."""
    if not REQUESTS.is_dir():
        return {"state": "not taken", "error": f"no handoff folder {REQUESTS} (a stack from before the handoff)"}
    token = rand(12)
    request = REQUESTS / f"{profile}.json"
    write_json_atomic(request, {"token": token, "profile": profile}, mode=0o644)
    started = time.monotonic()
    try:
        while True:
            answer = _answer(profile, token)
            waited = time.monotonic() - started
            if answer is not None and answer.get("state") != "running":
                return answer
            if answer is None and waited > pickup:
                return {"state": "not taken", "error": f"the aiida service did not take the request within "
                                                      f"{pickup:.0f} s (is it running?)"}
            if waited > limit:
                return {"state": "timed out", "error": f"no answer within {limit:.0f} s"}
            if give_up():
                return {"state": "interrupted", "error": "the sidecar is stopping"}
            tick()
            time.sleep(1)
    finally:
        request.unlink(missing_ok=True)
