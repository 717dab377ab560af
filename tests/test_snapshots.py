"""Snapshots of runs (spec/07): what a run stores, once, redacted; on files and SQLite."""

import json
import pytest

from atomic_vault import AtomicAgent, snapshots
from conftest import ScriptedModel, capture_block

KEY = "sk-ant-api03-SNAPSHOTKEY-0123456789abcdef"


@pytest.fixture(params=["files", "sqlite"])
def backend(request):
    return request.param


def _agent(vault, backend, model=None):
    return AtomicAgent("atlas", root=vault, model=model or ScriptedModel("The answer."), log=backend)


def test_a_run_stores_every_text_it_names(vault, backend):
    model = ScriptedModel("Answer.\n" + capture_block(name="Alpha") + "\n```atomic_capture\n{bad\n```")
    agent = _agent(vault, backend, model)
    result = agent.call("Plan the week.")
    record = agent.log.get(agent.folder, result.run_id)
    refs = record["snapshots"]
    found = snapshots.load(agent.log, agent.folder, snapshots.named(record))
    assert found.tampered == [] and found.missing == []
    assert found.text(refs["work_item"]) == "Plan the week."
    assert found.text(refs["answer"]) == model.text
    assert [found.text(sha) for sha in refs["captures"]][1].strip() == "{bad"
    assert len(refs["captures"]) == 2 and refs["errors"] == []
    sent = {block["source"]: block["text"] for block in model.requests[0].system}
    for entry in record["manifest"]["files"]:  # each layer as sent, beside its source's hash
        assert found.text(entry["snapshot"]) == sent[entry["source"]]
        assert entry["sha256"] != entry["snapshot"] or entry["layer"] == "journal"
    assert [e["source"] for e in record["manifest"]["files"]] == list(sent)  # the system, in order


def test_unchanged_inputs_cost_only_the_new_texts(vault, backend):
    agent = _agent(vault, backend)
    agent.call("First.")
    before = set(agent.log.snapshot_hashes(agent.folder))
    result = agent.call("Second.")
    record = agent.log.get(agent.folder, result.run_id)
    new = set(agent.log.snapshot_hashes(agent.folder)) - before
    persona = {e["snapshot"] for e in record["manifest"]["files"] if e["source"].startswith("persona/")}
    assert persona and not persona & new  # a persona that did not change is stored once
    assert record["snapshots"]["work_item"] in new


def test_keys_are_redacted_before_hashing(vault, backend, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    agent = _agent(vault, backend, ScriptedModel(f"the key is {KEY}"))
    result = agent.call(f"use {KEY} please")
    record = agent.log.get(agent.folder, result.run_id)
    for sha in snapshots.named(record):
        text = agent.log.get_snapshot(agent.folder, sha)
        assert KEY not in text and KEY[:20] not in text
        assert snapshots.digest(text) == sha


def test_a_failed_run_snapshots_its_errors(vault, backend):
    from atomic_vault.errors import ModelError

    agent = _agent(vault, backend, ScriptedModel(error=RuntimeError("the provider fell over")))
    with pytest.raises(ModelError):
        agent.call("Try.")
    record = agent.log.query(agent.folder)[-1]
    refs = record["snapshots"]
    assert refs["answer"] is None and len(refs["errors"]) == 1
    assert "fell over" in agent.log.get_snapshot(agent.folder, refs["errors"][0])


def test_doctor_reports_snapshots_no_record_names(vault, backend):
    from atomic_vault import doctor
    from atomic_vault.backends import open_backend

    agent = _agent(vault, backend)
    agent.call("Plan.")
    checks = lambda: [f for f in doctor.check(agent.folder, {"log": open_backend("log", backend, vault)})
                      if f.check == "snapshots"]  # noqa: E731
    assert checks() == []
    orphan = "a text stored by a run cut off before its record"
    agent.log.put_snapshots(agent.folder, {snapshots.digest(orphan): orphan})
    found = checks()
    assert len(found) == 1 and found[0].level == "warn" and "1 snapshot(s)" in found[0].message


def test_migrate_carries_the_snapshots_with_the_log(vault):
    from atomic_vault.backends.sqlite import SQLiteLog
    from atomic_vault.migrate import migrate_log

    agent = _agent(vault, "files")
    result = agent.call("Plan.")
    target = SQLiteLog(root=vault)
    migrate_log(agent.folder, agent.log, target)
    assert target.snapshot_hashes(agent.folder) == agent.log.snapshot_hashes(agent.folder)
    record = target.get(agent.folder, result.run_id)
    found = snapshots.load(target, agent.folder, snapshots.named(record))
    assert found.missing == [] and found.tampered == [] and found.text(record["snapshots"]["work_item"]) == "Plan."


def test_each_tool_calls_arguments_and_result_are_stored_whole(vault):
    """Issue: evidence of an action is its whole arguments and result, not the step
    record's shortened copies."""
    agent = AtomicAgent("atlas", root=vault)
    result = agent.call('Is it a leap year?\ntool: leap_year {"year": 2028}')
    record = agent.log.get(agent.folder, result.run_id)
    calls = record["snapshots"]["tools"]
    assert [(c["step"], c["call"]) for c in calls] == [(1, record["steps"][0]["calls"][0]["id"])]
    args = agent.log.get_snapshot(agent.folder, calls[0]["args"])
    answer = agent.log.get_snapshot(agent.folder, calls[0]["result"])
    assert json.loads(args) == {"year": 2028}
    assert answer == record["steps"][0]["calls"][0]["effect"]["result"]
    assert {calls[0]["args"], calls[0]["result"]} <= set(snapshots.named(record))
