"""File primitives (spec/02): atomic replace, whole-line appends, torn-line tolerant reads."""

import os
import stat

import pytest

from atomic_vault import fileio
from atomic_vault.errors import LogError


def test_atomic_write_creates_and_replaces_without_leftovers(tmp_path):
    target = tmp_path / "a.md"
    assert fileio.atomic_write(target, "one\n") is True
    assert fileio.atomic_write(target, "two\n") is True
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


def test_unchanged_content_is_not_rewritten(tmp_path):
    target = tmp_path / "a.md"
    fileio.atomic_write(target, "same\n")
    before = os.stat(target)
    fsyncs = fileio.FSYNCS
    assert fileio.atomic_write(target, "same\n") is False
    after = os.stat(target)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert fileio.FSYNCS == fsyncs


def test_existing_mode_is_kept_and_new_files_follow_umask(tmp_path):
    target = tmp_path / "private.md"
    target.write_text("x")
    os.chmod(target, 0o600)
    fileio.atomic_write(target, "y")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    old = os.umask(0o027)
    try:
        fileio.atomic_write(tmp_path / "new.md", "z")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.md").st_mode) == 0o640


def test_failed_write_leaves_old_content_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "a.md"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(OSError):
        fileio.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_append_jsonl_writes_whole_sorted_lines(tmp_path):
    log = tmp_path / "log" / "d.jsonl"
    fileio.append_jsonl(log, {"b": 1, "a": "é"})
    fileio.append_jsonl(log, {"c": 2})
    assert log.read_text(encoding="utf-8") == '{"a":"é","b":1}\n{"c":2}\n'
    records, problems = fileio.read_jsonl(log)
    assert [r for _, r in records] == [{"a": "é", "b": 1}, {"c": 2}] and problems == []


def test_torn_last_line_is_reported_not_parsed_and_blocks_appends(tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_bytes(b'{"a":1}\n{"b":2}')  # the second record is valid JSON but has no newline
    records, problems = fileio.read_jsonl(log)
    assert [r for _, r in records] == [{"a": 1}]
    assert problems == [(2, "torn last line (no newline: a crash during a write?)")]
    assert fileio.ends_torn(log)
    with pytest.raises(LogError, match="torn"):
        fileio.append_jsonl(log, {"c": 3})
    assert log.read_bytes() == b'{"a":1}\n{"b":2}'


def test_bad_lines_in_the_middle_are_reported(tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_bytes(b'{"a":1}\nnot json\n[1]\n{"b":2}\n')
    records, problems = fileio.read_jsonl(log)
    assert [n for n, _ in records] == [1, 4]
    assert [n for n, _ in problems] == [2, 3]


def test_last_line_reads_only_the_tail(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"x" * 200_000 + b"\nfirst\nsecond\ntorn")
    assert fileio.last_line(path, chunk=16) == b"second"
    path.write_bytes(b"only\n")
    assert fileio.last_line(path) == b"only"
    path.write_bytes(b"no newline at all")
    assert fileio.last_line(path) is None
    assert fileio.last_line(tmp_path / "missing") is None


# ---- the order of the durable steps (spec/02) ------------------------------------------------
# Each primitive is run with the system calls that make a write durable recorded, so that a
# dropped fsync, or one moved before the write or after the rename it must precede, fails.

class Syscalls:
    """The durable steps of writes below ``top``, in order, as (step, name[, name]) with
    names relative to ``top`` ("." for ``top`` itself) and temp files as ``temp:<target>``."""

    STEPS = ("open", "write", "fsync", "close", "replace", "rename", "link", "mkdir", "unlink",
             "ftruncate")

    def __init__(self, top, monkeypatch):
        self.top = os.path.realpath(top)
        self.steps: list[tuple] = []
        self.fds: dict[int, str] = {}
        self.real = {step: getattr(os, step) for step in self.STEPS}
        for step in self.STEPS:
            monkeypatch.setattr(os, step, getattr(self, "_" + step))

    def name(self, path) -> str | None:
        full = os.path.realpath(os.fspath(path))
        if full != self.top and not full.startswith(self.top + os.sep):
            return None
        rel = os.path.relpath(full, self.top)
        base = os.path.basename(rel)
        if base.endswith(fileio.TEMP_SUFFIX):  # .<target>.<pid>.<random>.avtmp
            rel = os.path.join(os.path.dirname(rel), "temp:" + base[1:].rsplit(".", 3)[0])
        return rel

    def note(self, *step) -> None:
        if None not in step:
            self.steps.append(step)

    def _open(self, path, flags, mode=0o777, *, dir_fd=None):
        fd = self.real["open"](path, flags, mode, dir_fd=dir_fd)
        if self.name(path) is not None:
            self.fds[fd] = self.name(path)
        return fd

    def _close(self, fd):
        self.fds.pop(fd, None)
        return self.real["close"](fd)

    def _write(self, fd, data):
        self.note("write", self.fds.get(fd))
        return self.real["write"](fd, data)

    def _fsync(self, fd):
        self.note("fsync", self.fds.get(fd))
        return self.real["fsync"](fd)

    def _ftruncate(self, fd, length):
        self.note("ftruncate", self.fds.get(fd))
        return self.real["ftruncate"](fd, length)

    def _replace(self, src, dst, **kw):
        self.note("rename", self.name(src), self.name(dst))
        return self.real["replace"](src, dst, **kw)

    def _rename(self, src, dst, **kw):
        self.note("rename", self.name(src), self.name(dst))
        return self.real["rename"](src, dst, **kw)

    def _link(self, src, dst, **kw):
        self.note("link", self.name(src), self.name(dst))
        return self.real["link"](src, dst, **kw)

    def _mkdir(self, path, mode=0o777, **kw):
        self.note("mkdir", self.name(path))
        return self.real["mkdir"](path, mode, **kw)

    def _unlink(self, path, **kw):
        self.note("unlink", self.name(path))
        return self.real["unlink"](path, **kw)


@pytest.fixture
def syscalls(tmp_path, monkeypatch):
    return Syscalls(tmp_path, monkeypatch)


def test_atomic_write_writes_syncs_renames_then_syncs_the_folder(tmp_path, syscalls):
    fileio.atomic_write(tmp_path / "a.md", "one\n")
    fileio.atomic_write(tmp_path / "a.md", "two\n")
    once = [("write", "temp:a.md"), ("fsync", "temp:a.md"), ("rename", "temp:a.md", "a.md"), ("fsync", ".")]
    assert syscalls.steps == once + once


def test_atomic_write_makes_each_missing_folder_durable_before_the_file(tmp_path, syscalls):
    fileio.atomic_write(tmp_path / "x" / "y" / "a.md", "one\n")
    assert syscalls.steps == [
        ("mkdir", "x"), ("fsync", "."), ("mkdir", "x/y"), ("fsync", "x"),
        ("write", "x/y/temp:a.md"), ("fsync", "x/y/temp:a.md"),
        ("rename", "x/y/temp:a.md", "x/y/a.md"), ("fsync", "x/y")]


def test_a_derived_cache_is_replaced_atomically_without_fsync(tmp_path, syscalls):
    fileio.atomic_write(tmp_path / "cache.json", "{}", durable=False)
    assert syscalls.steps == [("write", "temp:cache.json"), ("rename", "temp:cache.json", "cache.json")]


def test_append_creates_the_file_syncs_it_then_its_folder(tmp_path, syscalls):
    fileio.append_jsonl(tmp_path / "log" / "d.jsonl", {"a": 1})
    fileio.append_jsonl(tmp_path / "log" / "d.jsonl", {"b": 2})
    assert syscalls.steps == [
        ("mkdir", "log"), ("fsync", "."),
        ("write", "log/d.jsonl"), ("fsync", "log/d.jsonl"), ("fsync", "log"),  # a new file
        ("write", "log/d.jsonl"), ("fsync", "log/d.jsonl")]                   # an existing one


def test_a_failed_append_is_cut_back_and_the_cut_synced(tmp_path, syscalls, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a":1}\n')

    def disk_fails(point, where):
        if point == "append:before_fsync":
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio, "fault_hook", disk_fails)
    with pytest.raises(OSError):
        fileio.append_jsonl(path, {"b": 2})
    assert path.read_text() == '{"a":1}\n'
    assert syscalls.steps == [("write", "d.jsonl"), ("ftruncate", "d.jsonl"), ("fsync", "d.jsonl")]


def test_create_new_links_a_synced_file_then_syncs_the_folder(tmp_path, syscalls):
    assert fileio.create_new(tmp_path / "n.md", "first\n") is True
    assert fileio.create_new(tmp_path / "n.md", "second\n") is False
    make = [("write", "temp:n.md"), ("fsync", "temp:n.md"), ("link", "temp:n.md", "n.md")]
    assert syscalls.steps == make + [("unlink", "temp:n.md"), ("fsync", ".")] + make + [("unlink", "temp:n.md")]
    assert (tmp_path / "n.md").read_text() == "first\n"


def test_moving_a_torn_tail_syncs_the_copy_before_cutting_the_file(tmp_path, syscalls):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a":1}\n{"b"')
    fileio.move_torn_tail(path)
    assert syscalls.steps == [("write", "d.jsonl.torn"), ("fsync", "d.jsonl.torn"),
                              ("ftruncate", "d.jsonl"), ("fsync", "d.jsonl"), ("fsync", ".")]


def _agent_with_memory(tmp_path):
    from atomic_vault.vault import AgentFolder

    folder = AgentFolder(tmp_path, "bot")
    folder.memory.mkdir(parents=True)
    folder.ensure_state_dir()
    return folder


def _outside_state(steps):
    return [step for step in steps if not any(part.startswith(".atomic_vault") for part in step[1:])]


def test_a_conditional_create_links_a_synced_file_then_syncs_the_folder(tmp_path, syscalls):
    from atomic_vault.backends.files import replace_if

    folder = _agent_with_memory(tmp_path)
    syscalls.steps.clear()
    assert replace_if(folder, folder.memory / "n.md", "first\n", None) is True
    assert _outside_state(syscalls.steps) == [
        ("write", "bot/memory/temp:n.md"), ("fsync", "bot/memory/temp:n.md"),
        ("link", "bot/memory/temp:n.md", "bot/memory/n.md"), ("unlink", "bot/memory/temp:n.md"),
        ("fsync", "bot/memory")]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename"])
def test_a_conditional_replace_swaps_in_a_synced_file_then_syncs_the_folder(tmp_path, syscalls,
                                                                            monkeypatch, exchange):
    from atomic_vault.backends import files

    folder = _agent_with_memory(tmp_path)
    note = folder.memory / "n.md"
    note.write_text("first\n")
    real_exchange = files._exchange
    if exchange:
        (tmp_path / "other").write_text("other")
        if not real_exchange(note, tmp_path / "other"):
            pytest.skip("this system cannot exchange two names")
        real_exchange(note, tmp_path / "other")
    syscalls.steps.clear()

    def recorded(first, second):
        syscalls.note("exchange", syscalls.name(first), syscalls.name(second))
        return real_exchange(first, second) if exchange else False

    monkeypatch.setattr(files, "_exchange", recorded)
    assert files.replace_if(folder, note, "second\n", "first\n") is True
    assert note.read_text() == "second\n"
    swap = ("exchange" if exchange else "rename", "bot/memory/temp:n.md", "bot/memory/n.md")
    assert _outside_state(syscalls.steps) == [
        ("write", "bot/memory/temp:n.md"), ("fsync", "bot/memory/temp:n.md"),
        ("exchange", "bot/memory/temp:n.md", "bot/memory/n.md"),
        *([] if exchange else [swap]),
        ("unlink", "bot/memory/temp:n.md"), ("fsync", "bot/memory")]


def test_a_new_agent_is_synced_whole_before_it_is_renamed_into_place(tmp_path, syscalls):
    from atomic_vault.scaffold import create_agent

    (tmp_path / "vault").mkdir()
    syscalls.steps.clear()
    create_agent(tmp_path / "vault", "bot")
    rename = next(i for i, step in enumerate(syscalls.steps) if step[0] == "rename")
    staging = syscalls.steps[rename][1]
    assert syscalls.steps[rename:] == [("rename", staging, "vault/bot"), ("fsync", "vault")]
    synced = {step[1] for step in syscalls.steps[:rename] if step[0] == "fsync"}
    made = {os.path.relpath(os.path.join(d, n), tmp_path).replace("vault/bot", staging, 1)
            for d, dirs, files in os.walk(tmp_path / "vault" / "bot") for n in dirs + files}
    assert made and made | {staging} <= synced  # every file and folder, the top one too


def test_frames_are_read_up_to_the_first_torn_or_damaged_one(tmp_path):
    from atomic_vault.fileio import append_frame, frame, read_frames
    path = tmp_path / "cache.changes"
    for payload in (b"one", b"", b"three"):
        append_frame(path, payload)
    raw = path.read_bytes()
    assert raw == frame(b"one") + frame(b"") + frame(b"three")
    assert read_frames(raw) == ([b"one", b"", b"three"], True)  # views compare as bytes
    assert read_frames(raw[:-1]) == ([b"one", b""], False)  # torn payload
    assert read_frames(raw + b"\x05\x00") == ([b"one", b"", b"three"], False)  # torn header
    damaged = bytearray(raw)
    damaged[len(frame(b"one")) - 1] ^= 1  # a bit of the first payload
    assert read_frames(bytes(damaged)) == ([], False)
    assert read_frames(b"") == ([], True)
