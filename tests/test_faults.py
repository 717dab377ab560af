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
from atomic_vault.errors import NoteError
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


def test_a_full_disk_writing_head_after_the_record_is_an_ok_run_with_a_warning(vault, fail_at):
    # The first run writes HEAD twice: seq 0 before its append (so that a crash after the
    # append leaves HEAD behind, not missing), then seq 1. The second write fails: the
    # record is durable, the commit point has passed, so the run is ok and says HEAD lags.
    fired = fail_at("temp:complete", named("HEAD"), full_disk, nth=2)
    agent = AtomicAgent("atlas", root=vault)
    result = agent.call("one\nremember: project: head write fails")
    fileio.fault_hook = None
    folder = agent.folder
    assert fired and temp_files(vault) == []
    assert result.status == "ok" and result.seq == 1
    assert [r["status"] for r in agent.log.records(folder)] == ["ok"]  # the log agrees
    assert any("HEAD lags one record behind" in w and "doctor" in w for w in result.warnings)
    assert any(f"run {result.run_id}" in p.read_text() for p in folder.journal.glob("*/*.md"))
    verified = runlog.verify(folder)
    assert verified.ok and "HEAD is behind" in verified.warnings[0] and reservations(folder) == []
    assert agent.call("two").seq == 2 and runlog.verify(folder).warnings == [] and problems(folder) == []


def test_an_exception_writing_head_after_the_record_leaves_a_whole_record_the_next_run_follows(vault, fail_at):
    """Not a disk failure (a bug, an interrupt): it propagates, like a crash after the commit
    point; the record is whole and chained, and the next run catches HEAD up."""
    fired = fail_at("temp:complete", named("HEAD"), FAILURES["exception"], nth=2)
    agent, error = run_and_fail(vault, "files", "one\nremember: project: head write fails", Injected)
    folder = agent.folder
    assert fired and temp_files(vault) == []
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
def test_a_full_disk_appending_the_journal_after_the_record_is_an_ok_run_with_a_warning(vault, fail_at, backend):
    # The journal section is written after the record (the commit point): the run is done,
    # and the missing section is told, naming the file.
    fired = fail_at("append:before_write", suffix(".md"))
    agent = AtomicAgent("atlas", root=vault, **BACKENDS[backend])
    result = agent.call("one\nremember: project: journal append fails")
    fileio.fault_hook = None
    folder, backends = agent.folder, {"memory": agent.memory, "log": agent.log}
    assert fired and temp_files(vault) == []
    assert result.status == "ok" and [r["run_id"] for r in agent.log.records(folder)] == [result.run_id]
    assert any("journal section was not written" in w and str(fired[0]) in w for w in result.warnings)
    assert "journal append fails" not in fired[0].read_text()
    assert problems(folder, backends) == []  # its note and INDEX line agree
    assert agent.call("two").seq == 2


@pytest.mark.parametrize("point", ["append:before_write", "append:before_fsync"])
@pytest.mark.parametrize("kind", FAILURES)
def test_a_failed_log_append_leaves_a_clean_log_and_takes_back_the_runs_notes(vault, fail_at, point, kind):
    AtomicAgent("atlas", root=vault).call("first")
    index_before = open_agent("atlas", vault).index.read_bytes()
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
    # before the commit point: nothing of the run is left, no note, no INDEX line, no journal
    assert not (folder.memory / "project_log_append_fails.md").exists()
    assert folder.index.read_bytes() == index_before
    assert not any("log append fails" in p.read_text() for p in folder.journal.glob("*/*.md"))
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
def test_a_failure_between_a_note_and_index_takes_the_note_back(vault, backend, kind):
    base = FileMemory() if backend == "files" else SQLiteMemory(root=vault)
    folder = open_agent("atlas", vault)
    notes, index_before = notes_bytes(folder), folder.index.read_bytes()
    memory = FailingMemory(base, "put_index", error=FAILURES[kind])
    agent = AtomicAgent("atlas", root=vault, memory=memory, log=BACKENDS[backend].get("log"))
    with pytest.raises(OSError if kind == "full disk" else Injected):
        agent.call("one\nremember: project: index write fails")
    backends = {"memory": base, "log": agent.log}
    assert not (folder.memory / "project_index_write_fails.md").exists()  # taken back
    assert notes_bytes(folder) == notes and folder.index.read_bytes() == index_before
    assert list(agent.log.records(folder)) == [] and reservations(folder) == []
    assert not any("index write fails" in p.read_text() for p in folder.journal.glob("*/*.md"))
    assert problems(folder, backends) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_note_that_cannot_be_taken_back_is_named_and_restored_by_doctor_repair(vault, backend):
    base = FileMemory() if backend == "files" else SQLiteMemory(root=vault)
    memory = FailingMemory(FailingMemory(base, "put_index"), "delete")  # the disk stays full
    agent = AtomicAgent("atlas", root=vault, memory=memory, log=BACKENDS[backend].get("log"))
    with pytest.raises(NoteError) as caught:
        agent.call("one\nremember: project: index write fails")
    folder, backends = agent.folder, {"memory": base, "log": agent.log}
    assert "memory/project_index_write_fails.md" in str(caught.value)
    assert "doctor atlas --repair" in caught.value.fix
    assert isinstance(caught.value.__cause__, OSError)
    assert list(agent.log.records(folder)) == [] and reservations(folder) == []
    assert any("index: INDEX.md does not match" in p for p in problems(folder, backends))
    notes = notes_bytes(folder)
    actions = doctor.repair(folder, backends=backends)
    assert any(a.startswith("updated memory/INDEX.md") for a in actions)
    assert problems(folder, backends) == [] and notes_bytes(folder) == notes  # no note edited


def test_a_failure_between_the_new_and_the_old_note_of_a_supersession_takes_back_the_new(vault):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one\nremember: project: release date is May")
    folder = agent.folder
    old_text = (folder.memory / "project_release_date_is_may.md").read_bytes()
    index_before = folder.index.read_bytes()
    # Same name, another body: a new version supersedes the old note. The second put
    # (retiring the old note) fails.
    from conftest import ScriptedModel, capture_block

    answer = capture_block(name="release date is May", body="Moved to June.")
    failing = AtomicAgent("atlas", root=vault, model=ScriptedModel(answer),
                          memory=FailingMemory(FileMemory(), "put", nth=2))
    with pytest.raises(OSError):
        failing.call("update")
    assert (folder.memory / "project_release_date_is_may.md").read_bytes() == old_text
    assert not (folder.memory / "project_release_date_is_may_v2.md").exists()
    assert folder.index.read_bytes() == index_before and problems(folder) == []


def test_retrying_the_work_item_after_a_failed_index_write_writes_it_whole(vault):
    failing = AtomicAgent("atlas", root=vault, memory=FailingMemory(FileMemory(), "put_index"))
    with pytest.raises(OSError):
        failing.call("one\nremember: project: retried after a full disk")
    retry = AtomicAgent("atlas", root=vault).call("one\nremember: project: retried after a full disk")
    assert retry.captures[0]["status"] == "written"
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


# ---- every destination is checked before the first write ---------------------------------

def months_around_now(folder) -> set[str]:
    """This month in the agent's zone, and those of the days either side (a run that starts
    at midnight may belong to either)."""
    from datetime import datetime, timedelta, timezone

    from atomic_vault.config import load_model_config

    now = datetime.now(load_model_config(folder.model).zone or timezone.utc)
    return {f"{now + timedelta(days=d):%Y-%m}" for d in (-1, 0, 1)}


def everything(folder) -> dict[str, bytes]:
    return {p.relative_to(folder.path).as_posix(): p.read_bytes() for p in folder.path.rglob("*")
            if p.is_file() and ".atomic_vault" not in p.parts}


@pytest.mark.parametrize("where", ["journal", "log"])
def test_a_month_folder_that_is_a_file_refuses_the_run_before_anything_is_written(vault, where):
    folder = open_agent("atlas", vault)
    (folder.path / where).mkdir(exist_ok=True)
    for month in months_around_now(folder) - {p.name for p in (folder.path / where).iterdir()}:
        (folder.path / where / month).write_text("not a folder\n")
    before = everything(folder)
    with pytest.raises(NoteError) as caught:
        AtomicAgent("atlas", root=vault).call("one\nremember: project: never written")
    assert f"{where}/20" in caught.value.message and "not a folder" in caught.value.message
    assert caught.value.path.startswith(str(folder.path / where)) and caught.value.fix
    assert everything(folder) == before  # no note, no INDEX line, no journal, no record
    assert reservations(folder) == []


def test_a_journal_day_file_that_is_a_fifo_refuses_the_run_before_anything_is_written(vault):
    folder = open_agent("atlas", vault)
    day_files = []
    for month in months_around_now(folder):
        (folder.journal / month).mkdir(parents=True, exist_ok=True)
    from datetime import datetime, timedelta, timezone

    from atomic_vault.config import load_model_config

    now = datetime.now(load_model_config(folder.model).zone or timezone.utc)
    for d in (-1, 0, 1):
        path = folder.journal_file((now + timedelta(days=d)).date())
        if path.exists():
            continue
        os.mkfifo(path)
        day_files.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # a writer would not block
    before = everything(folder)
    with pytest.raises(NoteError) as caught:
        AtomicAgent("atlas", root=vault, journal=_NoReads()).call("one\nremember: project: never written")
    assert "not a regular file" in caught.value.message
    assert everything(folder) == before
    assert all(os.read(fd, 100) == b"" for fd in day_files)  # nothing was written into them
    for fd in day_files:
        os.close(fd)


class _NoReads:
    """The files journal without its reads (the prompt refuses a FIFO journal day on its own)."""

    name = "files"

    def __init__(self):
        from atomic_vault.backends.files import FileJournal

        self.base = FileJournal()

    def __getattr__(self, attr):
        return getattr(self.base, attr)

    def recent(self, folder, days):
        return []


# ---- a disk failure at every write of a CLI run -------------------------------------------

CLI_WORK = "one\nremember: project: disk failure at a write"


def cli_run(root):
    from click.testing import CliRunner

    from atomic_vault.cli import cli

    return CliRunner().invoke(cli, ["--root", str(root), "run", "atlas", CLI_WORK])


def fresh_vault(tmp_path, name):
    import shutil

    from conftest import SAMPLES

    root = tmp_path / name
    shutil.copytree(SAMPLES, root)
    return root


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_disk_failure_at_every_write_of_a_cli_run_is_one_line_and_the_log_agrees(tmp_path, code):
    points = []
    fileio.fault_hook = lambda point, path: points.append(point)
    try:
        assert cli_run(fresh_vault(tmp_path, "count")).exit_code == 0
    finally:
        fileio.fault_hook = None
    assert len(points) >= 8
    for n in range(1, len(points) + 1):
        root = fresh_vault(tmp_path, f"{code}-{n}")
        folder = open_agent("atlas", root)
        records_before = len(list(runlog.records(folder)))
        fired: list[Path] = []

        def hook(point, path, seen=[0]):
            seen[0] += 1
            if seen[0] == n:
                fired.append(path)
                raise OSError(code, os.strerror(code))  # as os.write raises it: no file name

        fileio.fault_hook = hook
        try:
            result = cli_run(root)
        finally:
            fileio.fault_hook = None
        where = f"write {n} ({points[n - 1]} of {fired[0] if fired else '?'})"
        assert fired, where
        assert "Traceback" not in result.output and not isinstance(result.exception, OSError), where
        records = list(runlog.records(folder))
        if result.exit_code == 1:  # before the commit point: one line, and nothing of the run
            errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and str(fired[0]) in errors[0] and "(fix: " in errors[0], where
            assert len(records) == records_before, where
            assert problems(folder) == [], where
            assert not (folder.memory / "project_disk_failure_at_a_write.md").exists(), where
        else:  # after it (or a derived cache): the run is logged ok, and says what lags
            assert result.exit_code == 0, where
            assert records[-1][2]["status"] == "ok" and len(records) == records_before + 1, where
            if ".atomic_vault" not in fired[0].parts:
                assert any(line.startswith("warning: ") and str(fired[0]) in line
                           for line in result.stderr.splitlines()), where


def test_a_run_cut_off_after_its_record_gets_its_journal_section_back_from_doctor_repair(vault, monkeypatch):
    """The record is the commit point and the journal comes after it: a run killed between
    the two is logged without a section. doctor notices, and --repair writes the section
    from the record (the work item from its snapshot), marked as restored."""
    from atomic_vault import agent as agent_module
    agent = AtomicAgent("atlas", root=vault)
    monkeypatch.setattr(agent_module, "_journal_after", lambda *args, **kwargs: [])  # cut off here
    result = agent.call("Plan the offsite\nremember: project: the offsite is in Porto")
    monkeypatch.undo()
    folder = agent.folder
    found = [f for f in doctor.check(folder) if f.check == "journal" and f.level == "warn"]
    assert found and result.run_id in found[0].message
    actions = doctor.repair(folder)
    assert any(result.run_id in action for action in actions)
    text = "".join(p.read_text(encoding="utf-8") for p in folder.journal.rglob("*.md"))
    assert f"run {result.run_id}" in text and "restored by doctor --repair" in text
    assert "Plan the offsite" in text and "project_the_offsite_is_in_porto.md" in text
    assert not [f for f in doctor.check(folder) if f.check == "journal" and f.level == "warn"]
    assert doctor.repair(folder) == []  # nothing left to restore
