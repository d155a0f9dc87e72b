"""The broker seen from the host (pika): how many tasks wait in each profile's process queue.

RabbitMQ sits on the stack's internal network; the host reaches it at the container's address on
that network (Linux routes to its bridges) with the stack's broker user. AiiDA names a profile's
process queue after the profile's UUID: aiida-<uuid>.process.queue.
"""

from __future__ import annotations

import pika
from pika.exceptions import AMQPError, ChannelClosedByBroker

from ops import secrets
from ops.compose import Stack
from ops.errors import StackError
from ops.services import RABBITMQ

BROKER_USER = "aiida"  # compose.yaml: RABBITMQ_USER


def process_queue(profile_uuid: str) -> str:
    return f"aiida-{profile_uuid}.process.queue"


def _address(stack: Stack) -> str:
    networks = stack.container(RABBITMQ).attrs["NetworkSettings"]["Networks"]
    backend = networks.get(f"{stack.settings.name}_backend") or next(iter(networks.values()), {})
    if not backend.get("IPAddress"):
        raise StackError("the broker has no address on the stack's network: is the stack up? (./stack status)")
    return backend["IPAddress"]


def queued_tasks(stack: Stack, profile_uuids: dict[str, str]) -> dict[str, int]:
    """profile → messages waiting in its process queue (0 when the queue does not exist yet)."""
    password = (secrets.secrets_dir(stack.settings) / "rabbitmq_password").read_text().strip()
    parameters = pika.ConnectionParameters(host=_address(stack), credentials=pika.PlainCredentials(
        BROKER_USER, password), connection_attempts=3, retry_delay=1, socket_timeout=10, blocked_connection_timeout=10)
    counts = {}
    try:
        with pika.BlockingConnection(parameters) as connection:
            for profile, uuid in profile_uuids.items():
                channel = connection.channel()
                try:
                    counts[profile] = channel.queue_declare(process_queue(uuid), passive=True).method.message_count
                    channel.close()
                except ChannelClosedByBroker as exc:  # 404: no such queue (no task was ever sent)
                    if exc.reply_code != 404:
                        raise
                    counts[profile] = 0
    except AMQPError as exc:
        raise StackError(f"cannot read the broker's queues: {exc!r}") from None
    return counts
