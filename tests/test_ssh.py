"""Remote computers over SSH: the stack's key, explicit host trust, the user's ssh_config, and a
calculation through the daemon on a stand-in cluster (tests/cluster/Dockerfile: Debian's sshd),
with core.ssh_async (its openssh backend: the ssh binary) and with core.ssh (paramiko); a changed host
key is refused by both.

One stand-in cluster for the module, on the session stack's egress network as `cluster`.
"""

from __future__ import annotations

import re
import stat

import pytest

from ops import ssh

from .conftest import authorize, host_key_fingerprint, stand_in_host

pytestmark = pytest.mark.stack

CLUSTER = "cluster"  # the stand-in's name on the egress network, and its Host alias in the ssh_config
WORK_DIR = "/scratch/{username}"


@pytest.fixture(scope="module")
def cluster(stack, images, tmp_path_factory):
    """The stand-in cluster, and the user's ssh_config for it (handed over with every ./stack ssh.* call)."""
    config = tmp_path_factory.mktemp("ssh") / "config"
    config.write_text(f"Host {CLUSTER}\n    User alice\n    ConnectTimeout 10\n")
    with stand_in_host(stack, CLUSTER) as container:
        yield container, {"AIIDA_STACK_SSH_CONFIG": str(config)}


def _known_hosts(stack) -> str:
    path = ssh.folder(stack.settings) / ssh.KNOWN_HOSTS
    return path.read_text() if path.exists() else ""


def test_keygen_keeps_a_private_key_and_prints_the_public_one(stack, cluster):
    container, env = cluster
    made = stack.cli("ssh.keygen", env=env)
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip().splitlines()[-1]
    assert public.startswith("ssh-ed25519 ") and public.endswith(f"aiida@{stack.name}")
    key = ssh.folder(stack.settings) / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    private = key.read_text()
    again = stack.cli("ssh.keygen", env=env)
    assert again.returncode == 2 and "has a key already" in again.stderr
    assert key.read_text() == private and stack.cli("ssh.show").stdout.strip() == public
    # the aiida user holds the same key, its own, private: what ssh and paramiko insist on
    listed = stack.compose.exec_aiida(["stat", "-c", "%U %a %n", "/home/aiida/.ssh/id_ed25519",
                                       "/home/aiida/.ssh/config"], capture=True)
    assert listed.stdout.split() == ["aiida", "600", "/home/aiida/.ssh/id_ed25519",
                                     "aiida", "600", "/home/aiida/.ssh/config"], listed.stdout + listed.stderr
    authorize(container, public)


def test_trust_shows_the_fingerprint_and_needs_a_confirmation(stack, cluster):
    container, env = cluster
    unanswered = stack.cli("ssh.trust", "nobody.invalid", "--yes", env=env)
    assert unanswered.returncode == 2 and "--host" in unanswered.stderr and "did not answer" in unanswered.stderr
    unconfirmed = stack.cli("ssh.trust", CLUSTER, env=env, input="")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert host_key_fingerprint(container) in unconfirmed.stdout  # shown before asking
    assert CLUSTER not in _known_hosts(stack)
    trusted = stack.cli("ssh.trust", CLUSTER, "--yes", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert any(line.startswith(f"{CLUSTER} ssh-ed25519 ") for line in _known_hosts(stack).splitlines())
    again = stack.cli("ssh.trust", CLUSTER, "--yes", env=env)
    assert again.returncode == 0 and "trusted already" in again.stderr


@pytest.mark.parametrize("transport", ["core.ssh_async", "core.ssh"])
def test_a_calculation_runs_on_the_cluster_through_the_daemon(stack, cluster, transport):
    label = f"{CLUSTER}-{transport.replace('.', '-').replace('_', '-')}"
    setup = stack.cli("verdi", "--", "computer", "setup", "--non-interactive", "--label", label,
                      "--hostname", CLUSTER, "--transport", transport, "--scheduler", "core.direct",
                      "--work-dir", WORK_DIR, "--mpiprocs-per-machine", "1")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    # core.ssh_async through the ssh binary (OpenSSH: the ssh_config's alias and User apply); paramiko
    # reads no ssh_config when it connects, so it gets the user name here
    options = ["--backend", "openssh", "--host", CLUSTER] if transport == "core.ssh_async" \
        else ["--username", "alice"]
    configured = stack.cli("verdi", "--", "computer", "configure", transport, label, "--non-interactive",
                           "--safe-interval", "0", *options)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    jobs_before = cluster[0].exec_run(["find", "/scratch/alice", "-name", "_aiidasubmit.sh"]).output.decode().count(
        "_aiidasubmit.sh")
    done = stack.run_script("add.py", "20", "22", label)
    assert done.stdout.split()[-3:] == ["finished", "0", "42"], done.stdout + done.stderr
    # the job really ran over there: its work dir is on the cluster
    listed = cluster[0].exec_run(["find", "/scratch/alice", "-name", "_aiidasubmit.sh"])
    assert listed.exit_code == 0 and listed.output.decode().count("_aiidasubmit.sh") == jobs_before + 1, \
        listed.output


def test_a_changed_host_key_is_refused(stack, cluster):
    container, env = cluster
    before = host_key_fingerprint(container)
    changed = container.exec_run(["sh", "-c", "rm /etc/ssh/ssh_host_* && ssh-keygen -A && kill -HUP 1"])
    assert changed.exit_code == 0, changed.output
    assert host_key_fingerprint(container) != before
    for label in (f"{CLUSTER}-core-ssh-async", f"{CLUSTER}-core-ssh"):
        # verdi computer test exits 0 even when a test fails: its report is what counts
        tested = stack.cli("verdi", "--", "computer", "test", label, "--print-traceback")
        said = tested.stdout + tested.stderr
        # paramiko fails at "Opening connection"; the openssh backend opens nothing and fails at its first command
        assert "[failed]" in said.lower(), said
        assert re.search(r"host key|HOST IDENTIFICATION HAS CHANGED|not match", said, re.IGNORECASE), said
    done = stack.run_script("add.py", "1", "2", f"{CLUSTER}-core-ssh-async", "30")
    pk = done.stdout.split()[1]
    try:
        assert done.stdout.split()[-3:] != ["finished", "0", "3"], done.stdout
        report = stack.cli("verdi", "--", "process", "report", pk)
        assert re.search(r"host key|HOST IDENTIFICATION HAS CHANGED|not match", report.stdout, re.IGNORECASE), \
            report.stdout
    finally:
        stack.cli("verdi", "--", "process", "kill", "--timeout", "30", pk)
    # re-trusting shows the change loudly and still needs the confirmation
    retrust = stack.cli("ssh.trust", CLUSTER, env=env, input="")
    assert retrust.returncode == 2 and "CHANGED" in retrust.stderr, retrust.stderr
