"""The stack-backup CLI: argparse, one JSON result line on stdout, exit codes (0 ok, 1 failure,
2 bad input, 3 lock busy). Entry point: main()."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from typing import Any

import stackbackup
from stackbackup.common import EXIT_FAIL, EXIT_INPUT, EXIT_OK, Fail, say
from stackbackup.layout import AIIDA_HOME_RW
from stackbackup.schedule import DEFAULTS

# command → (module, function, returns an exit code too). Imported when run: disk_objectstore and its
# SQLAlchemy cost 0.3 s that `swap` (inside a restore's daemon downtime) and `list` do not need.
COMMANDS = {
    "backup": ("backup", "cmd_backup", False),
    "list": ("layout", "cmd_list", False),
    "verify": ("verify", "cmd_verify", True),
    "prune": ("prune", "cmd_prune", False),
    "read-share": ("readshare", "cmd_read_share", True),
    "schedule-status": ("schedule", "cmd_schedule_status", False),
    "restore-database": ("database", "cmd_restore_database", False),
    "restore-repository": ("repository", "cmd_restore_repository", False),
    "swap": ("swap", "cmd_swap", False),
    "push": ("offsite", "cmd_push", False),
    "remote-list": ("offsite_fetch", "cmd_remote_list", False),
    "pull": ("offsite_fetch", "cmd_pull", False),
}

log = logging.getLogger("stack-backup")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's exit 2 with usage, as a JSON result too
        raise Fail(f"{message} (usage: {self.format_usage().strip()})", EXIT_INPUT)


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="stack-backup", description=stackbackup.__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("backup", help="back up one profile: database, repository, config entry")
    p.add_argument("--profile", required=True)
    p.add_argument("--keep", type=int, help="afterwards keep only the N newest backups of the profile")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for a running backup (default: refuse)")
    p.add_argument("--aiida-version", help="aiida-core version to record in the manifest")

    p = sub.add_parser("list", help="published backups, newest first")
    p.add_argument("--profile")

    p = sub.add_parser("verify", help="check a backup (checksums, repository, optionally a real restore)")
    p.add_argument("--profile", required=True)
    p.add_argument("id", help="backup id or 'latest'")
    p.add_argument("--scratch-host", help="PostgreSQL server to restore the dump on (password: stdin, first line)")
    p.add_argument("--scratch-port", type=int, default=5432)
    p.add_argument("--scratch-user", default="postgres")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the stack's lock (default: refuse)")
    p.add_argument("--repair-from-live", action="store_true",
                   help="re-copy rotten or missing loose objects from the live repository when it holds them sound")

    p = sub.add_parser("read-share", help="read the next share of a profile's older backups (every byte once "
                                          "in OF runs): dump checksums, loose and packed objects' hashes")
    p.add_argument("--profile", required=True)
    p.add_argument("--of", type=int, required=True, help="N of the setting's 1/N")
    p.add_argument("--skip", action="append", default=[], help="a backup read in full already (the new one)")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the stack's lock (default: refuse)")

    p = sub.add_parser("restore-database", help="load a backup's dump into a new database and check it")
    p.add_argument("--profile", required=True)
    p.add_argument("id", help="backup id or 'latest'")
    p.add_argument("--target-db", required=True)
    p.add_argument("--owner", help="role owning the restored database (default: aiida_<profile>)")

    p = sub.add_parser("restore-repository", help="copy a backup's repository into a new folder and check it")
    p.add_argument("--profile", required=True)
    p.add_argument("id", help="backup id or 'latest'")
    p.add_argument("--target-path", required=True, help=f"new repository folder, inside {AIIDA_HOME_RW}/repository/")

    p = sub.add_parser("swap", help="a restore's renames: in (live → old, staged → live), back, or drop copies")
    p.add_argument("action", choices=("in", "back", "drop"))
    p.add_argument("--part", choices=("database", "repository", "both"), default="both",
                   help="(in, back) swap only this part")
    p.add_argument("--database", nargs=3, required=True, metavar=("LIVE", "STAGED", "OLD"))
    p.add_argument("--repository", nargs=3, required=True, metavar=("LIVE", "STAGED", "OLD"))
    p.add_argument("--drop-database", action="append", default=[], help="(drop) a staged or set-aside database")
    p.add_argument("--drop-folder", action="append", default=[], help="(drop) a staged or set-aside folder")

    p = sub.add_parser("hold-lock", help="hold the stack's lock until stdin says `release` or closes")
    p.add_argument("--holder", required=True, help="what holds it, for those who wait")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for it (default: refuse)")
    p.add_argument("--journal", action="store_true", help="the holder journals its work: leaving without "
                                                          "`release` marks it interrupted")
    p.add_argument("--take-over", action="store_true", help="take over from an interrupted holder (a resume)")

    p = sub.add_parser("prune", help="tiered retention: keep the newest N, and the newest of each recent "
                                     "day/ISO week/month (never latest, the newest verified, one being read)")
    p.add_argument("--profile", required=True)
    for tier, env in (("last", "BACKUP_KEEP_LAST"), ("daily", "BACKUP_KEEP_DAILY"),
                      ("weekly", "BACKUP_KEEP_WEEKLY"), ("monthly", "BACKUP_KEEP_MONTHLY")):
        p.add_argument(f"--keep-{tier}", type=int, default=int(DEFAULTS[env]),
                       help=f"default {DEFAULTS[env]} (the sidecar passes ${env})")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for a running backup (default: refuse)")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")

    sub.add_parser("schedule-status", help="the sidecar's schedule state (/backups/.schedule.json) and health")

    p = sub.add_parser("push", help="send published backups to an offsite target over SSH, checked there")
    p.add_argument("--profile", required=True)
    p.add_argument("--to", required=True, help="[user@]host:path or ssh://[user@]host[:port]/path")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--id", default="latest", help="backup id or 'latest' (default)")
    which.add_argument("--all", action="store_true", help="every published backup, oldest first")
    p.add_argument("--bwlimit", type=int, help="limit the upload to N KiB/s (rsync --bwlimit)")
    p.add_argument("--recipients", help="age recipients (age1..., separated by spaces) to encrypt to; '' for a "
                                        "plain copy (default: $BACKUP_OFFSITE_RECIPIENTS)")
    for tier, env in (("last", "BACKUP_KEEP_LAST"), ("daily", "BACKUP_KEEP_DAILY"),
                      ("weekly", "BACKUP_KEEP_WEEKLY"), ("monthly", "BACKUP_KEEP_MONTHLY")):
        p.add_argument(f"--keep-{tier}", type=int, help=f"remote retention (default: ${env}, else {DEFAULTS[env]})")

    p = sub.add_parser("remote-list", help="the backups of a profile on an offsite target, newest first")
    p.add_argument("--profile", required=True)
    p.add_argument("--from", dest="source", required=True, help="[user@]host:path or ssh://[user@]host[:port]/path")

    p = sub.add_parser("pull", help="fetch a backup from an offsite target, check it, publish it here")
    p.add_argument("--profile", required=True)
    p.add_argument("--from", dest="source", required=True, help="[user@]host:path or ssh://[user@]host[:port]/path")
    p.add_argument("--id", default="latest", help="backup id or 'latest' (default)")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the stack's lock (default: refuse)")
    p.add_argument("--identity-stdin", action="store_true", help="the age identity that decrypts an encrypted "
                                                                 "copy comes on stdin (default: the state folder's)")
    return top


def main(argv: list[str] | None = None) -> int:
    # stdout carries exactly one JSON line: everything else (tools, libraries) writes to stderr
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="stack-backup: %(name)s: %(message)s")

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds: the live folder is removed, locks released

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    os.umask(0o077)

    command = None
    try:
        args = parser().parse_args(argv)
        command = args.command
        code = EXIT_OK
        if command in COMMANDS:
            module, function, coded = COMMANDS[command]
            run = getattr(importlib.import_module(f"stackbackup.{module}"), function)
            result, code = run(args) if coded else (run(args), EXIT_OK)
        else:
            from stackbackup.locking import cmd_hold_lock

            result = cmd_hold_lock(args, announce=lambda line: print(json.dumps(line), file=result_out, flush=True))
        if isinstance(result, dict) and "ok" not in result:
            result = {"ok": True, **result}
    except Fail as exc:
        say(f"error: {exc}")
        result, code = {"ok": False, "command": command, "error": str(exc), "exit_code": exc.code}, exc.code
    except KeyboardInterrupt:
        result, code = {"ok": False, "command": command, "error": "interrupted", "exit_code": 130}, 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_FAIL
        if code == 0:  # --help (printed on stderr)
            result = {"ok": True, "command": command, "help": True}
        else:
            result = {"ok": False, "command": command, "error": f"terminated (exit {code})", "exit_code": code}
    except Exception as exc:  # a bug or an unforeseen failure: one JSON line still
        log.exception("unexpected failure")
        result, code = {"ok": False, "command": command, "error": f"{type(exc).__name__}: {exc}",
                        "exit_code": EXIT_FAIL}, EXIT_FAIL
    result_out.write(json.dumps(result, sort_keys=False) + "\n")
    result_out.flush()
    return code
