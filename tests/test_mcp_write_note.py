"""A note written outside a run (the MCP write_note tool) is a chained ``kind: note_edit``
record with ``op: write``, as `notes NAME write` makes it: the commit point of the write
(spec/07), on the files, SQLite and PostgreSQL logs."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from atomic_vault.cli import cli
from atomic_vault.errors import LogError
from atomic_vault.mcp_server import VaultTools
from atomic_vault.protocols import LogQuery
from test_evidence import backend, snapshot  # noqa: F401 (a fixture)

NOTE = dict(agent="atlas", type="project", name="Garden shed", description="The shed build",
            body="Order the timber.", confidence="medium")


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _changes(tools):
    log = tools._backend("log", "atlas")
    return log, log.query(tools._folder("atlas"), LogQuery(kind="note_edit"))


def test_write_note_is_a_chained_note_edit_naming_the_file_before_and_after(vault, backend):
    tools = VaultTools(vault)
    written = tools.write_note(**NOTE)
    path = vault / "atlas" / "memory" / written["file"]
    log, records = _changes(tools)
    assert len(records) == 1
    record = records[0]
    assert record["file"] == written["file"] and record["op"] == "write" and record["trigger"] == "mcp"
    assert record["before"] is None and record["after"] == _sha(path)
    assert record["outcome"]["status"] == "written" and written["seq"] == record["seq"]
    assert av(vault, "verify", "atlas").exit_code == 0
    listed = av(vault, "log", "atlas", "--kind", "note_edit", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout.splitlines()[0])["seq"] == record["seq"]


def test_a_supersession_names_the_old_note_too(vault, backend):
    tools = VaultTools(vault)
    first = tools.write_note(**NOTE)
    old = vault / "atlas" / "memory" / first["file"]
    before = _sha(old)
    fresh = tools.read_note("atlas", first["file"])
    done = tools.write_note(**{**NOTE, "body": "Timber ordered."}, supersedes=first["file"],
                            expected_sha256=fresh["sha256"])
    record = _changes(tools)[1][-1]
    assert record["file"] == done["file"] and record["before"] is None
    assert record["after"] == _sha(vault / "atlas" / "memory" / done["file"])
    assert {"file": first["file"], "before": before, "after": _sha(old)} in record["changes"]
    assert before != _sha(old)  # the old note now links to the new one


def test_a_write_whose_record_cannot_be_appended_is_taken_back(vault, monkeypatch):
    tools = VaultTools(vault)
    real = VaultTools._backend

    def failing(self, kind, agent):
        store = real(self, kind, agent)
        if kind == "log":
            def append(folder, record, fence=None):
                raise LogError("the log cannot take a record", field="log", fix="check the disk")
            monkeypatch.setattr(store, "append", append)
        return store

    before = snapshot(vault)
    monkeypatch.setattr(VaultTools, "_backend", failing)
    with pytest.raises(LogError):
        tools.write_note(**NOTE)
    assert not (vault / "atlas" / "memory" / "project_garden_shed.md").exists()
    after = snapshot(vault)
    assert {k: v for k, v in after.items() if "/log/" not in k} == \
        {k: v for k, v in before.items() if "/log/" not in k}


def test_a_write_that_changes_nothing_or_is_refused_writes_no_record(vault, backend):
    tools = VaultTools(vault)
    tools.write_note(**NOTE)
    count = len(_changes(tools)[1])
    again = tools.write_note(**NOTE)  # the same note on the same day: nothing to change
    assert again["status"] == "refreshed" and "seq" not in again
    with pytest.raises(Exception, match="not one of"):
        tools.write_note(**{**NOTE, "type": "gossip"})
    assert len(_changes(tools)[1]) == count
