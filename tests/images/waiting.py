"""Readiness for image tests: poll the image's own healthcheck command inside the container."""

from __future__ import annotations

import time

from testcontainers.core.container import DockerContainer


def wait_healthy(container: DockerContainer, command: list[str], timeout: float = 90) -> float:
    """Run `command` in the container until it exits 0; return the seconds it took.

    Fails at once (with the container's logs) if the container stops, else after `timeout`.
    """
    start = time.monotonic()
    wrapped = container.get_wrapped_container()
    while True:
        wrapped.reload()
        if wrapped.status != "running":
            logs = wrapped.logs().decode(errors="replace")
            raise AssertionError(f"container {wrapped.status} before it became healthy:\n{logs}")
        result = container.exec(command)
        if result.exit_code == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            logs = wrapped.logs().decode(errors="replace")
            raise AssertionError(f"{command} still failing after {timeout}s: {result.output!r}\n{logs}")
        time.sleep(0.3)
