"""The postgres image: UTF8 cluster, profile role and database bootstrapped from the secrets,
`stack-profile-db` for the roles and databases of further profiles.

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
SECRETS = {"postgres_password": "super-Secret'1", "aiida_db_password": "profile-Secret'2",
           "backup_db_password": "reader-Secret'3"}


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
        .with_env("BACKUP_DB_PASSWORD_FILE", "/run/secrets/backup_db_password")
        .with_env("BACKUP_DB_USER", "stack_backup")
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


def test_the_backup_role_reads_every_profile_database_and_writes_nothing(postgres):
    reader = ("stack_backup", SECRETS["backup_db_password"])
    psql_local(postgres, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)", database=ROLE)
    try:
        assert psql_tcp(postgres, *reader, "SELECT x FROM kept").output.decode().strip() == "1"
        for sql in ("INSERT INTO kept VALUES (2)", "CREATE TABLE taken (x int)", "DELETE FROM kept"):
            refused = psql_tcp(postgres, *reader, sql)
            assert refused.exit_code != 0 and "permission denied" in refused.output.decode(), sql
        flags = psql_local(postgres, "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles "
                                     "WHERE rolname = 'stack_backup'")
        assert flags == "f|f|f|f"
        # a profile created later is readable too (stack-profile-db grants CONNECT)
        assert profile_db(postgres, "create", "later", password="later-Secret'4")[0] == 0
        assert psql_tcp(postgres, *reader, "SELECT current_user", "aiida_later").exit_code == 0
        assert profile_db(postgres, "drop", "later")[0] == 0
    finally:
        psql_local(postgres, "DROP TABLE kept", database=ROLE)


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
        # A restart keeps the database (created on the first start only).
        assert psql_local(container, f"SELECT count(*) FROM pg_database WHERE datname = '{ROLE}'") == "1"


def test_invalid_profile_name_fails_clearly(tmp_path):
    write_secrets(tmp_path, SECRETS)
    container = postgres_container(tmp_path, profile="Bad-Name")
    with container:
        wrapped = container.get_wrapped_container()
        assert wrapped.wait(timeout=30)["StatusCode"] != 0
        assert "AIIDA_PROFILE='Bad-Name' is invalid" in wrapped.logs().decode()


# ------------------------------------------------------------------ stack-profile-db (profiles)


def profile_db(container: DockerContainer, *args: str, password: str | None = None):
    """`stack-profile-db ARGS` as root (like `docker compose exec -T postgres`); password on stdin."""
    command = ["stack-profile-db", *args]
    if password is not None:  # printf is a shell builtin: the password is in no argv
        command = ["sh", "-c", 'printf "%s\\n" "$PW" | stack-profile-db "$@"', "sh", *args]
    result = container.get_wrapped_container().exec_run(
        command, environment={"PW": password} if password is not None else None, demux=True
    )
    stdout, stderr = ((part or b"").decode() for part in result.output)
    return result.exit_code, stdout.strip(), stderr.strip()


def test_profile_db_create_makes_an_isolated_owner_only_database(postgres):
    password = "second-Secret'3\"x"
    code, out, err = profile_db(postgres, "create", "second", password=password)
    assert code == 0, err
    assert "aiida_second" in out
    row = psql_local(
        postgres,
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba) "
        "FROM pg_database WHERE datname = 'aiida_second'",
    )
    assert row == "UTF8|C.UTF-8|C.UTF-8|aiida_second"
    flags = psql_local(
        postgres,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin FROM pg_roles "
        "WHERE rolname = 'aiida_second'",
    )
    assert flags == "f|f|f|f|t"
    assert psql_tcp(postgres, "aiida_second", password, "SELECT current_user", "aiida_second").exit_code == 0
    # One profile's credentials cannot open another profile's database.
    denied = psql_tcp(postgres, "aiida_second", password, "SELECT 1", ROLE)
    assert denied.exit_code != 0
    assert "permission denied" in denied.output.decode()
    stdout, stderr = postgres.get_logs()
    assert password.encode() not in stdout + stderr


def test_profile_db_exit_codes(postgres):
    code, _, err = profile_db(postgres, "create", "Bad-Name", password="x")
    assert code == 2 and "invalid profile name" in err and "\n" not in err
    assert profile_db(postgres, "create", "nopw", password="")[0] == 2
    assert profile_db(postgres, "exists", "nopw")[0] == 1  # an empty password created nothing
    assert profile_db(postgres, "frobnicate", "x")[0] == 2
    code, _, err = profile_db(postgres, "create", PROFILE, password="other")  # the bootstrap profile
    assert code == 3 and f"{ROLE} already exists" in err
    # ... and nothing changed: the bootstrap password still works.
    assert psql_tcp(postgres, ROLE, SECRETS["aiida_db_password"], "SELECT 1").exit_code == 0


def test_profile_db_drop_and_exists(postgres):
    assert profile_db(postgres, "create", "doomed", password="doomed-pw")[0] == 0
    assert profile_db(postgres, "exists", "doomed")[0] == 0
    code, out, err = profile_db(postgres, "drop", "doomed")
    assert code == 0, err
    assert psql_local(postgres, "SELECT count(*) FROM pg_roles WHERE rolname = 'aiida_doomed'") == "0"
    assert psql_local(postgres, "SELECT count(*) FROM pg_database WHERE datname = 'aiida_doomed'") == "0"
    assert profile_db(postgres, "exists", "doomed")[0] == 1
    code, out, _ = profile_db(postgres, "drop", "doomed")  # absent: still fine, and said so
    assert code == 0 and "nothing to drop" in out


def test_deleted_bootstrap_profile_is_not_resurrected_by_a_restart(tmp_path):
    write_secrets(tmp_path, SECRETS)
    with postgres_container(tmp_path) as container:
        wait_healthy(container, HEALTHCHECK)
        assert profile_db(container, "drop", PROFILE)[0] == 0
        container.get_wrapped_container().restart(timeout=10)
        wait_healthy(container, HEALTHCHECK)
        assert profile_db(container, "exists", PROFILE)[0] == 1
        # The superuser password is still re-applied on every start.
        result = psql_tcp(container, "postgres", SECRETS["postgres_password"], "SELECT 1", database="postgres")
        assert result.exit_code == 0, result.output.decode()


def test_volume_from_before_the_bootstrap_marker_keeps_working(tmp_path):
    """A data volume initialised by an older image (no marker): the existing role gets the secret."""
    write_secrets(tmp_path, SECRETS)
    with postgres_container(tmp_path) as container:
        wait_healthy(container, HEALTHCHECK)
        wrapped = container.get_wrapped_container()
        assert wrapped.exec_run(["rm", "/var/lib/postgresql/data/aiida-stack.bootstrapped"]).exit_code == 0
        write_secrets(tmp_path, {"aiida_db_password": "rotated-Secret"})
        wrapped.restart(timeout=10)
        wait_healthy(container, HEALTHCHECK)
        assert psql_tcp(container, ROLE, "rotated-Secret", "SELECT 1").exit_code == 0
        assert wrapped.exec_run(["test", "-e", "/var/lib/postgresql/data/aiida-stack.bootstrapped"]).exit_code == 0
