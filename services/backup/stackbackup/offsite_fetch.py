"""Offsite copies, the way back: list the copies on a remote, and pull one into this stack's backups
(fetched, checked, published under its id) for the normal restore. See stackbackup.offsite."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from stack_rules import LATEST

from stackbackup.common import EXIT_INPUT, Fail, rand, run, step
from stackbackup.layout import check_profile_name, fsync_dir, latest_id, profile_dir, remove_tree
from stackbackup.locking import global_lock
from stackbackup.manifest import read_manifest
from stackbackup.offsite import Remote, push_lock, stats
from stackbackup.sealed import SUFFIX, sealed_name
from stackbackup.sealed import fetch as fetch_sealed
from stackbackup.verify import Checks, check_database_files, check_repository


def cmd_remote_list(args: argparse.Namespace) -> dict:
    """`remote-list`: the published backups of a profile on the remote, newest first, from their manifests
    (an encrypted copy shows only its size: its manifest is inside)."""
    check_profile_name(args.profile)
    q = shlex.quote
    remote = Remote(args.source)
    try:
        ids, _, sealed = remote.entries(args.profile)
        base = shlex.quote(remote.base(args.profile))
        latest = remote.run(f"readlink {base}/latest || true", timeout=60).strip().removesuffix(SUFFIX)
        plain = [i for i in ids if i not in sealed]
        marker = f"--manifest-{os.getpid()}--"
        out = remote.run(f"cd {base} && for d in {' '.join(plain)}; do printf '\\n{marker}%s\\n' \"$d\"; "
                         f"cat \"$d/manifest.json\" 2>/dev/null; done", timeout=120) if plain else ""
        sizes = remote.run(f"cd {base} && stat -c '%n %s' {' '.join(q(sealed_name(i)) for i in sealed)}",
                           timeout=120).split() if sealed else []
    finally:
        remote.close()
    rows = [{"profile": args.profile, "id": name.removesuffix(SUFFIX), "encrypted": True, "bytes_total": int(size),
             "latest": name.removesuffix(SUFFIX) == latest, "verified": None, "finished_at": None, "bytes_new": None,
             "node_count": None} for name, size in zip(sizes[::2], sizes[1::2], strict=True)]
    for chunk in out.split(f"\n{marker}")[1:]:
        ident, _, text = chunk.partition("\n")
        try:
            m = json.loads(text)
        except ValueError:
            m = {}
        rows.append({"profile": args.profile, "id": ident, "finished_at": m.get("finished_at"),
                     "bytes_total": m.get("bytes_total"), "bytes_new": m.get("bytes_new"),
                     "node_count": m.get("node_count"), "repository_object_count": m.get("repository_object_count"),
                     "verified": m.get("verified"), "latest": ident == latest,
                     "schema_version": m.get("schema_version"), "aiida_version": m.get("aiida_version"),
                     **({} if m else {"error": "manifest.json missing or unreadable"})})
    rows.sort(key=lambda r: r["id"], reverse=True)
    return {"source": remote.target, "where": remote.where, "backups": rows}


def cmd_pull(args: argparse.Namespace) -> dict:
    """`pull`: fetch one backup from the remote into this stack's backups, check its files and objects,
    and publish it under its own id; the host then restores it as any other backup."""
    check_profile_name(args.profile)
    identity = sys.stdin.read() if args.identity_stdin else None
    remote = Remote(args.source)
    folder = profile_dir(args.profile)
    q = shlex.quote
    try:
        with global_lock(args.wait, f"pull of {args.profile} from {remote.where}"), push_lock():
            with step("connect"):
                ids, _, sealed = remote.entries(args.profile)
                ident = args.id
                if ident == LATEST:
                    ident = remote.run(f"readlink {q(remote.base(args.profile))}/latest || true",
                                       timeout=60).strip().removesuffix(SUFFIX)
                if ident not in ids:
                    raise Fail(f"{remote.target} holds no backup {args.id} of profile {args.profile!r}"
                               + (f" (it has: {', '.join(reversed(ids[-5:]))})" if ids else " (it has none)"),
                               EXIT_INPUT)
            if (folder / ident).is_dir():
                return {"profile": args.profile, "id": ident, "state": "present", "where": remote.where}
            folder.mkdir(mode=0o700, exist_ok=True)
            live = folder / f".live-pull-{rand(6)}"
            prev = latest_id(args.profile)
            try:
                if ident in sealed:
                    received = {"bytes_sent": fetch_sealed(remote, remote.base(args.profile), ident, live,
                                                           identity)["bytes_received"]}
                else:
                    with step("fetch"):
                        argv = ["rsync", "-a", "--stats", "--chmod=D0700,F0600", "-e", remote.rsync_shell(),
                                *([f"--link-dest={folder / prev}"] if prev else []),
                                remote.spec(f"{remote.base(args.profile)}/{ident}/"), f"{live}/"]
                        received = stats(run(argv, what=f"rsync from {remote.where}"))
                with step("check"):
                    manifest = read_manifest(live)
                    checks = Checks()
                    checks.add("manifest", manifest.get("profile") == args.profile,
                               f"profile {manifest.get('profile')}")
                    check_database_files(live, manifest, checks)
                    check_repository(live, manifest, checks)
                    if not checks.ok:
                        raise Fail(f"the copy of {ident} from {remote.where} is damaged: "
                                   + "; ".join(f"{c['name']}: {c['detail']}" for c in checks.items if not c["ok"]))
                with step("publish"):
                    run(["sync", "-f", str(live)], what="sync")
                    os.rename(live, folder / ident)
                    if prev is None:
                        tmp_link = folder / f".latest-{rand(6)}"
                        os.symlink(ident, tmp_link)
                        os.replace(tmp_link, folder / LATEST)
                    fsync_dir(folder)
            except BaseException:
                remove_tree(live)
                raise
    finally:
        remote.close()
    return {"profile": args.profile, "id": ident, "state": "pulled", "where": remote.where,
            "bytes_received": received.get("bytes_sent"), "checks": checks.items}
