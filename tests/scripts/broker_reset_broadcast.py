"""A plumpy process whose broker connection resets at every state-change broadcast still finishes
(the image's fix, images/aiida-core/patch_upstream.py); prints its final state."""

import plumpy
from aiormq.exceptions import AMQPConnectionError


class ResetBroker:
    def add_rpc_subscriber(self, subscriber, identifier=None):
        return identifier

    def add_broadcast_subscriber(self, subscriber, identifier=None):
        return identifier

    def remove_rpc_subscriber(self, identifier):
        pass

    def remove_broadcast_subscriber(self, identifier):
        pass

    def broadcast_send(self, body, sender=None, subject=None, correlation_id=None):
        raise AMQPConnectionError("Server connection reset: ConnectionResetError(104, 'Connection reset by peer')")


class Nothing(plumpy.Process):
    def run(self):
        return None


process = Nothing(communicator=ResetBroker())
process.execute()
print(process.state.value)
