"""Store a SinglefileData node whose file holds the text given (a repository object kept as it is);
print its UUID."""

import io
import sys

from aiida import orm

print(orm.SinglefileData(io.BytesIO(sys.argv[1].encode()), filename="text.txt").store().uuid)
