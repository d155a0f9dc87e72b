"""aiida-stack tasks: `./stack --list`, `./stack <task> --help`.

A menu: each task is a few lines calling the library in ops/.
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from ops import backups, console, daemon, lifecycle, options, profiles, runner, settings
from ops import bench as bench_ops
from ops.compose import Stack
from ops.errors import StackError
from ops.services import SERVICES
from ops.settings import ROOT


def reported(fn):
    """StackError → its message in red and its exit code, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StackError as exc:
            console.err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise Exit(code=exc.code) from None

    return wrapper


def _remainder(c) -> list[str]:
    """Arguments after a standalone `--`, with their quoting intact."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


@task
@reported
def up(c):
    """Start the stack: set up what is missing, start, wait until healthy, show the status.

    Missing set-up steps are done first: Docker engine (Debian as root: installs docker.io and starts
    dockerd), Compose v2, base image (pull, or debootstrap without a registry), images, secrets."""
    s = settings.load()
    lifecycle.up(s)
    console.out.print(lifecycle.status(s))


@task(help={"volumes": "also delete the data volumes (databases, broker, repositories); backups are kept",
            "yes": "confirm --volumes without a prompt"})
@reported
def down(c, volumes=False, yes=False):
    """Stop the stack (containers removed); data volumes stay unless --volumes (asks to confirm)."""
    lifecycle.down(settings.load(), volumes=volumes, yes=yes)


@task
@reported
def status(c):
    """Show each service's state/health, aiida-core version, profiles, daemon workers, active processes."""
    console.out.print(lifecycle.status(settings.load()))


@task(help={"service": f"one of {', '.join(SERVICES)} (default: all)", "follow": "keep following"})
@reported
def logs(c, service="", follow=False):
    """Show the services' logs."""
    if service and service not in SERVICES:
        raise StackError(f"unknown service {service!r}; one of {', '.join(SERVICES)}", code=2)
    Stack(settings.load()).run("logs", *(["--follow"] if follow else []), *([service] if service else []))


@task
@reported
def build(c):
    """Build the four images (sets up engine, Compose and base image first if needed)."""
    lifecycle.build(lifecycle.prepare(settings.load()))


@task(help={"profile": "AiiDA profile (default: the default profile)"})
@reported
def verdi(c, profile=""):
    """Run verdi in the aiida container: ./stack verdi [--profile P] -- ARGS (stdin, exit code pass through)."""
    argv = ["verdi", *(["-p", profile] if profile else []), *_remainder(c)]
    raise Exit(code=Stack(settings.load()).exec_aiida(argv, interactive=True).returncode)


@task(help={"script": "local Python script", "profile": "AiiDA profile (default: the default profile)"})
@reported
def run(c, script, profile=""):
    """Run a local Python script in the aiida container with the profile loaded (like verdi run).

    ./stack run SCRIPT [--profile P] [-- ARGS]. The exit code passes through."""
    stack = Stack(settings.load())
    code, _ = runner.run_script(stack, Path(script), _remainder(c), profile=profile or None)
    raise Exit(code=code)


@task(name="engine", default=True,
      help={"n": "number of core.arithmetic.add calculations", "workers": "daemon workers during the run",
            "time-up": "first stop the stack (volumes kept) and time a warm `up` until healthy"})
@reported
def bench_engine(c, n=100, workers=2, time_up=False):
    """Engine benchmark (AiiDA docs): N ArithmeticAdd calculations through the daemon, seconds/process.

    Submits N core.arithmetic.add calculations to the daemon with W workers, waits for all, prints seconds
    per process and how many finished ok, then deletes what it created. --time-up also times a warm `up`."""
    bench_ops.engine_benchmark(settings.load(), n=n, workers=workers, time_up=time_up)


@task(name="backup", help={"nodes": "nodes to generate (data nodes and the calcfunctions they feed)",
                           "megabytes": "megabytes of files (random bytes) spread over the file nodes",
                           "files": "how many nodes carry a file (default: a tenth of the nodes)",
                           "keep": "keep the generated profiles and their backups afterwards"})
@reported
def bench_backup(c, nodes=20000, megabytes=1024, files=0, keep=False):
    """Backup benchmark: full backup, unchanged incremental, restore, against pg_dump + cp -a.

    Generates a profile of NODES nodes and MEGABYTES of files, backs it up twice (full, then unchanged),
    restores the latest into a new profile, and times plain pg_dump + cp -a of the same data before and
    after. Prints the figures with the targets; removes what it made unless --keep."""
    bench_ops.backup_benchmark(settings.load(), nodes=nodes, megabytes=megabytes, files=files, keep=keep)


@task(help={"k": "only tests matching this pytest -k expression"})
@reported
def test(c, k=""):
    """Run the whole test suite (unit + testcontainers integration), preparing engine and images first.

    Extra pytest arguments go after `--`, e.g. ./stack test -- -x -k restart."""
    lifecycle.build(lifecycle.prepare(settings.load()), only_missing=True)
    argv = [sys.executable, "-m", "pytest", *(["-k", k] if k else []), *_remainder(c)]
    raise Exit(code=subprocess.run(argv, cwd=ROOT).returncode)


def _stack() -> Stack:
    return Stack(settings.load())


# ---------------------------------------------------------------------------------------- profile.*


@task(name="list")
@reported
def profile_list(c):
    """List the profiles: default marked, node count, database, repository."""
    console.out.print(lifecycle.profiles_table(profiles.info(_stack())))


@task(name="show")
@reported
def profile_show(c, name):
    """Show a profile: storage backend, database, repository, broker, user (passwords redacted)."""
    console.out.print(lifecycle.profile_details(profiles.get(_stack(), name)))


@task(name="create", help={"name": "profile name: lowercase letters, digits, _ (names role/database aiida_NAME)",
                           "email": "AiiDA user email (default: the user_email setting)",
                           "first-name": "(default: setting)", "last-name": "(default: setting)",
                           "institution": "(default: setting)", "set-default": "make it the default profile"})
@reported
def profile_create(c, name, email="", first_name="", last_name="", institution="", set_default=False):
    """Create a profile: own PostgreSQL role (generated password) and UTF8 database, repository, broker,
    localhost computer."""
    s = settings.load()
    profiles.create(Stack(s), name, email or s.user_email, first_name or s.user_first_name,
                    last_name or s.user_last_name, institution or s.user_institution, set_default)


@task(name="delete", help={"name": "the profile", "skip-db": "keep its database and role",
                           "skip-repository": "keep its file repository", "yes": "do not ask",
                           "set-default": "the profile that becomes default (needed to delete the default)"})
@reported
def profile_delete(c, name, skip_db=False, skip_repository=False, yes=False, set_default=""):
    """Delete a profile: config entry, database + role and repository unless skipped (asks to confirm)."""
    profiles.delete(_stack(), name, skip_db, skip_repository, yes, set_default)


@task(name="set-default")
@reported
def profile_set_default(c, name):
    """Make NAME the default profile; the daemon then serves it."""
    profiles.set_default_profile(_stack(), name)


# ---------------------------------------------------------------------------------------- config.*

_where = {"global": "at the global level (all profiles)", "profile": "profile (default: the default profile)",
          "restart": "restart the daemon if the option needs it"}


@task(name="list", help={"prefix": "only options starting with this", "profile": _where["profile"]})
@reported
def config_list(c, prefix="", profile=""):
    """List configuration options: name, source (profile/global/default), value."""
    raise Exit(code=options.verdi_config(_stack(), "list", *([prefix] if prefix else []), profile=profile))


@task(name="show", help={"profile": _where["profile"]})
@reported
def config_show(c, option, profile=""):
    """Show an option: its schema and its value at each level."""
    stack = _stack()
    options.check(stack, option)
    raise Exit(code=options.verdi_config(stack, "show", option, profile=profile))


@task(name="get", help={"profile": _where["profile"]})
@reported
def config_get(c, option, profile=""):
    """Print an option's effective value."""
    stack = _stack()
    options.check(stack, option)
    raise Exit(code=options.verdi_config(stack, "get", option, profile=profile))


@task(name="set", help=_where)
@reported
def config_set(c, option, value, global_=False, profile="", restart=False):
    """Set an option for a profile (or --global) after validating it against AiiDA's schema."""
    options.set_option(_stack(), option, value, global_, profile, restart)


@task(name="unset", help=_where)
@reported
def config_unset(c, option, global_=False, profile="", restart=False):
    """Remove an option's value at the profile (or --global) level."""
    options.unset_option(_stack(), option, global_, profile, restart)


# ---------------------------------------------------------------------------------------- daemon.*


@task(name="status")
@reported
def daemon_status(c):
    """Show the daemon of the default profile and its workers (verdi daemon status)."""
    daemon.status(_stack())


@task(name="start")
@reported
def daemon_start(c):
    """Start the daemon (and let the service supervise it again)."""
    daemon.start(_stack())


@task(name="stop")
@reported
def daemon_stop(c):
    """Stop the daemon and keep it stopped until daemon.start (the service reports unhealthy meanwhile)."""
    daemon.stop(_stack())


@task(name="restart")
@reported
def daemon_restart(c):
    """Restart the daemon (needed after changing options that affect it)."""
    daemon.restart(_stack())


@task(name="incr")
@reported
def daemon_incr(c, number=1):
    """Add workers to the running daemon (until restart; persist with config.set daemon.default_workers)."""
    daemon.change_workers(_stack(), number)


@task(name="decr")
@reported
def daemon_decr(c, number=1):
    """Remove workers from the running daemon."""
    daemon.change_workers(_stack(), -number)


# ---------------------------------------------------------------------------------------- backup.*


@task(name="run", default=True, help={"profile": "profile to back up (default: the default profile)",
                                     "all": "every profile", "keep": "afterwards keep only the newest N backups"})
@reported
def backup_run(c, profile="", all_=False, keep=0):
    """Back up profiles online: database first (pg_dump), repository after (hard-linked increments), verified
    checksums in a manifest; published atomically."""
    stack = _stack()
    backups.backup(stack, backups.profile_names(stack, profile, all_), keep or None)


@task(name="list", help={"profile": "only this profile"})
@reported
def backup_list(c, profile=""):
    """List backups: id, time, size, new bytes, nodes, verified."""
    console.out.print(backups.listing(_stack(), profile))


@task(name="verify", help={"profile": "profile the backup belongs to (default: the default profile)"})
@reported
def backup_verify(c, id="latest", profile=""):
    """Verify a backup: checksums, repository objects, restore into a throwaway PostgreSQL, node count."""
    stack = _stack()
    result = backups.verify(stack, profile or profiles.info(stack)["default"], id)
    console.out.print(backups.checks_table(result))
    if not result["ok"]:
        raise StackError(f"backup {result.get('id', id)} failed verification")


@task(help={"id": "backup id or latest", "profile": "profile the backup belongs to (default: the default profile)",
            "as": "restore into this profile instead (created if missing)",
            "yes": "replace a profile that holds data (a safety backup is taken first)"})
@reported
def restore(c, id="latest", profile="", as_="", yes=False):
    """Restore a backup: verify → stop daemon → safety backup → load → migrate/repair → check → start."""
    console.out.print(backups.restore(_stack(), id, profile, as_, yes))


ns = Collection(up, down, status, logs, build, verdi, run, test, restore)
ns.add_collection(Collection("bench", bench_engine, bench_backup))
ns.add_collection(Collection("backup", backup_run, backup_list, backup_verify))
ns.add_collection(Collection("profile", profile_list, profile_show, profile_create, profile_delete,
                             profile_set_default))
ns.add_collection(Collection("config", config_list, config_show, config_get, config_set, config_unset))
ns.add_collection(Collection("daemon", daemon_status, daemon_start, daemon_stop, daemon_restart, daemon_incr,
                             daemon_decr))
