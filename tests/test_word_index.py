"""The files backend's word index on disk (spec/11): a new process reads only the notes
that changed, a save appends only their postings, and a damaged, torn or foreign file is
rebuilt, never trusted; deleting it changes only speed, never a result."""

import os
import random
import shutil

import pytest

from atomic_vault import catalog, fileio, wordindex
from atomic_vault.backends.files import FileMemory
from atomic_vault.testing import make_agent, note_text

TOPICS = "lisbon porto garden invoice supplier renewal door code tomato budget sprint".split()
QUERIES = ["lisbon door code", "supplier renewal budget", "tomato garden", "sprint", "porto invoice code"]


@pytest.fixture(autouse=True)
def trusted_signatures(monkeypatch):
    """Notes written by a test are seconds old; the catalog would not trust their signatures
    yet (its racy window), and the index would read them all again in every process."""
    monkeypatch.setattr(catalog, "RACY_NS", 0)


@pytest.fixture
def folder(tmp_path):
    folder = make_agent(tmp_path)
    rng = random.Random(7)
    memory = FileMemory()
    for n in range(40):
        body = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(3, 30)))
        memory.put(folder, f"project_note_{n:02}.md", note_text(f"note {n}", body + "."))
    return folder


def new_process():
    """What a new process starts with: no catalog or text held in memory."""
    catalog._MEMO.clear()
    fileio._TEXTS.clear()
    memory = FileMemory()
    reads: list[str] = []
    real_get = memory.get

    def counting_get(folder, file):
        reads.append(file)
        return real_get(folder, file)

    memory.get = counting_get
    return memory, reads


def search(memory, folder, query, limit=10):
    memory.scan(folder)  # as a run does before it assembles
    return [(hit.file, hit.score) for hit in memory.search(folder, query, limit=limit, match="any")]


def index_of(memory, folder):
    return memory._words[folder.memory]


def fresh_results(folder):
    """The results of an index built from the files in memory only (nothing loaded)."""
    catalog._MEMO.clear()
    memory = FileMemory()
    memory._words[folder.memory] = wordindex.WordIndex()  # in memory only: nothing loaded or saved
    return {query: search(memory, folder, query) for query in QUERIES}


def test_a_new_process_uses_the_saved_index_and_reads_no_unchanged_note(folder):
    memory, _ = new_process()
    first = {query: search(memory, folder, query) for query in QUERIES}
    assert index_of(memory, folder).reads == 40
    assert (folder.state / wordindex.BASE_NAME).is_file()

    memory, reads = new_process()
    again = {query: search(memory, folder, query) for query in QUERIES}
    assert again == first
    assert index_of(memory, folder).reads == 0
    shown = {file for hits in again.values() for file, _ in hits}
    assert set(reads) <= shown  # only the hits' own texts, for their snippets


def test_a_note_changed_by_hand_is_read_again_and_only_it(folder):
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    path = folder.memory / "project_note_05.md"
    path.write_text(note_text("note 5", "The zanzibar office moved."), encoding="utf-8")
    (folder.memory / "project_note_06.md").unlink()
    FileMemory().put(folder, "project_new.md", note_text("new", "Zanzibar again, and tomato."))

    memory, _ = new_process()
    hits = search(memory, folder, "zanzibar")
    assert {file for file, _ in hits} == {"project_note_05.md", "project_new.md"}
    assert index_of(memory, folder).reads == 2  # the edited note and the new one
    assert all(file != "project_note_06.md" for q in QUERIES for file, _ in search(memory, folder, q))
    assert {query: search(memory, folder, query) for query in QUERIES} == fresh_results(folder)


def test_an_entry_whose_signature_is_not_the_catalogs_is_not_used(folder):
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    # The same bytes written again: a new signature (inode, times), not a new text.
    path = folder.memory / "project_note_07.md"
    text = path.read_bytes()
    path.unlink()
    path.write_bytes(text)
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    assert index_of(memory, folder).reads == 1



def test_a_signature_the_catalog_does_not_trust_yet_is_never_taken_as_proof(folder, monkeypatch):
    monkeypatch.setattr(catalog, "RACY_NS", 10**20)  # every note just changed (the racy window)
    catalog.forget(folder)
    for _ in range(2):
        memory, _ = new_process()
        search(memory, folder, "lisbon")
        assert index_of(memory, folder).reads == 40
    monkeypatch.setattr(catalog, "RACY_NS", 0)  # old enough now: read once more, then trusted
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    assert index_of(memory, folder).reads == 40
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    assert index_of(memory, folder).reads == 0


def test_saving_one_change_appends_one_small_frame_and_keeps_the_base_file(folder):
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    base = folder.state / wordindex.BASE_NAME
    changes = folder.state / wordindex.CHANGES_NAME
    before = os.stat(base)
    assert changes.stat().st_size == 0

    path = folder.memory / "project_note_03.md"
    path.write_text(note_text("note 3", "Quartz quartz."), encoding="utf-8")
    memory, _ = new_process()
    assert [file for file, _ in search(memory, folder, "quartz")] == ["project_note_03.md"]
    after = os.stat(base)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    payloads, whole = fileio.read_frames(changes.read_bytes())
    assert whole and len(payloads) == 1
    assert changes.stat().st_size < base.stat().st_size / 10

    memory, _ = new_process()  # the frame is applied: nothing read again
    assert [file for file, _ in search(memory, folder, "quartz")] == ["project_note_03.md"]
    assert index_of(memory, folder).reads == 0


def test_frames_are_folded_into_a_new_base_file_once_they_pile_up(folder):
    writer = FileMemory()
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    generation = index_of(memory, folder).generation
    for round_ in range(70):  # more than the 64 changed notes a changes file may hold
        writer.put(folder, f"project_note_{round_ % 40:02}.md", note_text("again", f"round{round_} tomato"))
        memory, _ = new_process()
        search(memory, folder, "tomato")
    index = index_of(memory, folder)
    assert index.generation != generation
    assert index.pending < 64
    memory, _ = new_process()
    assert {q: search(memory, folder, q) for q in QUERIES + ["round69"]} == \
        {**fresh_results(folder), "round69": fresh_results_for(folder, "round69")}
    assert index_of(memory, folder).reads == 0


def fresh_results_for(folder, query):
    catalog._MEMO.clear()
    memory = FileMemory()
    memory._words[folder.memory] = wordindex.WordIndex()  # in memory only: nothing loaded or saved
    return search(memory, folder, query)


def damage_flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def damage_garbage(path):
    path.write_bytes(b"not an index at all")


@pytest.mark.parametrize("damage", [damage_flip, damage_truncate, damage_garbage])
def test_a_damaged_or_torn_base_file_is_rebuilt_never_trusted(folder, damage):
    expected = fresh_results(folder)
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    damage(folder.state / wordindex.BASE_NAME)
    memory, _ = new_process()
    assert {query: search(memory, folder, query) for query in QUERIES} == expected
    assert index_of(memory, folder).reads == 40
    memory, _ = new_process()  # written anew, whole: used again
    assert {query: search(memory, folder, query) for query in QUERIES} == expected
    assert index_of(memory, folder).reads == 0


def test_a_torn_frame_ends_the_reading_and_only_its_notes_are_read_again(folder):
    writer = FileMemory()
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    for n in (1, 2):
        writer.put(folder, f"project_note_{n:02}.md", note_text("again", f"marker{n}"))
        memory, _ = new_process()
        search(memory, folder, "lisbon")
    changes = folder.state / wordindex.CHANGES_NAME
    changes.write_bytes(changes.read_bytes()[:-3])  # the second frame torn
    memory, _ = new_process()
    assert [file for file, _ in search(memory, folder, "marker2")] == ["project_note_02.md"]
    assert [file for file, _ in search(memory, folder, "marker1")] == ["project_note_01.md"]
    index = index_of(memory, folder)
    assert index.reads == 1
    assert index.pending == 0  # after a torn frame the base file was written anew


def test_a_foreign_file_is_not_used(folder, monkeypatch, tmp_path):
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    # Another version of the format:
    monkeypatch.setattr(wordindex, "VERSION", wordindex.VERSION + 1)
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    assert index_of(memory, folder).reads == 40
    monkeypatch.undo()
    monkeypatch.setattr(catalog, "RACY_NS", 0)
    # Another agent's index, copied in beside its notes:
    other = make_agent(tmp_path / "elsewhere", "bot")
    shutil.copytree(folder.memory, other.memory)
    shutil.copytree(folder.state, other.state)
    memory, _ = new_process()
    search(memory, other, "lisbon")
    assert index_of(memory, other).reads == 40


@pytest.mark.parametrize("posting", [(0, 2**20), (-6, 1), ("x", 1), None])
def test_a_posting_that_cannot_be_right_rebuilds_the_index(folder, posting):
    import marshal
    import struct
    memory, _ = new_process()
    expected = search(memory, folder, "lisbon")
    base = folder.state / wordindex.BASE_NAME
    payload = bytes(fileio.read_frames(base.read_bytes())[0][0])
    size = struct.unpack_from("<I", payload)[0]
    head = list(marshal.loads(payload[4:4 + size]))
    head[7]["lisbon"] = posting  # checksum-valid, and absurd
    new_head = marshal.dumps(tuple(head))
    base.write_bytes(fileio.frame(struct.pack("<I", len(new_head)) + new_head + payload[4 + size:]))
    memory, _ = new_process()
    assert search(memory, folder, "lisbon") == expected
    assert index_of(memory, folder).reads == 40
    memory, _ = new_process()  # written anew: used again
    assert search(memory, folder, "lisbon") == expected
    assert index_of(memory, folder).reads == 0


def test_deleting_the_derived_state_changes_only_speed(folder):
    memory, _ = new_process()
    first = {query: search(memory, folder, query) for query in QUERIES}
    shutil.rmtree(folder.state)
    memory, _ = new_process()
    assert {query: search(memory, folder, query) for query in QUERIES} == first == fresh_results(folder)
    assert index_of(memory, folder).reads == 40


def test_reindex_forgets_the_saved_index(folder):
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    memory.reindex(folder)
    assert not (folder.state / wordindex.BASE_NAME).exists()
    memory, _ = new_process()
    search(memory, folder, "lisbon")
    assert index_of(memory, folder).reads == 40
