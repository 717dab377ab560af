"""Fault injection (spec/02): a write step that fails, by an exception or a full disk.

``fileio.fault_hook`` is called at every named step of a durable write with the file being
written; these tests make one step raise. After each failure: nothing partial is visible,
the error says what failed and where (an OSError names the file), and a following normal
run or ``doctor --repair`` restores every invariant.
"""

import errno
import os
from pathlib import Path

import pytest

from atomic_vault import AtomicAgent, doctor, fileio, runlog
from atomic_vault.backends.files import FileMemory
from atomic_vault.backends.sqlite import SQLiteMemory
from atomic_vault.vault import open_agent

BACKENDS = {"files": {}, "sqlite": {"memory": "sqlite", "log": "sqlite"}}


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as os.write raises it: no file name


class Injected(RuntimeError):
    """Any exception at all (a bug, a KeyboardInterrupt-like stop) in the middle of a write."""


FAILURES = {"full disk": full_disk, "exception": lambda: Injected("injected")}


@pytest.fixture
def fail_at(monkeypatch):
    """fail_at(point, match, error, nth): the nth step ``point`` whose path matches raises
    ``error()``; returns the list of paths where it fired (a test asserts it did)."""

    def install(point: str, match, error=full_disk, nth: int = 1) -> list[Path]:
        fired: list[Path] = []
        seen = []

        def hook(at: str, path: Path) -> None:
            if at == point and not fired and match(path):
                seen.append(path)
                if len(seen) == nth:
                    fired.append(path)
                    raise error()

        monkeypatch.setattr(fileio, "fault_hook", hook)
        return fired

    return install


def named(name):
    return lambda path: path.name == name


def suffix(ext):
    return lambda path: path.suffix == ext


def temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{fileio.TEMP_SUFFIX}"))


def problems(folder, backends=None) -> list[str]:
    """doctor's error findings, plus its warnings about the log, chain, index and temp files."""
    return [f"{f.check}: {f.message}" for f in doctor.check(folder, backends)
            if f.level == "error" or (f.level == "warn" and f.check in ("log", "chain", "index", "temp files"))]


def reservations(folder) -> list[str]:
    directory = folder.state / "reservations"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


# ---- the primitives --------------------------------------------------------------------

@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_between_temp_file_and_rename_leaves_the_old_file_and_no_temp(tmp_path, fail_at, kind):
    target = tmp_path / "INDEX.md"
    target.write_text("old\n")
    fired = fail_at("temp:complete", named("INDEX.md"), FAILURES[kind])
    with pytest.raises(OSError if kind == "full disk" else Injected) as caught:
        fileio.atomic_write(target, "new\n")
    assert fired and target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["INDEX.md"]
    if kind == "full disk":  # os.write names no file; the error must say which one
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
        assert str(target) in str(caught.value)


@pytest.mark.parametrize("point", ["append:before_write", "append:before_fsync"])
@pytest.mark.parametrize("kind", FAILURES)
def test_a_failed_append_leaves_the_file_exactly_as_it_was(tmp_path, fail_at, point, kind):
    log = tmp_path / "d.jsonl"
    fileio.append_jsonl(log, {"seq": 1})
    before = log.read_bytes()
    fired = fail_at(point, suffix(".jsonl"), FAILURES[kind])
    with pytest.raises(OSError if kind == "full disk" else Injected):
        fileio.append_jsonl(log, {"seq": 2, "body": "x" * 5000})
    assert fired and log.read_bytes() == before  # bytes already written were cut off again
    fileio.fault_hook = None
    fileio.append_jsonl(log, {"seq": 2})
    assert [r["seq"] for _, r in fileio.read_jsonl(log)[0]] == [1, 2]


def test_a_short_write_then_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk mid-record: the kernel takes part of the line, then refuses the rest."""
    log = tmp_path / "d.jsonl"
    fileio.append_jsonl(log, {"seq": 1})
    before = log.read_bytes()
    real_write = os.write
    calls = []

    def filling_write(fd, data):
        if b'"seq":2' not in bytes(data) and not calls:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise full_disk()

    monkeypatch.setattr(fileio.os, "write", filling_write)
    with pytest.raises(OSError) as caught:
        fileio.append_jsonl(log, {"seq": 2, "body": "y" * 300})
    monkeypatch.undo()
    assert len(calls) == 2 and caught.value.filename == str(log)
    assert log.read_bytes() == before and not fileio.ends_torn(log)


@pytest.mark.parametrize("kind", FAILURES)
def test_a_journal_day_that_cannot_be_created_leaves_nothing(tmp_path, fail_at, kind):
    day = tmp_path / "journal" / "2026-11" / "2026-11-22.md"
    fired = fail_at("temp:complete", named(day.name), FAILURES[kind])
    with pytest.raises(OSError if kind == "full disk" else Injected):
        fileio.create_new(day, "# 2026-11-22\n")
    assert fired and not day.exists() and temp_files(tmp_path) == []


def test_a_repair_cut_off_between_saving_and_cutting_a_torn_line_keeps_it_once(tmp_path, fail_at):
    log = tmp_path / "d.jsonl"
    log.write_bytes(b'{"seq":1}\n{"seq":2,"ha')
    fired = fail_at("torn:before_truncate", suffix(".jsonl"), lambda: Injected("killed"))
    with pytest.raises(Injected):
        fileio.move_torn_tail(log)
    assert fired and fileio.ends_torn(log)  # saved, not yet cut
    fileio.fault_hook = None
    assert fileio.move_torn_tail(log)[0] == len(b'{"seq":2,"ha')
    assert log.read_bytes() == b'{"seq":1}\n'
    assert (tmp_path / "d.jsonl.torn").read_bytes() == b'{"seq":2,"ha\n'


# ---- one run, failing at each natural point --------------------------------------------

def run_and_fail(vault, backend, work, expected):
    agent = AtomicAgent("atlas", root=vault, **BACKENDS[backend])
    with pytest.raises(expected) as caught:
        agent.call(work)
    fileio.fault_hook = None
    return agent, caught.value


@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_writing_head_after_the_record_is_caught_up_by_the_next_run(vault, fail_at, kind):
    # The first run writes HEAD twice: seq 0 before its append (so that a crash after the
    # append leaves HEAD behind, not missing), then seq 1. The second write fails.
    fired = fail_at("temp:complete", named("HEAD"), FAILURES[kind], nth=2)
    agent, error = run_and_fail(vault, "files", "one\nremember: project: head write fails",
                                OSError if kind == "full disk" else Injected)
    folder = agent.folder
    assert fired and temp_files(vault) == []
    if kind == "full disk":
        assert error.filename == str(folder.head)
    result = runlog.verify(folder)  # the record is whole and chained; HEAD is one behind
    assert result.ok and result.records == 1 and "HEAD is behind" in result.warnings[0]
    assert reservations(folder) == []  # the run's cost reservation was given back
    second = agent.call("two")
    assert second.seq == 2 and runlog.read_head(folder)["seq"] == 2
    assert runlog.verify(folder).warnings == [] and problems(folder) == []


def test_a_failure_writing_the_first_head_appends_nothing(vault, fail_at):
    fired = fail_at("temp:complete", named("HEAD"))
    agent, _ = run_and_fail(vault, "files", "one", OSError)
    assert fired and runlog.day_files(agent.folder) == [] and not agent.folder.head.exists()
    assert agent.call("two").seq == 1 and problems(agent.folder) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_appending_the_journal_writes_no_record_and_breaks_nothing(vault, fail_at, backend, kind):
    fired = fail_at("append:before_write", suffix(".md"), FAILURES[kind])
    agent, error = run_and_fail(vault, backend, "one\nremember: project: journal append fails",
                                OSError if kind == "full disk" else Injected)
    folder, backends = agent.folder, {"memory": agent.memory, "log": agent.log}
    assert fired and temp_files(vault) == []
    if kind == "full disk":
        assert error.filename == str(fired[0])
    assert list(agent.log.records(folder)) == []  # no record for a run that raised
    assert "journal append fails" not in fired[0].read_text()
    assert problems(folder, backends) == []  # its note and INDEX line agree
    assert agent.call("two").seq == 1


@pytest.mark.parametrize("point", ["append:before_write", "append:before_fsync"])
@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_between_journal_and_log_leaves_a_clean_log(vault, fail_at, point, kind):
    AtomicAgent("atlas", root=vault).call("first")
    fired = fail_at(point, suffix(".jsonl"), FAILURES[kind])
    agent, error = run_and_fail(vault, "files", "one\nremember: project: log append fails",
                                OSError if kind == "full disk" else Injected)
    folder = agent.folder
    assert fired and not fileio.ends_torn(fired[0])  # nothing of the record is left
    if kind == "full disk":
        assert error.filename == str(fired[0])
    assert [r["seq"] for _, _, r in runlog.records(folder)] == [1]
    assert runlog.verify(folder).ok and runlog.read_head(folder)["seq"] == 1
    assert reservations(folder) == [] and problems(folder) == []
    assert agent.call("two").seq == 2  # no repair needed


class FailingMemory:
    """The run's memory backend, whose n-th ``put`` or ``put_index`` fails: the natural
    points between two notes and between the notes and INDEX, whatever mechanism the
    backend uses to write them."""

    def __init__(self, base, method: str, nth: int = 1, error=full_disk):
        self.base, self.method, self.left, self.error = base, method, nth, error
        self.name = base.name

    def __getattr__(self, attr):
        value = getattr(self.base, attr)
        if attr != self.method:
            return value

        def failing(*args, **kwargs):
            self.left -= 1
            if self.left == 0:
                raise self.error()
            return value(*args, **kwargs)

        return failing


def notes_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.memory.glob("*.md") if p.name != "INDEX.md"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_between_a_note_and_index_is_restored_by_doctor_repair(vault, backend, kind):
    base = FileMemory() if backend == "files" else SQLiteMemory(root=vault)
    memory = FailingMemory(base, "put_index", error=FAILURES[kind])
    agent = AtomicAgent("atlas", root=vault, memory=memory, log=BACKENDS[backend].get("log"))
    with pytest.raises(OSError if kind == "full disk" else Injected):
        agent.call("one\nremember: project: index write fails")
    folder, backends = agent.folder, {"memory": base, "log": agent.log}
    assert (folder.memory / "project_index_write_fails.md").exists()  # the note is whole
    assert list(agent.log.records(folder)) == [] and reservations(folder) == []
    assert any("index: INDEX.md does not match" in p for p in problems(folder, backends))
    notes = notes_bytes(folder)
    actions = doctor.repair(folder, backends=backends)
    assert any(a.startswith("updated memory/INDEX.md") for a in actions)
    assert problems(folder, backends) == [] and notes_bytes(folder) == notes  # no note edited
    assert "project_index_write_fails.md" in folder.index.read_text()


def test_a_failure_between_the_new_and_the_old_note_of_a_supersession(vault):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one\nremember: project: release date is May")
    folder = agent.folder
    old_text = (folder.memory / "project_release_date_is_may.md").read_bytes()
    # Same name, another body: a new version supersedes the old note. The second put
    # (retiring the old note) fails.
    from conftest import ScriptedModel, capture_block

    answer = capture_block(name="release date is May", body="Moved to June.")
    failing = AtomicAgent("atlas", root=vault, model=ScriptedModel(answer),
                          memory=FailingMemory(FileMemory(), "put", nth=2))
    with pytest.raises(OSError):
        failing.call("update")
    assert (folder.memory / "project_release_date_is_may.md").read_bytes() == old_text
    assert "supersedes: project_release_date_is_may.md" in (
        folder.memory / "project_release_date_is_may_v2.md").read_text()
    doctor.repair(folder)
    assert problems(folder) == []
    assert (folder.memory / "project_release_date_is_may.md").read_bytes() == old_text


def test_retrying_the_work_item_after_a_failed_index_write_restores_index(vault):
    failing = AtomicAgent("atlas", root=vault, memory=FailingMemory(FileMemory(), "put_index"))
    with pytest.raises(OSError):
        failing.call("one\nremember: project: retried after a full disk")
    retry = AtomicAgent("atlas", root=vault).call("one\nremember: project: retried after a full disk")
    assert retry.captures[0]["status"] == "refreshed"
    assert problems(open_agent("atlas", vault)) == []


def test_a_full_disk_while_saving_a_derived_cache_does_not_fail_a_logged_run(vault, fail_at):
    fired = fail_at("temp:complete", named("cost-rollup.json"))
    result = AtomicAgent("atlas", root=vault).call("one")
    assert fired and result.seq == 1


def test_every_durable_write_of_a_run_passes_through_the_seam(vault, monkeypatch):
    seen = set()
    monkeypatch.setattr(fileio, "fault_hook", lambda point, path: seen.add(path.name))
    AtomicAgent("atlas", root=vault).call("one\nremember: project: every write is seen")
    assert {"project_every_write_is_seen.md", "INDEX.md", "HEAD"} <= seen
    assert any(name.endswith(".jsonl") for name in seen) and any(name.endswith(".md") and
                                                                 name[:4].isdigit() for name in seen)


def test_the_seam_is_off_by_default():
    assert fileio.fault_hook is None
