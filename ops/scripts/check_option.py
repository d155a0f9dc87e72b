"""Runs inside the aiida container (verdi run): validate OPTION [VALUE] against AiiDA's option schema.

Prints one JSON line: ok, error, field (which argument was bad: option or value),
requires_daemon_restart, global_only. AiiDA's schema gives types
but no lower bounds; the stack adds the bounds below, where a smaller value cannot work.
"""

import json
import sys

from aiida.manage.configuration.options import get_option, get_option_names

MINIMUMS = {
    "daemon.default_workers": 1, "daemon.worker_process_slots": 1, "daemon.timeout": 1,
    "daemon.recursion_limit": 100, "runner.poll.interval": 1, "db.batch_size": 1,
    "transport.task_retry_initial_interval": 0, "transport.task_maximum_attempts": 1,
    "broker.task_timeout": 1, "rmq.task_timeout": 1,
}

name = sys.argv[1]
verdict = {"ok": False, "error": None, "field": None, "requires_daemon_restart": False, "global_only": False}
if name not in get_option_names():
    close = [n for n in get_option_names() if n.split(".")[0] == name.split(".")[0]]
    verdict["field"] = "option"
    verdict["error"] = f"unknown option {name!r}" + (f" (options of that group: {', '.join(close)})" if close else "")
else:
    option = get_option(name)
    verdict["requires_daemon_restart"] = bool(option.schema.get("requires_daemon_restart"))
    verdict["global_only"] = bool(option.global_only)
    if len(sys.argv) < 3:
        verdict["ok"] = True
    else:
        try:
            if option.schema.get("type") in ("integer", "number", "boolean") and not sys.argv[2].isascii():
                # int() also reads the digits of other scripts (full-width ones, say): numbers are ASCII
                raise ValueError("write numbers and booleans with ASCII characters")
            value = option.validate(sys.argv[2])
            if name in MINIMUMS and value < MINIMUMS[name]:
                raise ValueError(f"must be at least {MINIMUMS[name]}")
            verdict["ok"] = True
        except Exception as exc:
            verdict["field"] = "value"
            verdict["error"] = f"invalid value {sys.argv[2]!r} for {name}: {exc}"
print(json.dumps(verdict))
