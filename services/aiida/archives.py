"""What an AiiDA archive (sqlite_zip, `verdi archive create`) holds, as one JSON line: the read side of
./stack archive.inspect and archive.import. The numbers are those of `verdi archive info --detailed`.
"""

from __future__ import annotations

import json
import warnings

from common import CliError


def archive_info(args) -> None:
    """{"file", "version", "latest", "current", "aiida_version", "created", "entities": {...}, "objects"};
    an archive of an older format ("current": false) is described by its version only: it must be
    migrated to be read, which `verdi archive import` does. Exit 2: not an AiiDA archive."""
    warnings.filterwarnings("ignore")
    from aiida.common.exceptions import CorruptStorage, IncompatibleStorageSchema, UnreachableStorage
    from aiida.storage.sqlite_zip.backend import SqliteZipBackend
    from aiida.tools.archive.abstract import get_format

    archive = get_format()
    try:
        version = archive.read_version(args.path)
    except Exception as exc:  # a zip without metadata, a truncated file, another format
        raise CliError(2, f"{args.name} is not an AiiDA archive ({type(exc).__name__}: {exc})") from None
    found = {"file": args.name, "version": version, "latest": archive.latest_version,
             "current": version == archive.latest_version, "aiida_version": None, "created": None,
             "entities": None, "objects": None}
    if found["current"]:
        try:
            storage = SqliteZipBackend(SqliteZipBackend.create_profile(args.path))
            try:
                info = storage.get_info(detailed=True)
            finally:
                storage.close()
        except (CorruptStorage, IncompatibleStorageSchema, UnreachableStorage) as exc:
            raise CliError(2, f"{args.name} is not a readable AiiDA archive ({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # a damaged zip member, a truncated database inside
            raise CliError(2, f"{args.name} is damaged ({type(exc).__name__}: {exc})") from None
        metadata = info.get("metadata") or {}
        found.update(aiida_version=metadata.get("aiida_version"), created=metadata.get("ctime"),
                     entities={name: entry.get("count") for name, entry in (info.get("entities") or {}).items()},
                     objects=((info.get("repository") or {}).get("objects") or {}).get("count"))
    print(json.dumps(found), flush=True)
