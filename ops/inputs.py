"""Typed task options: what each option of each task accepts, checked before anything runs.

Every option of every task declares one of these (ops/cli.py refuses a task with an undeclared
option). Checks happen in two stages, both before the task's body:
  parse   - while the command line is read: type, range, length, characters, the shared name rules;
  resolve - once the stack is reachable: names and ids that must (or must not) exist.
A failure is an InputError: exit 2, and the message starts with the option's flag.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ops.errors import StackError
from ops.rules import LATEST, backup_id_problem, profile_problem

ASCII_INT = re.compile(r"^-?[0-9]+$")  # int() also takes full-width digits and " 3 ": a count is ASCII digits only


class InputError(StackError):
    """Bad input for one option: exit 2, the message names the option."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}; nothing changed", code=2)
        self.flag = flag


def _control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


@dataclass(frozen=True)
class Input:
    """An option's declared type. `help` is its --help text."""

    help: str = ""
    kind: ClassVar[type] = str  # what invoke shows (=STRING, =INT, or a switch for bool)
    completes: ClassVar[str | None] = None  # a value list the shell completion offers (see ops/cli.py)

    def parse(self, flag: str, raw: Any) -> Any:
        return raw

    def resolve(self, flag: str, value: Any, lookup: Lookup, values: dict[str, Any]) -> None:
        """Checks that need the stack (existence); `values` holds every option of the call."""


@dataclass(frozen=True)
class Flag(Input):
    """A switch: given or not, never with a value."""

    kind: ClassVar[type] = bool

    def parse(self, flag: str, raw: Any) -> Any:
        if not isinstance(raw, bool):
            raise InputError(flag, f"is a switch and takes no value (got {raw!r})")
        return raw


@dataclass(frozen=True)
class Count(Input):
    """A whole number within [minimum, maximum]."""

    minimum: int = 1
    maximum: int = 1_000_000
    kind: ClassVar[type] = int

    def parse(self, flag: str, raw: Any) -> int:
        if not isinstance(raw, str) or not ASCII_INT.fullmatch(raw):
            raise InputError(flag, f"must be a whole number written with digits 0-9 (got {raw!r})")
        value = int(raw)
        if not self.minimum <= value <= self.maximum:
            raise InputError(flag, f"must be between {self.minimum} and {self.maximum} (got {value})")
        return value


@dataclass(frozen=True)
class Text(Input):
    """Free text: not empty, at most `max_length` characters, no control characters; `pattern` if given."""

    max_length: int = 200
    pattern: str | None = None
    pattern_help: str = ""

    def parse(self, flag: str, raw: Any) -> str:
        if not isinstance(raw, str) or raw.strip() == "":
            raise InputError(flag, "must not be empty")
        if len(raw) > self.max_length:
            raise InputError(flag, f"is too long ({len(raw)} characters, at most {self.max_length})")
        if _control_characters(raw):
            raise InputError(flag, f"must not contain control characters or line breaks (got {raw!r})")
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise InputError(flag, f"{self.pattern_help} (got {raw!r})")
        return raw


def Email(help: str) -> Text:
    return Text(help, max_length=254, pattern=r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*",
                pattern_help="must be an e-mail address like name@example.org")


def OptionName(help: str, prefix: bool = False) -> Text:
    """An AiiDA config option (`daemon.default_workers`), or with `prefix` the start of one."""
    if prefix:
        return Text(help, max_length=100, pattern=r"[a-z][a-z0-9_.]*",
                    pattern_help="must be the start of an option name: lowercase letters, digits, _ and .")
    return Text(help, max_length=100, pattern=r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+",
                pattern_help="must be an option name like daemon.default_workers")


@dataclass(frozen=True)
class Day(Input):
    """A calendar day, YYYY-MM-DD."""

    def parse(self, flag: str, raw: Any) -> dt.date:
        text = Text(max_length=10, pattern=r"\d{4}-\d{2}-\d{2}", pattern_help="must be a day as YYYY-MM-DD").parse(
            flag, raw)
        try:
            return dt.date.fromisoformat(text)
        except ValueError as exc:
            raise InputError(flag, f"is not a calendar day ({exc})") from None


@dataclass(frozen=True)
class Choice(Input):
    choices: tuple[str, ...] = ()

    def parse(self, flag: str, raw: Any) -> str:
        if raw not in self.choices:
            raise InputError(flag, f"must be one of {', '.join(self.choices)} (got {raw!r})")
        return raw


@dataclass(frozen=True)
class HostFile(Input):
    """An existing, readable regular file on the host."""

    def parse(self, flag: str, raw: Any) -> Path:
        text = Text(max_length=4096).parse(flag, raw)
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(flag, f"no such file: {text}")
        try:
            path.open("rb").close()
        except OSError as exc:
            raise InputError(flag, f"cannot read {text}: {exc.strerror}") from None
        return path


@dataclass(frozen=True)
class NewHostFile(Input):
    """A file to write on the host: its folder exists and is writable; one that exists only with --force."""

    def parse(self, flag: str, raw: Any) -> Path:
        text = Text(max_length=4096).parse(flag, raw)
        path = Path(text).expanduser().absolute()
        if path.is_dir():
            raise InputError(flag, f"{text} is a folder: name the file to write")
        if not path.parent.is_dir():
            raise InputError(flag, f"no such folder: {path.parent}")
        if not os.access(path.parent, os.W_OK):
            raise InputError(flag, f"cannot write in {path.parent}")
        return path

    def resolve(self, flag: str, value: Any, lookup: Lookup, values: dict[str, Any]) -> None:
        if value is not None and value.exists() and not values.get("force"):
            raise InputError(flag, f"{value} exists: --force overwrites it")


@dataclass(frozen=True)
class NumberList(Input):
    """Comma-separated whole numbers of at least 1 (node pks): 12,15,40."""

    def parse(self, flag: str, raw: Any) -> list[int]:
        text = Text(max_length=100_000).parse(flag, raw)
        parts = text.split(",")
        bad = [part for part in parts if not re.fullmatch(r"[0-9]{1,15}", part) or int(part) < 1]
        if bad:
            raise InputError(flag, f"must be whole numbers of at least 1, separated by commas (got {bad[0]!r})")
        return [int(part) for part in parts]


@dataclass(frozen=True)
class LabelList(Input):
    """Comma-separated group labels: each 1-255 characters, no control characters."""

    def parse(self, flag: str, raw: Any) -> list[str]:
        text = Text(max_length=100_000).parse(flag, raw)
        return [Text(max_length=255).parse(flag, part) for part in text.split(",")]


@dataclass(frozen=True)
class PrivateKeyFile(HostFile):
    """An SSH private key file: unencrypted, not readable by others, a key OpenSSH accepts."""

    def parse(self, flag: str, raw: Any) -> Path:
        from ops import ssh

        path = super().parse(flag, raw)
        try:
            ssh.read_private_key(path)
        except ValueError as exc:
            raise InputError(flag, str(exc)) from None
        return path


@dataclass(frozen=True)
class SshTarget(Input):
    """HOST or HOST:PORT of an SSH server."""

    def parse(self, flag: str, raw: Any) -> str:
        from ops import ssh

        ssh.parse_target(flag, Text(max_length=260).parse(flag, raw))
        return raw


class OffsiteTarget(Input):
    """[user@]host:path or ssh://[user@]host[:port]/path (the shared rule, stack_rules.parse_offsite)."""

    def parse(self, flag: str, raw: Any) -> str:
        from ops.rules import parse_offsite

        text = Text(max_length=1300).parse(flag, raw)
        try:
            parse_offsite(text)
        except ValueError as exc:
            raise InputError(flag, str(exc)) from None
        return text


class RemoteHost(Input):
    """[user@]host[:path] or ssh://[user@]host[:port]/path: where remote.* runs a stack (ops.remote.Target)."""

    def parse(self, flag: str, raw: Any) -> Any:
        from ops.remote import parse_target

        return parse_target(Text(max_length=1300).parse(flag, raw), flag)


def _by_rule(flag: str, raw: Any, problem_of: Callable[[str], str | None]) -> str:
    """A value checked by one of the shared rules (services/common/stack_rules.py)."""
    problem = problem_of(raw if isinstance(raw, str) else "")
    if problem:
        raise InputError(flag, problem)
    return raw


@dataclass(frozen=True)
class Profile(Input):
    """A profile name (the shared rule). `must`: "exist", "not-exist", "exist-or-have-backups" or None."""

    must: str | None = "exist"
    completes: ClassVar[str | None] = "profiles"

    def parse(self, flag: str, raw: Any) -> str:
        return _by_rule(flag, raw, profile_problem)

    def resolve(self, flag: str, value: Any, lookup: Lookup, values: dict[str, Any]) -> None:
        if value is None or self.must is None or values.get("from_"):  # --from: the offsite target has them
            return
        names = lookup.profile_names()
        if self.must == "not-exist":
            if value in names:
                raise InputError(flag, f"profile {value!r} already exists")
            return
        if value in names or (self.must == "exist-or-have-backups" and lookup.backup_ids(value)):
            return
        either = " nor has backups" if self.must == "exist-or-have-backups" else ""
        raise InputError(flag, f"profile {value!r} does not exist{either} (profiles: {', '.join(names) or 'none'})")


@dataclass(frozen=True)
class BackupId(Input):
    """A backup id or 'latest' (the shared rule), which must exist for the profile in option `of`."""

    of: str = "profile"
    completes: ClassVar[str | None] = "backups"

    def parse(self, flag: str, raw: Any) -> str:
        return _by_rule(flag, raw, backup_id_problem)

    def resolve(self, flag: str, value: Any, lookup: Lookup, values: dict[str, Any]) -> None:
        if values.get("from_"):  # --from: the offsite target holds the backup
            return
        profile = values.get(self.of) or lookup.default_profile()
        ids = lookup.backup_ids(profile)
        if value == LATEST and not ids:
            raise InputError(flag, f"profile {profile!r} has no backup yet (./stack backup --profile {profile})")
        if value != LATEST and value not in ids:
            raise InputError(flag, f"no backup {value} of profile {profile!r} (./stack backup.list)")


@dataclass
class Lookup:
    """What resolve() needs from the running stack, each fetched once per command."""

    stack: Any
    _listing: dict | None = None
    _backups: dict[str, list[str]] = field(default_factory=dict)

    def _profiles(self) -> dict:
        if self._listing is None:
            from ops import profiles  # the stack side is imported only when a check needs it

            self._listing = profiles.names(self.stack)
        return self._listing

    def profile_names(self) -> list[str]:
        return self._profiles()["profiles"]

    def default_profile(self) -> str:
        return self._profiles()["default"]

    def backup_ids(self, profile: str) -> list[str]:
        if profile not in self._backups:
            from ops import backups

            self._backups[profile] = backups.ids(self.stack, profile)
        return self._backups[profile]
