"""A call does work proportional to what changed, not to the vault (spec/02 "Derived
state"): a new INDEX line is checked without parsing the INDEX, the note cache saves only
changed entries, and notes the run wrote itself are not parsed again on the next call;
yet a same-tick hand edit is still seen."""

import os

import pytest

from atomic_vault import AtomicAgent, catalog, index
from atomic_vault.vault import open_agent
from conftest import ScriptedModel, capture_block


def test_a_capture_does_not_parse_the_whole_index(vault, monkeypatch):
    def whole_index(text):
        raise AssertionError("the whole INDEX was parsed for one new line")
    monkeypatch.setattr(index, "listed", whole_index)
    result = AtomicAgent("atlas", root=vault, model=ScriptedModel(capture_block(name="One line"))).call("x")
    assert [c["status"] for c in result.captures] == ["written"]
    assert "](project_one_line.md)" in (vault / "atlas/memory/INDEX.md").read_text()


def test_lists_finds_only_the_note_line_of_that_file():
    text = ("# Memory Index\n\n## Reference\n- [a](reference_a.md) — see [b](project_b.md)\n"
            "- [c \\](x.md)](project_c.md) — d\n")
    assert index.lists(text, "reference_a.md") and index.lists(text, "project_c.md")
    assert not index.lists(text, "project_b.md") and not index.lists(text, "x.md")
    assert all(index.lists(text, f) == (f in index.listed(text))
               for f in ("reference_a.md", "project_b.md", "project_c.md", "x.md", "nope.md"))


def test_the_cache_save_appends_only_the_changed_entries(vault):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel("ok"))
    agent.call("first")  # builds the cache: every entry written once
    base = agent.folder.state / catalog.CACHE_NAME
    before = base.stat()
    changes = agent.folder.state / catalog.CHANGES_NAME
    size = changes.stat().st_size if changes.exists() else 0
    agent.model = ScriptedModel(capture_block(name="Appended"))
    agent.call("second")
    agent.model = ScriptedModel("ok")
    agent.call("third")  # its scan finds the note the second call wrote
    after = base.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert changes.stat().st_size > size
    catalog._MEMO.clear()  # a new process: the marshal file plus the appended frames
    notes, _ = catalog.scan(agent.folder)
    assert "project_appended.md" in notes
    catalog._MEMO.clear()
    catalog.forget(agent.folder)
    assert catalog.scan(agent.folder)[0] == notes


def test_a_torn_change_frame_is_ignored_and_the_next_save_writes_anew(vault):
    folder = open_agent("atlas", vault)
    catalog.scan(folder)
    AtomicAgent("atlas", root=vault, model=ScriptedModel(capture_block(name="Torn"))).call("x")
    catalog.scan(folder)
    changes = folder.state / catalog.CHANGES_NAME
    raw = changes.read_bytes()
    assert raw
    changes.write_bytes(raw[:-3])
    catalog._MEMO.clear()
    notes, broken = catalog.scan(folder)  # the torn frame's entry is re-read from the file
    assert "project_torn.md" in notes and broken == {}
    assert catalog._MEMO[folder.memory].pending is None or changes.read_bytes() != raw[:-3]


def _parses(monkeypatch):
    calls = []
    real = catalog.check_note_text

    def counted(text, path):
        calls.append(path.name)
        return real(text, path)
    monkeypatch.setattr(catalog, "check_note_text", counted)
    return calls


def test_one_instance_in_a_loop_parses_only_the_note_each_call_wrote(vault, monkeypatch):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel("ok"))
    agent.call("warm up")
    calls = _parses(monkeypatch)
    for n in range(6):
        agent.model = ScriptedModel(capture_block(name=f"Loop note {n}"))
        agent.call(f"call {n}")
    # each note is parsed once, after its own call wrote it; never again while it is young
    assert sorted(calls) == sorted(f"project_loop_note_{n}.md" for n in range(5))


def _frozen(monkeypatch, signature):
    """Every note reports the same stat signature: a same-tick, same-size edit."""
    real = catalog._note_stats

    def stats(memory, listed=None):
        for name, st in real(memory, listed):
            values = list(st)
            values[1], values[6] = signature[3], signature[2]  # st_ino, st_size
            yield name, os.stat_result(values, {"st_mtime_ns": signature[0], "st_ctime_ns": signature[1]})
    monkeypatch.setattr(catalog, "_note_stats", stats)


def test_a_same_tick_hand_edit_of_a_note_the_runtime_just_wrote_is_seen(vault, monkeypatch):
    AtomicAgent("atlas", root=vault, model=ScriptedModel(capture_block(name="Quick", description="aaaa"))
                ).call("x")
    folder = open_agent("atlas", vault)
    path = folder.memory / "project_quick.md"
    _frozen(monkeypatch, (os.stat(path).st_mtime_ns, os.stat(path).st_ctime_ns, 1, 1))
    catalog._MEMO.clear()
    catalog.forget(folder)
    assert catalog.scan(folder)[0]["project_quick.md"]["description"] == "aaaa"
    path.write_text(path.read_text().replace("description: aaaa", "description: bbbb"))
    assert catalog.scan(folder)[0]["project_quick.md"]["description"] == "bbbb"
    catalog._MEMO.clear()  # also from the saved cache, in a new process
    path.write_text(path.read_text().replace("description: bbbb", "description: cccc"))
    assert catalog.scan(folder)[0]["project_quick.md"]["description"] == "cccc"


def test_an_old_file_is_trusted_by_its_signature_once_its_text_was_checked(vault, monkeypatch):
    folder = open_agent("atlas", vault)
    catalog.forget(folder)
    monkeypatch.setattr(catalog, "RACY_NS", 10**20)  # everything counts as just changed
    catalog.scan(folder)
    assert all(entry[3] is not None for entry in catalog._MEMO[folder.memory].entries.values())
    monkeypatch.setattr(catalog, "RACY_NS", 0)
    calls = _parses(monkeypatch)
    catalog.scan(folder)
    assert calls == []  # same text: nothing parsed again, now trusted
    assert all(entry[3] is None for entry in catalog._MEMO[folder.memory].entries.values())


def _notes(folder, count):
    from atomic_vault.notes import render_note
    for n in range(count):
        (folder.memory / f"project_many_{n}.md").write_text(render_note(
            {"schema_version": 1, "name": f"Many {n}", "description": "d", "type": "project",
             "captured": "2026-01-01", "last_seen": "2026-01-01", "sources": ["s"],
             "confidence": "high"}, "body"), encoding="utf-8")


def test_a_first_build_over_a_second_shows_progress_that_adds_up(vault, monkeypatch):
    folder = open_agent("atlas", vault)
    _notes(folder, 450)
    catalog.forget(folder)
    ticks = iter(range(10**6))
    monkeypatch.setattr(catalog, "_clock", lambda: next(ticks) * 0.6)  # 0.6 s between looks
    seen = {}

    def start(total):
        seen["total"], seen["done"], seen["finished"] = total, 0, False
        return (lambda n: seen.__setitem__("done", seen["done"] + n),
                lambda: seen.__setitem__("finished", True))
    monkeypatch.setattr(catalog, "progress", start)
    notes, _ = catalog.scan(folder)
    assert seen["finished"] and seen["done"] == seen["total"] >= len(notes) >= 450
    seen.clear()
    catalog.scan(folder)  # nothing to read: no bar
    assert seen == {}


def test_a_quick_build_shows_no_progress(vault, monkeypatch):
    folder = open_agent("atlas", vault)
    catalog.forget(folder)
    monkeypatch.setattr(catalog, "_clock", lambda: 0.0)
    monkeypatch.setattr(catalog, "progress", lambda total: pytest.fail("a bar for a quick build"))
    assert catalog.scan(folder)[0]


def test_the_cli_shows_no_bar_when_stderr_is_not_a_terminal(vault):
    from click.testing import CliRunner
    from atomic_vault.cli import cli

    catalog.progress = None
    result = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", "hello", "--model", "offline"])
    assert result.exit_code == 0, result.output
    assert catalog.progress is None


def test_the_note_selection_after_a_few_changes_is_the_one_a_full_sort_makes(vault):
    import random
    from atomic_vault import assembly
    from atomic_vault.notes import render_note

    folder = open_agent("atlas", vault)
    rng = random.Random(7)

    def write(n, pinned=False, day=None, archived=False):
        fields = {"schema_version": 1, "name": f"Sel {n}", "description": "d", "type": "project",
                  "captured": "2026-01-01", "last_seen": day or f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                  "sources": ["s"], "confidence": "high"}
        if pinned:
            fields["pinned"] = True
        if archived:
            fields["archived"] = True
        (folder.memory / f"project_sel_{n}.md").write_text(render_note(fields, "b"), encoding="utf-8")

    for n in range(40):
        write(n, pinned=n % 9 == 0)
    for step in range(30):
        notes, _ = catalog.scan(folder)
        got = assembly.select_notes(notes, "2026-06-01", 5)
        assembly._SELECTION.clear()
        assert got == assembly.select_notes(notes, "2026-06-01", 5), step
        for _ in range(rng.randint(1, 3)):  # a new note, an edit, an archive, a removal, a pin
            n = rng.randint(0, 60)
            action = rng.choice(["write", "pin", "archive", "remove", "newest"])
            if action == "remove":
                (folder.memory / f"project_sel_{n}.md").unlink(missing_ok=True)
            else:
                write(n, pinned=action == "pin", archived=action == "archive",
                      day="2026-12-31" if action == "newest" else None)
