"""The rabbitmq image: consumer_timeout off, fixed node name, guest replaced by the stack user (no tags).

Needs aiida-stack/rabbitmq:dev built first (`docker compose build rabbitmq`; RABBITMQ_IMAGE
overrides). Nothing is published: every check runs inside the container.
"""

from __future__ import annotations

import pytest
from testcontainers.core.container import DockerContainer

from ..conftest import image_ref
from .waiting import wait_healthy

# No registry here: the Ryuk reaper image cannot be pulled; containers are removed explicitly.

IMAGE = image_ref("rabbitmq")
HEALTHCHECK = ["/usr/local/bin/rabbitmq-healthcheck"]  # as in compose.yaml
USER = "aiida"
PASSWORD = "broker-Secret'1"


def ctl(container: DockerContainer, *args: str) -> str:
    result = container.exec(["rabbitmqctl", "-q", *args])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode().strip()


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory):
    secret = tmp_path_factory.mktemp("rmq-secrets") / "rabbitmq_password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    container = (
        DockerContainer(IMAGE)
        .with_env("RABBITMQ_USER", USER)
        .with_env("RABBITMQ_PASSWORD_FILE", "/run/secrets/rabbitmq_password")
        .with_volume_mapping(str(secret), "/run/secrets/rabbitmq_password", "ro")
        .with_kwargs(hostname="rabbitmq", init=True)
    )
    with container:
        wait_healthy(container, HEALTHCHECK, timeout=120)
        yield container


def test_becomes_ready(rabbitmq):
    assert rabbitmq.exec(HEALTHCHECK).exit_code == 0


def test_consumer_timeout_is_disabled_in_the_running_broker(rabbitmq):
    # Explicitly `undefined` (no timeout); the 3.10 default would read {ok,1800000}.
    assert ctl(rabbitmq, "eval", "application:get_env(rabbit, consumer_timeout).") == "{ok,undefined}"


def test_guest_is_gone_and_the_stack_user_exists_without_tags(rabbitmq):
    users = dict(line.split("\t") for line in ctl(rabbitmq, "list_users", "--no-table-headers").splitlines())
    assert "guest" not in users
    assert users.get(USER) == "[]"  # no administrator (or any management) tag: AMQP only
    permissions = ctl(rabbitmq, "list_user_permissions", USER, "--no-table-headers")
    assert permissions.split("\t") == ["/", ".*", ".*", ".*"]


def test_stack_user_authenticates_with_the_secret_only(rabbitmq):
    assert rabbitmq.exec(["rabbitmqctl", "-q", "authenticate_user", USER, PASSWORD]).exit_code == 0
    assert rabbitmq.exec(["rabbitmqctl", "-q", "authenticate_user", USER, "wrong"]).exit_code != 0


def test_node_name_is_fixed(rabbitmq):
    assert ctl(rabbitmq, "eval", "node().") == "rabbit@rabbitmq"


def test_password_never_reaches_the_logs(rabbitmq):
    stdout, stderr = rabbitmq.get_logs()
    assert PASSWORD.encode() not in stdout + stderr
