"""Prompt assembly (spec/04): canonical order, skipped notes, budget trimming, manifest."""

import hashlib
from datetime import date

import pytest

from atomic_vault import catalog, index
from atomic_vault.assembly import assemble
from atomic_vault.config import ModelConfig
from atomic_vault.errors import BudgetError
from atomic_vault.notes import render_note
from atomic_vault.vault import open_agent

TODAY = "2026-11-22"


def build(vault, config=None, work="Do the thing"):
    folder = open_agent("atlas", vault)
    notes, broken = catalog.scan(folder)
    assert broken == {}
    return folder, assemble(folder, config or ModelConfig(), notes, work, TODAY)


def test_layers_follow_the_canonical_order(vault):
    (vault / "atlas" / "goal.md").write_text("Ship the Verdemar migration.\n")
    folder, prompt = build(vault)
    kinds = [layer.layer for layer in prompt.layers]
    order = ["identity", "soul", "user", "goal", "tools", "memory index", "wiki index",
             "pinned note", "recent note", "journal"]
    assert [k for k in order if k in kinds] == order
    assert kinds == sorted(kinds, key=order.index)
    assert prompt.messages == [{"role": "user", "content": "Do the thing"}]
    assert [layer.source for layer in prompt.layers if layer.layer == "journal"] == [
        "journal/2026-11/2026-11-20.md", "journal/2026-11/2026-11-21.md"]


def test_absent_files_are_skipped(vault):
    (vault / "atlas" / "persona" / "SOUL.md").unlink()
    (vault / "atlas" / "wiki" / "INDEX.md").unlink()
    _, prompt = build(vault)
    sources = [layer.source for layer in prompt.layers]
    assert "persona/SOUL.md" not in sources and "wiki/INDEX.md" not in sources


def test_superseded_archived_and_expired_notes_are_left_out(vault):
    memory = vault / "atlas" / "memory"
    base = {"schema_version": 1, "description": "d", "type": "project", "captured": date(2026, 11, 21),
            "last_seen": date(2026, 11, 22), "sources": ["s"], "confidence": "high"}
    (memory / "project_archived.md").write_text(render_note({**base, "name": "A", "archived": True}, "b"))
    (memory / "project_expired.md").write_text(render_note({**base, "name": "E", "expires_at": date(2026, 1, 1)}, "b"))
    (memory / "project_fresh.md").write_text(render_note({**base, "name": "F"}, "b"))
    _, prompt = build(vault, ModelConfig(recent_notes=50))
    notes = {layer.source for layer in prompt.layers if layer.layer.endswith("note")}
    assert "memory/project_fresh.md" in notes
    assert not notes & {"memory/project_archived.md", "memory/project_expired.md",
                        "memory/decision_invoice_monthly.md"}


def test_pinned_notes_always_and_the_n_most_recent(vault):
    _, prompt = build(vault, ModelConfig(recent_notes=3))
    pinned = [layer.source for layer in prompt.layers if layer.layer == "pinned note"]
    recent = [layer.source for layer in prompt.layers if layer.layer == "recent note"]
    assert pinned == ["memory/feedback_brief_format.md", "memory/user_working_hours.md"]
    assert len(recent) == 3 and not set(recent) & set(pinned)


def test_manifest_lists_every_file_with_its_hash(vault):
    folder, prompt = build(vault)
    manifest = prompt.manifest
    for item in manifest["files"]:
        raw = (folder.path / item["source"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(raw).hexdigest()
        assert item["tokens"] > 0
    assert manifest["tokens"] == prompt.tokens <= manifest["budget"]
    assert manifest["work_item"]["sha256"] == hashlib.sha256(b"Do the thing").hexdigest()
    assert manifest["cuts"] == []
    assert manifest["cache_breakpoints"] == ["persona/USER.md", "tools.md", "wiki/INDEX.md",
                                             [b for b in prompt.system if b["layer"] == "recent note"][-1]["source"]]


def test_budget_trims_least_important_first_and_records_each_cut(vault):
    _, full = build(vault)
    _, prompt = build(vault, ModelConfig(max_input_tokens=full.tokens - 50))
    assert prompt.tokens <= prompt.budget
    assert prompt.cuts[0]["source"].startswith(("journal/", "memory/INDEX.md"))
    assert any(layer.layer == "recent note" for layer in prompt.layers)
    _, tiny = build(vault, ModelConfig(max_input_tokens=1200))
    kinds = {layer.layer for layer in tiny.layers}
    assert "journal" not in kinds and "recent note" not in kinds
    assert {c["source"] for c in tiny.cuts} >= {"journal/2026-11/2026-11-21.md"}
    assert tiny.tokens <= 1200


def test_persona_that_cannot_fit_is_a_budget_error(vault):
    with pytest.raises(BudgetError) as caught:
        build(vault, ModelConfig(max_input_tokens=256), work="x" * 4000)
    assert caught.value.field == "max_input_tokens" and "model.md" in caught.value.path


def test_ten_thousand_notes_stay_within_budget_index_included(tmp_path):
    root = tmp_path / "v"
    agent = root / "big"
    (agent / "persona").mkdir(parents=True)
    (agent / "persona" / "IDENTITY.md").write_text("# Big\n\nAn agent with many notes.\n")
    memory = agent / "memory"
    memory.mkdir()
    entries = []
    for i in range(10_000):
        fields = {"schema_version": 1, "name": f"Topic {i}", "description": f"Fact number {i} about things",
                  "type": "reference", "captured": date(2026, 1, 1), "last_seen": date(2026, 1, 1 + i % 28),
                  "sources": ["gen"], "confidence": "low"}
        name = f"reference_topic_{i:05d}.md"
        (memory / name).write_text(render_note(fields, f"Body {i} " * 40))
        entries.append(("Reference", index.entry_line({**fields, "file": name})))
    (memory / "INDEX.md").write_text(index.render(entries))
    folder = open_agent("big", root)
    notes, _ = catalog.scan(folder)
    prompt = assemble(folder, ModelConfig(max_input_tokens=8000), notes, "work", TODAY)
    assert prompt.tokens <= 8000
    layer = next(l for l in prompt.layers if l.layer == "memory index")
    assert layer.truncated and "more lines cut to fit the token budget" in layer.text
    assert any(c["source"] == "memory/INDEX.md" and c["action"] == "truncated" for c in prompt.cuts)
    assert sum(l.layer == "recent note" for l in prompt.layers) == 5
