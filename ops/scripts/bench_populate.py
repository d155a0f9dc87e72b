"""Fill the loaded profile for `bench.backup`: NODES nodes and BYTES bytes of files (random, so
incompressible), fast: objects go into the repository directly and node rows are bulk-inserted
(the way an archive import writes), in batches. Prints one JSON line.

usage: verdi -p PROFILE run bench_populate.py NODES BYTES [FILES]
  FILES: how many of the nodes carry a file (default NODES // 10); the rest are Int and Dict nodes.
  Every 4th data node is linked as input of a CalcFunctionNode, so the links table is not empty.
"""

import io
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timezone

from aiida import orm
from aiida.common.links import LinkType
from aiida.manage import get_manager
from aiida.orm.entities import EntityTypes

nodes, total_bytes = int(sys.argv[1]), int(sys.argv[2])
files = int(sys.argv[3]) if len(sys.argv) > 3 else max(1, nodes // 10)
files = min(files, nodes)
BATCH = 2000

started = time.monotonic()
backend = get_manager().get_profile_storage()
repository = backend.get_repository()
user_id = orm.User.collection.get_default().pk
rng = random.Random(20261122)

# file sizes: uniform in [0.5, 1.5] times the mean, scaled so they add up to total_bytes exactly
weights = [rng.uniform(0.5, 1.5) for _ in range(files)]
scale = total_bytes / sum(weights)
sizes = [int(w * scale) for w in weights]
sizes[-1] += total_bytes - sum(sizes)

calc_every = 4
rows: list[dict] = []
inputs: list[tuple[int, str]] = []  # (row index in batch, link label)
written = 0
created = 0
links = 0


def now() -> datetime:
    return datetime.now(timezone.utc)


def node_row(node_type: str, attributes: dict, repository_metadata: dict, label: str) -> dict:
    stamp = now()
    return {"uuid": str(uuid.uuid4()), "node_type": node_type, "process_type": None, "label": label,
            "description": "", "ctime": stamp, "mtime": stamp, "user_id": user_id, "dbcomputer_id": None,
            "attributes": attributes, "extras": {}, "repository_metadata": repository_metadata}


def flush() -> None:
    """Insert this batch's data nodes, one CalcFunctionNode per `calc_every` of them, and their links."""
    global rows, created, links
    if not rows:
        return
    with backend.transaction():
        ids = backend.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)
        calcs = [node_row("process.calculation.calcfunction.CalcFunctionNode.", {"process_state": "finished",
                          "exit_status": 0, "function_name": "bench", "sealed": True}, {}, "bench")
                 for _ in range(0, len(ids), calc_every)]
        calc_ids = backend.bulk_insert(EntityTypes.NODE, calcs, allow_defaults=True)
        link_rows = [{"input_id": node_id, "output_id": calc_ids[i // calc_every], "type": LinkType.INPUT_CALC.value,
                      "label": f"x_{i % calc_every}"} for i, node_id in enumerate(ids)]
        backend.bulk_insert(EntityTypes.LINK, link_rows, allow_defaults=True)
    created += len(ids) + len(calc_ids)
    links += len(link_rows)
    rows = []


data_nodes = nodes - nodes // (calc_every + 1)  # data nodes + their calcs ≈ NODES
for i in range(data_nodes):
    if i < files:
        size = sizes[i]
        key = repository.put_object_from_filelike(io.BytesIO(os.urandom(size)))
        written += size
        rows.append(node_row("data.core.singlefile.SinglefileData.", {"filename": "data.bin"},
                             {"o": {"data.bin": {"k": key}}}, f"file {i}"))
    elif i % 2:
        rows.append(node_row("data.core.int.Int.", {"value": i}, {}, ""))
    else:
        rows.append(node_row("data.core.dict.Dict.", {"index": i, "tags": ["bench", str(i % 97)],
                                                      "nested": {"x": i * 0.5}}, {}, ""))
    if len(rows) >= BATCH:
        flush()
flush()

print(json.dumps({"nodes_created": created, "links_created": links, "files": files, "bytes_written": written,
                  "seconds": round(time.monotonic() - started, 1)}))
