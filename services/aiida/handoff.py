"""The aiida service's side of the handoff volume (stack_rules.HANDOFF_*): basic maintenance that the
backup sidecar asks for before a scheduled backup of a profile.

The sidecar holds the stack's lock while it waits, so nothing else (a restore, an upgrade, a full
maintenance) runs meanwhile. A thread of the supervisor looks at the requests every second and runs
`aiida-stack-profile maintain NAME` (the command ./stack maintain runs: the same record in
stack/maintained.<profile>) for each new one, one at a time, writing "running" first and then the
outcome: the sidecar knows within seconds that its request was taken.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import threading

import stack_rules
from common import log, write_atomic

REQUESTS = pathlib.Path(stack_rules.HANDOFF_REQUESTS)
RESULTS = pathlib.Path(stack_rules.HANDOFF_RESULTS)
LOOK_EVERY = 1.0
MAINTAIN_TIMEOUT = 3600


def _write(profile: str, result: dict) -> None:
    write_atomic(RESULTS / f"{profile}.json", json.dumps(result) + "\n")


def _answered(profile: str) -> str | None:
    try:
        return json.loads((RESULTS / f"{profile}.json").read_text()).get("token")
    except (OSError, ValueError):
        return None


def _maintain(profile: str, token: str) -> None:
    _write(profile, {"token": token, "state": "running"})
    log(f"basic maintenance of {profile!r}, asked by the backup sidecar before its scheduled backup")
    done = subprocess.run(["aiida-stack-profile", "maintain", profile, "--timeout", str(MAINTAIN_TIMEOUT)],
                          capture_output=True, text=True, timeout=MAINTAIN_TIMEOUT + 60)
    lines = done.stdout.strip().splitlines()
    try:
        measured = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except ValueError:
        measured = None
    if measured is None:
        error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        _write(profile, {"token": token, "state": "failed", "error": error})
        log(f"basic maintenance of {profile!r} FAILED: {error}")
        return
    _write(profile, {"token": token, "state": "done", **measured})
    before, after = measured.get("before") or {}, measured.get("after") or {}
    log(f"basic maintenance of {profile!r}: {before.get('loose')} → {after.get('loose')} loose objects in "
        f"{measured.get('seconds')} s")


def _serve(stopping: threading.Event) -> None:
    while not stopping.wait(LOOK_EVERY):
        for request in sorted(REQUESTS.glob("*.json")):
            profile = request.stem
            try:
                token = json.loads(request.read_text())["token"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or not ours: looked at again in a second
            if stack_rules.profile_problem(profile) is None and _answered(profile) != token:
                try:
                    _maintain(profile, token)
                except (OSError, subprocess.SubprocessError) as exc:
                    _write(profile, {"token": token, "state": "failed", "error": str(exc)})


def start(stopping: threading.Event) -> None:
    """Serve the sidecar's requests in the background (nothing to do without the handoff volume)."""
    if not RESULTS.is_dir():  # made by the entrypoint where compose mounts the volume
        return
    threading.Thread(target=_serve, args=(stopping,), name="handoff", daemon=True).start()
