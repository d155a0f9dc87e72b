"""Varied content for backup round trips and upgrades: data nodes of several types (unicode
attributes), a workflow calling calculations (links), groups, comments, logs, a second computer, and
files from 0 bytes to BIG_MB (default 60) MB."""

import io
import os
import sys

from aiida import orm
from aiida.engine import calcfunction, workfunction

big_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 60


@calcfunction
def multiply(x, y):
    return x * y


@workfunction
def square_and_double(x):
    squared = multiply(x, x)
    return multiply(squared, orm.Int(2))


values = [orm.Int(7).store(), orm.Float(2.5).store(), orm.Str("aiida-stack").store(), orm.Bool(True).store(),
          orm.Dict({"nested": {"a": [1, 2, 3]}, "unicode": "µ-été"}).store(), orm.List([1, "two", 3.0]).store()]
result = square_and_double(orm.Int(6))
files = [orm.SinglefileData(io.BytesIO(b""), filename="empty.txt").store(),
         orm.SinglefileData(io.BytesIO(os.urandom(1024 * 1024)), filename="one-megabyte.bin").store(),
         orm.SinglefileData(io.BytesIO(os.urandom(big_mb * 1024 * 1024)), filename="big.bin").store()]
folder = orm.FolderData()
folder.base.repository.put_object_from_bytes(b"inside a folder\n", "sub/dir/file.txt")
folder.store()
group = orm.Group(label="round-trip").store()
group.add_nodes([*values, folder])
orm.Group(label="empty-group").store()
values[0].base.comments.add("a comment on seven")
values[0].base.extras.set("tag", "extra value")
values[2].logger.report("a log entry about the string")
if not orm.Computer.collection.find(filters={"label": "cluster"}):
    orm.Computer(label="cluster", hostname="cluster.example.org", description="a cluster reached over SSH",
                 transport_type="core.ssh", scheduler_type="core.slurm", workdir="/scratch/{username}/aiida").store()
print(len(values) + len(files) + 1, result.value)
