"""One JSON line: {pk: [process_state, exit_status]} for the given process pks."""

import json
import sys

from aiida import orm

states = {}
for pk in sys.argv[1:]:
    node = orm.load_node(int(pk))
    states[pk] = [node.process_state.value if node.process_state else None, node.exit_status]
print(json.dumps(states))
