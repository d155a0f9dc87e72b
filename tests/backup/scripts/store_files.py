"""Store N SinglefileData nodes with distinct random content (repository objects); print the count of nodes."""

import io
import os
import sys

from aiida import orm

for i in range(int(sys.argv[1])):
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    orm.SinglefileData(io.BytesIO(os.urandom(size)), filename=f"file-{i}.bin").store()
print(orm.QueryBuilder().append(orm.Node).count())
