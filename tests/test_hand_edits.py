"""Hand edits while runs go on (spec/05, spec/11): an operator edits notes and INDEX.md
by hand while runs refresh, merge into and supersede them. No edit is ever overwritten
unseen: INDEX.md is updated again on top of the edit, a note gets one more attempt from a
fresh read, and a capture whose note keeps changing is rejected with the reason in the
journal and the log."""

import multiprocessing
import os
import random
import sys
import time
from datetime import date
from hashlib import sha256

import pytest

from atomic_vault import AtomicAgent, fileio, index, runlog
from atomic_vault.backends import files
from atomic_vault.backends.files import FileMemory, replace_if
from atomic_vault.backends.postgres import PostgresMemory
from atomic_vault.backends.sqlite import SQLiteMemory
from atomic_vault.migrate import migrate_memory
from atomic_vault.notes import stamped
from atomic_vault.protocols import UNCHECKED, NoteChanged
from atomic_vault.vault import open_agent

from conftest import ScriptedModel, capture_block

VERDEMAR = "project_verdemar_migration.md"
DAGSTER = "decision_orchestrator_dagster.md"
STALE = "feedback_flag_stale_facts.md"  # its name, "Flag stale facts", gives its file name
TODAY = date.today().isoformat()


# ---------------------------------------------------------------- how operators save

def save_by_rename(path, text):
    """What most editors do: write a copy beside the file, then rename it over."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def save_in_place(path, text):
    """What others do: rewrite the same file (same inode)."""
    with open(path, "r+b") as handle:
        handle.write(text.encode("utf-8"))
        handle.truncate()


def hand_edit(memory, folder, file, change, style):
    """Change memory/<file> (or INDEX.md) the way an operator would, outside the runtime."""
    if memory.name == "postgres":  # another tool writing the row, without a compare
        if file == "INDEX.md":
            memory.put_index(folder, change(memory.get_index(folder)))
        else:
            memory.put(folder, file, change(memory.get(folder, file)))
        return
    path = folder.index if file == "INDEX.md" else folder.memory / file
    style(path, change(path.read_text(encoding="utf-8")))


class HandEdits:
    """The memory backend under test, with an operator whose edit lands exactly between
    the runtime's read of a file and its write: the race, made certain."""

    def __init__(self, inner, style):
        self.inner, self.name, self.style = inner, inner.name, style
        self.pending: dict[str, int] = {}  # file -> how many of its next writes to race
        self.made = 0

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def race(self, folder, file):
        if self.pending.get(file, 0) > 0:
            self.pending[file] -= 1
            self.made += 1
            mark = self.made
            if file == "INDEX.md":
                change = lambda text: text + f"Hand edit {mark}: keep this line.\n"  # noqa: E731
            else:
                change = lambda text: text.replace("\nconfidence: ", f"\nhand_edit_{mark}: true\nconfidence: ", 1)  # noqa: E731
            hand_edit(self.inner, folder, file, change, self.style)

    def put(self, folder, file, text, *, expected=UNCHECKED):
        self.race(folder, file)
        self.inner.put(folder, file, text, expected=expected)

    def put_index(self, folder, text, *, expected=UNCHECKED):
        self.race(folder, "INDEX.md")
        self.inner.put_index(folder, text, expected=expected)


@pytest.fixture(params=["files, rename", "files, in place", "sqlite, rename", "postgres"])
def memory(request, vault):
    """(HandEdits over each memory backend, the agent folder holding the sample notes)."""
    folder = open_agent("atlas", vault)
    name = request.param.split(",")[0]
    style = save_in_place if request.param.endswith("in place") else save_by_rename
    if name == "postgres":
        inner = PostgresMemory(request.getfixturevalue("pg_url"))
        migrate_memory(folder, FileMemory(), inner)
    else:
        inner = FileMemory() if name == "files" else SQLiteMemory()
    return HandEdits(inner, style), folder


def run(vault, memory, *blocks):
    return AtomicAgent("atlas", root=vault, memory=memory,
                       model=ScriptedModel("\n".join(blocks))).call("go")


# ---------------------------------------------------------------- INDEX.md

def test_an_index_edited_mid_update_keeps_the_edit_and_gains_the_line(vault, memory):
    memory, folder = memory
    memory.pending["INDEX.md"] = 1
    result = run(vault, memory, capture_block(name="Harbour visit", body="Visit on Friday."))
    assert result.captures[0]["status"] == "written" and "warning" not in result.captures[0]
    text = memory.get_index(folder)
    assert "Hand edit 1: keep this line." in text
    assert index.listed(text)["project_harbour_visit.md"] == "Active Projects"


def test_an_index_that_keeps_changing_leaves_a_warning_not_a_lost_edit(vault, memory):
    memory, folder = memory
    memory.pending["INDEX.md"] = 5
    result = run(vault, memory, capture_block(name="Harbour visit", body="Visit on Friday."))
    outcome = result.captures[0]
    assert outcome["status"] == "written" and memory.get(folder, outcome["file"])
    assert "INDEX.md changed while being updated, 5 times" in outcome["warning"]
    assert "doctor atlas --repair" in outcome["warning"]
    text = memory.get_index(folder)
    assert all(f"Hand edit {n}: keep this line." in text for n in range(1, 6))
    assert "project_harbour_visit.md" not in text
    record = next(r for _, _, r in runlog.records(folder) if r["run_id"] == result.run_id)
    assert record["captures"][0]["warning"] == outcome["warning"]


# ---------------------------------------------------------------- notes

def body_of(memory, folder, file):
    return memory.get(folder, file).split("---\n", 2)[2]


def test_a_note_refreshed_while_edited_by_hand_keeps_the_edit(vault, memory):
    memory, folder = memory
    memory.pending[STALE] = 1
    result = run(vault, memory, capture_block(type="feedback", name="Flag stale facts",
                                              body=body_of(memory, folder, STALE), sources=["call with Rui"]))
    changes = result.captures[0].pop("changes")
    assert result.captures[0] == {"name": "Flag stale facts", "type": "feedback",
                                  "status": "refreshed", "file": STALE}
    text = memory.get(folder, STALE)
    assert [c["file"] for c in changes] == [STALE] and changes[0]["after"] == sha256(text.encode()).hexdigest()
    assert "hand_edit_1: true" in text and f"last_seen: {TODAY}" in text and "- call with Rui" in text


def test_a_note_merged_into_while_edited_by_hand_keeps_the_edit(vault, memory):
    memory, folder = memory
    memory.pending[VERDEMAR] = 1
    result = run(vault, memory, capture_block(name="Backfill fixed", body="The null warehouse codes are fixed.",
                                              merge_into=VERDEMAR))
    assert result.captures[0]["status"] == "merged"
    text = memory.get(folder, VERDEMAR)
    assert "hand_edit_1: true" in text
    assert f"Update {TODAY}: The null warehouse codes are fixed." in text


def test_a_note_edited_by_hand_while_a_capture_would_version_it_is_kept(vault, memory):
    """The runtime wrote the note, so another body would version it; an operator edits it
    meanwhile, and the second try sees a person's note: hand edits win (spec/05)."""
    memory, folder = memory
    memory.inner.put(folder, STALE, stamped(memory.get(folder, STALE)))  # as if the runtime wrote it
    before = memory.get_index(folder)
    memory.pending[STALE] = 1
    result = run(vault, memory, capture_block(type="feedback", name="Flag stale facts",
                                              body="Flag facts older than 7 days."))
    outcome = result.captures[0]
    assert outcome["status"] == "rejected" and "last written by a person" in outcome["reason"]
    old = memory.get(folder, STALE)
    assert "hand_edit_1: true" in old and "superseded_by" not in old
    assert memory.get(folder, "feedback_flag_stale_facts_v2.md") is None
    assert memory.get_index(folder) == before


def test_an_explicit_supersession_of_an_edited_note_is_linked_on_a_second_try(vault, memory):
    memory, folder = memory
    memory.pending[DAGSTER] = 1
    result = run(vault, memory, capture_block(type="decision", name="Dagster on a larger VM",
                                              body="Dagster stays, on a larger VM.", supersedes=DAGSTER))
    assert result.captures[0]["file"] == "decision_dagster_on_a_larger_vm.md"
    old = memory.get(folder, DAGSTER)
    assert "hand_edit_1: true" in old and "superseded_by: decision_dagster_on_a_larger_vm.md" in old


def test_a_note_that_keeps_changing_rejects_the_capture_and_says_where(vault, memory):
    memory, folder = memory
    before = memory.get_index(folder)
    memory.pending[STALE] = 2
    result = run(vault, memory, capture_block(type="feedback", name="Flag stale facts",
                                              body=body_of(memory, folder, STALE), sources=["call with Rui"]))
    reason = f"memory/{STALE} changed while being updated, twice"
    assert result.captures[0]["status"] == "rejected" and reason in result.captures[0]["reason"]
    text = memory.get(folder, STALE)
    assert "hand_edit_1: true" in text and "hand_edit_2: true" in text
    assert "call with Rui" not in text and f"last_seen: {TODAY}" not in text
    assert memory.get_index(folder) == before
    record = next(r for _, _, r in runlog.records(folder) if r["run_id"] == result.run_id)
    assert reason in record["captures"][0]["reason"]
    journal = "".join(path.read_text() for path in folder.journal.glob("*/*.md"))
    assert f"rejected Flag stale facts: {reason}" in journal


def test_a_rejected_supersession_takes_back_its_new_note(vault, memory):
    memory, folder = memory
    before = memory.get_index(folder)
    memory.pending[STALE] = 2
    result = run(vault, memory, capture_block(type="feedback", name="Flag stale facts",
                                              body="Flag facts older than 7 days.", supersedes=STALE))
    assert result.captures[0]["status"] == "rejected"
    assert f"memory/{STALE} changed while being updated, twice" in result.captures[0]["reason"]
    assert memory.get(folder, "feedback_flag_stale_facts_v2.md") is None
    assert "feedback_flag_stale_facts_v2.md" not in memory.scan(folder)[0]
    assert memory.get_index(folder) == before
    old = memory.get(folder, STALE)
    assert "hand_edit_2: true" in old and "superseded_by" not in old


def test_a_supersession_whose_old_note_cannot_be_written_leaves_nothing(vault):
    """Regression: the new note and its INDEX line used to stay although the capture was
    reported rejected. Here the operator replaces the old note by a link mid-run."""
    folder = open_agent("atlas", vault)
    before = FileMemory().get_index(folder)

    class LinkedMeanwhile(FileMemory):
        def put(self, folder_, file, text, *, expected=UNCHECKED):
            if file == STALE:
                target = folder.path / "elsewhere.md"
                target.write_text((folder.memory / STALE).read_text())
                (folder.memory / STALE).unlink()
                (folder.memory / STALE).symlink_to(target)
            super().put(folder_, file, text, expected=expected)

    result = run(vault, LinkedMeanwhile(), capture_block(type="feedback", name="Flag stale facts",
                                                         body="Flag facts older than 7 days.",
                                                         supersedes=STALE))
    assert result.captures[0]["status"] == "rejected"
    assert "not a regular file" in result.captures[0]["reason"]
    assert not (folder.memory / "feedback_flag_stale_facts_v2.md").exists()
    assert FileMemory().get_index(folder) == before


def test_a_note_created_by_hand_under_the_same_name_is_never_replaced(vault, memory):
    memory, folder = memory
    by_hand = memory.get(folder, VERDEMAR).replace("Verdemar pipeline migration", "Harbour visit")
    target = "project_harbour_visit.md"

    def create_first(folder_, file, text, *, expected=UNCHECKED, put=memory.inner.put):
        if file == target and memory.get(folder, target) is None:
            memory.inner.put(folder, target, by_hand)  # the operator, a moment before the run
        put(folder_, file, text, expected=expected)

    memory.put = create_first
    result = run(vault, memory, capture_block(name="Harbour visit", body="Visit on Friday."))
    outcome = result.captures[0]
    assert outcome["status"] == "rejected" and "last written by a person" in outcome["reason"]
    assert memory.get(folder, target) == by_hand  # kept whole: not replaced, not superseded
    assert memory.get(folder, "project_harbour_visit_v2.md") is None


# ---------------------------------------------------------------- the file layer

EDITS = {"rename": save_by_rename, "in place, same size": save_in_place}


@pytest.fixture(params=["exchange", "check then rename"])
def swap(request, monkeypatch):
    """Run with the Linux exchange of names, and with the portable check-then-rename."""
    if request.param == "exchange" and not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux only")
    if request.param == "check then rename":
        monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    return request.param


@pytest.mark.parametrize("style", EDITS)
def test_an_edit_while_the_new_text_is_synced_is_detected(vault, monkeypatch, swap, style):
    folder = open_agent("atlas", vault)
    path = folder.memory / VERDEMAR
    seen = path.read_text()
    edited = seen.replace("confidence: high", "confidence: HIGH")  # the same size
    real = fileio.synced_temp

    def slow_sync(target, raw, *args, **kwargs):
        temp = real(target, raw, *args, **kwargs)
        EDITS[style](path, edited)  # lands during the fsync, after the first comparison
        return temp

    monkeypatch.setattr(fileio, "synced_temp", slow_sync)
    with pytest.raises(NoteChanged, match="changed while being updated"):
        replace_if(folder, path, seen + "Run text.\n", seen)
    assert path.read_text() == edited
    assert not list(folder.memory.glob(".*avtmp"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
@pytest.mark.parametrize("style", EDITS)
def test_an_edit_after_the_last_check_is_put_back(vault, monkeypatch, style):
    folder = open_agent("atlas", vault)
    path = folder.memory / VERDEMAR
    seen = path.read_text()
    edited = seen.replace("confidence: high", "confidence: HIGH")
    real = files._exchange
    calls = []

    def late(first, second):
        if not calls:
            EDITS[style](path, edited)  # after every comparison, just before the swap
        calls.append(first)
        return real(first, second)

    monkeypatch.setattr(files, "_exchange", late)
    with pytest.raises(NoteChanged):
        replace_if(folder, path, seen + "Run text.\n", seen)
    assert path.read_text() == edited and len(calls) == 2
    assert not list(folder.memory.glob(".*avtmp"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_a_second_save_while_the_first_is_put_back_wins(vault, monkeypatch):
    folder = open_agent("atlas", vault)
    path = folder.memory / VERDEMAR
    seen = path.read_text()
    saves = [seen + "First hand edit.\n", seen + "First hand edit.\nSecond hand edit.\n"]
    real = files._exchange
    calls = []

    def late(first, second):
        if len(calls) < 2:
            save_by_rename(path, saves[len(calls)])
        calls.append(first)
        return real(first, second)

    monkeypatch.setattr(files, "_exchange", late)
    with pytest.raises(NoteChanged):
        replace_if(folder, path, seen + "Run text.\n", seen)
    assert path.read_text() == saves[1] and len(calls) == 3
    assert not list(folder.memory.glob(".*avtmp"))


def test_without_an_exchange_the_last_moment_before_the_rename_is_the_documented_window(
        vault, monkeypatch):
    """spec/11: where two names cannot be exchanged atomically, an edit that lands between
    the last check and the rename is lost. This pins that statement to the code."""
    folder = open_agent("atlas", vault)
    path = folder.memory / VERDEMAR
    seen = path.read_text()
    monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    real = os.replace

    def late_replace(source, target):
        if target == path and str(source).endswith(".avtmp"):  # the runtime's rename
            path.write_text(seen + "Too late.\n")
        real(source, target)

    monkeypatch.setattr(files.os, "replace", late_replace)
    replace_if(folder, path, seen + "Run text.\n", seen)
    assert path.read_text() == seen + "Run text.\n"


# ---------------------------------------------------------------- a real editor process

TARGETS = ("INDEX.md", VERDEMAR, "project_meetup_talk.md", DAGSTER)


def _editor(root, backend_url, stop, report):
    """An operator saving edits in a loop: each adds one numbered line to a file, by
    renaming a copy over it or by appending to it in place (like `echo >> note.md`)."""
    rng = random.Random(7)
    folder = open_agent("atlas", root)
    memory = PostgresMemory(backend_url) if backend_url else None
    counts = dict.fromkeys(TARGETS, 0)
    while not stop.is_set():
        file = rng.choice(TARGETS)
        counts[file] += 1
        line = f"Hand edit {counts[file]} of {file}.\n"
        if memory is not None:
            hand_edit(memory, folder, file, lambda text: text + line, None)
        else:
            path = folder.index if file == "INDEX.md" else folder.memory / file
            if rng.random() < 0.5:
                save_by_rename(path, path.read_text(encoding="utf-8") + line)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.write(fd, line.encode())
                os.close(fd)
        time.sleep(rng.uniform(0.002, 0.012))  # an operator gone wild: 50 to 500 saves a second
    report.put(counts)


@pytest.mark.parametrize("backend", ["files", "postgres"])
def test_a_real_editor_process_never_loses_an_edit(vault, request, backend):
    folder = open_agent("atlas", vault)
    url = None
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate_memory(folder, FileMemory(), PostgresMemory(url))
    memory = PostgresMemory(url) if url else FileMemory()
    ctx = multiprocessing.get_context("fork")
    stop, report = ctx.Event(), ctx.Queue()
    editor = ctx.Process(target=_editor, args=(str(vault), url, stop, report))
    editor.start()
    outcomes = []
    try:
        for i in range(30):
            answer = "\n".join([
                capture_block(name=f"Verdemar step {i}", body=f"Step {i} done.", merge_into=VERDEMAR),
                capture_block(name=f"Talk step {i}", body=f"Slide {i} drafted.", merge_into="project_meetup_talk.md"),
                capture_block(type="decision", name=f"Orchestrator revision {i}", body=f"Revision {i}.",
                              supersedes=DAGSTER),
            ])
            result = AtomicAgent("atlas", root=vault, memory=memory, model=ScriptedModel(answer)).call(f"run {i}")
            outcomes += result.captures
    finally:
        stop.set()
        counts = report.get(timeout=30)
        editor.join(30)
    assert editor.exitcode == 0 and sum(counts.values()) > 30
    for file, count in counts.items():
        text = memory.get_index(folder) if file == "INDEX.md" else memory.get(folder, file)
        lost = [n for n in range(1, count + 1) if f"Hand edit {n} of {file}.\n" not in text]
        assert not lost, f"hand edits {lost} of {file} were overwritten"
    rejected = [o["reason"] for o in outcomes if o["status"] == "rejected"]
    assert all("changed while being updated" in reason or "cannot be updated" in reason
               for reason in rejected), rejected
    assert len(outcomes) == 90 and runlog.verify(folder).ok
