"""./stack's refusals: bad input gets a clear error, a non-zero exit, and nothing changes."""

from __future__ import annotations

import json
import shutil

import pytest

from ops import engine
from ops.services import BACKUP_VOLUMES, DATA_VOLUMES
from ops.settings import ROOT

from .conftest import MOUNTED, project_containers, stack_cli, unique_name


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("AIIDA_STACK_DAEMON_WORKERS", "-1", "daemon_workers"),
    ("AIIDA_STACK_DAEMON_WORKERS", "two", "daemon_workers"),
    ("AIIDA_STACK_POSTGRES_PORT", "70000", "postgres_port"),
    ("AIIDA_STACK_PROFILE", "a;drop", "profile"),
    ("AIIDA_STACK_AIIDA_CORE_VERSION", "1.0.0", "aiida_core_version"),
    ("AIIDA_STACK_BACKUPS_DIR", "/srv/a:b", "backups_dir"),
    ("AIIDA_STACK_BACKUPS_DIR", "/", "backups_dir"),
    # the sidecar's grammar (stack_rules.parse_schedule): refused here, not in a restart loop there
    ("AIIDA_STACK_BACKUP_SCHEDULE", "5s", "backup_schedule"),
    ("AIIDA_STACK_BACKUP_SCHEDULE", "99 99 * * *", "backup_schedule"),
    ("AIIDA_STACK_BACKUP_SCHEDULE", "daily", "backup_schedule"),
    ("AIIDA_STACK_BACKUP_VERIFY_READ_SHARE", "1/0", "backup_verify_read_share"),
    ("AIIDA_STACK_BACKUP_VERIFY_READ_SHARE", "half", "backup_verify_read_share"),
    ("AIIDA_STACK_BACKUP_MAINTENANCE", "sometimes", "backup_maintenance"),
])
def test_up_refuses_invalid_settings_and_starts_nothing(variable, value, named):
    name = unique_name("bad")
    done = stack_cli(name, "up", env={variable: value})
    assert done.returncode == 2
    assert "invalid settings, nothing started" in done.stderr
    assert named in done.stderr and variable in done.stderr
    assert project_containers(name) == []


def test_a_backups_dir_holding_other_files_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir(mode=0o755)
    (folder / "website").mkdir()
    name = unique_name("bak")
    done = stack_cli(name, "up", env={"AIIDA_STACK_BACKUPS_DIR": str(folder)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(folder) in done.stderr and "nothing changed" in done.stderr
    assert oct(folder.stat().st_mode & 0o777) == "0o755" and sorted(p.name for p in folder.iterdir()) == ["website"]
    assert project_containers(name) == [] and not (ROOT / ".stack" / name / "secrets").exists()


def test_up_refuses_a_malformed_settings_file(tmp_path):
    bad = tmp_path / "stack.toml"
    bad.write_text("daemon_workers = [\n")
    done = stack_cli(unique_name("bad"), "up", env={"AIIDA_STACK_SETTINGS": str(bad)})
    assert done.returncode == 2
    assert "cannot read settings file" in done.stderr


def test_unknown_settings_key_is_named(tmp_path):
    bad = tmp_path / "stack.toml"
    bad.write_text("deamon_workers = 2\n")
    done = stack_cli(unique_name("bad"), "status", env={"AIIDA_STACK_SETTINGS": str(bad)})
    assert done.returncode == 2
    assert "deamon_workers" in done.stderr


def test_unknown_task_is_an_error():
    done = stack_cli(unique_name("bad"), "upp")
    assert done.returncode != 0
    assert "No idea what 'upp' is" in done.stderr


def test_down_volumes_refuses_without_confirmation_and_keeps_data():
    name = unique_name("vol")
    docker = engine.client()
    volumes = [docker.volumes.create(f"{name}_{v}") for v in DATA_VOLUMES + BACKUP_VOLUMES]
    try:
        refused = stack_cli(name, "down", "--volumes", input="")
        assert refused.returncode == 2
        assert "--yes" in refused.stderr
        assert all(docker.volumes.list(filters={"name": v.name}) for v in volumes)

        confirmed = stack_cli(name, "down", "--volumes", "--yes")
        assert confirmed.returncode == 0, confirmed.stderr
        for v in DATA_VOLUMES:
            assert not docker.volumes.list(filters={"name": f"{name}_{v}"})
        for v in BACKUP_VOLUMES:  # backups are never deleted by down --volumes
            assert docker.volumes.list(filters={"name": f"{name}_{v}"})
    finally:
        for v in volumes:
            if docker.volumes.list(filters={"name": v.name}):
                v.remove()
        shutil.rmtree(ROOT / ".stack" / name, ignore_errors=True)


def test_logs_refuses_an_unknown_service():
    done = stack_cli(unique_name("bad"), "logs", "--service", "mysql")
    assert done.returncode == 2
    assert "--service: must be one of" in done.stderr


def _task_names() -> list[str]:
    from tasks import ns

    return sorted(ns.task_names)


@pytest.mark.parametrize(("task", "asked"), [*((task, "--help") for task in _task_names()),
                                             ("archive.inspect", "-h")])
def test_every_task_shows_its_help_with_every_option_after_its_name(task, asked):
    """`./stack TASK --help`, also for a task whose first argument is positional (invoke would take
    `--help` as its value); invoke pops a task's help texts on first use: every one must still show."""
    from tasks import ns

    done = stack_cli(unique_name("help"), task, asked)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: ./stack [--core-opts] {task} "), done.stdout
    for option in ns[task].options.values():
        assert " ".join(option.help.split()[:4]) in " ".join(done.stdout.split()), (option.help, done.stdout)


@pytest.mark.parametrize(("task", "env", "named"), [
    ("upgrade", {}, "./stack up"),  # a stack that is down
    ("migrate", {}, "./stack up"),
    ("upgrade", {"AIIDA_STACK_AIIDA_CORE_VERSION": "2.x"}, "aiida_core_version"),
    ("upgrade", {"AIIDA_STACK_AIIDA_CORE_VERSION": "29.4"}, "aiida_core_version"),
    ("upgrade", {"AIIDA_STACK_PLUGINS": '["aiida-shell>>0.9"]'}, "plugins"),
    ("upgrade", {"AIIDA_STACK_PLUGINS": '"aiida-shell==0.9.0"'}, "plugins"),
])
def test_upgrade_and_migrate_refuse_bad_input_and_a_stopped_stack(task, env, named):
    name = unique_name("badupg")
    done = stack_cli(name, task, "--yes", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr and "nothing" in done.stderr, done.stderr
    assert project_containers(name) == []


@pytest.mark.parametrize(("spec", "named"), [
    ("relative/path:/home/aiida/data", "must be absolute"),
    ("/no/such/folder:/home/aiida/data", "no such host path"),
    ("/:/home/aiida/data", "not the host's /"),
    (f"{ROOT}:/home/aiida/data", "checkout"),
    (f"{ROOT.parent}:/home/aiida/data", "checkout"),
    (f"{ROOT}/.stack:/home/aiida/data", "checkout"),
    (f"{MOUNTED}:/home/aiida", "would shadow /home/aiida/.aiida"),  # MOUNTED: a host folder that may be mounted
    (f"{MOUNTED}:/home/aiida/.aiida/repository", "would shadow /home/aiida/.aiida"),
    (f"{MOUNTED}:/usr/lib", "would shadow /usr"),
    (f"{MOUNTED}:/home/aiida/data:rx", "the mode is ro (default) or rw"),
    (f"{MOUNTED}:/home/aiida/../data", "without '..'"),
])
def test_up_refuses_bad_mounts_and_starts_nothing(spec, named):
    name = unique_name("mnt")
    done = stack_cli(name, "up", env={"AIIDA_STACK_MOUNTS": json.dumps([spec])})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "mounts" in done.stderr and named in done.stderr and "nothing started" in done.stderr, done.stderr
    assert project_containers(name) == []
    assert not (ROOT / ".stack" / name).exists()
