"""Submit N core.arithmetic.add calculations to the daemon and return at once (a running workload)."""

import sys

from aiida import orm
from aiida.engine import submit

code = orm.InstalledCode(computer=orm.load_computer("localhost"), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(1).store(), orm.Int(2).store()
builder.metadata.options.resources = {"num_machines": 1}
print(" ".join(str(submit(builder).pk) for _ in range(int(sys.argv[1]))))
