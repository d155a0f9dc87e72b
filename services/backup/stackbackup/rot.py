"""Rot in a backup's loose objects, re-copied from the live repository when the live copy is good.

A backup hard-links every unchanged object to the previous backup's file, so one flipped bit sits in
every backup sharing that inode, and rsync (size and mtime) keeps linking to it. The verification of
a new backup reads every object's content and finds it; this module then writes a fresh copy from
the live repository (a new inode: the new backup is sound again, and later ones link to that copy)
when the live object's content still matches its hash. Packed objects are not re-copied (a pack holds
many objects); they stay reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from stackbackup.aiida_config import load_config, profile_entry, repository_path
from stackbackup.common import Fail, rand, say
from stackbackup.layout import fsync_dir


def live_container(profile: str) -> Path:
    return repository_path(profile_entry(load_config(), profile)) / "container"


def _loose_path(container: Path, key: str) -> Path:
    config = json.loads((container / "config.json").read_text())
    prefix = int(config.get("loose_prefix_len", 2))
    return container / "loose" / key[:prefix] / key[prefix:] if prefix else container / "loose" / key


def recopy(backup: Path, live: Path, keys: list[str]) -> tuple[list[str], list[str]]:
    """Re-copy these loose objects of the backed-up container `backup` from the live container `live`:
    (re-copied, left: not in the live repository as a sound loose object)."""
    try:
        hash_type = json.loads((live / "config.json").read_text()).get("hash_type", "sha256")
    except (OSError, ValueError) as exc:
        raise Fail(f"the live repository {live} is not readable: {exc}") from None
    done, left = [], []
    for key in keys:
        source = _loose_path(live, key)
        try:
            data = source.read_bytes()
        except OSError:
            left.append(key)
            continue
        if hashlib.new(hash_type, data).hexdigest() != key:
            left.append(key)  # rotten in the live repository too: nothing sound to copy
            continue
        target = _loose_path(backup, key)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{rand(6)}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)  # a new inode: the other backups keep theirs
        fsync_dir(target.parent)
        done.append(key)
    if done:
        say(f"re-copied {len(done)} rotten or missing object(s) from the live repository")
    return done, left
