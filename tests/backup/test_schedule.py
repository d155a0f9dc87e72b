"""The backup sidecar's schedule and tiered retention.

Pure arithmetic (tiers, interval parsing, due times, the health rule) is tested by importing the
engine from services/backup. The scheduler itself runs for real: one-off sidecar containers from
the backup image on the session stack's network, reading its aiida-home volume, each with a fresh
backups volume of its own (removed afterwards), and short intervals.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "backup"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "common"))

from stackbackup import readshare, retention, schedule

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def backups(*stamps: str) -> list[tuple[str, dt.datetime]]:
    return [(f"backup_{at(s).strftime('%Y%m%dT%H%M%SZ')}_{i:04d}", at(s)) for i, s in enumerate(stamps)]


# ------------------------------------------------------------------------------------------------
# tier arithmetic (pure)


def test_keep_last_only():
    rows = backups("2025-01-01T01:00", "2025-01-01T02:00", "2025-01-01T03:00", "2025-01-01T04:00")
    kept = retention.select(rows, last=2)
    assert set(kept) == {rows[3][0], rows[2][0]} and all(r == ["last"] for r in kept.values())


def test_daily_keeps_the_newest_of_each_of_the_last_days_with_backups():
    rows = backups("2025-03-01T08:00", "2025-03-01T20:00",  # day 1: 20:00 is its newest
                   "2025-03-03T09:00",  # a gap: 2 March has none, it does not count
                   "2025-03-04T01:00", "2025-03-04T23:59")
    kept = retention.select(rows, last=1, daily=3)
    names = {ident: reasons for ident, reasons in kept.items()}
    assert names[rows[4][0]] == ["last", "daily"]
    assert names[rows[2][0]] == ["daily"] and names[rows[1][0]] == ["daily"]
    assert rows[0][0] not in kept and rows[3][0] not in kept


def test_weekly_uses_iso_weeks():
    # 2024-12-30 (Mon) belongs to ISO week 2025-W01, like 2025-01-05 (Sun)
    rows = backups("2024-12-29T12:00", "2024-12-30T12:00", "2025-01-05T12:00", "2025-01-06T12:00")
    kept = retention.select(rows, last=1, weekly=2)
    assert rows[3][0] in kept  # week 2
    assert kept[rows[2][0]] == ["weekly"]  # newest of week 1
    assert rows[1][0] not in kept and rows[0][0] not in kept  # week 1 older, week 52 beyond 2 weeks


def test_monthly_picks_each_months_newest():
    rows = backups("2024-11-15T00:00", "2024-12-29T12:00", "2024-12-30T12:00", "2025-01-05T12:00")
    kept = retention.select(rows, last=1, monthly=3)
    assert kept[rows[3][0]] == ["last", "monthly"]
    assert kept[rows[2][0]] == ["monthly"] and kept[rows[0][0]] == ["monthly"]
    assert rows[1][0] not in kept


def test_tiers_combine_like_restic():
    # one backup every 6 hours for 100 days: 7 last + 7 daily + 4 weekly + 6 monthly, overlapping
    start = at("2025-01-01T00:00")
    rows = [(f"b{i:04d}", start + dt.timedelta(hours=6 * i)) for i in range(400)]
    kept = retention.select(rows, last=7, daily=7, weekly=4, monthly=6)
    newest = max(t for _, t in rows)
    days = {t.date() for i, t in rows if i in kept and "daily" in kept[i]}
    assert len(days) == 7 and max(days) == newest.date()
    assert len([i for i in kept if "monthly" in kept[i]]) == 4  # only 4 months (Jan-Apr) have backups
    assert len([i for i in kept if "weekly" in kept[i]]) == 4
    assert len(kept) < 7 + 7 + 4 + 6
    # each daily pick is the day's newest
    for ident in (i for i in kept if "daily" in kept[i]):
        day = dict(rows)[ident].date()
        assert dict(rows)[ident] == max(t for _, t in rows if t.date() == day)


def test_zero_tiers_and_bad_counts():
    rows = backups("2025-01-01T00:00", "2025-01-02T00:00")
    assert set(retention.select(rows, last=1)) == {rows[1][0]}
    with pytest.raises(ValueError):
        retention.select(rows, last=1, daily=-1)


def test_backup_time_prefers_the_manifest():
    ident = "backup_20250101T000000Z_abcd"
    assert retention.backup_time(ident, None) == at("2025-01-01T00:00")
    assert retention.backup_time(ident, {"finished_at": "2025-01-01T00:00:00.500000Z"}).microsecond == 500000


def test_prune_tiered_never_removes_latest_newest_verified_or_one_being_read(tmp_path, monkeypatch):
    import fcntl
    import os

    from stackbackup import layout, prune

    monkeypatch.setattr(layout, "BACKUPS", tmp_path)
    folder = tmp_path / "p"
    folder.mkdir()
    rows = backups(*(f"2025-01-0{day}T12:00" for day in range(1, 8)))  # one a day, 1..7 January
    for i, (ident, moment) in enumerate(rows):
        (folder / ident).mkdir()
        manifest = {"finished_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "verified": i == 2 or None}
        (folder / ident / "manifest.json").write_text(json.dumps(manifest))
    os.symlink(rows[5][0], folder / "latest")  # e.g. after a restore of an older one
    fd = os.open(folder / rows[0][0] / ".reading", os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the oldest is being read
    try:
        result = prune.prune_tiered("p", last=1, daily=0, weekly=0, monthly=0)
    finally:
        os.close(fd)
    kept = {row["id"]: row["reasons"] for row in result["kept"]}
    assert kept == {rows[6][0]: ["last"], rows[5][0]: ["latest"], rows[2][0]: ["newest verified"],
                    rows[0][0]: ["being read"]}
    assert sorted(result["pruned"]) == sorted([rows[1][0], rows[3][0], rows[4][0]])
    assert result["busy"] == [rows[0][0]]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, "latest"])
    # dry run removes nothing
    again = prune.prune_tiered("p", last=1, daily=0, weekly=0, monthly=0, dry_run=True)
    assert again["pruned"] == [rows[0][0]] and (folder / rows[0][0]).is_dir()


# ------------------------------------------------------------------------------------------------
# schedule arithmetic (pure; cron needs croniter, present in the image)


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("30m", 1800), ("6h", 21600), ("24h", 86400), ("1d", 86400),
                                          ("1w", 604800), ("1h30m", 5400)])
def test_intervals(text, seconds):
    assert schedule.parse_schedule(text) == schedule.Schedule(text, "interval", seconds=seconds)


@pytest.mark.parametrize("of", [1, 3, 7])
def test_the_read_share_puts_each_inode_in_one_slice_and_spreads_them(of):
    inodes = range(1000, 8000)  # sequential, as file systems hand them out
    slices = [sum(readshare.in_slice(inode, index, of) for inode in inodes) for index in range(of)]
    assert sum(slices) == len(inodes)  # each in exactly one: every byte read once in N runs
    assert min(slices) > 0.8 * len(inodes) / of  # about 1/N each: the reading is spread over the runs


@pytest.mark.parametrize("text,n", [("1/7", 7), ("1 / 30", 30), ("off", 0), ("1/1", 1), ("1/0", None), ("2/7", None),
                                    ("10%", None), ("7", None)])
def test_host_and_sidecar_read_the_read_share_alike(text, n):
    from ops.settings import Settings

    try:
        sidecar = schedule.Settings.from_env({"BACKUP_VERIFY_READ_SHARE": text}).read_share
    except schedule.ConfigError:
        sidecar = None
    try:
        Settings(name="x", backup_verify_read_share=text)
        host_accepts = True
    except ValueError:
        host_accepts = False
    assert sidecar == n and host_accepts == (n is not None)


@pytest.mark.parametrize("target,interval,ok", [
    ("", "24h", True), ("backup@nas:/srv/aiida", "7d", True), ("ssh://nas:2222/srv", "1w", True),
    ("nas", "24h", False), ("nas:/srv;ls", "24h", False), ("nas:/srv", "@daily", False), ("nas:/srv", "off", False),
    ("nas:/srv", "5s", False)])
def test_host_and_sidecar_read_the_offsite_settings_alike(target, interval, ok):
    from ops.settings import Settings

    try:
        sidecar = schedule.Settings.from_env({"BACKUP_OFFSITE": target, "BACKUP_OFFSITE_INTERVAL": interval})
        sidecar_accepts = sidecar.offsite == target
    except schedule.ConfigError:
        sidecar_accepts = False
    try:
        Settings(name="x", backup_offsite=target, backup_offsite_interval=interval)
        host_accepts = True
    except ValueError:
        host_accepts = False
    assert host_accepts == sidecar_accepts == ok


@pytest.mark.parametrize("text", ["1h30m", "30s", "0 3 * * *", "@daily", "off", "5s", "99 99 * * *", "daily", "1x"])
def test_host_and_sidecar_read_the_schedule_alike(text):
    """The host's setting check and the sidecar's parser agree on every schedule, the README's own
    `1h30m` included (they once disagreed: the host refused it and accepted `5s`)."""
    from ops.settings import Settings

    try:
        schedule.parse_schedule(text)
        sidecar_accepts = True
    except schedule.ConfigError:
        sidecar_accepts = False
    try:
        Settings(name="x", backup_schedule=text)
        host_accepts = True
    except ValueError:
        host_accepts = False
    assert host_accepts == sidecar_accepts == (text in ("1h30m", "30s", "0 3 * * *", "@daily", "off"))


@pytest.mark.parametrize("env,variable", [
    ({"BACKUP_SCHEDULE": "5s"}, "BACKUP_SCHEDULE"), ({"BACKUP_SCHEDULE": "daily"}, "BACKUP_SCHEDULE"),
    ({"BACKUP_SCHEDULE": "0 3 * *"}, "BACKUP_SCHEDULE"), ({"BACKUP_KEEP_LAST": "0"}, "BACKUP_KEEP_LAST"),
    ({"BACKUP_KEEP_DAILY": "-1"}, "BACKUP_KEEP_DAILY"), ({"BACKUP_KEEP_WEEKLY": "x"}, "BACKUP_KEEP_WEEKLY"),
    ({"BACKUP_KEEP_MONTHLY": "1.5"}, "BACKUP_KEEP_MONTHLY"), ({"AIIDA_CORE_VERSION": "2.7; rm"}, "AIIDA_CORE_VERSION"),
    ({"BACKUP_VERIFY_READ_SHARE": "2/7"}, "BACKUP_VERIFY_READ_SHARE"),
    ({"BACKUP_VERIFY_READ_SHARE": "1/1001"}, "BACKUP_VERIFY_READ_SHARE"),
    ({"BACKUP_MAINTENANCE": "yes"}, "BACKUP_MAINTENANCE"),
    ({"BACKUP_OFFSITE": "nas"}, "BACKUP_OFFSITE"), ({"BACKUP_OFFSITE": "nas:../up"}, "BACKUP_OFFSITE"),
    ({"BACKUP_OFFSITE_INTERVAL": "0 3 * * *"}, "BACKUP_OFFSITE_INTERVAL"),
    ({"BACKUP_OFFSITE_INTERVAL": "off"}, "BACKUP_OFFSITE_INTERVAL"),
])
def test_bad_settings_name_the_variable(env, variable):
    with pytest.raises(schedule.ConfigError, match=variable):
        schedule.Settings.from_env(env)


def test_defaults_and_off():
    settings = schedule.Settings.from_env({"BACKUP_SCHEDULE": ""})
    assert settings.schedule.seconds == 86400 and settings.read_share == 7 and settings.retention() == {
        "keep_last": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}
    assert settings.maintenance is False and schedule.Settings.from_env({"BACKUP_MAINTENANCE": "ON"}).maintenance
    off = schedule.parse_schedule("off")
    assert not off.on and schedule.next_due(off, at("2025-01-01T00:00"), at("2025-01-01T00:00"), {}) is None


def test_interval_due_times():
    every = schedule.parse_schedule("6h")
    start, now = at("2025-01-01T00:00"), at("2025-01-01T00:01")
    assert schedule.next_due(every, now, start, {}) == at("2025-01-01T06:00")  # fresh: one interval after start
    assert schedule.next_due(every, now, start, {"p": None}) == at("2025-01-01T06:00")
    # newest backup (manual or scheduled) + interval; the profile that is most behind decides
    newest = {"a": at("2024-12-31T22:00"), "b": at("2024-12-31T23:00")}
    assert schedule.next_due(every, now, start, newest) == at("2025-01-01T04:00")
    overdue = {"a": at("2024-12-30T00:00")}
    assert schedule.next_due(every, now, start, overdue) <= now  # at once
    # after a failed run: not before min(interval, 15 min) after it started
    assert schedule.next_due(every, now, start, overdue, last_failed_start=now) == now + dt.timedelta(minutes=15)


def test_health_rule():
    start = at("2025-01-01T00:00")
    every = schedule.parse_schedule("1h")
    limit = schedule.deadline(every, start, None)
    assert limit == at("2025-01-01T02:00")
    assert schedule.deadline(every, start, at("2025-01-01T05:00")) == at("2025-01-01T07:00")
    state = {"schedule": "1h", "schedule_kind": "interval", "deadline": schedule.iso(limit), "period_seconds": 3600,
             "sidecar_started": schedule.iso(start)}
    assert schedule.health(state, at("2025-01-01T01:59"))[0] is True
    healthy, reason = schedule.health(state, at("2025-01-01T02:01"))
    assert not healthy and "no successful scheduled backup since" in reason
    healthy, reason = schedule.health({**state, "last_result": "failed", "error": "p: backup: boom"},
                                      at("2025-01-01T00:30"))
    assert not healthy and "boom" in reason
    assert schedule.health({"schedule": "off", "schedule_kind": "off"})[0] is True


def test_cron_due_times_and_period():
    import croniter  # noqa: F401  (a missing dependency must fail, not skip)
    nightly = schedule.parse_schedule("0 3 * * *")
    assert nightly.kind == "cron"
    now = at("2025-01-01T12:00")
    assert schedule.next_due(nightly, now, now, {}) == at("2025-01-02T03:00")
    assert nightly.period(now) == 86400
    assert schedule.parse_schedule("0 3 * * 1-5").period(now) == 3 * 86400  # the weekend gap
    with pytest.raises(schedule.ConfigError, match="BACKUP_SCHEDULE"):
        schedule.parse_schedule("61 3 * * *")


# ------------------------------------------------------------------------------------------------
# the real sidecar


class Sidecar:
    """A one-off sidecar container on the stack's network with a backups volume of its own."""

    def __init__(self, stack, image: str, env: dict[str, str], *, volume: str | None = None,
                 secret_dir: Path | None = None) -> None:
        from ops import engine, secrets

        self.docker = engine.client()
        self.name = f"{stack.name}-sched-{uuid.uuid4().hex[:6]}"
        self.volume = volume or f"{self.name}-backups"
        self.own_volume = volume is None
        if self.own_volume:
            self.docker.volumes.create(self.volume)
        secret_dir = secret_dir or secrets.secrets_dir(stack.settings)
        self.container = self.docker.containers.run(
            image, detach=True, name=self.name, network=f"{stack.name}_backend",
            environment={"PGHOST": "postgres", "BACKUP_DB_USER": "stack_backup",
                         "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
                         "BACKUP_DB_PASSWORD_FILE": "/run/secrets/backup_db_password", **env},
            volumes={f"{stack.name}_aiida-home": {"bind": "/aiida-home", "mode": "ro"},
                     self.volume: {"bind": "/backups", "mode": "rw"},
                     **{str(secret_dir / name): {"bind": f"/run/secrets/{name}", "mode": "ro"}
                        for name in ("postgres_password", "backup_db_password")}},
        )

    def exec(self, *argv: str, user: str = "root") -> tuple[int, str]:
        code, out = self.container.exec_run(list(argv), user=user, demux=False)
        return code, (out or b"").decode()

    def engine(self, *args: str) -> dict:
        _, out = self.exec("stack-backup", *args)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, out
        return json.loads(lines[-1])

    def status(self) -> dict:
        return self.engine("schedule-status")

    def health(self) -> tuple[int, str]:
        return self.exec("/usr/local/bin/backup-healthcheck")

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def wait_for(self, what: str, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.status()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; status {state}; logs:\n{self.logs()[-3000:]}")
            time.sleep(2)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        finally:
            if self.own_volume:
                self.docker.volumes.get(self.volume).remove(force=True)


@pytest.fixture
def sidecars(stack, images):
    started: list[Sidecar] = []

    def start(env: dict[str, str], **kwargs) -> Sidecar:
        sidecar = Sidecar(stack, images["backup"], env, **kwargs)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in reversed(started):
        sidecar.remove()


@pytest.mark.stack
def test_scheduled_runs_back_up_verify_prune_and_report(stack, sidecars):
    profile = stack.settings.profile
    sidecar = sidecars({"BACKUP_SCHEDULE": "10s", "BACKUP_KEEP_LAST": "2", "BACKUP_KEEP_DAILY": "0",
                        "BACKUP_KEEP_WEEKLY": "0", "BACKUP_KEEP_MONTHLY": "0", "AIIDA_CORE_VERSION": "2.9.4",
                        "BACKUP_VERIFY_READ_SHARE": "1/2"})
    first = sidecar.wait_for("the schedule state", lambda s: s.get("schedule") == "10s", 60)
    assert first["healthy"] is True and first["schedule_kind"] == "interval" and first["period_seconds"] == 10
    assert first["last_result"] is None  # fresh: healthy until 2 intervals have passed
    code, out = sidecar.health()
    assert code == 0, out

    seen: list[str] = []

    def after_three_runs(state: dict) -> bool:
        run = state.get("last_run_finished")
        if state.get("last_result") == "ok" and run and run not in seen:
            seen.append(run)
        return len(seen) >= 3

    state = sidecar.wait_for("three scheduled runs", after_three_runs, 240)
    assert state["last_result"] == "ok" and state["error"] is None and state["healthy"] is True
    entry = state["profiles"][profile]
    assert entry["ok"] is True and entry["verified"] is True and entry["id"].startswith("backup_")
    # the older backup (one, after the prune) was read by one of the two halves
    assert state["read_share"] == "1/2" and entry["read_share"]["share"] in ("1/2", "2/2")
    assert entry["read_share"]["backups"] == 1
    assert state["last_success"] == state["last_run_finished"]
    assert state["next_due"] > state["last_run_finished"]
    rows = sidecar.engine("list", "--profile", profile)["backups"]
    assert len(rows) == 2, rows  # keep-last 2, no other tier
    latest = next(row for row in rows if row["latest"])
    assert latest["verified"] is True
    code, out = sidecar.exec("cat", f"/backups/{profile}/{latest['id']}/manifest.json")
    assert json.loads(out)["aiida_core_version"] == "2.9.4"
    code, out = sidecar.health()
    assert code == 0, out
    logs = sidecar.logs()
    for line in ("run: started", f"run: backup {profile}: backup_", f"run: verify {profile}", f"run: prune {profile}",
                 f"run: read share {profile}: ", "run: ok"):
        assert line in logs, logs[-3000:]

    # the prune command by hand: newest verified and latest are never removed
    result = sidecar.engine("prune", "--profile", profile, "--keep-last", "1", "--keep-daily", "0",
                            "--keep-weekly", "0", "--keep-monthly", "0", "--dry-run", "--wait", "120")
    assert result["ok"] is True and result["dry_run"] is True
    kept = {row["id"]: row["reasons"] for row in result["kept"]}
    assert "latest" in kept[latest["id"]] and "newest verified" in kept[latest["id"]]

    # a failing run: the profile's folder becomes unwritable → unhealthy, with the reason
    sidecar.exec("chmod", "0500", f"/backups/{profile}")
    try:
        state = sidecar.wait_for("a failed run", lambda s: s.get("last_result") == "failed", 120)
        assert state["healthy"] is False and profile in state["error"] and "failed" in state["reason"]
        code, out = sidecar.health()
        assert code != 0 and "scheduled backup failed" in out and profile in out, out
    finally:
        sidecar.exec("chmod", "0700", f"/backups/{profile}")
    # ...and the next run (retried after one interval) heals it
    state = sidecar.wait_for("a run that succeeds again", lambda s: s.get("last_result") == "ok", 120)
    code, out = sidecar.health()
    assert code == 0, out
    assert len(sidecar.engine("list", "--profile", profile)["backups"]) == 2


@pytest.mark.stack
def test_no_success_within_two_intervals_is_unhealthy_and_sigterm_stops_cleanly(stack, sidecars):
    profile = stack.settings.profile
    sidecar = sidecars({"BACKUP_SCHEDULE": "10s", "BACKUP_KEEP_LAST": "3"})
    sidecar.wait_for("the schedule state", lambda s: s.get("schedule") == "10s", 60)
    # hold the backup lock: the first run (due after 10 s) waits for it, so nothing succeeds
    holder = subprocess.Popen(["docker", "exec", "-u", "stack-backup", sidecar.name, "flock", "/backups/.lock",
                               "sleep", "40"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        code, out = sidecar.health()
        assert code == 0, out  # within 2 intervals of the start: healthy
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, out = sidecar.health()
            if code != 0:
                break
            time.sleep(2)
        assert code != 0 and "no successful scheduled backup since" in out, out
        state = sidecar.status()
        assert state["healthy"] is False and "no successful scheduled backup" in state["reason"]
        assert state.get("running") is True  # the run waits for the lock
    finally:
        holder.wait(timeout=60)  # the lock goes with it
    state = sidecar.wait_for("the delayed run", lambda s: s.get("last_result") == "ok", 120)
    code, out = sidecar.health()
    assert code == 0, out

    # SIGTERM during a run (blocked inside the dump by a table lock): stops at once, publishes nothing
    before = [row["id"] for row in sidecar.engine("list", "--profile", profile)["backups"]]
    locker = subprocess.Popen(stack.compose.command("exec", "-T", "-u", "postgres", "postgres", "psql", "-X", "-q",
                                                    "-d", f"aiida_{profile}"),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    locker.stdin.write("BEGIN; LOCK TABLE db_dbnode IN ACCESS EXCLUSIVE MODE;\n")
    locker.stdin.flush()
    try:
        deadline = time.monotonic() + 60
        while ".live-" not in sidecar.exec("ls", "-A", f"/backups/{profile}")[1]:
            assert time.monotonic() < deadline, sidecar.logs()[-3000:]
            time.sleep(0.5)
        time.sleep(1)
        start = time.monotonic()
        sidecar.container.stop(timeout=30)
        assert time.monotonic() - start < 20
        sidecar.container.reload()
        assert sidecar.container.attrs["State"]["ExitCode"] == 0, sidecar.logs()[-3000:]
    finally:
        locker.stdin.write("ROLLBACK;\n")
        locker.stdin.close()
        locker.wait(timeout=60)
    assert "run: interrupted" in sidecar.logs()
    # look at the volume from a fresh container: no in-progress folder, the same backups
    checker = sidecars({"BACKUP_SCHEDULE": "off"}, volume=sidecar.volume)
    listing = checker.exec("ls", "-A", f"/backups/{profile}")[1]
    assert ".live-" not in listing, listing
    assert [row["id"] for row in checker.engine("list", "--profile", profile)["backups"]] == before
    state = checker.wait_for("the off schedule", lambda s: s.get("schedule") == "off", 60)
    assert state["healthy"] is True and state["last_result"] == "ok"


@pytest.mark.stack
def test_cron_schedule_reports_the_next_cron_time(stack, sidecars):
    sidecar = sidecars({"BACKUP_SCHEDULE": "0 3 * * *"})
    state = sidecar.wait_for("the schedule state", lambda s: s.get("schedule") == "0 3 * * *", 60)
    assert state["schedule_kind"] == "cron" and state["period_seconds"] == 86400 and state["healthy"] is True
    due = dt.datetime.fromisoformat(state["next_due"].replace("Z", "+00:00"))
    assert due.hour == 3 and due.minute == 0 and 0 < (due - dt.datetime.now(UTC)).total_seconds() <= 86400
    code, out = sidecar.health()
    assert code == 0, out


@pytest.mark.stack
@pytest.mark.parametrize("env,variable", [({"BACKUP_SCHEDULE": "every night"}, "BACKUP_SCHEDULE"),
                                          ({"BACKUP_SCHEDULE": "0 25 * * *"}, "BACKUP_SCHEDULE"),
                                          ({"BACKUP_KEEP_LAST": "0"}, "BACKUP_KEEP_LAST")])
def test_invalid_settings_exit_non_zero_naming_the_variable(stack, sidecars, env, variable):
    sidecar = sidecars(env)
    result = sidecar.container.wait(timeout=60)
    assert result["StatusCode"] != 0
    logs = sidecar.logs()
    assert f"error: invalid setting {variable}=" in logs, logs
