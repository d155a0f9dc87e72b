"""Store a SinglefileData node (a new repository object) and print its UUID."""

import io
import os

from aiida import orm

print(orm.SinglefileData(io.BytesIO(os.urandom(4096)), filename="midway.bin").store().uuid)
