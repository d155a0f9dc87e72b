"""A daemon worker takes up a process task and the broker connection resets while the process is
recreated: the process node must not be excepted (the image's fix, images/aiida-core/patch_upstream.py),
because the unacknowledged task comes back once the broker does. Prints the node's process state."""

import asyncio
import contextlib

from aiida import orm
from aiida.engine.processes.launcher import ProcessLauncher
from aiormq.exceptions import AMQPConnectionError

node = orm.WorkflowNode()
node.set_process_state("created")
node.store()


class ResetPersister:
    def load_checkpoint(self, pid, tag=None):
        raise AMQPConnectionError("Server connection reset: ConnectionResetError(104, 'Connection reset by peer')")


loop = asyncio.new_event_loop()
with contextlib.suppress(AMQPConnectionError):  # re-raised by the fixed launcher: the task comes back
    loop.run_until_complete(ProcessLauncher(loop=loop, persister=ResetPersister())._continue(None, node.pk, False))
state = orm.load_node(node.pk).process_state.value
orm.Node.collection.delete(node.pk)  # an unfinished process would hold up drains and status
print(state)
