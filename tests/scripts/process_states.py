"""One JSON line: {pk: [process_state, exit_status]} for the given process pks; with --exceptions first,
{pk: the exception a process excepted with} instead (what `on_except` stored, not the report's tail)."""

import json
import sys

from aiida import orm

args = sys.argv[1:]
exceptions = bool(args) and args[0] == "--exceptions"
states = {}
for pk in args[exceptions:]:
    node = orm.load_node(int(pk))
    if exceptions:
        states[pk] = node.exception
    else:
        states[pk] = [node.process_state.value if node.process_state else None, node.exit_status]
print(json.dumps(states))
