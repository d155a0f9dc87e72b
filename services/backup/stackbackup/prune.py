"""Removing old backups: all but the newest N, never `latest`'s target or a backup being read."""

from __future__ import annotations

import os

from stackbackup.common import say
from stackbackup.layout import in_use, latest_id, profile_dir, published, remove_tree


def prune(profile: str, keep: int, protect: set[str]) -> list[str]:
    """Remove all but the `keep` newest backups; never `latest`'s target or a backup being read."""
    pruned = []
    current = latest_id(profile)
    for ident, _ in published(profile)[keep:]:
        if ident == current or ident in protect:
            continue
        folder = profile_dir(profile) / ident
        busy, fd = in_use(folder)
        if busy:
            say(f"prune: {ident} is being read (verify/restore); kept")
            continue
        try:
            doomed = folder.with_name(f".deleting-{ident}")
            os.rename(folder, doomed)  # unlisted at once; a crash leaves .deleting-*, removed next time
            remove_tree(doomed)
        finally:
            os.close(fd)
        pruned.append(ident)
        say(f"prune: removed {ident}")
    return pruned
