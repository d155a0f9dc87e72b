"""Submit core.arithmetic.add X Y whose job first sleeps SECONDS; print its pk once the job runs.

With `wait PK` instead: wait until process PK terminates, print 'state exit_status sum'."""

import sys
import time

from aiida import orm
from aiida.engine import submit


def until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


if sys.argv[1] == "wait":
    node = orm.load_node(int(sys.argv[2]))
    until(lambda: node.is_terminated, 300)
    print(node.process_state.value, node.exit_status, node.outputs.sum.value if "sum" in node.outputs else None)
    sys.exit(0)
x, y, seconds = (int(arg) for arg in sys.argv[1:4])
code = orm.InstalledCode(computer=orm.load_computer("localhost"), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add", prepend_text=f"sleep {seconds}").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(x), orm.Int(y)
builder.metadata.options.resources = {"num_machines": 1}
node = submit(builder)
until(lambda: node.get_job_id() is not None, 120)  # the job runs (submitted to core.direct)
print(node.pk)
