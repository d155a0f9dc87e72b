"""Submit core.arithmetic.add X Y [POLL] on a computer whose scheduler is polled every POLL s (60 by
default); print its pk once the job is submitted. The job itself ends within seconds, its files in the
stack's volume, but the process keeps waiting (running, pausable) until the next poll: a long
calculation whose job survives the aiida container being re-created, as a job on a cluster would.

With `wait PK` instead: wait until process PK terminates, print 'state exit_status sum'."""

import sys
import time

from aiida import orm
from aiida.engine import submit

POLL = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[1] != "wait" else 60


def until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


if sys.argv[1] == "wait":
    node = orm.load_node(int(sys.argv[2]))
    until(lambda: node.is_terminated, 2 * POLL + 60)  # (the longest poll)
    print(node.process_state.value, node.exit_status, node.outputs.sum.value if "sum" in node.outputs else None)
    sys.exit(0)
localhost = orm.load_computer("localhost")
try:
    computer = orm.load_computer(f"slow-poll-{POLL}")
except Exception:
    computer = orm.Computer(label=f"slow-poll-{POLL}", hostname="localhost", transport_type="core.local",
                            scheduler_type="core.direct", workdir=localhost.get_workdir())
    computer.set_minimum_job_poll_interval(POLL)
    computer.store()
if not computer.is_user_configured(orm.User.collection.get_default()):
    computer.configure(safe_interval=0)
code = orm.InstalledCode(computer=computer, filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add", prepend_text="sleep 2").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(int(sys.argv[1])), orm.Int(int(sys.argv[2]))
builder.metadata.options.resources = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
node = submit(builder)
until(lambda: node.get_job_id() is not None, 120)  # the job runs (submitted to core.direct)
print(node.pk)
