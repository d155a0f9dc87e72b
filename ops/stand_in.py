"""A throwaway SSH server on a stack's egress network, for bench.offsite and the tests: the image of
tests/cluster/Dockerfile (Debian's sshd and rsync; a user alice who logs in by key only)."""

from __future__ import annotations

from ops import engine
from ops.errors import StackError
from ops.settings import ROOT, Settings

IMAGE = "aiida-stack-test/cluster:latest"  # kept by the engine: a rerun reuses it


def start(settings: Settings, alias: str):
    """The server, started, reachable from the stack's services as `alias`."""
    docker = engine.client()
    image, _ = docker.images.build(path=str(ROOT / "tests" / "cluster"), tag=IMAGE,
                                   buildargs={"BASE_IMAGE": settings.base_image})
    container = docker.containers.create(image.id, name=f"{settings.name}-{alias}")
    docker.networks.get(f"{settings.name}_egress").connect(container, aliases=[alias])
    container.start()
    return container


def authorize(container, public_key: str, user: str = "alice") -> None:
    """Add a public key to the user's authorized_keys, as the server's admin would."""
    done = container.exec_run(["sh", "-c", 'printf "%s\\n" "$KEY" >> "$HOME_SSH/authorized_keys" && '
                                           'chown "$USER_NAME": "$HOME_SSH/authorized_keys" && '
                                           'chmod 600 "$HOME_SSH/authorized_keys"'],
                              environment={"KEY": public_key, "USER_NAME": user, "HOME_SSH": f"/home/{user}/.ssh"})
    if done.exit_code != 0:
        raise StackError(f"could not authorize the key on the stand-in: {done.output.decode()[-300:]}")
