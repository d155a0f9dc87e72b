"""./stack archive.*: AiiDA archives out of one profile and into another from host files, a profile
made from an archive, and files that are not archives refused before anything changes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from .conftest import SCRIPTS

pytestmark = pytest.mark.stack

SOURCE, TARGET = "arch_src", "arch_dst"


def _cli_ok(stack, *args: str) -> str:
    done = stack.cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _digest(stack, profile: str) -> dict:
    """The profile's content digest, groups limited to `shared` (an import also makes a group of its own)."""
    out = _cli_ok(stack, "run", str(SCRIPTS / "digest.py"), "--profile", profile, "--", "shared")
    found = json.loads(out.splitlines()[-1])
    found["digest"].pop("computers")  # each profile has its own localhost; the group's nodes use none
    return found


def _nodes(stack, profile: str) -> int:
    return next(p for p in stack.status()["profiles"] if p["name"] == profile)["nodes"]


@pytest.fixture(scope="module")
def archive(stack, tmp_path_factory) -> Path:
    """Group `shared` of a new profile, exported to a host file."""
    names = [p["name"] for p in stack.status()["profiles"]]
    for name in (SOURCE, TARGET):
        if name not in names:
            _cli_ok(stack, "profile.create", name)
    _cli_ok(stack, "run", str(SCRIPTS / "shared_group.py"), "--profile", SOURCE, "--", "shared")
    path = tmp_path_factory.mktemp("archives") / "shared.aiida"
    _cli_ok(stack, "archive.export", str(path), "--profile", SOURCE, "--groups", "shared")
    return path


def test_an_exported_group_is_imported_whole_into_another_profile_and_twice_adds_nothing(stack, archive):
    inspected = json.loads(_cli_ok(stack, "archive.inspect", str(archive), "--json"))
    assert inspected["current"] and inspected["aiida_version"] and inspected["entities"]["Groups"] == 1
    assert inspected["entities"]["Nodes"] == 6 and inspected["entities"]["Comments"] == 1  # with the calculation
    source = _digest(stack, SOURCE)
    _cli_ok(stack, "archive.import", str(archive), "--profile", TARGET)
    imported = _digest(stack, TARGET)
    assert imported == source
    again = stack.cli("archive.import", str(archive), "--profile", TARGET)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 new node(s)" in again.stderr
    assert _digest(stack, TARGET) == source
    leftovers = stack.compose.exec_aiida(["sh", "-c", "ls -d /tmp/aiida-stack-archive.* 2>/dev/null | wc -l"],
                                         capture=True)
    assert leftovers.stdout.strip() == "0"  # no copy left in the container


def test_a_profile_made_from_an_archive_runs_a_new_calculation(stack, archive):
    _cli_ok(stack, "profile.create", "arch_new", "--from-archive", str(archive))
    assert _digest(stack, "arch_new")["digest"] == _digest(stack, SOURCE)["digest"]
    ran = _cli_ok(stack, "run", str(SCRIPTS / "add.py"), "--profile", "arch_new", "--", "20", "22")
    assert ran.split()[-3:] == ["finished", "0", "42"], ran


def _older_format(archive: Path, path: Path, version: str = "main_0000b") -> Path:
    """The archive as aiida-core 2.0 wrote it: format main_0000b in its metadata, where the format
    version lives (main_0001, aiida-core 2.1's, changed no table: the content is the same)."""
    with zipfile.ZipFile(archive) as old:
        members = {name: old.read(name) for name in old.namelist()}
    metadata = json.loads(members["metadata.json"])
    assert metadata["export_version"] == "main_0001"  # (a newer aiida-core: pick the older version anew)
    members["metadata.json"] = json.dumps({**metadata, "export_version": version}).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for name, data in members.items():
            new.writestr(name, data)
    return path


def test_an_archive_of_an_older_format_is_migrated_on_import_and_its_version_shown(stack, archive, tmp_path):
    older = _older_format(archive, tmp_path / "aiida-2.0.aiida")
    inspected = json.loads(_cli_ok(stack, "archive.inspect", str(older), "--json"))
    assert (inspected["version"], inspected["current"]) == ("main_0000b", False), inspected
    created = stack.cli("profile.create", "arch_old", "--from-archive", str(older))
    assert created.returncode == 0, created.stdout + created.stderr
    said = " ".join(created.stderr.split())  # (a long path wraps the line)
    assert "archive format main_0000b, older than main_0001: migrated" in said, created.stderr
    assert _digest(stack, "arch_old")["digest"] == _digest(stack, SOURCE)["digest"]


def test_files_that_are_not_archives_are_refused_and_nothing_changes(stack, archive, tmp_path):
    garbage = tmp_path / "garbage.aiida"
    garbage.write_bytes(b"not an archive\n")
    truncated = tmp_path / "truncated.aiida"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    existing = tmp_path / "existing.aiida"
    existing.write_bytes(b"keep me")
    before = _nodes(stack, TARGET), _cli_ok(stack, "profile.list")
    cases = [(("archive.import", str(garbage), "--profile", TARGET), "is not an AiiDA archive"),
             (("archive.import", str(truncated), "--profile", TARGET), "AiiDA archive"),
             (("archive.import", str(tmp_path / "missing.aiida"), "--profile", TARGET), "no such file"),
             (("archive.inspect", str(truncated)), "AiiDA archive"),
             (("archive.export", str(existing), "--profile", SOURCE, "--all"), "exists: --force overwrites it"),
             (("profile.create", "arch_bad", "--from-archive", str(garbage)), "is not an AiiDA archive")]
    for args, message in cases:
        refused = stack.cli(*args)
        assert refused.returncode == 2, (args, refused.stdout + refused.stderr)
        assert message in refused.stderr and "nothing changed" in refused.stderr, (args, refused.stderr)
    assert (_nodes(stack, TARGET), _cli_ok(stack, "profile.list")) == before
    assert existing.read_bytes() == b"keep me"
