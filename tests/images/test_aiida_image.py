"""The aiida-core image: pinned version, honest labels, tools the service needs, user model.

Needs the image built first (./stack test builds it); the reference is the one ./stack resolves from
the settings (its tag: a hash of the image's own inputs, ops/compose.py).
Full-stack behaviour (profile bootstrap, daemon supervision, health) is tested elsewhere.
"""

from __future__ import annotations

import json
import re

import docker
import pytest
from testcontainers.core.container import DockerContainer, ExecConfig

from ops import settings
from ops.environment import Environment

from ..conftest import SCRIPTS, image_ref

# No registry here: the Ryuk reaper image cannot be pulled; containers are removed explicitly.

AIIDA_CORE_VERSION = settings.load().aiida_core_version
# Same reference as compose.yaml: <prefix>/aiida-core:<aiida-core version>-<the image's input hash>.
IMAGE = image_ref("aiida")


@pytest.fixture(scope="module")
def image():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        return client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} not built: run `docker compose build aiida` (or ./stack build) first")


@pytest.fixture(scope="module")
def container(image):
    """An idle container of the image (entrypoint overridden: no secrets, no stack needed)."""
    with DockerContainer(IMAGE, entrypoint=["sleep", "infinity"]) as running:
        yield running


def run(container, command, user=None):
    result = container.exec(ExecConfig(command=["bash", "-c", command], user=user))
    return result.exit_code, result.output.decode().strip()


def ok(container, command, user=None) -> str:
    code, output = run(container, command, user)
    assert code == 0, f"{command!r} failed ({code}): {output}"
    return output


def test_pinned_aiida_core_version(container):
    assert ok(container, "verdi --version", user="aiida") == f"AiiDA version {AIIDA_CORE_VERSION}"
    assert ok(container, 'python -c "import aiida; print(aiida.__version__)"', user="aiida") == AIIDA_CORE_VERSION


def test_the_image_holds_exactly_the_packages_of_its_lock(container):
    lock = Environment.of(settings.load()).lock.read_text()
    pinned = {(m.group(1).lower().replace("_", "-"), m.group(2))
              for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", lock, re.M)}
    out = ok(container, "/opt/aiida/bin/python -m pip list --format json")
    installed = {(p["name"].lower().replace("_", "-"), p["version"]) for p in json.loads(out)
                 if p["name"].lower() not in ("pip", "setuptools")}
    assert installed == pinned


def test_a_broker_reset_during_a_state_broadcast_does_not_except_the_process(container):
    """The image's fix of plumpy (patch_upstream.py): without it this process excepts."""
    script = (SCRIPTS / "broker_reset_broadcast.py").read_text()
    assert ok(container, f"python - <<'EOF'\n{script}\nEOF", user="aiida").splitlines()[-1] == "finished"
    assert "plumpy" in ok(container, "cat /opt/aiida-patches.txt")


def test_labels_match_reality(image, container):
    labels = image.labels
    verdi = ok(container, "verdi --version", user="aiida").split()[-1]
    assert labels["org.aiida.core.version"] == verdi
    assert labels["org.opencontainers.image.version"] == verdi
    python = re.fullmatch(r"Python (\d+)\.(\d+)\.\d+", ok(container, "python3 --version"))
    assert python, "unexpected `python3 --version` output"
    assert labels["org.aiida.python.version"] == f"{python[1]}.{python[2]}"
    # the venv runs the same interpreter
    assert (
        ok(container, "python -c \"import sys; print('%d.%d' % sys.version_info[:2])\"", user="aiida")
        == (labels["org.aiida.python.version"])
    )
    debian = ok(container, "cat /etc/debian_version")
    assert labels["org.aiida.debian.version"] == debian.split(".")[0]
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.description"):
        assert labels.get(key), f"label {key} missing"


@pytest.mark.parametrize(
    "tool",
    ["ps", "rsync", "pg_dump", "pg_isready", "setpriv", "bash", "verdi", "aiida-healthcheck", "aiida-stack-profile"],
)
def test_tools_present(container, tool):
    ok(container, f"command -v {tool}", user="aiida")


def test_ps_works_for_core_direct(container):
    # core.direct polls jobs with `ps -o pid,stat,user,time`.
    output = ok(container, "ps -o pid,stat,user,time", user="aiida")
    assert "PID" in output


def test_pg_dump_is_postgresql_15(container):
    assert re.search(r"\(PostgreSQL\) 15\.", ok(container, "pg_dump --version"))


def test_verdi_runs_as_non_root_user_with_image_env(container):
    # `docker compose exec -u aiida aiida verdi ...` relies on PATH and AIIDA_PATH from the image.
    assert ok(container, "id -u; id -un", user="aiida").split() == ["1000", "aiida"]
    assert ok(container, 'echo "$AIIDA_PATH"; command -v verdi', user="aiida").split() == [
        "/home/aiida",
        "/opt/aiida/bin/verdi",
    ]
    # The config folder (the aiida-home volume mount point) belongs to aiida, so a new named
    # volume inherits that ownership.
    assert ok(container, "stat -c %U:%G /home/aiida/.aiida") == "aiida:aiida"
    ok(container, "verdi profile list", user="aiida")


def test_entrypoint_drops_privileges_for_commands(image):
    """The image user is root (to read root-owned 0600 secrets), but what it runs is not."""
    assert image.attrs["Config"].get("User") in ("", None, "root")
    container = DockerContainer(IMAGE, command=["bash", "-c", 'id -u; id -un; echo "$HOME"'])
    container.start()
    try:
        assert container.wait() == 0
        stdout, _ = container.get_logs()
        assert stdout.decode().split() == ["1000", "aiida", "/home/aiida"]
    finally:
        container.stop()


def test_healthcheck_fails_without_a_stack(container):
    # Run as root like Docker does; no profile / services -> unhealthy, and quickly.
    code, output = run(container, "time -p /usr/local/bin/aiida-healthcheck")
    assert code != 0, output
    real = float(re.search(r"^real ([\d.]+)$", output, re.M)[1])
    assert real < 15


def test_no_build_secrets_in_image(image):
    env = dict(item.split("=", 1) for item in image.attrs["Config"].get("Env") or [])
    assert not any(key.startswith("PIP_") and key != "PIP_DISABLE_PIP_VERSION_CHECK" for key in env)


# ------------------------------------------------------------- aiida-stack-profile (no stack needed)

CLI_CONFIG = "/home/aiida/.aiida/config.json"


def fake_profile(name: str, repository: str) -> dict:
    """A config.json profile entry as `verdi profile setup core.psql_dos` writes it (no server behind it)."""
    return {
        "storage": {"backend": "core.psql_dos", "config": {
            "database_engine": "postgresql_psycopg", "database_hostname": "postgres", "database_port": 5432,
            "database_username": f"aiida_{name}", "database_password": "db-Secret", "database_name": f"aiida_{name}",
            "repository_uri": f"file://{repository}"}},
        "process_control": {"backend": "core.rabbitmq", "config": {
            "broker_protocol": "amqp", "broker_username": "aiida", "broker_password": "mq-Secret",
            "broker_host": "rabbitmq", "broker_port": 5672, "broker_virtual_host": ""}},
        "test_profile": False, "PROFILE_UUID": f"{name:0<32}"[:32], "options": {},
        "default_user_email": f"{name}@localhost",
    }


@pytest.fixture(scope="module")
def cli(image):
    """An idle container with a hand-written config.json: profiles alpha (default) and beta."""
    with DockerContainer(IMAGE, entrypoint=["sleep", "infinity"]) as running:
        config = {
            "CONFIG_VERSION": {"CURRENT": 10, "OLDEST_COMPATIBLE": 10},
            "profiles": {
                "alpha": fake_profile("alpha", "/home/aiida/.aiida/repository/alpha"),
                "beta": fake_profile("beta", "/tmp/elsewhere"),
            },
            "default_profile": "alpha",
            "options": {},
        }
        ok(running, f"cat > {CLI_CONFIG} <<'EOF'\n{json.dumps(config)}\nEOF\nchmod 600 {CLI_CONFIG}", user="aiida")
        yield running


def profile_cli(container, args: str, stdin: str = "", user: str | None = "aiida"):
    """(exit code, stdout, stderr) of aiida-stack-profile ARGS."""
    command = f"printf '%s' {stdin!r} | aiida-stack-profile {args} 2>/tmp/err; echo \"rc=$?\"; cat /tmp/err >&2"
    result = container.get_wrapped_container().exec_run(["bash", "-c", command], user=user or "", demux=True)
    stdout, stderr = ((part or b"").decode() for part in result.output)
    body, _, code = stdout.rstrip("\n").rpartition("rc=")
    return int(code), body.strip(), stderr.strip()


def test_profile_cli_info_is_one_json_line_without_passwords(cli):
    code, out, err = profile_cli(cli, "info")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    listing = json.loads(out)
    assert listing["default"] == "alpha"
    assert [p["name"] for p in listing["profiles"]] == ["alpha", "beta"]
    alpha = listing["profiles"][0]
    assert alpha["is_default"] is True
    assert alpha["database_name"] == "aiida_alpha"
    assert alpha["repository_path"] == "/home/aiida/.aiida/repository/alpha"
    assert alpha["broker_host"] == "rabbitmq"
    assert alpha["user_email"] == "alpha@localhost"
    assert alpha["nodes"] is None and alpha["error"]  # no PostgreSQL here
    assert "Secret" not in out


def test_profile_cli_info_as_root_and_without_any_config(image):
    with DockerContainer(IMAGE, entrypoint=["sleep", "infinity"]) as bare:
        code, out, err = profile_cli(bare, "info", user=None)  # root: drops to aiida
        assert code == 0, err
        assert json.loads(out) == {"default": None, "profiles": []}


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        ("create Bad-Name --email e --first-name f --last-name l --institution i", "pw\n", 2, "invalid profile name"),
        ("create gamma --email e", "pw\n", 2, "required"),
        ("create gamma --email e --first-name f --last-name l --institution i", "", 2, "no database password"),
        ("create alpha --email e --first-name f --last-name l --institution i", "pw\n", 3, "already exists"),
        ("delete nope", "", 3, "no profile 'nope'"),
        ("delete alpha", "", 4, "set another default first"),
        ("delete beta", "", 1, "not inside /home/aiida/.aiida/repository"),
        ("frobnicate", "", 2, "invalid choice"),
    ],
)
def test_profile_cli_refusals_change_nothing(cli, args, stdin, code, message):
    before = ok(cli, f"sha256sum {CLI_CONFIG}")
    got, _, err = profile_cli(cli, args, stdin)
    assert got == code, err
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert ok(cli, f"sha256sum {CLI_CONFIG}") == before


def test_profile_cli_delete_keeps_an_outside_repository_with_skip(cli):
    ok(cli, "mkdir -p /tmp/elsewhere && touch /tmp/elsewhere/keep", user="aiida")
    code, out, err = profile_cli(cli, "delete beta --skip-repository")
    assert code == 0, err
    assert "repository kept" in out
    assert [p["name"] for p in json.loads(profile_cli(cli, "info")[1])["profiles"]] == ["alpha"]
    ok(cli, "test -f /tmp/elsewhere/keep")
