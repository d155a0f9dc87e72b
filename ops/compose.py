"""The one Compose helper: every `docker compose` call of the stack goes through `Stack`.

It writes .stack/<name>/compose.env (project name, image tags, settings, secret paths), so a bare
`docker compose --env-file .stack/<name>/compose.env ...` (and testcontainers' DockerCompose)
drives the same project as ./stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import cache, cached_property
from pathlib import Path

import docker.models.containers

from ops import engine, rules, secrets, ssh
from ops.environment import Environment
from ops.errors import StackError
from ops.services import AIIDA, BACKUP, POSTGRES, RABBITMQ
from ops.settings import ROOT, Settings

COMPOSE_FILE = ROOT / "compose.yaml"
PUBLISHED = {POSTGRES: ("postgres_port", 5432), RABBITMQ: ("rabbitmq_port", 5672)}
# What each image is built from (every COPY source of its Dockerfile lies below one of these, which
# tests/test_compose.py checks): a change there gives that image, and only that image, a new tag.
# The aiida image also depends on its environment's lock (image_inputs).
IMAGE_INPUTS = {
    POSTGRES: ("images/postgres", "services/postgres"),
    RABBITMQ: ("images/rabbitmq", "services/rabbitmq"),
    AIIDA: ("images/aiida-core/Dockerfile", "images/aiida-core/patch_upstream.py", "services/aiida", "services/common"),
    BACKUP: ("images/backup", "services/backup", "services/common"),
}
TAG_VARIABLES = {POSTGRES: "STACK_TAG_POSTGRES", RABBITMQ: "STACK_TAG_RABBITMQ", AIIDA: "STACK_TAG_AIIDA",
                 BACKUP: "STACK_TAG_BACKUP"}


def image_inputs(service: str, settings: Settings) -> list[Path]:
    extra = [Environment.of(settings).lock] if service == AIIDA else []
    return [ROOT / top for top in IMAGE_INPUTS[service]] + extra


def image_tag(service: str, settings: Settings) -> str:
    """Content hash of the files `service`'s image is built from: a changed file means a new image."""
    digest = hashlib.sha256()
    for top in image_inputs(service, settings):
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


BACKUPS_DIR_MARKER = ".aiida-stack-backups"  # in a backups_dir the stack made or adopted (empty) for itself


def refuse_foreign_backups_dir(folder: Path | None) -> None:
    """Refuse (exit 2) a backups_dir that holds files but was never the stack's (see claim_backups_dir)."""
    try:
        foreign = (folder is not None and folder.is_dir() and not (folder / BACKUPS_DIR_MARKER).exists()
                   and any(folder.iterdir()))
    except OSError as exc:
        raise StackError(f"backups_dir {folder}: cannot read it: {exc}", code=2) from None
    if foreign:
        raise StackError(f"backups_dir {folder} holds files that are not this stack's backups (no "
                         f"{BACKUPS_DIR_MARKER}): name a new or empty folder; nothing changed", code=2)


def claim_backups_dir(folder: Path, stack_name: str) -> None:
    """A backups_dir is made private (0700) and owned by the sidecar's user, so it must be the stack's
    own: new, empty, or marked by an earlier claim. Any other folder (`/srv`, a home) is refused untouched."""
    marker = folder / BACKUPS_DIR_MARKER
    refuse_foreign_backups_dir(folder)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        if not marker.exists():
            secrets.write_private(marker, f"aiida-stack backups of stack {stack_name}; the stack owns this folder\n")
    except OSError as exc:
        raise StackError(f"backups_dir {folder}: cannot create it as a private folder: {exc}", code=2) from None


class Stack:
    """One compose project, named by the `name` setting."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = settings.state_dir
        # while ops.locking holds the stack's lock: its token, the holding process, how to take it again
        self.lock_token: str | None = None
        self.lock_holder: subprocess.Popen | None = None
        self.lock_renewal: Callable[[], object] | None = None

    @cached_property
    def env_file(self) -> Path:
        s = self.settings
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert, pip_env = pip_build_settings()
        values = {
            "COMPOSE_PROJECT_NAME": s.name,
            "STACK_SECRETS_DIR": str(secrets.secrets_dir(s)),
            "STACK_SSH_DIR": str(ssh.ensure_folder(s)),
            "STACK_OFFSITE_DIR": str(ssh.Identity(s.state_dir / "offsite", "backup", "").ensure()),
            "STACK_PIP_CERT": str(cert),
            "STACK_PIP_ENV": str(pip_env),
            "STACK_BASE_IMAGE": s.base_image,
            "STACK_IMAGE_PREFIX": s.image_prefix,
            **{variable: image_tag(service, s) for service, variable in TAG_VARIABLES.items()},
            "AIIDA_CORE_VERSION": s.aiida_core_version,
            "AIIDA_LOCK": Environment.of(s).lock.name,
            "AIIDA_PROFILE": s.profile,
            "AIIDA_DAEMON_WORKERS": str(s.daemon_workers),
            "AIIDA_USER_EMAIL": s.user_email,
            "AIIDA_USER_FIRST_NAME": s.user_first_name,
            "AIIDA_USER_LAST_NAME": s.user_last_name,
            "AIIDA_USER_INSTITUTION": s.user_institution,
            "BACKUP_SCHEDULE": s.backup_schedule,
            "BACKUP_KEEP_LAST": str(s.backup_keep_last),
            "BACKUP_KEEP_DAILY": str(s.backup_keep_daily),
            "BACKUP_KEEP_WEEKLY": str(s.backup_keep_weekly),
            "BACKUP_KEEP_MONTHLY": str(s.backup_keep_monthly),
            "BACKUP_VERIFY_READ_SHARE": s.backup_verify_read_share,
            "BACKUP_MAINTENANCE": rules.MAINTENANCE_SWITCH[0 if s.backup_maintenance else 1],
            "BACKUP_OFFSITE": s.backup_offsite,
            "BACKUP_OFFSITE_INTERVAL": s.backup_offsite_interval,
            "BACKUP_OFFSITE_RECIPIENTS": " ".join(s.backup_offsite_recipients),
        }
        path = self.state / "compose.env"
        secrets.write_private(path, "".join(f"{key}={_quote(value)}\n" for key, value in values.items()))
        return path

    @cached_property
    def files(self) -> list[Path]:
        """compose.yaml, plus generated overrides: opt-in ports (127.0.0.1 only), a host folder for backups."""
        overrides = (self._ports_override(), self._backups_override(), self._mounts_override())
        return [COMPOSE_FILE, *(path for path in overrides if path)]

    def _ports_override(self) -> Path | None:
        override = self.state / "ports.yaml"
        lines = []
        for service, (setting, container_port) in PUBLISHED.items():
            port = getattr(self.settings, setting)
            if port:
                # The backend network is internal (no port publishing): join egress to publish.
                lines += [f"  {service}:", "    networks: [backend, egress]",
                          f'    ports: ["127.0.0.1:{port}:{container_port}"]']
        if not lines:
            override.unlink(missing_ok=True)
            return None
        secrets.write_private(override, "# generated by ./stack from the port settings\nservices:\n"
                              + "\n".join(lines) + "\n")
        return override

    def _backups_override(self) -> Path | None:
        """The `backups_dir` setting: a host folder (created 0700) mounted at /backups instead of the volume."""
        override = self.state / "backups.yaml"
        folder = self.settings.backups_path
        if folder is None:
            override.unlink(missing_ok=True)
            return None
        claim_backups_dir(folder, self.settings.name)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        secrets.write_private(override, "# generated by ./stack from the backups_dir setting\n"
                              f"services:\n  {BACKUP}:\n    volumes:\n"
                              f"      - {{type: bind, source: {json.dumps(str(folder))}, target: /backups}}\n")
        return override

    def _mounts_override(self) -> Path | None:
        """The `mounts` setting: host folders bind-mounted into the aiida service (read-only unless rw)."""
        override = self.state / "mounts.yaml"
        chosen = self.settings.host_mounts
        if not chosen:
            override.unlink(missing_ok=True)
            return None
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        secrets.write_private(override, "# generated by ./stack from the mounts setting\n"
                              f"services:\n  {AIIDA}:\n    volumes:\n"
                              + "".join(f"      - {m.compose_entry()}\n" for m in chosen))
        return override

    def command(self, *args: str) -> list[str]:
        cmd = ["docker", "compose", "--project-directory", str(ROOT), "--env-file", str(self.env_file)]
        for path in self.files:
            cmd += ["-f", str(path)]
        return [*cmd, *args]

    def run(self, *args: str, capture: bool = False, check: bool = True, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS`; `input` is fed to stdin (how secrets reach a service, never argv);
        `env` overrides the env file's variables (Compose prefers the process environment)."""
        done = subprocess.run(self.command(*args), capture_output=capture, text=True, input=input,
                              env={**os.environ, **env} if env else None)
        if check and done.returncode != 0:
            detail = f":\n{done.stderr.strip()[-3000:]}" if capture else ""
            raise StackError(f"`docker compose {' '.join(args)}` failed (exit {done.returncode}){detail}",
                             code=done.returncode)
        return done

    def images(self) -> dict[str, str]:
        """service → image reference, as Compose resolves them from the settings."""
        config = json.loads(self.run("config", "--format", "json", capture=True).stdout)
        return {name: svc["image"] for name, svc in config["services"].items()}

    def ps(self) -> list[dict]:
        """Every container of the project (running or not), as Compose reports them."""
        out = self.run("ps", "--all", "--format", "json", capture=True).stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def container(self, service: str) -> docker.models.containers.Container:
        found = engine.client().containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.settings.name}", f"com.docker.compose.service={service}"]})
        if not found:
            raise StackError(f"service {service} of stack {self.settings.name} has no container: run ./stack up")
        return found[0]

    def is_running(self, service: str) -> bool:
        try:
            return self.container(service).status == "running"
        except StackError:
            return False

    def exec_aiida(self, argv: Sequence[str], *, interactive: bool = False, capture: bool = False,
                   check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as the aiida user in the aiida service; stdin/stdout pass through."""
        tty = [] if interactive and input is None and sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
        return self.run("exec", *tty, "--user", "aiida", AIIDA, *argv, capture=capture, check=check, input=input)

    def exec_postgres(self, argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as root in the postgres service (its scripts use peer auth as postgres)."""
        return self.run("exec", "-T", POSTGRES, *argv, capture=True, check=False, input=input)


def last_json(text: str | None) -> dict | None:
    """The last line of `text` that is a JSON object: how services' commands report their result."""
    lines = [line for line in (text or "").splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def json_result(code: int, out: str | None, what: str, err: str | None = None) -> dict:
    """The JSON result of a service command; StackError naming `what` if it failed or printed none."""
    result = last_json(out)
    if code != 0 or result is None:
        raise StackError(f"{what} failed (exit {code}): {(err or out or '').strip()[-800:]}")
    return result


def _quote(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pip_settings() -> tuple[Path, dict[str, str]]:
    """The host's pip CA bundle and its index and proxy settings (PIP_INDEX_URL, ..., HTTPS_PROXY)."""
    config = _pip_config()
    keys = {"PIP_INDEX_URL": "index-url", "PIP_EXTRA_INDEX_URL": "extra-index-url",
            "PIP_TRUSTED_HOST": "trusted-host", "PIP_DEFAULT_TIMEOUT": "timeout"}
    values = {}
    for variable, option in keys.items():
        value = os.environ.get(variable) or config.get(option, "")
        # file:// indexes are host paths, meaningless inside a build
        value = " ".join(v for v in value.split() if not v.startswith("file:"))
        if value:
            values[variable] = value
    values.update({v: os.environ[v] for v in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") if os.environ.get(v)})
    candidates = [os.environ.get("PIP_CERT"), config.get("cert"), os.environ.get("REQUESTS_CA_BUNDLE"),
                  os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"]
    cert = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if cert is None:
        cert = engine.STATE_ROOT / "build" / "no-ca-bundle.pem"
        cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert.touch()
    return cert, values


def pip_build_settings() -> tuple[Path, Path]:
    """pip_settings() as BuildKit secrets for image builds: the CA bundle, and a KEY=value file."""
    cert, values = pip_settings()
    build = engine.STATE_ROOT / "build"
    build.mkdir(parents=True, exist_ok=True, mode=0o700)
    pip_env = build / "pip.env"
    secrets.write_private(pip_env, "".join(f"{key}={_quote(value)}\n" for key, value in values.items()))
    return cert, pip_env


@cache  # a pip start-up (~0.4 s): once per command, however many Stack objects it makes
def _pip_config() -> dict[str, str]:
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    config = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if section in ("global", "install", ":env:"):
            config.setdefault(option, value.strip().strip("'\""))
    return config
