"""Removing old backups: all but the newest N (`backup --keep`), or by tiers (`prune`); never
`latest`'s target or a backup being read (tiers: nor the newest verified backup)."""

from __future__ import annotations

import argparse
import datetime as dt
import os

from stackbackup.common import EXIT_INPUT, Fail, iso, say
from stackbackup.layout import (
    check_profile_name,
    in_use,
    latest_id,
    profile_dir,
    published,
    remove_tree,
)
from stackbackup.locking import global_lock
from stackbackup.retention import backup_time, select


def prune(profile: str, keep: int, protect: set[str]) -> list[str]:
    """Remove all but the `keep` newest backups; never `latest`'s target or a backup being read."""
    pruned = []
    current = latest_id(profile)
    for ident, _ in published(profile)[keep:]:
        if ident == current or ident in protect:
            continue
        if remove_backup(profile, ident):
            pruned.append(ident)
    return pruned


def remove_backup(profile: str, ident: str) -> bool:
    """Remove one published backup unless a reader holds it; True if removed."""
    folder = profile_dir(profile) / ident
    busy, fd = in_use(folder)
    if busy:
        say(f"prune: {ident} is being read (verify/restore); kept")
        return False
    try:
        doomed = folder.with_name(f".deleting-{ident}")
        os.rename(folder, doomed)  # unlisted at once; a crash leaves .deleting-*, removed next time
        remove_tree(doomed)
    finally:
        os.close(fd)
    say(f"prune: removed {ident}")
    return True


def prune_tiered(profile: str, *, last: int, daily: int, weekly: int, monthly: int, dry_run: bool = False) -> dict:
    """Tiered retention (see stackbackup.retention); never `latest`'s target, the newest verified
    backup, or one being read. Call with the global lock held."""
    rows = published(profile)
    current = latest_id(profile)
    times = {}
    for ident, manifest in rows:
        moment = backup_time(ident, manifest)
        if moment is None:  # unparseable id and manifest: keep it, say so
            moment = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
        times[ident] = moment
    reasons = select(times.items(), last=last, daily=daily, weekly=weekly, monthly=monthly)
    newest_verified = next((ident for ident, m in sorted(rows, key=lambda r: (times[r[0]], r[0]), reverse=True)
                            if (m or {}).get("verified") is True), None)
    for ident, why in ((current, "latest"), (newest_verified, "newest verified")):
        if ident:
            reasons.setdefault(ident, []).append(why)
    pruned, busy = [], []
    for ident, _ in rows:
        if ident in reasons:
            continue
        if dry_run or remove_backup(profile, ident):
            pruned.append(ident)
        else:
            busy.append(ident)
            reasons[ident] = ["being read"]
    kept = [{"id": ident, "finished_at": iso(times[ident]) if times[ident].year < 9999 else None,
             "reasons": reasons[ident]} for ident, _ in rows if ident in reasons]
    return {"kept": kept, "pruned": pruned, "busy": busy}


def cmd_prune(args: argparse.Namespace) -> dict:
    check_profile_name(args.profile)
    if args.keep_last < 1:
        raise Fail("--keep-last must be at least 1", EXIT_INPUT)
    for name in ("keep_daily", "keep_weekly", "keep_monthly"):
        if getattr(args, name) < 0:
            raise Fail(f"--{name.replace('_', '-')} must not be negative", EXIT_INPUT)
    policy = {"keep_last": args.keep_last, "keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly,
              "keep_monthly": args.keep_monthly}
    if not profile_dir(args.profile).is_dir():
        raise Fail(f"profile {args.profile!r} has no backups ({profile_dir(args.profile)} missing)", EXIT_INPUT)
    with global_lock(args.wait, f"prune of {args.profile}"):
        result = prune_tiered(args.profile, last=args.keep_last, daily=args.keep_daily, weekly=args.keep_weekly,
                              monthly=args.keep_monthly, dry_run=args.dry_run)
    return {"profile": args.profile, "policy": policy, "dry_run": args.dry_run, **result}
