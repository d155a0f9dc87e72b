"""Submit an aiida-shell ShellJob (`echo ARG`) to the daemon, wait until it ends, print one JSON line."""

import json
import sys
import time

from aiida_shell import launch_shell_job

_, node = launch_shell_job("echo", arguments=sys.argv[1], submit=True)
deadline = time.monotonic() + 240
while not node.is_terminated and time.monotonic() < deadline:
    time.sleep(1)
print(json.dumps({"state": node.process_state.value if node.process_state else None,
                  "exit_status": node.exit_status,
                  "stdout": node.outputs.stdout.get_content() if node.is_finished_ok else None}))
