"""The sidecar's schedule: settings from the environment, due times, the state file, the health rule.

Environment (validated by `Settings.from_env`; empty or absent → default):
    BACKUP_SCHEDULE       "off" | an interval "30s", "30m", "6h", "1d", "1w", "1h30m" (≥ 10 s)
                          | a 5-field cron expression in UTC ("0 3 * * *") or @hourly/@daily/@weekly/@monthly
                          (default "24h"; the grammar is stack_rules.parse_schedule, shared with the host)
    BACKUP_KEEP_LAST      int ≥ 1 (default 7)
    BACKUP_KEEP_DAILY     int ≥ 0 (default 7)
    BACKUP_KEEP_WEEKLY    int ≥ 0 (default 4)
    BACKUP_KEEP_MONTHLY   int ≥ 0 (default 6)
    BACKUP_VERIFY_READ_SHARE  "off" | "1/N": each run also reads one N-th of the older backups (default
                          "1/7"; the grammar is stack_rules.parse_read_share)
    BACKUP_MAINTENANCE    "on" | "off": the aiida service runs basic maintenance of each profile before
                          its scheduled backup (default "off"; stack_rules.MAINTENANCE_SWITCH)
    AIIDA_CORE_VERSION    recorded in each manifest (like `backup --aiida-version`)

Due times: an interval is due one interval after the newest published backup of each profile
(scheduled or manual; a profile without backups counts from the sidecar's start), at once if
overdue; after a failed run, not before min(interval, 15 min) after it started. Cron: the next
cron time after now (UTC), with `croniter`.

Health (the healthcheck and `schedule-status`): with the schedule on, unhealthy when the last run
failed, or when no run succeeded within two periods (interval, or the longest gap between
consecutive cron times) of the later of the sidecar's start and the last successful run.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import stack_rules

from stackbackup.common import iso
from stackbackup.layout import BACKUPS, write_json_atomic
from stackbackup.retention import parse_time

STATE = BACKUPS / ".schedule.json"
RUN_DIR = Path(os.environ.get("STACK_BACKUP_RUN_DIR", "/tmp"))
DEADLINE_FILE = RUN_DIR / "schedule-deadline"  # "<epoch> <since ISO> <period s>"; absent when off
FAILED_FILE = RUN_DIR / "schedule-failed"  # present (with the error) when the last run failed
RETRY_AFTER_FAILURE = 15 * 60
DEFAULTS = {"BACKUP_SCHEDULE": "24h", "BACKUP_KEEP_LAST": "7", "BACKUP_KEEP_DAILY": "7",
            "BACKUP_KEEP_WEEKLY": "4", "BACKUP_KEEP_MONTHLY": "6", "BACKUP_VERIFY_READ_SHARE": "1/7",
            "BACKUP_MAINTENANCE": "off", "BACKUP_OFFSITE": "", "BACKUP_OFFSITE_INTERVAL": "24h"}


class ConfigError(ValueError):
    """A bad environment value; the message names the variable."""


@dataclass(frozen=True)
class Schedule:
    text: str
    kind: str  # "off" | "interval" | "cron"
    seconds: int = 0  # interval length
    cron: str = ""

    @property
    def on(self) -> bool:
        return self.kind != "off"

    def next_cron(self, after: dt.datetime) -> dt.datetime:
        from croniter import croniter

        return croniter(self.cron, after.astimezone(dt.timezone.utc)).get_next(dt.datetime).astimezone(
            dt.timezone.utc)

    def period(self, base: dt.datetime) -> float:
        """Seconds between runs: the interval, or the longest of 8 consecutive cron gaps after base."""
        if self.kind == "interval":
            return float(self.seconds)
        if self.kind == "cron":
            times = [self.next_cron(base)]
            for _ in range(8):
                times.append(self.next_cron(times[-1]))
            return max((b - a).total_seconds() for a, b in itertools.pairwise(times))
        return 0.0


def parse_schedule(text: str) -> Schedule:
    """BACKUP_SCHEDULE by the grammar the host checks the setting with (stack_rules.parse_schedule)."""
    try:
        value, kind, seconds = stack_rules.parse_schedule(text)
    except ValueError as exc:
        raise ConfigError(f"BACKUP_SCHEDULE={text!r}: {exc}") from None
    return Schedule(value, kind, seconds=seconds, cron=value if kind == "cron" else "")


@dataclass(frozen=True)
class Settings:
    schedule: Schedule
    keep_last: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    aiida_version: str | None
    read_share: int = 0  # N of "1/N"; 0: off
    maintenance: bool = False
    offsite: str = ""  # a push target after each scheduled run, when due ("": none)
    offsite_interval: int = 86400

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = (env.get(name) or "").strip()
            return value or DEFAULTS[name]

        def count(name: str, minimum: int) -> int:
            raw = get(name)
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: expected an integer >= {minimum}") from None
            if value < minimum:
                raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
            return value

        version = (env.get("AIIDA_CORE_VERSION") or "").strip() or None
        if version is not None and not re.fullmatch(r"[A-Za-z0-9.+_-]{1,64}", version):
            raise ConfigError(f"AIIDA_CORE_VERSION={version!r}: not a version string")
        try:
            share = stack_rules.parse_read_share(get("BACKUP_VERIFY_READ_SHARE"))
        except ValueError as exc:
            raise ConfigError(f"BACKUP_VERIFY_READ_SHARE={get('BACKUP_VERIFY_READ_SHARE')!r}: {exc}") from None
        switch = get("BACKUP_MAINTENANCE").lower()
        if switch not in stack_rules.MAINTENANCE_SWITCH:
            raise ConfigError(f"BACKUP_MAINTENANCE={get('BACKUP_MAINTENANCE')!r}: expected "
                              f"{' or '.join(stack_rules.MAINTENANCE_SWITCH)}")
        offsite = (env.get("BACKUP_OFFSITE") or "").strip()
        try:
            if offsite:
                stack_rules.parse_offsite(offsite)
        except ValueError as exc:
            raise ConfigError(f"BACKUP_OFFSITE={offsite!r}: {exc}") from None
        try:
            stack_rules.parse_recipients(env.get("BACKUP_OFFSITE_RECIPIENTS") or "")
        except ValueError as exc:
            raise ConfigError(f"BACKUP_OFFSITE_RECIPIENTS: {exc}") from None
        try:
            offsite_interval = stack_rules.parse_offsite_interval(get("BACKUP_OFFSITE_INTERVAL"))
        except ValueError as exc:
            raise ConfigError(f"BACKUP_OFFSITE_INTERVAL={get('BACKUP_OFFSITE_INTERVAL')!r}: {exc}") from None
        return cls(schedule=parse_schedule(get("BACKUP_SCHEDULE")), keep_last=count("BACKUP_KEEP_LAST", 1),
                   keep_daily=count("BACKUP_KEEP_DAILY", 0), keep_weekly=count("BACKUP_KEEP_WEEKLY", 0),
                   keep_monthly=count("BACKUP_KEEP_MONTHLY", 0), aiida_version=version, read_share=share,
                   maintenance=switch == stack_rules.MAINTENANCE_SWITCH[0], offsite=offsite,
                   offsite_interval=offsite_interval)

    def retention(self) -> dict[str, int]:
        return {"keep_last": self.keep_last, "keep_daily": self.keep_daily, "keep_weekly": self.keep_weekly,
                "keep_monthly": self.keep_monthly}


def next_due(schedule: Schedule, now: dt.datetime, started: dt.datetime, newest: dict[str, dt.datetime | None],
             last_failed_start: dt.datetime | None = None) -> dt.datetime | None:
    """When the next run is due. newest: profile → finish time of its newest backup (None: none)."""
    if not schedule.on:
        return None
    if schedule.kind == "cron":
        return schedule.next_cron(now)
    step = dt.timedelta(seconds=schedule.seconds)
    bases = [moment if moment is not None else started for moment in newest.values()] or [started]
    due = min(bases) + step
    if last_failed_start is not None:
        due = max(due, last_failed_start + dt.timedelta(seconds=min(schedule.seconds, RETRY_AFTER_FAILURE)))
    return due


def deadline(schedule: Schedule, started: dt.datetime, last_success: dt.datetime | None) -> dt.datetime | None:
    """Past this moment without a successful run the sidecar is unhealthy (None: schedule off)."""
    if not schedule.on:
        return None
    base = max(started, last_success) if last_success else started
    return base + dt.timedelta(seconds=2 * schedule.period(base))


# ------------------------------------------------------------------------------------------------
# the state file /backups/.schedule.json and the healthcheck's files in /tmp


def read_state() -> dict | None:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None


def write_state(state: dict) -> None:
    write_json_atomic(STATE, state, mode=0o600)


def write_health_files(state: dict) -> None:
    """What the shell healthcheck reads: the deadline (epoch) and, after a failure, its error."""
    moment = parse_time(state.get("deadline"))
    if moment is None:
        DEADLINE_FILE.unlink(missing_ok=True)
    else:
        since = state.get("last_success") or state.get("sidecar_started") or "?"
        _write_text(DEADLINE_FILE, f"{int(moment.timestamp())} {since} {state.get('period_seconds')}\n")
    if state.get("last_result") == "failed" and state.get("schedule_kind") not in (None, "off"):
        _write_text(FAILED_FILE, (state.get("error") or "unknown error")[:500] + "\n")
    else:
        FAILED_FILE.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def health(state: dict | None, now: dt.datetime | None = None) -> tuple[bool, str]:
    """(healthy, reason) by the rule in the module docstring, from the state file's content."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if state is None:
        return True, "no schedule state yet (the sidecar has not started serving)"
    if state.get("config_error"):
        return False, f"invalid setting {state['config_error']}"
    if state.get("schedule_kind") == "off" or state.get("schedule") in (None, "off"):
        return True, "schedule off"
    if state.get("last_result") == "failed":
        return False, f"the last scheduled backup failed: {state.get('error') or 'unknown error'}"
    limit = parse_time(state.get("deadline"))
    if limit is not None and now > limit:
        since = state.get("last_success") or state.get("sidecar_started")
        return False, (f"no successful scheduled backup since {since} (deadline {iso(limit)}: "
                       f"2 x {state.get('period_seconds')} s)")
    if state.get("last_result") == "ok":
        return True, f"last scheduled backup ok at {state.get('last_run_finished')}; next due {state.get('next_due')}"
    return True, f"no scheduled run yet; next due {state.get('next_due')}"


def cmd_schedule_status(_args: object) -> dict:
    state = read_state()
    healthy, reason = health(state)
    return {**(state or {}), "healthy": healthy, "reason": reason}
