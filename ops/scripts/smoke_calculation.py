"""Runs inside the aiida container (verdi run): one core.arithmetic.add through the daemon, then gone.

Prints one JSON line {"ok", "state", "exit_status", "sum"}; deletes every node it made, so the
profile's data is as it was (an upgrade's last check must not add to the user's provenance).
"""

import json
import shutil
import time

from aiida import orm
from aiida.engine import submit
from aiida.tools import delete_nodes

code = orm.InstalledCode(computer=orm.load_computer("localhost"), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add", label="stack-smoke").store()
builder = code.get_builder()
builder.x, builder.y = orm.Int(20), orm.Int(22)
builder.metadata.options.resources = {"num_machines": 1}
node = submit(builder)
deadline = time.monotonic() + 180
while not node.is_terminated and time.monotonic() < deadline:
    time.sleep(0.5)
result = {"ok": node.is_finished_ok and node.outputs.sum.value == 42,
          "state": node.process_state.value if node.process_state else None, "exit_status": node.exit_status,
          "sum": node.outputs.sum.value if "sum" in node.outputs else None}
if "remote_folder" in node.outputs:
    shutil.rmtree(node.outputs.remote_folder.get_remote_path(), ignore_errors=True)
delete_nodes([code.pk, node.pk, *(n.pk for n in node.base.links.get_incoming().all_nodes())], dry_run=False)
print(json.dumps(result))
