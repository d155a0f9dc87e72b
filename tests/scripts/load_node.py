"""Print the value of the node with the given UUID (its pk when it has no value)."""

import sys

from aiida import orm

node = orm.load_node(sys.argv[1])
print(getattr(node, "value", node.pk))
