"""One JSON line: a digest of everything a profile holds (nodes with attributes and extras but the
caching hash, links, groups, comments, logs, computers, and the sha256 of every repository object).
Arguments: group labels, to digest only those groups (the others are left out)."""

import hashlib
import json
import sys

from aiida import orm
from aiida.orm import QueryBuilder


def digest(rows) -> str:
    return hashlib.sha256(json.dumps(sorted(rows), sort_keys=True, default=str).encode()).hexdigest()


# `_aiida_hash` (the caching key) is derived, not content: aiida-core's own migrations drop it (main_0002
# drops it for every CalcJobNode, 2.2 -> 2.4+) and `verdi node rehash` recomputes it.
HASH_EXTRA = "_aiida_hash"

nodes, objects = [], []
for (node,) in QueryBuilder().append(orm.Node).iterall():
    extras = {key: value for key, value in node.base.extras.all.items() if key != HASH_EXTRA}
    nodes.append([node.uuid, node.node_type, node.base.attributes.all, extras])
    for name in node.base.repository.list_object_names():
        if node.base.repository.get_object(name).file_type.name == "FILE":
            data = node.base.repository.get_object_content(name, mode="rb")
            objects.append([node.uuid, name, hashlib.sha256(data).hexdigest()])
        else:
            for root, _, names in node.base.repository.walk(name):
                for leaf in names:
                    path = str(root / leaf)
                    objects.append([node.uuid, path, hashlib.sha256(
                        node.base.repository.get_object_content(path, mode="rb")).hexdigest()])
links = QueryBuilder().append(orm.Node, project="uuid", tag="in").append(
    orm.Node, with_incoming="in", project="uuid", edge_project=["type", "label"]).all()
only = set(sys.argv[1:])  # group labels to digest (default: every group)
groups = [[g.label, sorted(n.uuid for n in g.nodes)] for (g,) in QueryBuilder().append(orm.Group).iterall()
          if not only or g.label in only]
comments = [[c.uuid, c.node.uuid, c.content] for (c,) in QueryBuilder().append(orm.Comment).iterall()]
logs = [[lg.uuid, lg.dbnode_id and orm.load_node(lg.dbnode_id).uuid, lg.message]
        for (lg,) in QueryBuilder().append(orm.Log).iterall()]
computers = [[c.uuid, c.label, c.scheduler_type, c.transport_type] for (c,) in
             QueryBuilder().append(orm.Computer).iterall()]
print(json.dumps({
    "nodes": len(nodes), "objects": len(objects), "links": len(links), "groups": len(groups),
    "digest": {name: digest(rows) for name, rows in [("nodes", nodes), ("objects", objects), ("links", links),
               ("groups", groups), ("comments", comments), ("logs", logs), ("computers", computers)]},
}))
