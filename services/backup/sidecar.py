"""The backup sidecar's long-running process: `sidecar.py serve`.

It keeps a heartbeat (/tmp/sidecar.alive) for the healthcheck and runs the schedule
(stackbackup.schedule: BACKUP_SCHEDULE, BACKUP_KEEP_*, BACKUP_VERIFY_READ_SHARE, AIIDA_CORE_VERSION,
validated at start; a bad value is logged naming the variable and the process exits 2). At each due
time, for every profile of /aiida-home/config.json (core.psql_dos; others are skipped):
`stack-backup backup` (waits for the lock if a backup or prune is running) → `stack-backup verify` of
the new backup (checksums and repository, no scratch server) → `stack-backup prune` with the tiers →
`stack-backup read-share` (the next 1/N of the older backups, BACKUP_VERIFY_READ_SHARE); then, when
BACKUP_OFFSITE names a target and BACKUP_OFFSITE_INTERVAL has passed since the last complete push,
`stack-backup push` of each profile's new backup (outside the lock). The engine
runs as a child process, so a crash of one run cannot take the scheduler down; SIGTERM is forwarded to it (the
engine removes its in-progress folder; published backups are untouched) and serve exits.

The outcome goes to /backups/.schedule.json (atomic), the healthcheck's precomputed inputs to
/tmp/schedule-deadline and /tmp/schedule-failed, one log line per run step to stdout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stackbackup import handoff  # noqa: E402
from stackbackup.aiida_config import load_config  # noqa: E402
from stackbackup.common import Fail, iso  # noqa: E402
from stackbackup.layout import published  # noqa: E402
from stackbackup.locking import TOKEN_ENV, global_lock  # noqa: E402
from stackbackup.retention import backup_time, parse_time  # noqa: E402
from stackbackup.schedule import (  # noqa: E402
    DEADLINE_FILE,
    FAILED_FILE,
    ConfigError,
    Settings,
    deadline,
    next_due,
    read_state,
    write_health_files,
    write_state,
)

HEARTBEAT = Path("/tmp/sidecar.alive")
INTERVAL = 30  # heartbeat and re-reading the backups for the next due time
LOCK_WAIT = 7 * 86400  # a scheduled run waits for a running backup or prune, however long
EXIT_CONFIG = 2


def log(message: str) -> None:
    print(f"backup sidecar: {message}", flush=True)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Server:
    def __init__(self, settings: Settings, started: dt.datetime) -> None:
        self.settings = settings
        self.schedule = settings.schedule
        self.started = started
        self.stopping = False
        self.child: subprocess.Popen | None = None
        self.last_beat = 0.0
        state = read_state() or {}
        state.pop("config_error", None)
        state.pop("running", None)
        self.state = state
        self.last_success = parse_time(state.get("last_success"))

    # --------------------------------------------------------------------------------------------
    # signals, heartbeat

    def stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log(f"received {signal.Signals(signum).name}: stopping")
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def waiting(self) -> None:
        """While the run waits for the stack's lock: keep the heartbeat, give up on SIGTERM."""
        self.beat()
        if self.stopping:
            raise Fail("stopping while waiting for the stack's lock")

    def beat(self, force: bool = False) -> None:
        if force or time.monotonic() - self.last_beat >= INTERVAL:
            HEARTBEAT.touch()
            self.last_beat = time.monotonic()

    # --------------------------------------------------------------------------------------------
    # profiles, due time, state

    def profiles(self) -> tuple[list[str], dict[str, str]]:
        """(profiles to back up, {skipped profile: why}) from config.json."""
        config = load_config()
        chosen, skipped = [], {}
        for name, entry in sorted((config.get("profiles") or {}).items()):
            backend = ((entry or {}).get("storage") or {}).get("backend")
            if backend == "core.psql_dos":
                chosen.append(name)
            else:
                skipped[name] = f"storage {backend!r} is not backed up (only core.psql_dos)"
        return chosen, skipped

    def newest_backups(self) -> dict[str, dt.datetime | None]:
        try:
            names, _ = self.profiles()
        except Fail:
            return {}
        newest = {}
        for name in names:
            rows = published(name)
            times = [t for t in (backup_time(ident, m) for ident, m in rows) if t is not None]
            newest[name] = max(times) if times else None
        return newest

    def refresh(self) -> dt.datetime | None:
        """Recompute next_due and the deadline; write the state (and the health files) if they changed."""
        failed_start = parse_time(self.state.get("last_run_started")) \
            if self.state.get("last_result") == "failed" else None
        newest = self.newest_backups() if self.schedule.kind == "interval" else {}
        due = next_due(self.schedule, now(), self.started, newest, failed_start)
        limit = deadline(self.schedule, self.started, self.last_success)
        update = {
            "schedule": self.schedule.text, "schedule_kind": self.schedule.kind,
            "period_seconds": round(self.schedule.period(now())) if self.schedule.on else None,
            "retention": self.settings.retention(), "sidecar_started": iso(self.started),
            "read_share": f"1/{self.settings.read_share}" if self.settings.read_share else "off",
            "maintenance": self.settings.maintenance,
            "offsite_target": self.settings.offsite or None, "offsite_interval": self.settings.offsite_interval,
            "next_due": iso(due) if due else None, "deadline": iso(limit) if limit else None,
        }
        for key in ("last_run_started", "last_run_finished", "last_result", "error", "profiles", "last_success"):
            update.setdefault(key, self.state.get(key))
        if update != {k: self.state.get(k) for k in update}:
            self.state.update(update)
            self.save()
        return due

    def save(self) -> None:
        write_state(self.state)
        write_health_files(self.state)

    # --------------------------------------------------------------------------------------------
    # one run

    def engine(self, *args: str) -> tuple[int, dict, str]:
        """`stack-backup ARGS` as a child: (exit code, its JSON result, the tail of its stderr)."""
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            self.child = subprocess.Popen([sys.executable, "-P", "-m", "stackbackup", *args], stdout=out,
                                          stderr=err, stdin=subprocess.DEVNULL, env=env)
            try:
                if self.stopping:
                    self.child.send_signal(signal.SIGTERM)
                while self.child.poll() is None:
                    self.beat()
                    time.sleep(0.5)
                code = self.child.returncode
            finally:
                self.child = None
            out.seek(0)
            err.seek(0)
            lines = [line for line in out.read().splitlines() if line.startswith("{")]
            tail = " | ".join(err.read().strip().splitlines()[-3:])
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if not result:
            result = {"ok": False, "error": f"no result (exit {code}): {tail or 'no message'}"}
        return code, result, tail

    def run_once(self) -> None:
        started = now()
        log(f"run: started (schedule {self.schedule.text})")
        self.state.update(last_run_started=iso(started), running=True)
        self.save()
        results: dict[str, dict] = {}
        errors: list[str] = []
        try:
            names, skipped = self.profiles()
        except Fail as exc:
            names, skipped = [], {}
            errors.append(f"config.json: {exc}")
        for name, why in skipped.items():
            log(f"run: skip {name}: {why}")
            results[name] = {"id": None, "ok": True, "skipped": why}
        if not names and not errors:
            errors.append("no core.psql_dos profile in config.json")
        version = ["--aiida-version", self.settings.aiida_version] if self.settings.aiida_version else []
        keep = [f"--keep-{tier}={getattr(self.settings, f'keep_{tier}')}"
                for tier in ("last", "daily", "weekly", "monthly")]
        for name in names:
            if self.stopping:
                break
            entry: dict = {"id": None, "ok": False}
            results[name] = entry
            try:  # one lock for the profile's whole cycle: no restore or upgrade between its steps
                with global_lock(LOCK_WAIT, f"scheduled backup of {name}", tick=self.waiting) as held:
                    os.environ[TOKEN_ENV] = held["token"]  # the engine's children run under it
                    self.cycle(name, entry, errors, version, keep)
            except Fail as exc:
                entry["error"] = f"lock: {exc}"
                errors.append(f"{name}: {entry['error']}")
                log(f"run: {name}: {entry['error']}")
            finally:
                os.environ.pop(TOKEN_ENV, None)
        if self.settings.offsite and not self.stopping:
            self.push_offsite([name for name in names if results[name].get("ok")], keep, errors)
        finished = now()
        if self.stopping:
            # an interrupted run: the engine removed its in-progress folder; the previous result stands
            self.state.update(running=False, interrupted_at=iso(finished))
            self.save()
            log("run: interrupted; published backups are untouched, the run starts again after a restart")
            return
        ok = not errors and all(entry["ok"] for entry in results.values())
        if ok:
            self.last_success = finished
        self.state.update(last_run_finished=iso(finished), last_result="ok" if ok else "failed",
                          error="; ".join(errors) or None, profiles=results, running=False,
                          last_success=iso(self.last_success) if self.last_success else None)
        self.state.pop("interrupted_at", None)
        self.save()
        due = self.refresh()
        log(f"run: {'ok' if ok else 'FAILED'} in {(finished - started).total_seconds():.1f} s"
            + ("" if ok else f": {self.state['error']}") + f"; next due {iso(due) if due else 'never'}")

    def maintain_first(self, name: str, entry: dict, errors: list[str]) -> None:
        """Basic maintenance by the aiida service (the how-to's `verdi storage backup` runs it first too).
        One that ran and failed fails the run; one nobody took (the aiida service down) is only noted:
        the backup itself does not need it."""
        answer = handoff.ask_maintenance(name, tick=self.beat, give_up=lambda: self.stopping)
        if answer.get("state") == "done":
            before, after = answer.get("before") or {}, answer.get("after") or {}
            entry["maintenance"] = {"state": "done", "seconds": answer.get("seconds"),
                                    "loose_before": before.get("loose"), "loose_after": after.get("loose")}
            log(f"run: maintain {name}: {before.get('loose')} → {after.get('loose')} loose objects "
                f"({answer.get('seconds')} s)")
            return
        entry["maintenance"] = {"state": answer.get("state"), "error": answer.get("error")}
        log(f"run: maintain {name}: {answer.get('state')}: {answer.get('error')}")
        if answer.get("state") == "failed":
            errors.append(f"{name}: maintenance: {answer.get('error')}")

    def cycle(self, name: str, entry: dict, errors: list[str], version: list[str], keep: list[str]) -> None:
        """[maintain →] backup → verify → prune of one profile (the stack's lock held by the caller)."""
        if self.settings.maintenance:
            self.maintain_first(name, entry, errors)
            if self.stopping:
                return
        # backup (waits for a running backup or prune)
        code, out, _ = self.engine("backup", "--profile", name, "--wait", str(LOCK_WAIT), *version)
        if self.stopping:
            return
        if code != 0 or not out.get("ok"):
            entry["error"] = f"backup: {out.get('error')}"
            errors.append(f"{name}: {entry['error']}")
            log(f"run: backup {name}: FAILED: {out.get('error')}")
            return
        entry["id"] = out["id"]
        manifest = out.get("manifest") or {}
        log(f"run: backup {name}: {out['id']} ({manifest.get('node_count')} nodes, "
            f"{manifest.get('bytes_total')} bytes, {manifest.get('bytes_new')} new, "
            f"{manifest.get('duration_seconds')} s)")
        # verify: checksums and repository, no scratch server
        code, out, _ = self.engine("verify", "--profile", name, entry["id"], "--repair-from-live")
        if self.stopping:
            return
        entry["verified"] = code == 0 and out.get("ok") is True
        repaired = next((c for c in out.get("checks") or [] if c.get("name") == "repaired_from_live"), None)
        if repaired:
            entry["repaired"] = repaired.get("detail")
            log(f"run: verify {name} {entry['id']}: rot: {entry['repaired']}")
        if not entry["verified"]:
            bad = [f"{c['name']}: {c['detail']}" for c in out.get("checks") or [] if not c.get("ok")]
            entry["error"] = f"verify: {'; '.join(bad) or out.get('error')}"
            errors.append(f"{name}: {entry['error']}")
            log(f"run: verify {name} {entry['id']}: FAILED: {entry['error']}")
        else:
            log(f"run: verify {name} {entry['id']}: ok ({len(out.get('checks') or [])} checks)")
        # prune by the tiers
        code, out, _ = self.engine("prune", "--profile", name, *keep, "--wait", str(LOCK_WAIT))
        if self.stopping:
            return
        if code != 0 or not out.get("ok"):
            entry["error"] = "; ".join(filter(None, [entry.get("error"), f"prune: {out.get('error')}"]))
            errors.append(f"{name}: prune: {out.get('error')}")
            log(f"run: prune {name}: FAILED: {out.get('error')}")
        else:
            entry["pruned"] = out.get("pruned") or []
            log(f"run: prune {name}: removed {len(entry['pruned'])}, kept {len(out.get('kept') or [])}"
                + (f" ({', '.join(entry['pruned'])})" if entry["pruned"] else ""))
        if self.settings.read_share and entry["verified"]:
            self.read_share(name, entry, errors)
        entry["ok"] = entry["verified"] and "error" not in entry

    def push_offsite(self, names: list[str], keep: list[str], errors: list[str]) -> None:
        """Push each freshly backed-up profile's latest backup offsite, when the interval has passed since
        the last complete push (outside the stack's lock: a slow link must not hold up restores)."""
        record = self.state.get("offsite") or {}
        last = parse_time(record.get("last_ok_started"))
        if last and (now() - last).total_seconds() < 0.95 * self.settings.offsite_interval:
            return
        started, pushed, failed = now(), {}, []
        for name in names:
            code, out, _ = self.engine("push", "--profile", name, "--to", self.settings.offsite, *keep)
            if self.stopping:
                return
            if code != 0 or not out.get("ok"):
                failed.append(f"{name}: {out.get('error')}")
                log(f"run: offsite push {name}: FAILED: {out.get('error')}")
                continue
            pushed[name] = [one["id"] for one in out.get("pushed") or []]
            log(f"run: offsite push {name}: {', '.join(pushed[name])} to {out.get('where')} "
                + ", ".join(f"{one.get('bytes_sent')} bytes sent ({one['state']})" for one in out["pushed"]))
        record.update(target=self.settings.offsite, last_started=iso(started), last_finished=iso(now()),
                      pushed=pushed, error="; ".join(failed) or None)
        if not failed:
            record["last_ok_started"] = iso(started)
        self.state["offsite"] = record
        errors.extend(f"offsite push of {problem}" for problem in failed)

    def read_share(self, name: str, entry: dict, errors: list[str]) -> None:
        """The next 1/N of the older backups, read and checked (the new one was read in full by verify)."""
        code, out, _ = self.engine("read-share", "--profile", name, "--of", str(self.settings.read_share),
                                   "--skip", entry["id"], "--wait", str(LOCK_WAIT))
        if self.stopping:
            return
        entry["read_share"] = {key: out.get(key) for key in ("share", "backups", "files", "bytes", "seconds")}
        if code != 0 or not out.get("ok"):
            found = [f"{r['id']} {r['file']}: {r['problem']}" for r in out.get("rotten") or []]
            entry["error"] = "; ".join(filter(None, [entry.get("error"),
                                                     f"read share: {'; '.join(found) or out.get('error')}"]))
            errors.append(f"{name}: read share: {'; '.join(found[:5]) or out.get('error')}")
            log(f"run: read share {name}: FAILED: {'; '.join(found[:5]) or out.get('error')}")
        else:
            log(f"run: read share {name}: {out['share']} of {out['backups']} older backup(s): {out['files']} "
                f"file(s), {out['bytes']} bytes, sound ({out['seconds']} s)")

    # --------------------------------------------------------------------------------------------

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.beat(force=True)
        due = self.refresh()
        s = self.settings
        if self.schedule.on:
            log(f"serving: schedule {self.schedule.text!r} ({self.schedule.kind}, UTC), keep last {s.keep_last}, "
                f"daily {s.keep_daily}, weekly {s.keep_weekly}, monthly {s.keep_monthly}; read share "
                f"{f'1/{s.read_share}' if s.read_share else 'off'}; basic maintenance first: "
                f"{'on' if s.maintenance else 'off'}; offsite "
                f"{f'{s.offsite} every {s.offsite_interval} s' if s.offsite else 'off'}; next due {iso(due)}")
        else:
            log("serving: schedule off (backups only on demand)")
        last_refresh = time.monotonic()
        while not self.stopping:
            self.beat()
            if due is not None and now() >= due:
                self.run_once()
                due = self.refresh()
                last_refresh = time.monotonic()
                continue
            if self.schedule.kind == "interval" and time.monotonic() - last_refresh >= INTERVAL:
                due = self.refresh()  # a manual backup moves the next run
                last_refresh = time.monotonic()
            time.sleep(1)
        log("stopped")
        return 0


def serve() -> int:
    started = now()
    for path in (DEADLINE_FILE, FAILED_FILE):  # /tmp survives a container restart: start clean
        path.unlink(missing_ok=True)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        message = f"invalid setting {exc}"
        log(f"error: {message}")
        HEARTBEAT.unlink(missing_ok=True)
        FAILED_FILE.write_text(message + "\n")
        state = read_state() or {}
        state.update(config_error=str(exc), sidecar_started=iso(started))
        with contextlib.suppress(OSError):
            write_state(state)
        return EXIT_CONFIG
    return Server(settings, started).serve()


if __name__ == "__main__":
    commands = {"serve": serve}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: sidecar.py {{{','.join(commands)}}}")
    sys.exit(commands[sys.argv[1]]())
