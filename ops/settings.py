"""Stack settings: defaults < stack.toml < AIIDA_STACK_* environment variables.

Every field is documented in stack.toml; `load()` validates them all before anything starts and
turns a validation failure into one StackError naming each bad setting.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ops import rules
from ops.errors import StackError
from ops.mounts import Mount, parse_all
from ops.rules import PROFILE_PATTERN

ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "AIIDA_STACK_"
SETTINGS_FILE_ENV = "AIIDA_STACK_SETTINGS"
NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"

Port = Annotated[int, Field(ge=0, le=65535)]


def settings_file() -> Path:
    return Path(os.environ.get(SETTINGS_FILE_ENV, ROOT / "stack.toml"))


def default_name() -> str:
    """Like Compose: the checkout's folder name, made safe as a project name."""
    name = re.sub(r"[^a-z0-9_-]", "-", ROOT.name.lower()).strip("-_") or "aiida-stack"
    return name[:63]


# settings the backup sidecar reads too: checked here by the same rule (services/common/stack_rules.py)
RULES = {
    "backup_schedule": rules.parse_schedule,
    "backup_verify_read_share": rules.parse_read_share,
    "backup_offsite": lambda value: value and rules.parse_offsite(value),
    "backup_offsite_interval": rules.parse_offsite_interval,
    "backup_offsite_recipients": lambda value: rules.parse_recipients(" ".join(value)),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    name: str = Field(default_factory=default_name, pattern=NAME_RE)
    aiida_core_version: str = Field(default="2.9.4", pattern=r"^2\.\d+\.\d+$")  # a lock per environment
    plugins: list[str] = Field(default_factory=list, max_length=50)
    profile: str = Field(default="default", pattern=PROFILE_PATTERN)
    daemon_workers: int = Field(default=1, ge=1, le=64)
    user_email: str = Field(default="aiida@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    user_first_name: str = Field(default="AiiDA", min_length=1)
    user_last_name: str = Field(default="User", min_length=1)
    user_institution: str = Field(default="aiida-stack", min_length=1)
    postgres_port: Port = 0
    rabbitmq_port: Port = 0
    base_image: str = "debian:bookworm-slim"
    image_prefix: str = Field(default="aiida-stack", pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    up_timeout: int = Field(default=600, ge=10)
    backup_schedule: str = "24h"  # the grammar the sidecar reads it with: rules.parse_schedule
    backup_keep_last: int = Field(default=7, ge=1)
    backup_keep_daily: int = Field(default=7, ge=0)
    backup_keep_weekly: int = Field(default=4, ge=0)
    backup_keep_monthly: int = Field(default=6, ge=0)
    backup_verify_read_share: str = "1/7"  # rules.parse_read_share, as the sidecar reads it
    # basic maintenance of each profile before its scheduled backup (off: a grown pack is copied whole)
    backup_maintenance: bool = False
    # a scheduled push of each new backup offsite (rules.parse_offsite; "": none), at most once per interval
    backup_offsite: str = ""
    backup_offsite_interval: str = "24h"  # rules.parse_offsite_interval
    # encrypt offsite copies to these age recipients (age1...; empty: plain copies, hard-linked there)
    backup_offsite_recipients: list[str] = Field(default_factory=list, max_length=20)
    backups_dir: str = ""
    mounts: list[str] = Field(default_factory=list, max_length=50)
    ssh_config: str = ""

    @field_validator(*RULES)
    @classmethod
    def _by_rule(cls, value: Any, info: ValidationInfo) -> Any:
        RULES[info.field_name](value)  # the rule the sidecar reads it by; its ValueError names what is wrong
        return value

    @field_validator("backups_dir", "ssh_config")
    @classmethod
    def _host_folder(cls, value: str) -> str:
        if value and (value.strip() != value or "\n" in value or ":" in value):
            raise ValueError("a host path without ':', newlines or surrounding spaces")
        if value and Path(value).resolve() in (Path("/"), ROOT):
            raise ValueError("not / nor the checkout itself: give a folder of its own")
        return value

    @property
    def backups_path(self) -> Path | None:
        """The host folder backups go to (relative paths: to the checkout), or None for the volume."""
        return (ROOT / self.backups_dir).resolve() if self.backups_dir else None

    @property
    def ssh_config_path(self) -> Path | None:
        """The user's ssh_config handed to the aiida user (relative paths: to the checkout), or None."""
        return (ROOT / Path(self.ssh_config).expanduser()).resolve() if self.ssh_config else None

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, specs: list[str]) -> list[str]:
        parse_all(specs, forbidden_hosts=(PurePosixPath(ROOT),))
        return specs

    @property
    def host_mounts(self) -> list[Mount]:
        """The mounts setting, parsed (validated when the settings load)."""
        return parse_all(self.mounts, forbidden_hosts=(PurePosixPath(ROOT),))

    @field_validator("plugins")
    @classmethod
    def _requirements(cls, plugins: list[str]) -> list[str]:
        for plugin in plugins:
            try:
                requirement = Requirement(plugin)
            except InvalidRequirement as exc:
                raise ValueError(f"{plugin!r} is not a pip requirement ({exc})") from None
            if requirement.url:
                raise ValueError(f"{plugin!r}: plugins come from the package index, not a URL or path")
            if canonicalize_name(requirement.name) == "aiida-core":
                raise ValueError("aiida-core is not a plugin: set aiida_core_version")
        return plugins

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=settings_file())
        return init_settings, env_settings, toml

    @cached_property
    def state_dir(self) -> Path:
        """Git-ignored per-stack folder: secrets, generated compose files."""
        return ROOT / ".stack" / self.name


def load(**overrides: object) -> Settings:
    """Validated settings, or a StackError naming every bad setting and where it came from."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            variable = f"{ENV_PREFIX}{field.upper()}"
            source = ("this command" if field in overrides else variable if variable in os.environ
                      else settings_file().name)
            got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else ""
            lines.append(f"  {field}{got}, from {source}: {err['msg']}")
        raise StackError("invalid settings, nothing started:\n" + "\n".join(lines), code=2) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise StackError(f"cannot read settings file {settings_file()}: {exc}", code=2) from None
