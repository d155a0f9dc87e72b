"""Rules the host side (ops/) and the services share: defined once, here.

Standard library only, except croniter for cron schedules (imported when one is checked; the backup
image and the host both install it). The aiida and backup images copy this file next to their code
(importable as `stack_rules`); the host imports it through ops/rules.py. A change here changes those
images.
"""

from __future__ import annotations

import re

# Profile names also name the PostgreSQL role and database (database_name), so they are kept to
# what is safe unquoted in SQL, in a path and in a shell word.
PROFILE_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
PROFILE_RE = re.compile(PROFILE_PATTERN)
PROFILE_HELP = "lowercase letters, digits and _, starting with a letter, at most 41 characters"

# Published backups: backup_<UTC YYYYmmddTHHMMSSZ>[_<random suffix>]; "latest" names the newest.
BACKUP_ID_PATTERN = r"^backup_\d{8}T\d{6}Z(_[a-z0-9]+)?$"
BACKUP_ID_RE = re.compile(BACKUP_ID_PATTERN)
LATEST = "latest"
BACKUP_ID_HELP = "'latest' or backup_<YYYYmmddTHHMMSSZ>[_<suffix>]"


def daemon_stop_marker(profile: str) -> str:
    """The file (in the AiiDA home's stack/ folder) whose presence keeps a profile's daemon stopped on
    purpose: the host writes it (./stack daemon.stop), the service's supervisor and healthcheck read it."""
    return f"daemon.disabled.{profile}"


def database_name(profile: str) -> str:
    """The PostgreSQL role and database of a profile the stack created."""
    return f"aiida_{profile}"


def profile_problem(name: str) -> str | None:
    """Why `name` is not a valid profile name, or None."""
    if PROFILE_RE.fullmatch(name or ""):
        return None
    return f"invalid profile name {name!r}: use {PROFILE_HELP} (it names the PostgreSQL role and database " \
           f"{database_name('<name>')})"


def backup_id_problem(ident: str) -> str | None:
    """Why `ident` is not a backup id (or 'latest'), or None."""
    if ident == LATEST or BACKUP_ID_RE.fullmatch(ident or ""):
        return None
    return f"invalid backup id {ident!r}: expected {BACKUP_ID_HELP}"


# The backup schedule (setting backup_schedule, the sidecar's BACKUP_SCHEDULE): "off", an interval of
# whole units ("30m", "6h", "1d", "1h30m"; at least MIN_INTERVAL s), or a cron expression in UTC (five
# fields, "0 3 * * *", or an alias such as @daily).
SCHEDULE_OFF = ("off", "none", "disabled", "false", "0")
SCHEDULE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SCHEDULE_INTERVAL_RE = re.compile(r"^(?:\d+[smhdw])+$")
SCHEDULE_MIN_INTERVAL = 10
CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
SCHEDULE_HELP = "'off', an interval like '30m', '6h', '1d' or '1h30m', or a cron expression in UTC like '0 3 * * *'"


def parse_schedule(text: str) -> tuple[str, str, int]:
    """(normalised text, kind "off" | "interval" | "cron", interval seconds); ValueError says what is wrong."""
    value = " ".join(text.split())
    if value.lower() in SCHEDULE_OFF:
        return value, "off", 0
    if SCHEDULE_INTERVAL_RE.fullmatch(value.lower()):
        seconds = sum(int(n) * SCHEDULE_UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value.lower()))
        if seconds < SCHEDULE_MIN_INTERVAL:
            raise ValueError(f"an interval must be at least {SCHEDULE_MIN_INTERVAL}s")
        return value, "interval", seconds
    if value.lower() in CRON_ALIASES or len(value.split(" ")) == 5:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError("not a valid cron expression (minute hour day-of-month month day-of-week, UTC)")
        return value, "cron", 0
    raise ValueError(f"expected {SCHEDULE_HELP}")


# The scheduled verification's read share (setting backup_verify_read_share, the sidecar's
# BACKUP_VERIFY_READ_SHARE): besides the new backup, read in full, each scheduled run reads one N-th
# of the older backups' files, in turn, so every byte of every kept backup is read at least once
# every N runs ("1/N"; "off" reads only the new backup). restic's `check --read-data-subset` is the model.
READ_SHARE_HELP = "'off' or '1/N' with N from 1 to 1000 (each run reads one N-th of the older backups)"


def parse_read_share(text: str) -> int:
    """N of "1/N" (0 for "off"); ValueError says what is wrong."""
    value = "".join(text.split()).lower()
    if value in SCHEDULE_OFF:
        return 0
    match = re.fullmatch(r"1/(\d{1,4})", value)
    if not match or not 1 <= int(match.group(1)) <= 1000:
        raise ValueError(f"expected {READ_SHARE_HELP}")
    return int(match.group(1))


# A restore stages the backup's copies beside the live ones and swaps them by renaming; the live
# copies are kept aside until the restore's checks pass. Staged and set-aside names carry the
# restore's id, and only names of this shape are ever dropped.
RESTORE_ID_RE = re.compile(r"^[a-z0-9]{8}$")
RESTORE_DATABASE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}_(staged|old)_[a-z0-9]{8}$")
RESTORE_FOLDER_RE = re.compile(r"^\.[A-Za-z0-9_.-]{1,100}\.(staged|old)-[a-z0-9]{8}$")


def restore_names(database: str, repository_folder: str, restore_id: str) -> dict[str, str]:
    """The staged and set-aside names of a profile's database and repository folder (a name, no path)."""
    if not RESTORE_ID_RE.fullmatch(restore_id):
        raise ValueError(f"restore id {restore_id!r} is not 8 lowercase letters or digits")
    return {"staged_database": f"{database[:40]}_staged_{restore_id}",
            "old_database": f"{database[:40]}_old_{restore_id}",
            "staged_folder": f".{repository_folder}.staged-{restore_id}",
            "old_folder": f".{repository_folder}.old-{restore_id}"}


# Scheduled basic maintenance (setting backup_maintenance, the sidecar's BACKUP_MAINTENANCE "on"/"off"):
# before a scheduled backup of a profile, the sidecar (which holds the stack's lock, and reads the AiiDA
# home read-only) asks the aiida service to run it. The two meet in the handoff volume: the sidecar
# writes requests/<profile>.json {"token"}, the aiida service answers in results/<profile>.json
# {"token", "state": "running" | "done" | "failed", ...}; each writes only its own folder.
HANDOFF_DIR = "/run/aiida-stack-handoff"
HANDOFF_REQUESTS = f"{HANDOFF_DIR}/requests"
HANDOFF_RESULTS = f"{HANDOFF_DIR}/results"
MAINTENANCE_SWITCH = ("on", "off")


# Offsite copies (./stack backup.push / backup.list --from / restore --from): a target is scp-like
# [user@]host:path (port 22) or ssh://[user@]host[:port]/path. The path is absolute, or relative to
# the remote user's home; it holds one folder per profile, laid out as /backups: <profile>/<id>/
# (complete and checked), <profile>/latest, and <profile>/.incoming-<id>/ (being sent, never listed).
# The offsite key and known_hosts are the sidecar's alone: the state folder's offsite/ mounted at
# OFFSITE_MOUNT (root-only), copied for the backup user into OFFSITE_HOME by its entrypoint.
OFFSITE_MOUNT = "/run/aiida-stack-offsite"
OFFSITE_HOME = "/home/stack-backup/.offsite"
OFFSITE_INCOMING = ".incoming-"
OFFSITE_HELP = "[user@]host:path or ssh://[user@]host[:port]/path, e.g. backup@nas.example.org:/srv/aiida"
_OFFSITE_USER = r"(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]{0,31})@)?"
_OFFSITE_HOST = r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_OFFSITE_PATH = r"(?P<path>[A-Za-z0-9_./+-][A-Za-z0-9_./+@-]{0,1023})"
OFFSITE_SCP_RE = re.compile(rf"^{_OFFSITE_USER}{_OFFSITE_HOST}:{_OFFSITE_PATH}$")
OFFSITE_URL_RE = re.compile(rf"^ssh://{_OFFSITE_USER}{_OFFSITE_HOST}(?::(?P<port>[0-9]{{1,5}}))?/{_OFFSITE_PATH}$")


def parse_offsite(text: str) -> tuple[str | None, str, int, str]:
    """(user or None, host, port, path) of an offsite target; ValueError saying what is wrong.
    The path keeps to characters that are safe in a shell word and never climbs out with '..'."""
    raw = text.strip()
    url = OFFSITE_URL_RE.fullmatch(raw)
    match = url or (None if raw.startswith("ssh://") else OFFSITE_SCP_RE.fullmatch(raw))
    if not match:
        raise ValueError(f"must be {OFFSITE_HELP} (got {text!r})")
    port = int(url["port"]) if url and url["port"] else 22
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not 1-65535 (got {text!r})")
    path = ("/" if url else "") + match["path"]
    parts = [p for p in path.split("/") if p]
    if ".." in parts or not parts or path.startswith("-"):
        raise ValueError(f"the path must name a folder, without '..' or a leading '-' (got {text!r})")
    return match["user"], match["host"].strip("[]"), port, "/".join(["", *parts] if path.startswith("/") else parts)


OFFSITE_INTERVAL_HELP = "an interval like '24h', '7d' or '1w' (at least the schedule's)"


def parse_offsite_interval(text: str) -> int:
    """Seconds between scheduled offsite pushes (setting backup_offsite_interval); ValueError otherwise."""
    try:
        _, kind, seconds = parse_schedule(text)
    except ValueError as exc:
        raise ValueError(f"expected {OFFSITE_INTERVAL_HELP} ({exc})") from None
    if kind != "interval":
        raise ValueError(f"expected {OFFSITE_INTERVAL_HELP} (got {text!r})")
    return seconds


# Encrypted offsite copies (setting backup_offsite_recipients): age X25519 recipients, bech32.
AGE_RECIPIENT_RE = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")


def parse_recipients(text: str) -> list[str]:
    """age recipients separated by spaces or commas ("" = none: plain copies); ValueError naming a bad one."""
    found = [part for part in re.split(r"[\s,]+", text.strip()) if part]
    for part in found:
        if not AGE_RECIPIENT_RE.fullmatch(part):
            raise ValueError(f"{part[:80]!r} is not an age recipient (age1 and 58 more letters and digits, as "
                             "age-keygen prints it)")
    return found
