"""Capture markers (spec/05): extraction, strict validation, outcomes, confinement."""

import json
from datetime import date

import pytest

from atomic_vault.backends.files import FileMemory
from atomic_vault import captures, index, notes
from atomic_vault.config import ToolsConfig
from atomic_vault.notes import read_note, validate
from atomic_vault.vault import open_agent
from conftest import capture_block

TODAY = date(2026, 11, 22)


def apply(vault, text, tools=ToolsConfig()):
    folder = open_agent("atlas", vault)
    found, rejected = captures.extract(text)
    return folder, captures.write(folder, FileMemory(), tools, found, TODAY) + rejected


def test_three_and_four_backtick_blocks_are_found():
    four = "````atomic_capture\n" + json.dumps({"type": "user", "name": "n", "description": "d",
                                                "confidence": "low", "sources": [], "body": "b"}) + "\n````"
    found, rejected = captures.extract("text\n" + capture_block() + "\nmore\n" + four + "\n")
    assert [c.name for c in found] == ["Test note", "n"] and rejected == []


@pytest.mark.parametrize("raw, reason", [
    ("{not json}", "invalid JSON"),
    ("[1, 2]", "one JSON object"),
    ('{"type": "project", "type": "user"}', "appears twice"),
    (json.dumps({"type": "opinion", "name": "n", "description": "d", "confidence": "high",
                 "sources": [], "body": "b"}), "type 'opinion'"),
    (json.dumps({"type": "user", "name": "n", "description": "d", "confidence": "high",
                 "sources": [], "body": "b", "extra": 1}), "unknown field 'extra'"),
    (json.dumps({"type": "user", "name": "n", "description": "d", "confidence": "high", "body": "b"}),
     "missing required field 'sources'"),
    (json.dumps({"type": "user", "name": "x" * 201, "description": "d", "confidence": "high",
                 "sources": [], "body": "b"}), "limit is 200"),
    (json.dumps({"type": "user", "name": "n", "description": "d", "confidence": "high",
                 "sources": [], "body": "b" * 40000}), "limit is 32000"),
    (json.dumps({"type": "user", "name": "a\u0007b", "description": "d", "confidence": "high",
                 "sources": [], "body": "b"}), "control characters"),
    ('{"type": "user", "name": "n", "description": "d", "confidence": "high", "sources": [], "body": NaN}',
     "NaN"),
    (json.dumps({"type": "user", "name": "n", "description": "d", "confidence": "high",
                 "sources": [], "body": "b", "expires_at": "soon"}), "expires_at"),
])
def test_invalid_captures_are_rejected_with_a_reason(raw, reason):
    found, rejected = captures.extract(f"```atomic_capture\n{raw}\n```")
    assert found == []
    assert len(rejected) == 1 and reason in rejected[0]["reason"]


def test_an_accepted_capture_writes_a_valid_note_and_its_index_line(vault):
    folder, outcomes = apply(vault, capture_block(name="Quarterly review", pinned=True, tags=["q4"]))
    assert outcomes == [{"name": "Quarterly review", "type": "project", "status": "written",
                         "file": "project_quarterly_review.md"}]
    path = folder.memory / "project_quarterly_review.md"
    meta, body = read_note(path)
    validate(meta, path)
    assert meta["captured"] == TODAY and meta["pinned"] is True and body == "Body text."
    assert index.listed(folder.index.read_text())["project_quarterly_review.md"] == "Active Projects"


def test_rejected_captures_write_nothing(vault, snap):
    before = snap(vault)
    _, outcomes = apply(vault, "```atomic_capture\n{oops\n```")
    assert outcomes[0]["status"] == "rejected"
    assert snap(vault) == before


def test_traversal_names_stay_inside_memory(vault, snap):
    before = set(snap(vault))
    folder, outcomes = apply(vault, capture_block(name="../../../etc/passwd"))
    assert outcomes[0]["file"] == "project_etc_passwd.md"
    assert set(snap(vault)) - before == {"atlas/memory/project_etc_passwd.md"}


def test_same_name_same_body_refreshes_last_seen_and_sources(vault):
    folder, _ = apply(vault, capture_block(name="Refresh me", sources=["a"]))
    path = folder.memory / "project_refresh_me.md"
    text = path.read_text().replace("last_seen: 2026-11-22", "last_seen: 2026-01-01")
    path.write_text(text)
    _, outcomes = apply(vault, capture_block(name="Refresh me", sources=["b"]))
    assert outcomes[0]["status"] == "refreshed"
    meta, body = read_note(path)
    assert meta["last_seen"] == TODAY and meta["sources"] == ["a", "b"] and body == "Body text."


def test_same_name_other_body_writes_a_new_version_that_supersedes(vault):
    folder, _ = apply(vault, capture_block(name="Plan"))
    _, outcomes = apply(vault, capture_block(name="Plan", body="A different plan."))
    assert outcomes[0]["status"] == "written" and outcomes[0]["file"] == "project_plan_v2.md"
    assert outcomes[0]["supersedes"] == "project_plan.md" and "both are kept" in outcomes[0]["note"]
    old, _ = read_note(folder.memory / "project_plan.md")
    new, body = read_note(folder.memory / "project_plan_v2.md")
    assert old["superseded_by"] == "project_plan_v2.md" and new["supersedes"] == "project_plan.md"
    assert body == "A different plan."
    listed = index.listed(folder.index.read_text())
    assert listed["project_plan.md"] == "Archive" and listed["project_plan_v2.md"] == "Active Projects"


def _hand_edit(path):
    """What an operator does: raise the confidence and write a longer body."""
    text = path.read_text().replace("confidence: medium", "confidence: high")
    path.write_text(text.replace("Body text.", "Body text, checked by hand and made longer."))


def test_a_note_edited_by_hand_is_not_superseded_by_a_repeated_capture(vault, snap):
    folder, _ = apply(vault, capture_block(name="Plan", confidence="medium"))
    _hand_edit(folder.memory / "project_plan.md")
    before = snap(vault)
    _, outcomes = apply(vault, capture_block(name="Plan", confidence="medium"))
    assert outcomes[0]["status"] == "rejected" and "written by a person" in outcomes[0]["reason"]
    assert '"supersedes": "project_plan.md"' in outcomes[0]["reason"]
    assert snap(vault) == before  # the operator's version stays, no _v2, INDEX untouched
    _, outcomes = apply(vault, capture_block(name="Plan", supersedes="project_plan.md"))
    assert outcomes[0]["status"] == "written" and outcomes[0]["file"] == "project_plan_v2.md"


def test_a_note_not_known_to_be_the_runtimes_counts_as_a_persons(vault, snap):
    before = snap(vault)  # the sample's notes were written by hand: no runtime_hash
    _, outcomes = apply(vault, capture_block(type="feedback", name="Flag stale facts", body="Other."))
    assert outcomes[0]["status"] == "rejected" and snap(vault) == before


def test_a_refresh_does_not_turn_a_persons_note_into_the_runtimes(vault):
    folder, _ = apply(vault, capture_block(name="Plan"))
    path = folder.memory / "project_plan.md"
    path.write_text(path.read_text().replace("Body text.", "Edited."))
    assert apply(vault, capture_block(name="Plan", body="Edited.", sources=["b"]))[1][0]["status"] == "refreshed"
    assert apply(vault, capture_block(name="Plan", body="Third."))[1][0]["status"] == "rejected"


def test_the_runtime_stays_the_writer_of_notes_it_refreshed_or_retired(vault):
    folder, _ = apply(vault, capture_block(name="Plan"))
    apply(vault, capture_block(name="Plan", sources=["again"]))  # refreshed by the runtime
    assert notes.written_by_runtime((folder.memory / "project_plan.md").read_text())
    _, outcomes = apply(vault, capture_block(name="Plan", body="Two."))
    assert outcomes[0]["file"] == "project_plan_v2.md"
    assert notes.written_by_runtime((folder.memory / "project_plan.md").read_text())  # retired


def test_supersedes_links_old_and_new_and_never_deletes(vault):
    folder, outcomes = apply(vault, capture_block(type="decision", name="Use Prefect",
                                                  supersedes="decision_orchestrator_dagster.md"))
    assert outcomes[0]["supersedes"] == "decision_orchestrator_dagster.md"
    old, _ = read_note(folder.memory / "decision_orchestrator_dagster.md")
    assert old["superseded_by"] == "decision_use_prefect.md"
    assert index.listed(folder.index.read_text())["decision_orchestrator_dagster.md"] == "Archive"


def test_merge_into_appends_once_and_refreshes(vault):
    folder, outcomes = apply(vault, capture_block(name="x", merge_into="project_meetup_talk.md",
                                                  body="Slides are due on 2026-12-01.", sources=["new"]))
    assert outcomes[0] == {"name": "x", "type": "project", "status": "merged", "file": "project_meetup_talk.md"}
    meta, body = read_note(folder.memory / "project_meetup_talk.md")
    assert body.endswith("Update 2026-11-22: Slides are due on 2026-12-01.")
    assert "new" in meta["sources"] and meta["last_seen"] == TODAY
    apply(vault, capture_block(name="x", merge_into="project_meetup_talk.md", body="Slides are due on 2026-12-01."))
    assert read_note(folder.memory / "project_meetup_talk.md")[1].count("Slides are due") == 1


def test_references_to_missing_notes_are_rejected(vault):
    _, outcomes = apply(vault, capture_block(merge_into="project_nope.md") + "\n"
                        + capture_block(name="y", supersedes="../../persona/IDENTITY.md"))
    assert [o["status"] for o in outcomes] == ["rejected", "rejected"]
    assert "no note memory/project_nope.md" in outcomes[0]["reason"]


def test_tools_md_without_memory_write_rejects_captures(vault, snap):
    before = snap(vault)
    _, outcomes = apply(vault, capture_block(), tools=ToolsConfig(write=("journal/",)))
    assert outcomes[0]["status"] == "rejected" and "tools.md" in outcomes[0]["reason"]
    assert snap(vault) == before


def test_symlinks_out_of_the_agent_folder_are_refused(vault, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = vault / "atlas" / "memory" / "project_test_note.md"
    target.symlink_to(outside / "stolen.md")
    _, outcomes = apply(vault, capture_block())
    assert outcomes[0]["status"] == "rejected" and "not a regular file" in outcomes[0]["reason"]
    assert list(outside.iterdir()) == []


def test_a_memory_folder_that_is_a_symlink_is_refused(vault, tmp_path):
    memory = vault / "atlas" / "memory"
    moved = tmp_path / "elsewhere"
    memory.rename(moved)
    memory.symlink_to(moved)
    _, outcomes = apply(vault, capture_block())
    assert outcomes[0]["status"] == "rejected" and "link" in outcomes[0]["reason"]
    assert not (moved / "project_test_note.md").exists()
