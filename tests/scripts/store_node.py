"""Store an Int node with the given value and print its UUID."""

import sys

from aiida import orm

print(orm.Int(int(sys.argv[1])).store().uuid)
