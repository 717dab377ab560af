"""lint (spec/17): every check found and not found, on files, SQLite and PostgreSQL memory."""

import json
from datetime import date, datetime, timezone

import pytest
from click.testing import CliRunner

from atomic_vault import clock, index, lint
from atomic_vault.cli import cli
from atomic_vault.config import load_model_config
from atomic_vault.notes import parse_note_text, summarize
from atomic_vault.testing import make_agent, note_text

TODAY = date(2026, 12, 1)
WORDS = ("the invoice for the kestrel audit goes out on the last working day of each month with "
         "the hours from the time sheet and the agreed day rate applied to every line item").split()


@pytest.fixture
def agent(tmp_path, monkeypatch):
    fixed = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "now", lambda zone: fixed.astimezone(zone))
    return make_agent(tmp_path / "vault", "bot")


def store(memory, folder, notes: dict[str, str], extra_lines=(), listed=None):
    """Put the notes and an INDEX listing ``listed`` (default: every note, as doctor would)."""
    entries = []
    for file, text in notes.items():
        memory.put(folder, file, text)
        if listed is None or file in listed:
            try:
                meta, _ = parse_note_text(text, folder.memory / file)
                summary = summarize({"superseded_by": None, **meta}, file)
            except Exception:
                continue
            live = not (summary["archived"] or summary["superseded_by"])
            entries.append((index.section_for(summary, live), index.entry_line(summary)))
    text = index.render(entries)
    for line in extra_lines:
        text = index.upsert(text, {"x": ("Active Projects", line)})
    memory.put_index(folder, text)


def checks(memory, folder, today=TODAY):
    return [(f.check, f.file) for f in lint.lint(folder, memory, load_model_config(folder.model), today)]


def av(folder, *args):
    return CliRunner().invoke(cli, ["--root", str(folder.root), *args])


def test_clean_memory_has_no_findings_and_exits_0(memory, agent):
    store(memory, agent, {"project_alpha.md": note_text("Alpha", "one thing"),
                          "project_beta.md": note_text("Beta", "another thing entirely")})
    assert checks(memory, agent) == []
    result = av(agent, "lint", "bot")
    assert result.exit_code == 0, result.output
    assert "memory is clean" in result.output


def test_findings_exit_1_and_json_lines_name_check_file_message_fix(memory, agent):
    store(memory, agent, {"project_alpha.md": note_text("Alpha", "one thing", colour="red")})
    result = av(agent, "lint", "bot", "--json")
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows == [{"check": "unknown_key", "file": "memory/project_alpha.md",
                     "message": "frontmatter key 'colour' is not in the note schema",
                     "fix": "remove it, or correct its spelling (spec/03 lists every key)"}]
    human = av(agent, "lint", "bot")
    assert human.exit_code == 1 and "unknown_key: memory/project_alpha.md" in human.output
    assert "fix: remove it" in human.output


def test_an_unknown_agent_is_a_usage_error(memory, agent):
    assert av(agent, "lint", "nobody").exit_code == 2


def test_same_normalised_name_is_a_duplicate(memory, agent):
    store(memory, agent, {"project_alpha.md": note_text("Alpha plan", "first wording of it"),
                          "decision_alpha.md": note_text("alpha  PLAN!", "something else", type="decision")})
    assert checks(memory, agent) == [("duplicate", "memory/project_alpha.md")]
    memory.put(agent, "decision_alpha.md", note_text("Beta plan", "something else", type="decision"))
    assert checks(memory, agent) == []


def test_same_body_is_an_exact_duplicate_and_retired_notes_are_not_compared(memory, agent):
    store(memory, agent, {"project_a.md": note_text("Apples", "The same body.\n"),
                          "project_b.md": note_text("Pears", "the  same BODY")})
    found = lint.lint(agent, memory, load_model_config(agent.model), TODAY)
    assert [(f.check, f.file) for f in found] == [("duplicate", "memory/project_b.md")]
    assert "the same body as memory/project_a.md" in found[0].message
    groups = lint.duplicate_groups(lint.read_notes(agent, memory)[0])
    assert [(g.files, g.exact) for g in groups] == [(("project_a.md", "project_b.md"), True)]
    store(memory, agent, {"project_a.md": note_text("Apples", "The same body.", archived=True),
                          "project_b.md": note_text("Pears", "the  same BODY")})
    assert checks(memory, agent) == []


def test_very_similar_bodies_are_near_duplicates(memory, agent):
    other = list(WORDS)
    other[5] = "verdemar"
    store(memory, agent, {"project_one.md": note_text("One", " ".join(WORDS)),
                          "project_two.md": note_text("Two", " ".join(other))})
    assert checks(memory, agent) == [("near_duplicate", "memory/project_two.md")]
    store(memory, agent, {"project_one.md": note_text("One", " ".join(WORDS)),
                          "project_two.md": note_text("Two", " ".join(reversed(WORDS)))})
    assert checks(memory, agent) == []


def test_similar_descriptions_are_near_duplicates(memory, agent):
    store(memory, agent, {
        "project_one.md": note_text("One", "x", description="weekly status mail to the kestrel team goes out every friday before noon with the open risks"),
        "project_two.md": note_text("Two", "y", description="weekly status mail to the kestrel team goes out every friday before noon with the open risk")})
    assert checks(memory, agent) == [("near_duplicate", "memory/project_two.md")]


def test_stale_notes_follow_stale_days_and_skip_pinned(memory, agent):
    store(memory, agent, {"project_old.md": note_text("Old", "x", last_seen="2026-06-01"),
                          "project_pinned.md": note_text("Pinned", "y", last_seen="2026-01-01", pinned=True),
                          "project_new.md": note_text("New", "z", last_seen="2026-11-30")})
    assert checks(memory, agent) == [("stale", "memory/project_old.md")]
    (agent.path / "model.md").write_text("```yaml\nstale_days: 400\n```\n", encoding="utf-8")
    assert checks(memory, agent) == []


def test_an_expired_note_still_listed_under_its_type(memory, agent):
    store(memory, agent, {"project_gone.md": note_text("Gone", "x", expires_at="2026-11-01")})
    assert checks(memory, agent) == [("expired_listed", "memory/project_gone.md")]
    store(memory, agent, {"project_gone.md": note_text("Gone", "x", expires_at="2026-11-01", archived=True)})
    assert checks(memory, agent) == []


def test_index_lines_without_notes_and_notes_without_lines(memory, agent):
    store(memory, agent, {"project_a.md": note_text("A", "x"), "project_b.md": note_text("B", "y")},
          extra_lines=["- [Ghost](project_ghost.md) — not there"], listed={"project_a.md"})
    found = lint.lint(agent, memory, load_model_config(agent.model), TODAY)
    assert [(f.check, f.file) for f in found] == [("index_dangling", "memory/INDEX.md"),
                                                   ("index_missing", "memory/project_b.md")]
    assert "project_ghost.md" in found[0].message
    store(memory, agent, {"project_a.md": note_text("A", "x"), "project_b.md": note_text("B", "y")})
    assert checks(memory, agent) == []


def test_one_sided_supersession_links_either_way(memory, agent):
    store(memory, agent, {"project_new.md": note_text("New", "x", supersedes="project_old.md"),
                          "project_old.md": note_text("Old", "y"),
                          "project_orphan.md": note_text("Orphan", "z", superseded_by="project_none.md")})
    assert checks(memory, agent) == [("one_sided_supersession", "memory/project_new.md"),
                                     ("one_sided_supersession", "memory/project_orphan.md")]
    memory.delete(agent, "project_orphan.md")
    store(memory, agent, {"project_new.md": note_text("New", "x", supersedes="project_old.md"),
                          "project_old.md": note_text("Old", "y", superseded_by="project_new.md")})
    assert checks(memory, agent) == []


def test_an_old_schema_version_is_named_even_though_the_note_is_broken(memory, agent):
    store(memory, agent, {"project_a.md": note_text("A", "x", schema_version=0)})
    assert ("old_schema", "memory/project_a.md") in checks(memory, agent)
    store(memory, agent, {"project_a.md": note_text("A", "x")})
    assert checks(memory, agent) == []


def test_an_oversized_note(memory, agent):
    store(memory, agent, {"project_big.md": note_text("Big", "word " * 7000)})
    assert checks(memory, agent) == [("oversized", "memory/project_big.md")]


def test_an_index_over_its_share_of_the_budget(memory, agent):
    notes = {f"project_n{i}.md": note_text(f"Note number {i}", f"body {i}") for i in range(12)}
    store(memory, agent, notes)
    (agent.path / "model.md").write_text("```yaml\nmax_input_tokens: 256\n```\n", encoding="utf-8")
    assert checks(memory, agent) == [("index_budget", "memory/INDEX.md")]
    (agent.path / "model.md").write_text("```yaml\nmax_input_tokens: 12000\n```\n", encoding="utf-8")
    assert checks(memory, agent) == []


def test_boilerplate_shared_by_many_notes_makes_no_candidates():
    """A shingle that more than BUCKET_LIMIT notes share is skipped, so a vault whose
    notes all start alike costs no square number of comparisons."""
    sets = {f"n{i}": frozenset([1, 2, 3, 1000 + i]) for i in range(lint.BUCKET_LIMIT + 1)}
    assert lint._candidates(sets) == set()
    sets = {"a": frozenset([5, 6, 7, 8]), "b": frozenset([5, 6, 7, 9]), "c": frozenset([50, 60, 70, 80])}
    assert lint._candidates(sets) == {("a", "b")}
