"""Submit core.arithmetic.add X Y to the daemon, wait, print 'state exit_status sum'.

add.py X Y [COMPUTER [SECONDS]]: on COMPUTER (default localhost; code /bin/bash there), waiting at most
SECONDS (default 180); the first line printed is `pk N`."""

import sys
import time

from aiida import orm
from aiida.engine import submit

x, y = int(sys.argv[1]), int(sys.argv[2])
computer = sys.argv[3] if len(sys.argv) > 3 else "localhost"
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 180
code = orm.InstalledCode(computer=orm.load_computer(computer), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(x), orm.Int(y)
builder.metadata.options.resources = {"num_machines": 1}
node = submit(builder)
print("pk", node.pk, flush=True)
deadline = time.monotonic() + seconds
while not node.is_terminated and time.monotonic() < deadline:
    time.sleep(0.5)
print(node.process_state.value, node.exit_status, node.outputs.sum.value if "sum" in node.outputs else None)
