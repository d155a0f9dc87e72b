"""The aiida-core image: pinned version, honest labels, tools the service needs, user model.

Needs the image built first (./stack, or `docker compose build aiida`). Select another image with
AIIDA_IMAGE, or AIIDA_CORE_VERSION / STACK_IMAGE_PREFIX / STACK_IMAGE_TAG as in compose.yaml.
Full-stack behaviour (profile bootstrap, daemon supervision, health) is tested elsewhere.
"""

from __future__ import annotations

import re

import docker
import pytest
from testcontainers.core.container import DockerContainer, ExecConfig

from ops import settings

from ..conftest import image_ref

# No registry here: the Ryuk reaper image cannot be pulled; containers are removed explicitly.

AIIDA_CORE_VERSION = settings.load().aiida_core_version
# Same reference as compose.yaml: <prefix>/aiida-core:<aiida-core version>-<stack tag>.
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
    ["ps", "rsync", "pg_dump", "pg_isready", "setpriv", "bash", "verdi", "aiida-healthcheck"],
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
