"""A profile's repository as disk-objectstore sees it, and `verdi storage maintain` with a record of it.

`aiida-stack-profile maintain NAME [--full] [--dry-run]` runs AiiDA's own maintenance (the how-to's
`verdi storage maintain`: unreferenced objects deleted, loose objects packed; --full also repacks
and vacuums, and needs the profile unused, which the host arranges) and measures the container
before and after. The last run is kept in stack/maintained.<profile> for ./stack status; scheduled
and manual runs write the same record.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import profiles
from common import STACK_DIR, CliError, read_config, reason, verdi


def record_file(profile: str):
    return STACK_DIR / f"maintained.{profile}"


def repository_stats(entry: dict) -> dict | None:
    """Objects and bytes of a profile's disk-objectstore container (config.json entry); None without one."""
    from disk_objectstore import Container  # the aiida image has it (aiida-core's own repository backend)

    folder = profiles.repository_path_of(entry)
    if folder is None or not (folder / "container").is_dir():
        return None
    with Container(folder / "container") as container:
        if not container.is_initialised:
            return None
        count, size = container.count_objects(), container.get_total_size()
    packs = size.total_size_packfiles_on_disk + size.total_size_packindexes_on_disk
    return {"loose": count.loose, "packed": count.packed, "packs": count.pack_files,
            "bytes_loose": size.total_size_loose, "bytes_packs": packs, "bytes_on_disk": size.total_size_loose + packs}


def last_run(profile: str) -> dict | None:
    try:
        return json.loads(record_file(profile).read_text())
    except (OSError, ValueError):
        return None


def maintain(args) -> None:
    """`verdi storage maintain` for one profile, measured; one JSON line."""
    name = args.name
    entry = (read_config().get("profiles") or {}).get(name)
    if entry is None:
        raise CliError(3, f"no profile {name!r}")
    before = repository_stats(entry)
    started = time.monotonic()
    flags = [*(["--full"] if args.full else []), *(["--dry-run"] if args.dry_run else [])]
    done = verdi("-p", name, "storage", "maintain", "--force", *flags, check=False, timeout=args.timeout,
                 echo=lambda line: print(f"  verdi: {line}", flush=True))
    if done.returncode != 0:
        raise CliError(1, f"verdi storage maintain {' '.join(flags)} of {name!r} failed: {reason(done.stdout)}")
    result = {"profile": name, "full": args.full, "dry_run": args.dry_run,
              "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.monotonic() - started, 2), "before": before,
              "after": repository_stats(entry) if not args.dry_run else before}
    if not args.dry_run:
        STACK_DIR.mkdir(parents=True, exist_ok=True)
        record_file(name).write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
