"""The files log's snapshot packs (spec/07 "Snapshots"): one pack per day, a text that
extends an earlier one stored as a delta, a derived index that is rebuilt and never
trusted unread, and the old one-file-per-snapshot layout still read and pruned."""

import json

from atomic_vault import AtomicAgent, fileio, snapshots
from atomic_vault.backends import packs
from atomic_vault.backends.files import FileLog
from atomic_vault.testing import make_agent
from conftest import ScriptedModel

JOURNAL = "# 2026-12-01\n\n" + "".join(f"### 09:{i:02d} · run {i}\n\nsome work, some answer {i}\n\n"
                                      for i in range(400))


def _fresh(folder):
    """Forget what this process knows, as a new process (a cron run) would start."""
    packs._INDEXES.clear()
    packs._TEXTS.clear()


def _lines(folder):
    return [json.loads(line) for pack in packs.packs(folder)
            for line in (packs.folder_of(folder) / pack).read_text(encoding="utf-8").splitlines()]


def _put(log, folder, *texts):
    shas = [snapshots.digest(t) for t in texts]
    log.put_snapshots(folder, dict(zip(shas, texts)))
    return shas


def test_a_day_of_runs_with_unchanged_inputs_stores_little_more_than_its_new_texts(vault):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel("The answer, the same each run."))
    pack = lambda: sum((packs.folder_of(agent.folder) / p).stat().st_size  # noqa: E731
                       for p in packs.packs(agent.folder))
    for i in range(3):
        agent.call(f"Check the inbox, round {i}.")
    grown = []
    for i in range(3, 8):
        before = pack()
        _fresh(agent.folder)  # each run a new process: the base is read back from the pack
        result = agent.call(f"Check the inbox, round {i}.")
        grown.append(pack() - before)
    record = agent.log.get(agent.folder, result.run_id)
    journal = [e for e in record["manifest"]["files"] if e["layer"] == "journal"][-1]  # today's
    assert record["ts"][:10] in journal["source"]
    text = agent.log.get_snapshot(agent.folder, journal["snapshot"])
    assert snapshots.digest(text) == journal["snapshot"]  # resolved whole through its deltas
    line = next(line for line in _lines(agent.folder) if line["sha"] == journal["snapshot"])
    assert "base" in line and "text" not in line  # stored as what the run added to the day
    section = len(text) // 8  # each run adds one journal section
    assert len(text) > 1000 and max(grown) < 600 + 2 * section, (grown, len(text))


def test_a_delta_reads_back_whole_and_deltas_stop_at_a_depth(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    texts = [JOURNAL[:2000 + 200 * i] for i in range(packs.MAX_DEPTH + 3)]
    for text in texts:
        _put(log, folder, text)
    _fresh(folder)
    assert all(log.get_snapshot(folder, snapshots.digest(t)) == t for t in texts)
    kinds = ["text" if "text" in line else "delta" for line in _lines(folder)]
    assert kinds[0] == "text" and kinds[1] == "delta"
    assert kinds[packs.MAX_DEPTH + 1] == "text"  # a read never follows more than MAX_DEPTH lines
    edited = texts[-1].replace("some answer 30\n", "some answer thirty\n")  # an edit in the middle
    _put(log, folder, edited)
    line = _lines(folder)[-1]
    assert line["keep"] > 0 and line["tail"] > 0 and len(line["add"]) < 20
    assert log.get_snapshot(folder, snapshots.digest(edited)) == edited


def test_the_index_is_derived_deleted_it_is_rebuilt_from_the_packs(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    shas = _put(log, folder, "one", JOURNAL, JOURNAL + "more")
    index = folder.state / packs.INDEX
    assert index.exists()
    index.unlink()
    _fresh(folder)
    assert [log.get_snapshot(folder, sha) for sha in shas] == ["one", JOURNAL, JOURNAL + "more"]
    assert not index.exists()  # a reader changes nothing on disk
    assert log.snapshot_hashes(folder) == sorted(shas)
    _put(log, folder, "two")  # the next writer saves it whole
    assert len(index.read_text().splitlines()) == 4


def test_a_wrong_index_entry_is_noticed_never_trusted(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    one, two = _put(log, folder, "first text", "second text")
    index = folder.state / packs.INDEX
    lines = index.read_text().splitlines()
    offsets = {line.split()[0]: line.split()[2] for line in lines}
    forged = [line.replace(f" {offsets[two]} ", f" {offsets[one]} ") if line.startswith(two) else line
              for line in lines]
    index.write_text("\n".join(forged) + "\n")  # `two` now points at the line of `one`
    _fresh(folder)
    assert log.get_snapshot(folder, two) == "second text"
    index.write_text("garbage\n" + "\n".join(forged) + "\n")
    _fresh(folder)
    assert log.get_snapshot(folder, two) == "second text"
    _put(log, folder, "second text")  # a writer does not take the forged entry's word for it
    assert [line["sha"] for line in _lines(folder)] == [one, two]


def test_lines_appended_after_the_index_are_found(tmp_path):
    """A writer killed between its pack append and its index append."""
    folder, log = make_agent(tmp_path), FileLog()
    _put(log, folder, "indexed")
    pack = packs.folder_of(folder) / packs.packs(folder)[0]
    late = "appended, never indexed"
    fileio.append_text(pack, json.dumps({"sha": snapshots.digest(late), "text": late}) + "\n")
    assert log.get_snapshot(folder, snapshots.digest(late)) == late
    _fresh(folder)
    assert snapshots.digest(late) in log.snapshot_hashes(folder)
    _put(log, folder, late)  # known: not stored twice
    assert len(_lines(folder)) == 2


def test_a_torn_pack_tail_is_moved_aside_and_the_next_run_stores(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    _put(log, folder, "before the crash")
    pack = packs.folder_of(folder) / packs.packs(folder)[0]
    with open(pack, "ab") as handle:
        handle.write(b'{"sha":"' + b"a" * 64 + b'","text":"cut o')  # a run killed mid-append
    (sha,) = _put(log, folder, "after the crash")
    assert log.get_snapshot(folder, sha) == "after the crash"
    assert pack.read_bytes().endswith(b"\n") and pack.with_name(pack.name + ".torn").exists()
    assert len(_lines(folder)) == 2


def test_old_per_file_snapshots_are_read_listed_and_pruned(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    old = "stored by an older atomic-vault"
    path = packs.legacy_path(folder, snapshots.digest(old))
    path.parent.mkdir(parents=True)
    path.write_text(old, encoding="utf-8")
    assert log.get_snapshot(folder, snapshots.digest(old)) == old
    (new,) = _put(log, folder, "new")
    _put(log, folder, old)  # already stored (as a file): not stored again
    assert log.snapshot_hashes(folder) == sorted([snapshots.digest(old), new])
    assert len(_lines(folder)) == 1
    assert log.delete_snapshots(folder, [snapshots.digest(old)]) == 1 and not path.exists()


def test_prune_keeps_a_delta_whose_base_it_removes_readable(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    (base,) = _put(log, folder, JOURNAL)
    kept, other = _put(log, folder, JOURNAL + "### 10:00\n\nlater\n", "short")  # a later run
    assert "base" in _lines(folder)[1]
    assert log.delete_snapshots(folder, [base, "0" * 64]) == 1
    _fresh(folder)
    assert log.get_snapshot(folder, base) is None
    assert log.get_snapshot(folder, kept) == JOURNAL + "### 10:00\n\nlater\n"  # written whole now
    assert [("text" in line, line["sha"]) for line in _lines(folder)] == [(True, kept), (True, other)]
    assert log.snapshot_hashes(folder) == sorted([kept, other])
    assert log.delete_snapshots(folder, [kept, other]) == 2 and packs.packs(folder) == []


def test_a_forged_delta_reads_as_tampering(tmp_path):
    folder, log = make_agent(tmp_path), FileLog()
    (base,) = _put(log, folder, JOURNAL)
    (text,) = _put(log, folder, JOURNAL + "### 10:00\n\nlater\n")
    pack = packs.folder_of(folder) / packs.packs(folder)[0]
    lines = pack.read_text(encoding="utf-8").splitlines()
    delta = json.loads(lines[1])
    lines[1] = json.dumps({**delta, "add": "### 10:00\n\nforged\n"})
    lines.append(json.dumps({"sha": base, "base": text, "keep": 10, "add": "", "tail": 0}))  # a cycle
    lines[0] = json.dumps({"sha": "f" * 64, "text": "moved"})
    pack.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _fresh(folder)
    found = snapshots.load(log, folder, [base, text])
    assert sorted(found.tampered) == sorted([base, text]) and not found.texts
