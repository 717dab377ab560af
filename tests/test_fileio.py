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
