"""Every task refuses bad input before it changes anything: one table of bad values per option.

Each row runs ./stack as a user would, against a running stack with data and a backup, and checks
three things: exit 2, a message naming the option, and no change (every profile database's
content, the repositories, config.json, the backups, the containers and the daemon's workers).
Rows run in waves of WAVE at once (the table has ~300 rows; one by one they took 6.7 min): the
state is compared before and after each wave, so a change is pinned to the rows of one wave.
A task option without a row fails test_every_option_has_rows: new tasks add theirs here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tasks
from ops import engine, offsite, remote, ssh, wait
from ops.cli import StackTask, flag_of
from ops.services import AIIDA, BACKUP, POSTGRES, SERVICES

from .conftest import SCRIPTS

LONG = "a" * 5000
NO_SUCH_ID = "backup_20200101T000000Z_abcd"
SCRIPT = str(SCRIPTS / "store_node.py")  # would store a node: a wrongly accepted row shows as a change
KEYS = Path(tempfile.gettempdir()) / "aiida-stack-sweep-keys"  # written by the `prepared` fixture

# kinds: empty, long, type, range (zero/negative/too big), traversal, shell, unicode, unknown, conflict
PROFILE_ROWS = [("empty", ""), ("long", LONG), ("type", "Bad/Name"), ("traversal", "../default"),
                ("shell", "x;rm -rf ~"), ("unicode", "défault"), ("unknown", "nosuch")]
COUNT_ROWS = [("empty", ""), ("type", "abc"), ("type", "1.5"), ("range", "0"), ("range", "-3"),
              ("unicode", "３"), ("long", "9" * 30)]
ID_ROWS = [("empty", ""), ("long", LONG), ("type", "backup_x"), ("traversal", "../latest"),
           ("shell", "latest;ls"), ("unicode", "backup_２０２０0101T000000Z"), ("unknown", NO_SUCH_ID)]
OPTION_ROWS = [("empty", ""), ("long", "a." + LONG), ("type", "Daemon.Timeout"), ("traversal", "../daemon.timeout"),
               ("shell", "daemon.timeout;ls"), ("unicode", "dæmon.timeout"), ("unknown", "daemon.nosuch")]


TARGET = "alice@nobody.invalid:/srv/aiida"  # well formed: rows of other options reach their own check
TARGET_ROWS = [("empty", ""), ("long", "host:/" + LONG), ("type", "no-path-given"), ("type", "host:"),
               ("traversal", "host:/srv/../../etc"), ("shell", "host:/x;ls"), ("shell", "-oProxyCommand=x:/y"),
               ("unicode", "hôst:/srv"), ("range", "ssh://host:0/srv"), ("range", "ssh://host:70000/srv")]

REMOTE_ROWS = [row for row in TARGET_ROWS if row[1] != "no-path-given"]  # remote.up has a default path

KEY_ROWS = [("empty", ""), ("long", LONG), ("unknown", "/no/such/key"), ("type", str(KEYS / "not-a-key")),
            ("type", str(KEYS / "with-passphrase")), ("range", str(KEYS / "rsa-1024")), ("type", str(KEYS / "loose")),
            ("traversal", "../../../../etc/shadow"), ("shell", "key;ls"), ("unicode", "/tmp/ключ")]

NOT_ARCHIVE = str(KEYS / "not-an-archive.aiida")  # an existing file that is no AiiDA archive
NEW_ARCHIVE = str(KEYS / "new.aiida")  # not there: a wrongly accepted export row would write it
FILE_ROWS = [("empty", ""), ("long", "/" + LONG), ("unknown", "/no/such/file.aiida"), ("type", "/tmp"),
             ("type", NOT_ARCHIVE), ("traversal", "../../../../no/such.aiida"), ("unicode", "/tmp/архив.aiida")]


def _values(option: str, rows, before=(), after=()):
    return [(kind, [*before, option, value, *after]) for kind, value in rows]


def _switch(option: str, before=()):
    return [("type", [*before, f"{option}=yes"])]


def _text(option: str, limit: int, before=(), after=()):
    return _values(option, [("empty", ""), ("long", "x" * (limit + 1)), ("type", "two\nlines")], before, after)


def _profile(option: str, before=(), after=(), skip=()):
    return _values(option, [row for row in PROFILE_ROWS if row[0] not in skip], before, after)


# (task, parameter) → [(kind, arguments after the task name)]
TABLE: dict[tuple[str, str], list[tuple[str, list[str]]]] = {
    ("up", "verbose"): _switch("--verbose"),
    ("build", "verbose"): _switch("--verbose"),
    ("lock", "exclude_newer"): _values("--exclude-newer", [("empty", ""), ("long", LONG), ("type", "yesterday"),
                                                           ("range", "2023-02-30"), ("unicode", "２０２３-02-10"),
                                                           ("shell", "2023-02-10;ls")]),
    ("upgrade", "yes"): _switch("--yes"),
    ("upgrade", "wait"): _switch("--wait"),
    ("upgrade", "no_wait"): _switch("--no-wait"),
    ("upgrade", "pause_running"): [*_switch("--pause-running"), ("conflict", ["--yes", "--wait", "--pause-running"])],
    ("migrate", "profile"): _profile("--profile", after=["--yes"]),
    ("migrate", "yes"): _switch("--yes"),
    ("migrate", "wait"): _switch("--wait"),
    ("migrate", "no_wait"): _switch("--no-wait"),
    ("maintain", "profile"): _profile("--profile"),
    ("maintain", "all_"): [*_switch("--all"), ("conflict", ["--all", "--profile", "default"])],
    ("maintain", "full"): _switch("--full"),
    ("maintain", "dry_run"): _switch("--dry-run"),
    ("maintain", "yes"): _switch("--yes"),
    ("maintain", "wait"): _switch("--wait"),
    ("maintain", "no_wait"): _switch("--no-wait"),
    ("status", "json"): _switch("--json"),
    ("profile.list", "json"): _switch("--json"),
    ("down", "volumes"): _switch("--volumes"),
    ("down", "yes"): _switch("--yes"),
    ("logs", "service"): _values("--service", [("empty", ""), ("unknown", "mysql"), ("unicode", "aiidа"),
                                               ("shell", "aiida;ls"), ("long", LONG)]),
    ("logs", "follow"): _switch("--follow"),
    ("verdi", "profile"): _profile("--profile", after=["--", "status"]),
    ("run", "script"): _values("--script", [("empty", ""), ("unknown", "/no/such/script.py"),
                                            ("traversal", "../../no/such/../script.py"), ("type", "/tmp"),
                                            ("long", "/" + LONG)]),
    ("run", "profile"): _profile("--profile", before=[SCRIPT]),
    ("bench.engine", "n"): _values("-n", COUNT_ROWS),
    ("bench.engine", "workers"): _values("--workers", [*COUNT_ROWS, ("range", "65")]),
    ("bench.engine", "time_up"): _switch("--time-up"),
    ("bench.up", "profiles"): _values("--profiles", [*COUNT_ROWS, ("range", "9")]),
    ("bench.up", "runs"): _values("--runs", [*COUNT_ROWS, ("range", "21")]),
    ("bench.up", "keep"): _switch("--keep"),
    ("bench.backup", "nodes"): _values("--nodes", COUNT_ROWS),
    ("bench.backup", "megabytes"): _values("--megabytes", COUNT_ROWS),
    ("bench.backup", "files"): _values("--files", COUNT_ROWS),
    ("bench.backup", "keep"): _switch("--keep"),
    ("bench.maintain", "files"): _values("--files", COUNT_ROWS),
    ("bench.maintain", "keep"): _switch("--keep"),
    ("bench.offsite", "megabytes"): _values("--megabytes", COUNT_ROWS),
    ("bench.offsite", "keep"): _switch("--keep"),
    ("bench.archive", "nodes"): _values("--nodes", COUNT_ROWS),
    ("bench.archive", "megabytes"): _values("--megabytes", COUNT_ROWS),
    ("bench.archive", "keep"): _switch("--keep"),
    ("bench.upgrade", "nodes"): _values("--nodes", COUNT_ROWS),
    ("bench.upgrade", "megabytes"): _values("--megabytes", COUNT_ROWS),
    ("bench.upgrade", "from_version"): _values("--from-version", [("empty", ""), ("long", "2." * 20 + "2"),
                                                                   ("type", "latest"), ("unicode", "２.2.2"),
                                                                   ("shell", "2.2.2;ls"), ("range", "9.9.9")]),
    ("bench.upgrade", "keep"): _switch("--keep"),
    ("test", "k"): _text("-k", 1000, after=["--", "--collect-only", "-q"]),
    ("test", "workers"): _values("--workers", [*COUNT_ROWS, ("range", "17")], after=["--", "--collect-only", "-q"]),
    ("profile.show", "name"): _profile("--name"),
    ("profile.create", "name"): [*_profile("--name", skip=("unknown",)), ("conflict", ["default"])],
    ("profile.create", "email"): [*_text("--email", 254, before=["sweep_new"]),
                                  *_values("--email", [("type", "not-an-email"), ("shell", "a@b;ls"),
                                                       ("unicode", "é@example.org")], before=["sweep_new"])],
    ("profile.create", "first_name"): _text("--first-name", 100, before=["sweep_new"]),
    ("profile.create", "last_name"): _text("--last-name", 100, before=["sweep_new"]),
    ("profile.create", "institution"): _text("--institution", 200, before=["sweep_new"]),
    ("profile.create", "set_default"): _switch("--set-default", before=["sweep_new"]),
    ("profile.create", "from_archive"): _values("--from-archive", FILE_ROWS, before=["sweep_new"]),
    ("profile.delete", "name"): _profile("--name", after=["--yes"]),
    ("profile.delete", "skip_db"): _switch("--skip-db", before=["default"]),
    ("profile.delete", "skip_repository"): _switch("--skip-repository", before=["default"]),
    ("profile.delete", "yes"): _switch("--yes", before=["default"]),
    ("profile.delete", "set_default"): [*_profile("--set-default", before=["default", "--yes"]),
                                        ("conflict", ["default", "--yes", "--set-default", "default"])],
    ("profile.set-default", "name"): _profile("--name"),
    ("config.list", "prefix"): _values("--prefix", [("empty", ""), ("long", LONG), ("shell", "daemon;ls"),
                                                    ("traversal", "../"), ("unicode", "dæmon")]),
    ("config.list", "profile"): _profile("--profile"),
    ("config.show", "option"): _values("--option", OPTION_ROWS),
    ("config.show", "profile"): _profile("--profile", before=["daemon.timeout"]),
    ("config.get", "option"): _values("--option", OPTION_ROWS),
    ("config.get", "profile"): _profile("--profile", before=["daemon.timeout"]),
    ("config.set", "option"): _values("--option", OPTION_ROWS, after=["--value", "5"]),
    ("config.set", "value"): _values("--value", [("empty", ""), ("long", LONG), ("type", "abc"), ("range", "0"),
                                                 ("range", "-3"), ("unicode", "５"), ("shell", "5;ls")],
                                     before=["daemon.default_workers"]),
    ("config.set", "global_"): [*_switch("--global", before=["daemon.timeout", "5"]),
                                ("conflict", ["daemon.timeout", "5", "--global", "--profile", "default"])],
    ("config.set", "profile"): _profile("--profile", before=["daemon.timeout", "5"]),
    ("config.set", "restart"): _switch("--restart", before=["daemon.timeout", "5"]),
    ("config.unset", "option"): _values("--option", OPTION_ROWS),
    ("config.unset", "global_"): [*_switch("--global", before=["daemon.timeout"]),
                                  ("conflict", ["daemon.timeout", "--global", "--profile", "default"])],
    ("config.unset", "profile"): _profile("--profile", before=["daemon.timeout"]),
    ("config.unset", "restart"): _switch("--restart", before=["daemon.timeout"]),
    **{(f"daemon.{verb}", "profile"): _profile("--profile")
       for verb in ("status", "start", "stop", "restart", "incr", "decr")},
    ("daemon.incr", "number"): _values("--number", [*COUNT_ROWS, ("range", "65")]),
    # below the profile's daemon.default_workers (1 here): the case that stopped every worker
    ("daemon.decr", "number"): _values("--number", [*COUNT_ROWS, ("range", "1")]),
    ("backup.run", "profile"): _profile("--profile"),
    ("backup.run", "all_"): [*_switch("--all"), ("conflict", ["--all", "--profile", "default"])],
    ("backup.run", "no_wait"): _switch("--no-wait"),
    ("backup.run", "keep"): _values("--keep", COUNT_ROWS),
    ("backup.list", "profile"): _profile("--profile"),
    ("backup.list", "json"): _switch("--json"),
    ("backup.verify", "id"): _values("--id", ID_ROWS),
    ("backup.verify", "profile"): _profile("--profile"),
    ("restore", "id"): _values("--id", ID_ROWS, after=["--yes"]),
    ("restore", "profile"): _profile("--profile", after=["--yes"]),
    ("restore", "as_"): _profile("--as", skip=("unknown",), after=["--yes"]),
    ("restore", "yes"): _switch("--yes"),
    ("restore", "no_wait"): _switch("--no-wait"),
    ("restore", "resume"): [*_switch("--resume"), ("conflict", ["--resume", "--yes"]),
                            ("conflict", ["--resume", "--as", "other"]),
                            ("conflict", ["--resume", "--profile", "default"]),
                            ("conflict", ["--resume", "--no-wait"])],
    ("backup.verify", "no_wait"): _switch("--no-wait"),
    ("profile.delete", "no_wait"): _switch("--no-wait", before=["default"]),
    ("archive.export", "file"): [*_values("--file", [*FILE_ROWS[:2], ("unknown", "/no/such/folder/x.aiida"),
                                                     ("type", "/tmp")], after=["--all"]),
                                 ("conflict", ["--file", str(KEYS / "existing.aiida"), "--all"])],
    ("archive.export", "profile"): _profile("--profile", before=[NEW_ARCHIVE], after=["--all"]),
    ("archive.export", "groups"): [*_text("--groups", 100_000, before=[NEW_ARCHIVE]),
                                   ("conflict", [NEW_ARCHIVE, "--groups", "g", "--all"])],
    ("archive.export", "nodes"): [*_values("--nodes", [*COUNT_ROWS, ("type", "1,,2")], before=[NEW_ARCHIVE]),
                                  ("conflict", [NEW_ARCHIVE, "--nodes", "1", "--all"])],
    ("archive.export", "all_"): _switch("--all", before=[NEW_ARCHIVE]),
    ("archive.export", "force"): _switch("--force", before=[NEW_ARCHIVE, "--all"]),
    ("archive.import", "file"): _values("--file", FILE_ROWS),
    ("archive.import", "profile"): _profile("--profile", before=[NOT_ARCHIVE]),
    ("archive.import", "no_wait"): _switch("--no-wait", before=[NOT_ARCHIVE]),
    ("archive.inspect", "file"): _values("--file", FILE_ROWS),
    ("archive.inspect", "json"): _switch("--json", before=[NOT_ARCHIVE]),
    ("ssh.keygen", "replace"): _switch("--replace"),
    ("ssh.import-key", "path"): _values("--path", KEY_ROWS),
    ("ssh.import-key", "replace"): _switch("--replace", before=["--path", str(KEYS / "good")]),
    ("ssh.trust", "host"): _values("--host", [
        ("empty", ""), ("long", LONG), ("type", "cluster:port"), ("range", "cluster:0"), ("range", "cluster:70000"),
        ("traversal", "../cluster"), ("shell", "cluster;ls"), ("unicode", "clüster"),
        ("unknown", "nobody.invalid")], after=["--yes"]),
    ("ssh.trust", "yes"): _switch("--yes", before=["--host", "nobody.invalid"]),
    ("backup.push", "to"): _values("--to", TARGET_ROWS),
    ("backup.push", "id"): _values("--id", ID_ROWS, before=["--to", TARGET]),
    ("backup.push", "all_"): [*_switch("--all", before=["--to", TARGET]),
                              ("conflict", ["--to", TARGET, "--all", "--id", NO_SUCH_ID])],
    ("backup.push", "profile"): _profile("--profile", before=["--to", TARGET]),
    ("backup.push", "accept_host_key"): _switch("--accept-host-key", before=["--to", TARGET]),
    ("backup.push", "bwlimit"): _values("--bwlimit", COUNT_ROWS, before=["--to", TARGET]),
    ("backup.push", "json"): _switch("--json", before=["--to", TARGET]),
    ("backup.list", "from_"): _values("--from", TARGET_ROWS),
    ("backup.list", "accept_host_key"): _switch("--accept-host-key", before=["--from", TARGET]),
    ("restore", "from_"): [*_values("--from", TARGET_ROWS, after=["--yes"]),
                           ("conflict", ["--from", TARGET, "--id", NO_SUCH_ID, "--yes"])],
    ("restore", "accept_host_key"): _switch("--accept-host-key", before=["--from", TARGET]),
    ("restore", "identity"): _values("--identity", FILE_ROWS[:4], before=["--from", TARGET]),
    ("remote.up", "host"): _values("--host", REMOTE_ROWS),
    ("remote.up", "accept_host_key"): _switch("--accept-host-key", before=["--host", TARGET]),
    ("remote.up", "identity"): _values("--identity", KEY_ROWS, before=["--host", TARGET]),
    ("remote.up", "images"): _values("--images", [("empty", ""), ("unknown", "sometimes"), ("unicode", "alwаys"),
                                                  ("shell", "auto;ls"), ("long", LONG)], before=["--host", TARGET]),
    ("remote.up", "json"): _switch("--json", before=["--host", TARGET]),
    ("remote.status", "host"): _values("--host", REMOTE_ROWS),
    ("remote.status", "json"): _switch("--json", before=["--host", TARGET]),
    ("remote.down", "host"): _values("--host", REMOTE_ROWS),
    ("remote.down", "volumes"): [*_switch("--volumes", before=["--host", TARGET]),
                                ("conflict", ["--host", TARGET, "--volumes"])],  # deletes data: only with --yes
    ("remote.down", "yes"): _switch("--yes", before=["--host", TARGET]),
    ("offsite.age-keygen", "replace"): _switch("--replace"),
    ("offsite.keygen", "replace"): _switch("--replace"),
    ("offsite.import-key", "path"): _values("--path", KEY_ROWS),
    ("offsite.import-key", "replace"): _switch("--replace", before=["--path", str(KEYS / "good")]),
}

ROWS = [(task, param, kind, args) for (task, param), cases in TABLE.items() for kind, args in cases]


def _stack_tasks() -> dict[str, StackTask]:
    return {name: tasks.ns[name] for name in tasks.ns.task_names}


def test_every_task_declares_every_option():
    for name, task in _stack_tasks().items():
        assert isinstance(task, StackTask), f"{name} is not a stack_task: its options are not typed"


def test_every_option_has_rows():
    options = {(name, param) for name, task in _stack_tasks().items() for param in task.options}
    assert sorted(options - set(TABLE)) == [], "task options without bad-input rows"
    assert sorted(set(TABLE) - options) == [], "rows for options that do not exist"


def _sh(container, script: str, user: str = "") -> str:
    done = container.exec_run(["sh", "-c", script], user=user)
    assert done.exit_code == 0, done.output.decode()
    return hashlib.sha256(done.output).hexdigest()


def state(stack) -> dict:
    """What a refused command must leave as it was."""
    containers = engine.client().containers.list(all=True, filters={
        "label": f"com.docker.compose.project={stack.name}"})
    aiida, postgres = stack.compose.container(AIIDA), stack.compose.container(POSTGRES)
    return {
        "containers": sorted((c.name, c.id, c.status, c.attrs["State"]["StartedAt"], c.attrs["RestartCount"])
                             for c in containers),
        # a fixed --restrict-key: pg_dump otherwise writes a random one into every dump
        "databases": _sh(postgres, "for d in $(psql -XAtc \"SELECT datname FROM pg_database WHERE datname LIKE "
                                   "'aiida%' ORDER BY 1\"); do echo $d; pg_dump --data-only --restrict-key=sweep $d; "
                                   "done", "postgres"),
        "repositories": _sh(aiida, "cd /home/aiida/.aiida/repository && find . -printf '%p %s\\n' | sort"),
        "config.json": _sh(aiida, "cat /home/aiida/.aiida/config.json"),
        "workers": _sh(aiida, "pgrep -f '[d]aemon worker' | sort"),  # [d]: not the shell itself
        "backups": _sh(stack.compose.container(BACKUP), "find /backups -printf '%p %s %T@\\n' | sort"),
        **{name: sorted((p.name, p.stat().st_size, p.stat().st_mtime) for p in where.glob("*"))
           for name, where in (("ssh", ssh.folder(stack.settings)),
                               ("offsite", offsite.identity(stack.settings).folder),
                               ("remote", remote.identity(stack.settings).folder))},
    }


def _write_keys() -> None:
    """Key files the import-key rows name: none of them may be taken."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    openssh, pem = serialization.PrivateFormat.OpenSSH, serialization.PrivateFormat.TraditionalOpenSSL
    plain = serialization.NoEncryption()
    keys = {
        "good": ed25519.Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, openssh, plain),
        # PEM: an encrypted OpenSSH-format key needs bcrypt to write, which the host's venv lacks
        "with-passphrase": rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, pem, serialization.BestAvailableEncryption(b"secret")),
        "rsa-1024": rsa.generate_private_key(65537, 1024).private_bytes(serialization.Encoding.PEM, pem, plain),
        "not-a-key": b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n-----END OPENSSH PRIVATE KEY-----\n",
    }
    KEYS.mkdir(mode=0o700, exist_ok=True)
    for name, data in {**keys, "loose": keys["good"]}.items():
        (KEYS / name).write_bytes(data)
        (KEYS / name).chmod(0o644 if name == "loose" else 0o600)
    Path(NOT_ARCHIVE).write_bytes(b"not an archive\n")
    (KEYS / "existing.aiida").write_bytes(b"an archive already written\n")
    Path(NEW_ARCHIVE).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def prepared(stack):
    """The default profile holds a node and a backup; the daemon runs its configured workers."""
    _write_keys()
    stored = stack.run_script("store_node.py", "7")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    backed_up = stack.cli("backup")
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    wait.until_healthy(stack.compose, SERVICES, timeout=120)
    return {"last": None}


WAVE = 4
WAVES = [ROWS[i:i + WAVE] for i in range(0, len(ROWS), WAVE)]


def _refusal_problem(stack, task: str, param: str, args: list[str]) -> str | None:
    done = stack.cli(task, *args, input="", timeout=300)
    if done.returncode != 2:
        return f"{task} {json.dumps(args)[:120]}: exit {done.returncode}\n{done.stdout[-500:]}{done.stderr[-800:]}"
    if flag_of(param) not in done.stderr:
        return f"{task} {json.dumps(args)[:120]}: message does not name {flag_of(param)}: {done.stderr[-300:]}"
    return None


@pytest.mark.stack
@pytest.mark.parametrize("wave", WAVES, ids=["+".join(f"{t}:{p}:{k}" for t, p, k, _ in w) for w in WAVES])
def test_bad_input_is_refused_and_changes_nothing(stack, prepared, wave):
    before = prepared["last"] or state(stack)
    with ThreadPoolExecutor(max_workers=WAVE) as pool:
        problems = list(pool.map(lambda row: _refusal_problem(stack, row[0], row[1], row[3]), wave))
    after = state(stack)
    prepared["last"] = after
    assert [p for p in problems if p] == []
    changed = [what for what in before if before[what] != after[what]]
    assert changed == [], f"one of {[(t, a) for t, _, _, a in wave]} changed {changed}: {_difference(before, after)}"


def _difference(before: dict, after: dict) -> str:
    """What changed, line by line (the first few), for the failure message."""
    lines = []
    for what in before:
        old = set(str(before[what]).splitlines())
        new = set(str(after[what]).splitlines())
        lines += [f"{what}: - {line}" for line in sorted(old - new)][:5]
        lines += [f"{what}: + {line}" for line in sorted(new - old)][:5]
    return "\n".join(lines)
