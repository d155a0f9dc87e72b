"""The AiiDA side, read from its config.json: a profile's entry, database name and repository folder."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from stack_rules import database_name as stack_database_name

from stackbackup.common import EXIT_INPUT, Fail
from stackbackup.layout import AIIDA_HOME, AIIDA_HOME_IN_AIIDA


def load_config() -> dict:
    path = AIIDA_HOME / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Fail(f"{path} not found: is the aiida-home volume mounted at {AIIDA_HOME}?") from None
    except (OSError, ValueError) as exc:
        raise Fail(f"cannot read {path}: {exc}") from None


def profile_entry(config: dict, profile: str) -> dict:
    """The profile's entry in config.json; Fail (bad input) if unknown or not core.psql_dos."""
    profiles = config.get("profiles") or {}
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise Fail(f"unknown profile {profile!r} (profiles in config.json: {known})", EXIT_INPUT)
    entry = profiles[profile]
    backend = (entry.get("storage") or {}).get("backend")
    if backend != "core.psql_dos":
        raise Fail(f"profile {profile!r} uses storage {backend!r}; only core.psql_dos is backed up here", EXIT_INPUT)
    return entry


def database_name(entry: dict, profile: str) -> str:
    return ((entry.get("storage") or {}).get("config") or {}).get("database_name") or stack_database_name(profile)


def repository_path(entry: dict) -> Path:
    """The profile's repository folder as seen here (/home/aiida/.aiida → /aiida-home)."""
    uri = ((entry.get("storage") or {}).get("config") or {}).get("repository_uri") or ""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file" or not parsed.path:
        raise Fail(f"repository_uri {uri!r} is not a local file:// path")
    path = urllib.parse.unquote(parsed.path)
    if path == AIIDA_HOME_IN_AIIDA or path.startswith(AIIDA_HOME_IN_AIIDA + "/"):
        path = str(AIIDA_HOME) + path[len(AIIDA_HOME_IN_AIIDA):]
    resolved = Path(os.path.normpath(path))
    if resolved != AIIDA_HOME and AIIDA_HOME not in resolved.parents:
        raise Fail(f"repository {uri} lies outside the AiiDA home ({AIIDA_HOME_IN_AIIDA}); cannot back it up")
    return resolved
