"""aiida-stack tasks: `./stack --list`, `./stack <task> --help` (or `invoke ...`, the same).

A menu: each task is a few lines calling the library in ops/. Every option declares its type
(ops/inputs.py): bad input is refused with exit 2 before anything runs.
"""

from __future__ import annotations

from ops import handover

handover.into_venv()  # an invoke outside .venv (pip, pipx, system) continues as ./stack

import os  # noqa: E402
import shlex  # noqa: E402 - after the hand-over: ops/ needs the packages of .venv
import subprocess  # noqa: E402
import sys  # noqa: E402

from invoke import Collection, Exit  # noqa: E402

from ops.cli import lazy, stack_task  # noqa: E402
from ops.errors import StackError  # noqa: E402
from ops.handover import ROOT  # noqa: E402
from ops.inputs import (  # noqa: E402
    BackupId,
    Choice,
    Count,
    Day,
    Email,
    Flag,
    HostFile,
    LabelList,
    NewHostFile,
    NumberList,
    OffsiteTarget,
    OptionName,
    PrivateKeyFile,
    Profile,
    RemoteHost,
    SshTarget,
    Text,
)
from ops.services import SERVICES  # noqa: E402

# loaded when a task body first uses them (a refused or --help command stays fast)
(archives, backups, bench_ops, bench_storage, compose, console, daemon, environment, lifecycle, maintain_ops,
 migrate_ops, offsite, options, profiles, restore_ops, runner, settings, ssh, stack_status, upgrade, warmstart) = lazy(
    "ops.archives", "ops.backups", "ops.bench", "ops.bench_storage", "ops.compose", "ops.console", "ops.daemon",
    "ops.environment", "ops.lifecycle", "ops.maintain", "ops.migrate", "ops.offsite", "ops.options", "ops.profiles",
    "ops.restore", "ops.runner", "ops.settings", "ops.ssh", "ops.status", "ops.upgrade", "ops.warmstart")

PROFILE = Profile("AiiDA profile (default: the default profile)")


def _remainder(c) -> list[str]:
    """Arguments after a standalone `--`, with their quoting intact."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


_verbose = Flag("also show the full image build log as it is written (it always goes to .stack/NAME/build.log)")


@stack_task(options={"verbose": _verbose})
def up(c, verbose=False):
    """Start the stack: set up what is missing, start, wait until healthy, show the status.

    Missing set-up steps are done first: Docker engine (Debian as root: installs docker.io and starts
    dockerd), Compose v2, base image (pull, or debootstrap without a registry), images, secrets."""
    s = settings.load()
    lifecycle.up(s, verbose=verbose)
    restore_ops.resume(compose.Stack(s))  # a restore interrupted while the stack was down
    console.out.print(stack_status.view(stack_status.report(s)))


@stack_task(options={
    "volumes": Flag("also delete the data volumes (databases, broker, repositories); backups are kept"),
    "yes": Flag("confirm --volumes without a prompt")})
def down(c, volumes=False, yes=False):
    """Stop the stack (containers removed); data volumes stay unless --volumes (asks to confirm)."""
    s = settings.load()
    lifecycle.down(s, volumes=volumes, yes=yes)
    if volumes:  # the data an interrupted restore was replacing is gone with them
        restore_ops.discard(compose.Stack(s))


_json = Flag("print JSON (for scripts and CI) instead of tables")


@stack_task(options={"json": _json})
def status(c, json=False):
    """Show each service's state/health, aiida-core version, profiles, daemon workers, active processes."""
    found = stack_status.report(_stack().settings)
    if json:
        console.json(found)
    else:
        console.out.print(stack_status.view(found))


@stack_task(options={"service": Choice(f"one of {', '.join(SERVICES)} (default: all)", choices=SERVICES),
                     "follow": Flag("keep following")})
def logs(c, service=None, follow=False):
    """Show the services' logs."""
    compose.Stack(settings.load()).run("logs", *(["--follow"] if follow else []), *([service] if service else []))


@stack_task(options={"verbose": _verbose})
def build(c, verbose=False):
    """Build the four images (sets up engine, Compose and base image first if needed)."""
    lifecycle.build(lifecycle.prepare(settings.load()), verbose=verbose)


@stack_task(options={"exclude_newer": Day("only packages released before this day (YYYY-MM-DD): an old "
                                            "aiida-core with the dependencies of its time")})
def lock(c, exclude_newer=None):
    """Resolve aiida-core (setting aiida_core_version) plus the plugins setting into a lock file (uv).

    Writes images/aiida-core/locks/<environment>.txt: every package pinned, with hashes, for the image's
    Python and platform. Commit it; the image installs exactly that. Refuses plugins that would change
    aiida-core's version or do not resolve."""
    environment.lock(settings.load(), exclude_newer=exclude_newer)


_WAIT = Flag("wait until no process runs and no task is queued, instead of refusing")
_NO_WAIT = Flag("refuse at once (exit 3) when a backup, restore or upgrade holds the stack's lock, instead of "
                "waiting for it")


@stack_task(name="upgrade", conflicts=[("wait", "pause_running")], options={
    "yes": Flag("do not ask (the daemon stops; every profile is backed up, then migrated)"),
    "wait": _WAIT,
    "pause_running": Flag("pause running processes and play them after the upgrade (only when the storage "
                          "schema stays the same: unfinished processes cannot be migrated)"), "no_wait": _NO_WAIT})
def upgrade_task(c, yes=False, wait=False, pause_running=False, no_wait=False):
    """Move the running stack to the aiida-core version and plugins the settings name.

    check (lock, new image builds and loads its plugins, no downgrade) → drain (no running process, no
    queued task) → stop daemon → back up every profile (verified) → switch image → storage migrate →
    storage version → start, health, one calculation → record. Any failure after the daemon stopped
    rolls back: previous image with its config.json, pre-upgrade backups, daemon; exits non-zero."""
    console.out.print(upgrade.upgrade(_stack().settings, yes=yes, wait_idle=wait, pause=pause_running,
                                      wait_lock=not no_wait))


@stack_task(name="migrate", options={
    "profile": Profile("only this profile (default: every profile whose schema is older)"),
    "yes": Flag("do not ask (the daemon stops; each profile is backed up, then migrated)"), "wait": _WAIT,
    "no_wait": _NO_WAIT})
def migrate_task(c, profile=None, yes=False, wait=False, no_wait=False):
    """Migrate profiles whose storage schema is older than the running aiida-core's (e.g. restored ones).

    drain → stop daemon → back up (verified) → storage migrate → storage version → start, one
    calculation → record. A failure restores the pre-migration backups; exits non-zero."""
    console.out.print(migrate_ops.migrate(_stack().settings, profile=profile, yes=yes, wait_idle=wait,
                                          wait_lock=not no_wait))


@stack_task(name="maintain", conflicts=[("profile", "all_")], options={
    "profile": Profile("profile to maintain (default: the default profile)"), "all_": Flag("every profile"),
    "full": Flag("also repack and vacuum: the profile's daemon stops meanwhile (processes must be idle)"),
    "dry_run": Flag("show what would be done; nothing changes"),
    "yes": Flag("do not ask before a full maintenance stops the daemon"), "wait": _WAIT, "no_wait": _NO_WAIT})
def maintain_task(c, profile=None, all_=False, full=False, dry_run=False, yes=False, wait=False, no_wait=False):
    """Storage maintenance (verdi storage maintain): pack loose objects, delete unreferenced ones.

    Basic runs online. --full also repacks and vacuums: drain → stop daemon → maintain --full → start,
    under the stack's lock (backups and restores wait). Prints the objects and bytes before and after."""
    console.out.print(maintain_ops.maintain(_stack().settings, profile, all_, full, dry_run, yes, wait_idle=wait,
                                            wait_lock=not no_wait))


@stack_task(options={"profile": PROFILE})
def verdi(c, profile=None):
    """Run verdi in the aiida container: ./stack verdi [--profile P] -- ARGS (stdin, exit code pass through)."""
    argv = ["verdi", *(["-p", profile] if profile else []), *_remainder(c)]
    raise Exit(code=compose.Stack(settings.load()).exec_aiida(argv, interactive=True).returncode)


@stack_task(options={"script": HostFile("local Python script"), "profile": PROFILE})
def run(c, script, profile=None):
    """Run a local Python script in the aiida container with the profile loaded (like verdi run).

    ./stack run SCRIPT [--profile P] [-- ARGS]. The exit code passes through."""
    code, _ = runner.run_script(compose.Stack(settings.load()), script, _remainder(c), profile=profile)
    raise Exit(code=code)


@stack_task(name="engine", default=True, options={
    "n": Count("number of core.arithmetic.add calculations", maximum=100_000),
    "workers": Count("daemon workers during the run", maximum=64),
    "time_up": Flag("first stop the stack (volumes kept) and time a warm `up` until healthy")})
def bench_engine(c, n=100, workers=2, time_up=False):
    """Engine benchmark (AiiDA docs): N ArithmeticAdd calculations through the daemon, seconds/process.

    Submits N core.arithmetic.add calculations to the daemon with W workers, waits for all, prints seconds
    per process and how many finished ok, then deletes what it created. --time-up also times a warm `up`."""
    bench_ops.engine_benchmark(settings.load(), n=n, workers=workers, time_up=time_up)


@stack_task(name="maintain", options={
    "files": Count("new small files (4 KB) before each incremental backup", maximum=1_000_000),
    "keep": Flag("keep the generated profile and its backups afterwards")})
def bench_maintain(c, files=1000, keep=False):
    """Maintenance benchmark: an incremental backup after FILES new small files, without and after a
    basic maintenance (time and new bytes); removes what it made unless --keep."""
    bench_storage.maintain_benchmark(settings.load(), files=files, keep=keep)


@stack_task(name="offsite", options={
    "megabytes": Count("megabytes of files (random bytes, 4 MB each) in the backup", maximum=100_000),
    "keep": Flag("keep the generated profile and its backups afterwards")})
def bench_offsite(c, megabytes=1024, keep=False):
    """The offsite benchmark: a backup of MEGABYTES (1 GB) pushed to a throwaway SSH server on the stack's network:
    a plain rsync -a of the backup folder, the first push, an unchanged push and an encrypted push, with time, bytes
    sent and bytes new on the remote. Uses the stack's offsite key (made for the run if there is none)."""
    from ops import bench_offsite

    bench_offsite.offsite_benchmark(settings.load(), megabytes, keep)


@stack_task(name="archive", options={
    "nodes": Count("nodes to generate (a tenth of them with a file)", maximum=10_000_000),
    "megabytes": Count("megabytes of files (random bytes)", maximum=100_000),
    "keep": Flag("keep the generated profiles afterwards")})
def bench_archive(c, nodes=20000, megabytes=100, keep=False):
    """Archive benchmark: NODES nodes exported (--all) to a host file and imported into a new profile;
    prints both times; removes what it made unless --keep."""
    bench_storage.archive_benchmark(settings.load(), nodes=nodes, megabytes=megabytes, keep=keep)


@stack_task(name="backup", options={
    "nodes": Count("nodes to generate (data nodes and the calcfunctions they feed)", maximum=10_000_000),
    "megabytes": Count("megabytes of files (random bytes) spread over the file nodes", maximum=1_000_000),
    "files": Count("how many nodes carry a file (default: a tenth of the nodes)", maximum=10_000_000),
    "keep": Flag("keep the generated profiles and their backups afterwards")})
def bench_backup(c, nodes=20000, megabytes=1024, files=None, keep=False):
    """Backup benchmark: full backup, unchanged incremental, restore, against pg_dump + cp -a.

    Generates a profile of NODES nodes and MEGABYTES of files, backs it up twice (full, then unchanged),
    restores the latest into a new profile, and times plain pg_dump + cp -a of the same data before and
    after. Prints the figures with the targets; removes what it made unless --keep."""
    bench_ops.backup_benchmark(settings.load(), nodes=nodes, megabytes=megabytes, files=files or 0, keep=keep)


@stack_task(name="upgrade", options={
    "nodes": Count("nodes to generate before the upgrade", maximum=10_000_000),
    "megabytes": Count("megabytes of files (random bytes)", maximum=1_000_000),
    "from_version": Text("aiida-core to start from (needs its lock)", max_length=20, pattern=r"[0-9]+\.[0-9]+\.[0-9]+",
                         pattern_help="a version like 2.2.2"),
    "keep": Flag("keep the throwaway stack afterwards")})
def bench_upgrade(c, nodes=3000, megabytes=60, from_version="2.2.2", keep=False):
    """Upgrade benchmark: a throwaway stack on FROM_VERSION with NODES nodes and MEGABYTES of files,
    upgraded to the settings' environment: the duration, each step's share, the daemon's downtime."""
    bench_ops.upgrade_benchmark(settings.load(), nodes=nodes, megabytes=megabytes, from_version=from_version,
                                keep=keep)


@stack_task(name="up", options={
    "profiles": Count("profiles on the throwaway stack, each with its daemon", maximum=8),
    "runs": Count("warm starts to time", maximum=20), "keep": Flag("keep the throwaway stack afterwards")})
def bench_up(c, profiles=2, runs=3, keep=False):
    """Warm-start benchmark: a throwaway stack with PROFILES profiles, removed and started RUNS times; where each
    `./stack up` spends its time (engine events, the supervisor's milestones), against the 10 s target."""
    warmstart.up_benchmark(settings.load(), profiles, runs, keep)


@stack_task(options={"k": Text("only tests matching this pytest -k expression", max_length=1000),
                     "workers": Count("test processes, each with its own stack, files shared out among them "
                                      "(pytest-xdist; default: one per CPU core, at most 4; 1: no xdist)", maximum=16)})
def test(c, k=None, workers=None):
    """Run the whole test suite (unit + testcontainers integration), preparing engine and images first.

    Test files are shared out among WORKERS processes (each file's tests stay together, in order, on
    one stack). Extra pytest arguments go after `--`, e.g. ./stack test -- -x -k restart."""
    lifecycle.build(lifecycle.prepare(settings.load()), only_missing=True)
    extra = _remainder(c)
    n = workers or min(os.cpu_count() or 1, 4)
    parallel = ["-n", str(n), "--dist", "loadfile"] if n > 1 and "-n" not in extra else []
    argv = [sys.executable, "-m", "pytest", *parallel, *(["-k", k] if k else []), *extra]
    raise Exit(code=subprocess.run(argv, cwd=ROOT).returncode)


def _stack() -> compose.Stack:
    """The stack, after completing or rolling back a restore that a killed ./stack left half done."""
    stack = compose.Stack(settings.load())
    restore_ops.resume(stack)
    return stack


# ---------------------------------------------------------------------------------------- profile.*


@stack_task(name="list", options={"json": _json})
def profile_list(c, json=False):
    """List the profiles: default marked, node count, database, repository."""
    listing = profiles.info(_stack())["profiles"]
    if json:
        console.json({"profiles": listing})
    else:
        console.out.print(stack_status.profiles_table(listing))


@stack_task(name="show", options={"name": Profile("the profile")})
def profile_show(c, name):
    """Show a profile: storage backend, database, repository, broker, user (passwords redacted)."""
    console.out.print(lifecycle.profile_details(profiles.get(_stack(), name)))


_user = "(default: the user_{} setting)"


@stack_task(name="create", options={
    "name": Profile("new profile: lowercase letters, digits, _ (names role/database aiida_NAME)", must="not-exist"),
    "email": Email(f"AiiDA user email {_user.format('email')}"),
    "first_name": Text(_user.format("first_name"), max_length=100),
    "last_name": Text(_user.format("last_name"), max_length=100),
    "institution": Text(_user.format("institution"), max_length=200),
    "set_default": Flag("make it the default profile"),
    "from_archive": HostFile("fill it from this AiiDA archive (read first; a failed import removes the profile)")})
def profile_create(c, name, email=None, first_name=None, last_name=None, institution=None, set_default=False,
                   from_archive=None):
    """Create a profile: own PostgreSQL role (generated password) and UTF8 database, repository, broker,
    localhost computer; with --from-archive FILE, filled from an AiiDA archive (a dataset to hand on)."""
    s = settings.load()
    stack = compose.Stack(s)

    def create() -> None:
        profiles.create(stack, name, email or s.user_email, first_name or s.user_first_name,
                        last_name or s.user_last_name, institution or s.user_institution, set_default)

    if from_archive is None:
        create()
    else:
        archives.new_profile(stack, from_archive, create, name)


@stack_task(name="delete", options={
    "name": Profile("the profile"), "skip_db": Flag("keep its database and role"),
    "skip_repository": Flag("keep its file repository"), "yes": Flag("do not ask"),
    "set_default": Profile("the profile that becomes default (needed to delete the default)"), "no_wait": _NO_WAIT})
def profile_delete(c, name, skip_db=False, skip_repository=False, yes=False, set_default=None, no_wait=False):
    """Delete a profile: config entry, database + role and repository unless skipped (asks to confirm)."""
    profiles.delete(_stack(), name, skip_db, skip_repository, yes, set_default or "", wait=not no_wait)


@stack_task(name="set-default", options={"name": Profile("the profile")})
def profile_set_default(c, name):
    """Make NAME the default profile; the daemon then serves it."""
    profiles.set_default_profile(_stack(), name)


# ---------------------------------------------------------------------------------------- config.*

_option = OptionName("an AiiDA option, e.g. daemon.default_workers (./stack config.list)")
_global = Flag("at the global level (all profiles)")
_restart = Flag("restart the daemon if the option needs it")
_level = [("global_", "profile")]


@stack_task(name="list", options={"prefix": OptionName("only options starting with this", prefix=True),
                                  "profile": PROFILE})
def config_list(c, prefix=None, profile=None):
    """List configuration options: name, source (profile/global/default), value."""
    raise Exit(code=options.verdi_config(_stack(), "list", *([prefix] if prefix else []), profile=profile or ""))


@stack_task(name="show", options={"option": _option, "profile": PROFILE})
def config_show(c, option, profile=None):
    """Show an option: its schema and its value at each level."""
    stack = _stack()
    options.check(stack, option)
    raise Exit(code=options.verdi_config(stack, "show", option, profile=profile or ""))


@stack_task(name="get", options={"option": _option, "profile": PROFILE})
def config_get(c, option, profile=None):
    """Print an option's effective value."""
    stack = _stack()
    options.check(stack, option)
    raise Exit(code=options.verdi_config(stack, "get", option, profile=profile or ""))


@stack_task(name="set", conflicts=_level, options={
    "option": _option, "value": Text("the new value (checked against AiiDA's schema)", max_length=1000),
    "global_": _global, "profile": PROFILE, "restart": _restart})
def config_set(c, option, value, global_=False, profile=None, restart=False):
    """Set an option for a profile (or --global) after validating it against AiiDA's schema."""
    options.set_option(_stack(), option, value, global_, profile or "", restart)


@stack_task(name="unset", conflicts=_level, options={
    "option": _option, "global_": _global, "profile": PROFILE, "restart": _restart})
def config_unset(c, option, global_=False, profile=None, restart=False):
    """Remove an option's value at the profile (or --global) level."""
    options.unset_option(_stack(), option, global_, profile or "", restart)


# ---------------------------------------------------------------------------------------- daemon.*


_DAEMON_OF = Profile("whose daemon (default: the default profile); every profile has its own")


@stack_task(name="status", options={"profile": _DAEMON_OF})
def daemon_status(c, profile=None):
    """Show a profile's daemon and its workers (verdi daemon status)."""
    daemon.status(_stack(), profile)


@stack_task(name="start", options={"profile": _DAEMON_OF})
def daemon_start(c, profile=None):
    """Start a profile's daemon (and let the service supervise it again)."""
    daemon.start(_stack(), profile)


@stack_task(name="stop", options={"profile": _DAEMON_OF})
def daemon_stop(c, profile=None):
    """Stop a profile's daemon and keep it stopped, across restarts of the stack, until daemon.start."""
    daemon.stop(_stack(), profile)


@stack_task(name="restart", options={"profile": _DAEMON_OF})
def daemon_restart(c, profile=None):
    """Restart a profile's daemon (needed after changing options that affect it)."""
    daemon.restart(_stack(), profile)


@stack_task(name="incr", options={"number": Count("workers to add", maximum=64), "profile": _DAEMON_OF})
def daemon_incr(c, number=1, profile=None):
    """Add workers to a running daemon; they stay until daemon.decr or a restart.

    To keep more workers for good: ./stack config.set daemon.default_workers N --restart."""
    daemon.change_workers(_stack(), number, profile)


@stack_task(name="decr", options={"number": Count("workers to remove", maximum=64), "profile": _DAEMON_OF})
def daemon_decr(c, number=1, profile=None):
    """Remove workers added by daemon.incr (the daemon keeps at least its daemon.default_workers)."""
    daemon.change_workers(_stack(), -number, profile)


# ------------------------------------------------------------------------------------------- ssh.*

_REPLACE = Flag("replace the stack's key (the old one is kept aside in the state folder)")


def _new_key(make, install=None) -> None:
    """Store the key `make(settings)` returns, hand it to the service that uses it (`install(stack)`; default: the
    aiida user), print its public line (stdout)."""
    stack = _stack()
    key = make(stack.settings)
    (install or ssh.install)(stack)
    console.step(f"key {key.describe()} kept in {key.path.parent}; its public key (for authorized_keys):")
    console.out.print(key.public, soft_wrap=True)


@stack_task(name="keygen", options={"replace": _REPLACE})
def ssh_keygen(c, replace=False):
    """Create the aiida user's SSH key for remote computers (ed25519, in the stack's state, mode 0600) and
    print its public key: add that line to ~/.ssh/authorized_keys on the cluster."""
    _new_key(lambda s: ssh.keygen(ssh.identity(s), replace))


@stack_task(name="import-key", options={"path": PrivateKeyFile("private key file (no passphrase, mode 0600)"),
                                        "replace": _REPLACE})
def ssh_import_key(c, path, replace=False):
    """Use an existing private key as the aiida user's SSH key (copied into the stack's state, mode 0600).

    A key with a passphrase is refused: the stack never stores passphrases (README: an ssh-agent)."""
    _new_key(lambda s: ssh.import_key(ssh.identity(s), path, replace))


@stack_task(name="trust", options={"host": SshTarget("HOST or HOST:PORT of the SSH server, as the aiida "
                                                     "service reaches it"),
                                   "yes": Flag("trust the shown host key(s) without asking")})
def ssh_trust(c, host, yes=False):
    """Show an SSH server's host key fingerprints; add them to the aiida user's known_hosts once confirmed.

    Compare the fingerprints with those the cluster's admins publish. A changed key is shown as such."""
    ssh.trust(_stack(), "--host", host, yes)


@stack_task(name="show")
def ssh_show(c):
    """Print the stack's public SSH key (for clusters' authorized_keys), its trusted hosts and ssh_config."""
    public = ssh.show(settings.load())
    if public:
        console.out.print(public, soft_wrap=True)


@stack_task(name="keygen", options={"replace": _REPLACE})
def offsite_keygen(c, replace=False):
    """Create the stack's offsite SSH key (ed25519, in the stack's state, mode 0600; only the backup sidecar sees
    it) and print its public key: add that line to ~/.ssh/authorized_keys of the offsite host's user."""
    _new_key(lambda s: ssh.keygen(offsite.identity(s), replace, show="offsite.show"), offsite.install)


@stack_task(name="import-key", options={"path": PrivateKeyFile("private key file (no passphrase, mode 0600)"),
                                        "replace": _REPLACE})
def offsite_import_key(c, path, replace=False):
    """Use an existing private key as the stack's offsite SSH key (copied into the stack's state, mode 0600)."""
    _new_key(lambda s: ssh.import_key(offsite.identity(s), path, replace, show="offsite.show"), offsite.install)


@stack_task(name="age-keygen", options={"replace": _REPLACE})
def offsite_age_keygen(c, replace=False):
    """Make an age identity for encrypted offsite copies (in the stack's state, mode 0600) and print its recipient:
    put that in the setting backup_offsite_recipients. Keep a copy of the identity OFF this machine: a restore from
    an encrypted copy needs it."""
    stack = _stack()
    recipient = offsite.age_keygen(stack, replace)
    console.step(f"age identity kept in {offsite.identity(stack.settings).folder / offsite.AGE_IDENTITY}; copy it "
                 "somewhere safe, off this machine. Its recipient (for backup_offsite_recipients):")
    console.out.print(recipient, soft_wrap=True)


@stack_task(name="show")
def offsite_show(c):
    """Print the stack's offsite public key (for the offsite host's authorized_keys) and the trusted offsite hosts."""
    public = offsite.show(settings.load())
    if public:
        console.out.print(public, soft_wrap=True)


# --------------------------------------------------------------------------------------- archive.*


@stack_task(name="export", conflicts=[("all_", "groups"), ("all_", "nodes")], options={
    "file": NewHostFile("the archive to write on the host (e.g. data.aiida)"), "profile": PROFILE,
    "groups": LabelList("groups to export, by label, separated by commas"),
    "nodes": NumberList("nodes to export, by pk, separated by commas"), "all_": Flag("everything in the profile"),
    "force": Flag("overwrite FILE if it exists")})
def archive_export(c, file, profile=None, groups=None, nodes=None, all_=False, force=False):
    """Export an AiiDA archive (verdi archive create) to a host file: --all, --groups or --nodes, with what
    they need (provenance, files, comments, logs)."""
    stack = _stack()
    archives.export(stack, file, profile or profiles.names(stack)["default"], groups, nodes, all_)


@stack_task(name="import", options={"file": HostFile("the AiiDA archive to import, a host file"),
                                    "profile": PROFILE, "no_wait": _NO_WAIT})
def archive_import(c, file, profile=None, no_wait=False):
    """Import an AiiDA archive (verdi archive import) from a host file; an older archive format is migrated
    as verdi does. Importing the same archive twice adds nothing."""
    stack = _stack()
    archives.import_(stack, file, profile or profiles.names(stack)["default"], wait=not no_wait)


@stack_task(name="inspect", options={"file": HostFile("the AiiDA archive, a host file"), "json": _json})
def archive_inspect(c, file, json=False):
    """Show an archive's format version, the aiida-core that wrote it, and what it holds, without importing."""
    found = archives.inspect(_stack(), file)
    if json:
        console.json(found)
    else:
        console.out.print(archives.table(found))


# ---------------------------------------------------------------------------------------- backup.*

_owner = "profile the backup belongs to (default: the default profile)"


@stack_task(name="run", default=True, conflicts=[("profile", "all_")], options={
    "profile": Profile("profile to back up (default: the default profile)"), "all_": Flag("every profile"),
    "keep": Count("afterwards keep only the newest N backups of the profile"), "no_wait": _NO_WAIT})
def backup_run(c, profile=None, all_=False, keep=None, no_wait=False):
    """Back up profiles online: database first (pg_dump), repository after (hard-linked increments), verified
    checksums in a manifest; published atomically."""
    stack = _stack()
    backups.backup(stack, backups.profile_names(stack, profile or "", all_), keep, wait=not no_wait)


_ACCEPT = Flag("first contact with an offsite host: trust the host key fingerprint it shows (or a key its admins "
               "announced as changed)")


@stack_task(name="list", options={"profile": Profile("only this profile", must="exist-or-have-backups"),
                                  "json": _json, "from_": OffsiteTarget("list an offsite target's backups "
                                                                       "([user@]host:path) instead"),
                                  "accept_host_key": _ACCEPT})
def backup_list(c, profile=None, json=False, from_=None, accept_host_key=False):
    """List backups, newest first: id, latest, verified, time, size, new bytes, nodes (--from: on an offsite target)."""
    stack = _stack()
    if from_:
        found = offsite.remote_list(stack, profile or profiles.info(stack)["default"], from_, accept_host_key)
    else:
        found = backups.published(stack, profile or "")
    if json:
        console.json({"backups": found})
    else:
        console.out.print(backups.listing(found))


@stack_task(name="push", conflicts=[("id", "all_")], options={
    "to": OffsiteTarget("where: [user@]host:path or ssh://[user@]host[:port]/path"),
    "id": BackupId("backup id or latest"), "all_": Flag("every backup of the profile, oldest first"),
    "profile": Profile(_owner, must="exist-or-have-backups"), "accept_host_key": _ACCEPT,
    "bwlimit": Count("limit the upload to N KiB/s", maximum=10_000_000), "json": _json})
def backup_push(c, to, id="latest", all_=False, profile=None, accept_host_key=False, bwlimit=None, json=False):
    """Copy backups offsite over SSH: rsync hard-linked to the remote's newest copy, every file's sha256 checked on the
    remote, then published there; the remote keeps the same tiered retention.

    The offsite key (./stack offsite.keygen) must be in the remote user's authorized_keys. An interrupted push leaves
    the remote's earlier copies as they were; the next push resumes it."""
    stack = _stack()
    done = offsite.push(stack, profile or profiles.info(stack)["default"], id, all_, to, accept_host_key, bwlimit)
    if json:
        console.json(done)


_REMOTE = RemoteHost("the machine: [user@]host[:path] or ssh://[user@]host[:port]/path (path: aiida-stack in the "
                     "user's home; the remote stack is named after its folder)")
_REMOTE_ACCEPT = Flag("first contact with the machine: trust the host key fingerprint it shows")


@stack_task(name="up", options={
    "host": _REMOTE, "accept_host_key": _REMOTE_ACCEPT,
    "identity": PrivateKeyFile("an SSH private key to log in with (default: the stack's remote key, made on "
                               "first use)"),
    "images": Choice("send the images the remote lacks (auto) or every one (always)", choices=("auto", "always")),
    "json": _json})
def remote_up(c, host, accept_host_key=False, identity=None, images="auto", json=False):
    """Bring the stack up on another machine over SSH: ship this project at its commit (git archive) and the images
    (docker save | docker load: no registry needed), run ./stack up there, and show its status.

    The remote needs Python 3 and a Docker engine its user may use. The first run makes the stack's remote key and
    prints it: add it to the remote user's authorized_keys."""
    from ops import engine, remote

    engine.ensure_engine()
    engine.ensure_compose()
    found = remote.up(compose.Stack(settings.load()), host, accept_host_key, identity, images)
    _show_status(found, json, f"stack {host.name} on {host.where}")


@stack_task(name="status", options={"host": _REMOTE, "json": _json})
def remote_status(c, host, json=False):
    """Show the status of the stack that remote.up brought up on HOST, as ./stack status shows it."""
    from ops import remote

    _show_status(remote.remote_status(settings.load(), host), json, f"stack {host.name} on {host.where}")


@stack_task(name="down", options={
    "host": _REMOTE, "volumes": Flag("also delete its data volumes (databases, broker, repositories)"),
    "yes": Flag("confirm --volumes")})
def remote_down(c, host, volumes=False, yes=False):
    """Stop the stack that remote.up brought up on HOST (its data stays unless --volumes --yes)."""
    from ops import remote

    remote.down(settings.load(), host, volumes, yes)


def _show_status(found: dict, json: bool, title: str) -> None:
    if json:
        console.json(found)
    else:
        console.out.rule(title)
        console.out.print(stack_status.view(found))


@stack_task(name="verify", options={"id": BackupId("backup id or latest"),
                                    "profile": Profile(_owner, must="exist-or-have-backups"), "no_wait": _NO_WAIT})
def backup_verify(c, id="latest", profile=None, no_wait=False):
    """Verify a backup: checksums, repository objects, restore into a throwaway PostgreSQL, node count."""
    stack = _stack()
    result = backups.verify(stack, profile or profiles.info(stack)["default"], id, wait=not no_wait)
    console.out.print(backups.checks_table(result))
    if not result["ok"]:
        raise StackError(f"backup {result.get('id', id)} failed verification")


@stack_task(options={
    "id": BackupId("backup id or latest"), "profile": Profile(_owner, must="exist-or-have-backups"),
    "as_": Profile("restore into this profile instead (created if missing)", must=None),
    "yes": Flag("replace a profile that holds data (a safety backup is taken first)"), "no_wait": _NO_WAIT,
    "resume": Flag("only complete or roll back a restore that was interrupted (any ./stack command does); "
                   "takes no other option"),
    "from_": OffsiteTarget("fetch the backup from an offsite target first: [user@]host:path[/ID] (checked here, "
                           "then restored as any other)"), "accept_host_key": _ACCEPT,
    "identity": HostFile("the age identity that decrypts an encrypted offsite copy (default: the state folder's)")},
    alone=["resume"], conflicts=[("id", "from_")])
def restore(c, id="latest", profile=None, as_=None, yes=False, no_wait=False, resume=False, from_=None,
            accept_host_key=False, identity=None):
    """Restore a backup: stage + verify → safety backup → stop daemon → swap → check → start → drop the old copy.

    The backup is verified while it is loaded beside the live data, the daemon running; the daemon stops
    only for the swap, and the replaced data is kept until the checks pass. A restore interrupted anywhere
    (even killed) is completed or rolled back by the next ./stack command, never left half done. A backup from an older
    aiida-core is not migrated here: ./stack migrate does that, backup first."""
    stack = compose.Stack(settings.load())
    if resume:
        if not restore_ops.resume(stack, asked=True):
            console.step("no interrupted restore: nothing to do")
        return
    restore_ops.resume(stack)
    if from_:
        source, wanted = offsite.split_source("--from", from_)
        id = offsite.pull(stack, profile or profiles.info(stack)["default"], source, wanted, accept_host_key,
                          wait=not no_wait, identity=identity)
    console.out.print(restore_ops.restore(stack, id, profile or "", as_ or "", yes, wait=not no_wait).table())


ns = Collection(up, down, status, logs, build, lock, upgrade_task, migrate_task, maintain_task, verdi, run, test,
                restore)
ns.add_collection(Collection("bench", bench_engine, bench_backup, bench_upgrade, bench_up, bench_maintain,
                             bench_offsite, bench_archive))
ns.add_collection(Collection("backup", backup_run, backup_list, backup_verify, backup_push))
ns.add_collection(Collection("offsite", offsite_keygen, offsite_import_key, offsite_age_keygen, offsite_show))
ns.add_collection(Collection("archive", archive_export, archive_import, archive_inspect))
ns.add_collection(Collection("remote", remote_up, remote_status, remote_down))
ns.add_collection(Collection("profile", profile_list, profile_show, profile_create, profile_delete,
                             profile_set_default))
ns.add_collection(Collection("ssh", ssh_keygen, ssh_import_key, ssh_trust, ssh_show))
ns.add_collection(Collection("config", config_list, config_show, config_get, config_set, config_unset))
ns.add_collection(Collection("daemon", daemon_status, daemon_start, daemon_stop, daemon_restart, daemon_incr,
                             daemon_decr))
