"""The postgres image: UTF8 cluster, profile role and database bootstrapped from the secrets.

Needs aiida-stack/postgres:dev built first (`docker compose build postgres`; POSTGRES_IMAGE
overrides). Nothing is published: every check runs inside the container.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testcontainers.core.container import DockerContainer

from ..conftest import image_ref
from .waiting import wait_healthy

# No registry here: the Ryuk reaper image cannot be pulled; containers are removed explicitly.

IMAGE = image_ref("postgres")
HEALTHCHECK = ["pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres"]  # as in compose.yaml
PROFILE = "test"
ROLE = f"aiida_{PROFILE}"
SECRETS = {"postgres_password": "super-Secret'1", "aiida_db_password": "profile-Secret'2"}


def write_secrets(directory: Path, values: dict[str, str]) -> None:
    for name, value in values.items():
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)


def postgres_container(secret_dir: Path, profile: str = PROFILE) -> DockerContainer:
    container = (
        DockerContainer(IMAGE)
        .with_env("POSTGRES_PASSWORD_FILE", "/run/secrets/postgres_password")
        .with_env("AIIDA_DB_PASSWORD_FILE", "/run/secrets/aiida_db_password")
        .with_env("AIIDA_PROFILE", profile)
        .with_kwargs(init=True)
    )
    for name in SECRETS:
        container.with_volume_mapping(str(secret_dir / name), f"/run/secrets/{name}", "ro")
    return container


def psql_tcp(container: DockerContainer, user: str, password: str, sql: str, database: str = ROLE):
    """psql over TCP (scram) with the password in the exec environment, never in argv."""
    return container.get_wrapped_container().exec_run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", user, "-d", database, "-c", sql],
        environment={"PGPASSWORD": password},
    )


def psql_local(container: DockerContainer, sql: str, database: str = "postgres") -> str:
    """psql as the postgres superuser over the unix socket (peer authentication)."""
    result = container.get_wrapped_container().exec_run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql], user="postgres"
    )
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode().strip()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("pg-secrets")
    write_secrets(secret_dir, SECRETS)
    with postgres_container(secret_dir) as container:
        wait_healthy(container, HEALTHCHECK)
        yield container


def test_becomes_ready(postgres):
    assert postgres.exec(HEALTHCHECK).exit_code == 0


def test_cluster_and_profile_database_are_utf8(postgres):
    assert psql_local(postgres, "SHOW server_encoding") == "UTF8"
    row = psql_local(
        postgres,
        f"SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba) "
        f"FROM pg_database WHERE datname = '{ROLE}'",
    )
    assert row == f"UTF8|C.UTF-8|C.UTF-8|{ROLE}"


def test_profile_role_logs_in_over_tcp_with_its_password(postgres):
    result = psql_tcp(postgres, ROLE, SECRETS["aiida_db_password"], "SELECT current_user")
    assert result.exit_code == 0, result.output.decode()
    assert result.output.decode().strip() == ROLE


def test_wrong_password_is_refused(postgres):
    result = psql_tcp(postgres, ROLE, "not-the-password", "SELECT 1")
    assert result.exit_code != 0
    assert "password authentication failed" in result.output.decode()


def test_superuser_password_comes_from_the_secret(postgres):
    result = psql_tcp(postgres, "postgres", SECRETS["postgres_password"], "SELECT 1", database="postgres")
    assert result.exit_code == 0, result.output.decode()


def test_profile_role_is_not_privileged(postgres):
    flags = psql_local(postgres, f"SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{ROLE}'")
    assert flags == "f|f|f"


def test_other_roles_cannot_connect_to_the_profile_database(postgres):
    psql_local(postgres, "CREATE ROLE intruder LOGIN PASSWORD 'intruder'")
    result = psql_tcp(postgres, "intruder", "intruder", "SELECT 1")
    assert result.exit_code != 0
    assert "permission denied" in result.output.decode()


def test_passwords_never_reach_the_logs(postgres):
    stdout, stderr = postgres.get_logs()
    for password in SECRETS.values():
        assert password.encode() not in stdout + stderr


def test_restart_applies_a_changed_secret(tmp_path):
    write_secrets(tmp_path, SECRETS)
    with postgres_container(tmp_path) as container:
        wait_healthy(container, HEALTHCHECK)
        write_secrets(tmp_path, {"aiida_db_password": "rotated-Secret"})  # same inode: the bind mount sees it
        container.get_wrapped_container().restart(timeout=10)
        wait_healthy(container, HEALTHCHECK)
        assert psql_tcp(container, ROLE, "rotated-Secret", "SELECT 1").exit_code == 0
        assert psql_tcp(container, ROLE, SECRETS["aiida_db_password"], "SELECT 1").exit_code != 0
        # Bootstrapping again kept the database (idempotent).
        assert psql_local(container, f"SELECT count(*) FROM pg_database WHERE datname = '{ROLE}'") == "1"


def test_invalid_profile_name_fails_clearly(tmp_path):
    write_secrets(tmp_path, SECRETS)
    container = postgres_container(tmp_path, profile="Bad-Name")
    with container:
        wrapped = container.get_wrapped_container()
        assert wrapped.wait(timeout=30)["StatusCode"] != 0
        assert "AIIDA_PROFILE='Bad-Name' is invalid" in wrapped.logs().decode()
