"""Group LABEL for an archive round trip: a calculation's result (linked back to the calculation and its
inputs), a file, a folder, a commented input with an extra; prints the group's node count."""

import io
import os
import sys

from aiida import orm
from aiida.engine import calcfunction


@calcfunction
def add_up(x, y):
    return x + y


x, y = orm.Int(3).store(), orm.Int(4).store()
result = add_up(x, y)
data = orm.SinglefileData(io.BytesIO(os.urandom(4096)), filename="data.bin").store()
folder = orm.FolderData()
folder.base.repository.put_object_from_bytes("µ-été\n".encode(), "sub/notes.txt")
folder.store()
x.base.comments.add("the first input")
x.base.extras.set("role", "input")
group = orm.Group(label=sys.argv[1]).store()
group.add_nodes([result, data, folder, x])
print(group.count())
