"""consolidate (spec/17): proposals as approval files, applied as supersessions only on
approval, refused after a hand edit, under the cost guardrails; files, SQLite, PostgreSQL."""

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from conftest import ScriptedModel
from atomic_vault import approvals, clock, consolidate, index, lint
from atomic_vault.backends.files import FileJournal, FileLog
from atomic_vault.cli import cli
from atomic_vault.config import load_model_config
from atomic_vault.errors import ModelError
from atomic_vault.locks import FileLock
from atomic_vault.notes import parse_note_text, summarize
from atomic_vault.protocols import LogQuery
from atomic_vault.testing import make_agent, note_text

DUPLICATE = "The Kestrel audit invoice goes out on the last working day of the month."


@pytest.fixture
def agent(tmp_path, monkeypatch):
    fixed = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "now", lambda zone: fixed.astimezone(zone))
    return make_agent(tmp_path / "vault", "bot")


def store(memory, folder, notes):
    entries = []
    for file, text in notes.items():
        memory.put(folder, file, text)
        meta, _ = parse_note_text(text, folder.memory / file)
        summary = summarize({"superseded_by": None, **meta}, file)
        live = not (summary["archived"] or summary["superseded_by"])
        entries.append((index.section_for(summary, live), index.entry_line(summary)))
    memory.put_index(folder, index.render(entries))


def two_duplicates(memory, folder):
    store(memory, folder, {
        "project_invoice_day.md": note_text("Invoice day", DUPLICATE, last_seen="2026-11-20", tags=["billing"]),
        "project_invoice_date.md": note_text("Invoice date", DUPLICATE + "\n", last_seen="2026-11-10"),
        "project_other.md": note_text("Other", "Something else entirely.")})


def av(folder, *args):
    return CliRunner().invoke(cli, ["--root", str(folder.root), *args])


def propose(folder, memory, model="offline"):
    return consolidate.propose(folder, memory, FileLog(), FileLock(), FileJournal(), model=model)


def texts(memory, folder):
    notes, broken = memory.scan(folder)
    return {f: memory.get(folder, f) for f in sorted({*notes, *broken})} | {"INDEX": memory.get_index(folder)}


def test_offline_proposes_merging_exact_duplicates_and_changes_nothing_until_approved(memory, agent):
    two_duplicates(memory, agent)
    before = texts(memory, agent)
    result = av(agent, "consolidate", "bot", "--model", "offline")
    assert result.exit_code == 0, result.output
    approval_id = approvals.listing(agent.path)[0]
    assert f"approvals bot approve {approval_id}" in result.output
    assert texts(memory, agent) == before  # a proposal writes no note
    text = approvals.path_of(agent.path, approval_id).read_text(encoding="utf-8")
    assert "+++ b/memory/project_invoice_day_v2.md" in text  # the name's own file is taken
    assert "+++ b/memory/project_invoice_day.md" in text and "+superseded_by:" in text
    assert "+++ b/memory/INDEX.md" in text
    fields = approvals.read(agent.path, approval_id).fields
    assert fields["kind"] == "consolidation" and fields["decision"] == "pending"
    proposal = fields["arguments"]
    assert proposal["merges"][0]["files"] == ["project_invoice_day.md", "project_invoice_date.md"]
    assert set(proposal["notes_sha256"]) == {"project_invoice_day.md", "project_invoice_date.md"}
    run = [r for r in FileLog().query(agent, LogQuery()) if r["kind"] == "run"][-1]
    assert run["trigger"] == "consolidate" and run["proposal"] == approval_id and run["status"] == "ok"
    assert f"run {run['run_id']}" in (agent.journal / "2026-12" / "2026-12-01.md").read_text()


def test_approving_applies_the_merge_as_supersessions_keeping_keys_and_bodies(memory, agent):
    two_duplicates(memory, agent)
    old_day = memory.get(agent, "project_invoice_day.md")
    old_date = memory.get(agent, "project_invoice_date.md")
    done = propose(agent, memory)
    merged = done.proposal["merges"][0]["into"]
    assert merged == "project_invoice_day_v2.md"  # project_invoice_day.md is taken
    result = av(agent, "approvals", "bot", "approve", done.approval, "--by", "maria")
    assert result.exit_code == 0, result.output
    assert f"memory/{merged}" in result.output
    day, date_ = memory.get(agent, "project_invoice_day.md"), memory.get(agent, "project_invoice_date.md")
    # only the links are added: every other line, and the body, byte for byte
    assert day.replace("superseded_by: project_invoice_day_v2.md\nsupersedes: project_invoice_date.md\n", "") == old_day
    assert date_.replace("superseded_by: project_invoice_day.md\n", "") == old_date
    new = memory.get(agent, merged)
    meta, body = parse_note_text(new, agent.memory / merged)
    assert body == DUPLICATE and meta["supersedes"] == "project_invoice_day.md"
    assert meta["tags"] == ["billing"] and str(meta["captured"]) == "2026-11-01"
    assert meta["sources"][-1] == f"consolidation {done.record['run_id']}"
    listed = index.listed(memory.get_index(agent))
    assert listed[merged] == "Active Projects"
    assert listed["project_invoice_day.md"] == listed["project_invoice_date.md"] == "Archive"
    record = FileLog().query(agent, LogQuery(kind="approval"))[-1]
    assert record["approval"] == done.approval and record["decision"] == "approve"
    assert {item["file"] for item in record["applied"]} == {f"memory/{merged}", "memory/project_invoice_day.md",
                                                           "memory/project_invoice_date.md"}
    assert approvals.status(agent, FileLog(), done.approval)[0]["state"] == "taken: approve"
    # every link answered, no duplicate left
    findings = lint.lint(agent, memory, load_model_config(agent.model), datetime(2026, 12, 1).date())
    assert findings == []
    again = av(agent, "approvals", "bot", "approve", done.approval, "--by", "maria")
    assert again.exit_code == 1 and "already decided" in again.output


def test_a_note_edited_by_hand_since_the_proposal_is_refused_and_nothing_changes(memory, agent):
    two_duplicates(memory, agent)
    done = propose(agent, memory)
    edited = memory.get(agent, "project_invoice_date.md").replace("last working day", "first working day")
    memory.put(agent, "project_invoice_date.md", edited)
    before = texts(memory, agent)
    result = av(agent, "approvals", "bot", "approve", done.approval, "--by", "maria")
    assert result.exit_code == 1
    assert "memory/project_invoice_date.md" in result.output and "changed since proposal" in result.output
    assert texts(memory, agent) == before
    assert approvals.read(agent.path, done.approval).decision == "pending"
    assert FileLog().query(agent, LogQuery(kind="approval")) == []


def test_deny_logs_the_decision_and_changes_no_note(memory, agent):
    two_duplicates(memory, agent)
    done = propose(agent, memory)
    before = texts(memory, agent)
    result = av(agent, "approvals", "bot", "deny", done.approval, "--by", "maria", "--note", "keep both")
    assert result.exit_code == 0, result.output
    assert texts(memory, agent) == before
    record = FileLog().query(agent, LogQuery(kind="approval"))[-1]
    assert record["decision"] == "deny" and record["applied"] == [] and record["note"] == "keep both"


def test_a_real_model_gets_the_candidates_and_its_retire_and_distil_are_applied(memory, agent):
    store(memory, agent, {"project_old.md": note_text("Old", "An old fact.", last_seen="2026-03-01"),
                          "project_fresh.md": note_text("Fresh", "A fresh fact.", last_seen="2026-11-30")})
    day = agent.journal / "2026-02" / "2026-02-03.md"
    day.parent.mkdir(parents=True)
    day.write_text("# 2026-02-03\n\nMira moved the Kestrel kickoff to Mondays.\n", encoding="utf-8")
    answer = {"retire": [{"file": "project_old.md", "reason": "not seen since March"}],
              "distil": [{"from": ["journal/2026-02/2026-02-03.md"], "type": "project", "name": "Kestrel kickoff",
                          "description": "Kickoffs happen on Mondays", "confidence": "medium",
                          "body": "Kestrel kickoffs are on Mondays.", "reason": "a durable fact"}]}
    model = ScriptedModel("Here it is.\n```atomic_consolidation\n" + json.dumps(answer) + "\n```\n")
    done = propose(agent, memory, model=model)
    shown = model.requests[0].messages[0]["content"]
    assert consolidate.CANDIDATES_TAG in shown and "project_old.md" in shown and "2026-02-03" in shown
    assert "project_fresh.md" not in shown
    assert done.record["cost_usd"] is not None and done.record["model"] == "scripted"
    old_text = memory.get(agent, "project_old.md")
    taken = consolidate.take(agent, memory, FileLog(), FileLock(), done.approval, "approve", "maria")
    assert len(taken["applied"]) == 2
    retired = memory.get(agent, "project_old.md")
    assert retired.replace("archived: true\n", "") == old_text
    new = memory.get(agent, "project_kestrel_kickoff.md")
    meta, body = parse_note_text(new, agent.memory / "project_kestrel_kickoff.md")
    assert meta["sources"] == ["journal/2026-02/2026-02-03.md"] and body == "Kestrel kickoffs are on Mondays."
    listed = index.listed(memory.get_index(agent))
    assert listed["project_old.md"] == "Archive" and listed["project_kestrel_kickoff.md"] == "Active Projects"


BAD = [
    ("no block at all", "the answer holds 0"),
    ("```atomic_consolidation\n{}\n```\n```atomic_consolidation\n{}\n```", "the answer holds 2"),
    ("```atomic_consolidation\n{\"merges\": [], \"merges\": []}\n```", "set twice"),
    ("```atomic_consolidation\n{\"delete\": []}\n```", "unknown key 'delete'"),
    ("```atomic_consolidation\n{\"retire\": [{\"file\": \"project_other.md\"}]}\n```", "not a stale note shown"),
    ("```atomic_consolidation\n" + json.dumps({"merges": [{
        "files": ["project_invoice_day.md", "project_invoice_date.md"], "type": "gossip", "name": "x",
        "description": "y", "confidence": "high", "body": "z"}]}) + "\n```", "type 'gossip'"),
    ("```atomic_consolidation\n" + json.dumps({"merges": [{
        "files": ["project_invoice_day.md", "project_other.md"], "type": "project", "name": "x",
        "description": "y", "confidence": "high", "body": "z"}]}) + "\n```", "not all of one duplicates group"),
    ("```atomic_consolidation\n[1, 2]\n```", "one JSON object"),
]


@pytest.mark.parametrize("answer,reason", BAD)
def test_an_invalid_model_proposal_is_logged_and_proposes_nothing(agent, answer, reason, monkeypatch):
    from atomic_vault.backends.files import FileMemory
    memory = FileMemory()
    two_duplicates(memory, agent)
    before = texts(memory, agent)
    with pytest.raises(ModelError) as caught:
        propose(agent, memory, model=ScriptedModel(answer))
    assert reason in str(caught.value) and "nothing was proposed" in str(caught.value)
    assert approvals.listing(agent.path) == []
    assert texts(memory, agent) == before
    record = FileLog().query(agent, LogQuery())[-1]
    assert record["status"] == "error" and reason in record["error"] and record["trigger"] == "consolidate"


def test_an_invalid_proposal_exits_1_from_the_cli(agent, monkeypatch):
    from atomic_vault.backends.files import FileMemory
    two_duplicates(FileMemory(), agent)
    monkeypatch.setattr(consolidate, "load_model", lambda name, options: ScriptedModel("no block"))
    result = av(agent, "consolidate", "bot")
    assert result.exit_code == 1 and "invalid" in result.output


def test_the_cost_cap_refuses_the_call_logs_it_skipped_and_exits_3(memory, agent):
    two_duplicates(memory, agent)
    (agent.path / "model.md").write_text(
        "```yaml\nmodel: offline\nprices: {'offline:*': {input: 1000, output: 1000}, "
        "'stub:*': {input: 1000, output: 1000}}\n"
        "cost_guardrails: {enabled: true, daily_cap_usd: 0.0001, daily_cap_action: skip}\n```\n", encoding="utf-8")
    model = ScriptedModel("never asked")
    model.name = "stub:scripted"  # priced, so the cap can bound it
    done = propose(agent, memory, model=model)
    assert done.status == "skipped" and model.requests == [] and done.approval is None
    assert done.record["status"] == "skipped" and done.record["guardrail"]["action"] == "skip"
    result = av(agent, "consolidate", "bot")
    assert result.exit_code == 3, result.output
    assert approvals.listing(agent.path) == []
    assert not list((agent.state / "reservations").glob("*")) if (agent.state / "reservations").exists() else True


def test_the_call_spend_counts_against_the_caps(agent):
    from atomic_vault.backends.files import FileMemory
    memory = FileMemory()
    two_duplicates(memory, agent)
    (agent.path / "model.md").write_text(
        "```yaml\ncost_guardrails: {enabled: true, daily_cap_usd: 100}\n```\n", encoding="utf-8")
    done = propose(agent, memory, model=ScriptedModel("```atomic_consolidation\n{}\n```"))
    assert done.approval is None and done.record["cost_usd"] > 0
    assert FileLog().cost(agent, "day")[-1].cost_usd == pytest.approx(done.record["cost_usd"])


def test_nothing_to_consolidate_calls_no_model(agent):
    from atomic_vault.backends.files import FileMemory
    memory = FileMemory()
    store(memory, agent, {"project_a.md": note_text("A", "fresh", last_seen="2026-11-30")})
    model = ScriptedModel("x")
    done = propose(agent, memory, model=model)
    assert done.approval is None and done.record is None and model.requests == []
    assert "nothing to consolidate" in av(agent, "consolidate", "bot").output


def test_an_edited_proposal_is_refused(agent):
    from atomic_vault.backends.files import FileMemory
    memory = FileMemory()
    two_duplicates(memory, agent)
    done = propose(agent, memory)
    path = approvals.path_of(agent.path, done.approval)
    path.write_text(path.read_text().replace("project_invoice_date.md\n", "project_other.md\n", 1))
    result = av(agent, "approvals", "bot", "approve", done.approval, "--by", "maria")
    assert result.exit_code == 1 and "arguments were edited" in result.output
    assert memory.get(agent, "project_other.md") == note_text("Other", "Something else entirely.")


def test_the_mcp_servers_decide_approval_applies_a_proposal_the_same_way(agent):
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.mcp_server import VaultTools
    memory = FileMemory()
    two_duplicates(memory, agent)
    done = propose(agent, memory)
    row = VaultTools(agent.root).decide_approval("bot", done.approval, "approve", "maria")
    assert row["state"] == "taken: approve" and len(row["applied"]) == 3
    assert "superseded_by:" in memory.get(agent, "project_invoice_date.md")


def test_doctor_names_a_proposal_decided_by_hand_but_not_taken(agent):
    from atomic_vault import doctor
    from atomic_vault.backends.files import FileMemory
    memory = FileMemory()
    two_duplicates(memory, agent)
    done = propose(agent, memory)
    path = approvals.path_of(agent.path, done.approval)
    path.write_text(path.read_text().replace("decision: pending\ndecided_by: null",
                                             "decision: approve\ndecided_by: maria"))
    found = [f for f in doctor.check(agent) if f.check == "approvals" and f.level == "warn"]
    assert len(found) == 1 and "no record took it" in found[0].message
    assert f"approvals bot approve {done.approval}" in found[0].fix
    result = av(agent, "approvals", "bot", "approve", done.approval, "--by", "maria")  # takes the hand decision
    assert result.exit_code == 0, result.output
    assert approvals.status(agent, FileLog(), done.approval)[0]["state"] == "taken: approve"
