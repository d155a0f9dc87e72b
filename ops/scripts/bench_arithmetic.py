"""Runs inside the aiida container (verdi run): the AiiDA docs' engine benchmark.

Usage: bench_arithmetic.py N WORKERS. Submits N core.arithmetic.add calculations (bash on the
`localhost` computer) to the daemon with WORKERS workers, waits until all terminate, prints one
JSON line, then deletes every node, remote folder and code it created and restores the workers.
"""

import json
import shutil
import sys
import time
import uuid

from aiida import orm
from aiida.engine import submit
from aiida.engine.daemon.client import get_daemon_client
from aiida.tools import delete_nodes

n, workers = int(sys.argv[1]), int(sys.argv[2])
nodes: list = []
client = get_daemon_client()
if not client.is_daemon_running:
    sys.exit("the daemon is not running: see ./stack status")
before = client.get_numprocesses()["numprocesses"]


def set_workers(count: int) -> None:
    current = client.get_numprocesses()["numprocesses"]
    if count > current:
        client.increase_workers(count - current)
    elif count < current:
        client.decrease_workers(current - count)


code = orm.InstalledCode(computer=orm.load_computer("localhost"), filepath_executable="/bin/bash",
                         default_calc_job_plugin="core.arithmetic.add", label=f"bench-{uuid.uuid4().hex[:8]}").store()
created = [code.pk]
set_workers(workers)
try:
    # As the docs' script: the same two stored inputs for every calculation.
    builder = code.get_builder()
    builder.x, builder.y = orm.Int(1).store(), orm.Int(1).store()
    builder.metadata.options.resources = {"num_machines": 1}
    created += [builder.x.pk, builder.y.pk]
    start = time.monotonic()
    nodes = []
    for _ in range(n):
        nodes.append(submit(builder))
        created.append(nodes[-1].pk)
    submitted = time.monotonic() - start
    # One query per poll (not one per node): the observer should not compete with the workers.
    pks = [node.pk for node in nodes]
    terminated = ["finished", "excepted", "killed"]
    while orm.QueryBuilder().append(orm.CalcJobNode, filters={
            "id": {"in": pks}, "attributes.process_state": {"in": terminated}}).count() < n:
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    ok = [node for node in nodes if node.is_finished_ok and node.outputs.sum.value == 2]
    print(json.dumps({"processes": n, "workers": workers, "submit_seconds": round(submitted, 2),
                      "seconds": round(elapsed, 2), "seconds_per_process": round(elapsed / n, 3),
                      "finished_ok": len(ok)}))
finally:
    set_workers(before)
    for node in nodes:
        if "remote_folder" in node.outputs:
            shutil.rmtree(node.outputs.remote_folder.get_remote_path(), ignore_errors=True)
    delete_nodes(created, dry_run=False)
