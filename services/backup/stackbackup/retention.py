"""Tiered retention (restic/borg `--keep-*` semantics), as pure arithmetic on (id, finished_at).

    keep_last N     the N newest backups
    keep_daily D    the newest backup of each of the D most recent UTC days that have backups
    keep_weekly W   ... of each of the W most recent ISO weeks (UTC) that have backups
    keep_monthly M  ... of each of the M most recent months (UTC) that have backups

A backup is kept if any rule keeps it; `select` returns the reasons per kept id. The rules that are
not arithmetic (never `latest`, never the newest verified backup, never one being read) are applied
by prune.prune_tiered on top of this.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

TIERS: dict[str, Callable[[dt.datetime], object]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
}


def id_time(ident: str) -> dt.datetime | None:
    """The UTC second a backup id carries (backup_YYYYmmddTHHMMSSZ_xxxx), or None."""
    try:
        return dt.datetime.strptime(ident[7:23], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(dt.timezone.utc) if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def backup_time(ident: str, manifest: dict | None) -> dt.datetime | None:
    """When a backup finished: the manifest's finished_at, else the time in its id."""
    return parse_time((manifest or {}).get("finished_at")) or id_time(ident)


def select(backups: Iterable[tuple[str, dt.datetime]], *, last: int, daily: int = 0, weekly: int = 0,
           monthly: int = 0) -> dict[str, list[str]]:
    """{id: reasons} of the backups to keep; `backups` are (id, UTC finish time) in any order."""
    if last < 0 or daily < 0 or weekly < 0 or monthly < 0:
        raise ValueError("keep counts must not be negative")
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)  # newest first
    keep: dict[str, list[str]] = {}
    for ident, _ in ordered[:last]:
        keep.setdefault(ident, []).append("last")
    for tier, count in (("daily", daily), ("weekly", weekly), ("monthly", monthly)):
        bucket_of = TIERS[tier]
        seen: list[object] = []
        for ident, moment in ordered:
            if len(seen) >= count:
                break
            bucket = bucket_of(moment.astimezone(dt.timezone.utc))
            if bucket in seen:
                continue
            seen.append(bucket)  # the first (newest) backup of a new bucket represents it
            keep.setdefault(ident, []).append(tier)
    return keep
