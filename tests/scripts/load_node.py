"""Print the value of the node with the given UUID."""

import sys

from aiida import orm

print(orm.load_node(sys.argv[1]).value)
