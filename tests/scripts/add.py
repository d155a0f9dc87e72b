"""Submit core.arithmetic.add X Y to the daemon, wait, print 'exit_status sum'."""

import sys
import time

from aiida import orm
from aiida.engine import submit

x, y = int(sys.argv[1]), int(sys.argv[2])
code = orm.InstalledCode(computer=orm.load_computer("localhost"), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(x), orm.Int(y)
builder.metadata.options.resources = {"num_machines": 1}
node = submit(builder)
deadline = time.monotonic() + 180
while not node.is_terminated and time.monotonic() < deadline:
    time.sleep(0.5)
print(node.process_state.value, node.exit_status, node.outputs.sum.value if "sum" in node.outputs else None)
