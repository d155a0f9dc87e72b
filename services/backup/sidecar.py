"""The backup sidecar's long-running process.

For now it only serves: it keeps a heartbeat the healthcheck reads and exits cleanly on SIGTERM.
The scheduler, backup, verify and restore commands belong here (see the backup issue).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

HEARTBEAT = Path("/tmp/sidecar.alive")
INTERVAL = 30


def serve() -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("backup sidecar: serving (no schedule configured)", flush=True)
    while not stopping:
        HEARTBEAT.touch()
        for _ in range(INTERVAL):
            if stopping:
                break
            time.sleep(1)
    print("backup sidecar: stopped", flush=True)
    return 0


if __name__ == "__main__":
    commands = {"serve": serve}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: sidecar.py {{{','.join(commands)}}}")
    sys.exit(commands[sys.argv[1]]())
