"""Fixes the stack carries for bugs in aiida-core's dependencies, applied at image build after the
lock's packages are installed (`python3 patch_upstream.py SITE_PACKAGES`).

Each fix is an exact text replacement in one installed file. A fix applies only where the installed
file holds the exact original text (the package versions it was written against); elsewhere the
build says so and goes on (another version: fixed upstream, or the bug is not there). Every
applied fix is listed in /opt/aiida-patches.txt; a patched file is compiled again (its .pyc).
"""

from __future__ import annotations

import py_compile
import sys
from pathlib import Path

# plumpy 0.26 (aiida-core 2.9): when RabbitMQ goes away while a process broadcasts a state change,
# the publish can fail with aiormq's AMQPConnectionError ("Server connection reset") instead of its
# subclass ConnectionClosed, which plumpy catches; the process then EXCEPTS for a lost broadcast,
# which plumpy means to log and ignore. Measured: 1 of 60 running calculations per broker crash.
PLUMPY_BROADCAST = (
    "plumpy/processes.py",
    "plumpy: a lost broker connection during a state-change broadcast no longer excepts the process",
    [
        ("from aio_pika.exceptions import ChannelInvalidStateError, ConnectionClosed\n",
         "from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError, ConnectionClosed\n"),
        ("                self._communicator.broadcast_send(body=None, sender=self.pid, subject=subject)\n"
         "            except (ConnectionClosed, ChannelInvalidStateError):\n",
         "                self._communicator.broadcast_send(body=None, sender=self.pid, subject=subject)\n"
         "            except (AMQPConnectionError, ChannelInvalidStateError):  # aiida-stack: was ConnectionClosed\n"),
    ],
)

# aiida-core 2.9: when a daemon worker takes up a process task (ProcessLauncher._continue) and RabbitMQ
# goes away while the process is recreated (its RPC and broadcast subscribers registered), the
# launcher's catch-all marks the node EXCEPTED for good ("failed to recreate the process instance"),
# although the process is sound and the unacknowledged task comes back once the broker does.
# Measured: 1 of 20 calculations excepted in a CI run with a RabbitMQ crash under load. A lost broker
# connection is now re-raised without touching the node, as asyncio.CancelledError already is.
AIIDA_CONTINUE = (
    "aiida/engine/processes/launcher.py",
    "aiida-core: a lost broker connection while a worker takes up a process no longer excepts it",
    [
        ("import kiwipy\nimport plumpy\n",
         "import kiwipy\nimport plumpy\n"
         "from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError\n"),
        ("            # where asyncio.CancelledError inherits from Exception\n"
         "            raise\n"
         "        except Exception as exception:\n",
         "            # where asyncio.CancelledError inherits from Exception\n"
         "            raise\n"
         "        except (AMQPConnectionError, ChannelInvalidStateError):  # aiida-stack: the task comes back\n"
         "            LOGGER.warning('process<%d>: the broker connection was lost while continuing it; its task is '\n"
         "                           'delivered again once the broker is back', pid)\n"
         "            raise\n"
         "        except Exception as exception:\n"),
    ],
)

FIXES = [PLUMPY_BROADCAST, AIIDA_CONTINUE]
RECORD = Path("/opt/aiida-patches.txt")


def apply(site: Path, fix: tuple) -> bool:
    relative, what, replacements = fix
    path = site / relative
    text = path.read_text() if path.is_file() else ""
    if not all(text.count(old) == 1 for old, _ in replacements):
        print(f"patch_upstream: not applied (original text not found in {relative}): {what}")
        return False
    for old, new in replacements:
        text = text.replace(old, new)
    path.write_text(text)
    py_compile.compile(str(path), doraise=True)
    print(f"patch_upstream: applied to {relative}: {what}")
    return True


def main() -> None:
    site = Path(sys.argv[1])
    applied = [fix[1] for fix in FIXES if apply(site, fix)]
    RECORD.write_text("".join(f"{line}\n" for line in applied))


if __name__ == "__main__":
    main()
