"""The default backends: everything in the agent folder as Markdown and JSONL files.

The file formats are in spec/03 (notes), spec/07 (log) and spec/08 (journal); the write
rules (atomic replace, whole-line appends) live in ``fileio``.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import json
import math
import os
import re
import stat
import sys
from array import array
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import catalog, clock, fileio, runlog, wordindex
from . import packs
from ..errors import ConfigError, LogError, NoteError
from ..fileio import (append_text, atomic_write, create_new, fsync_dir, make_dirs,
                      read_jsonl, read_text_cached)
from ..notes import FILENAME, matching
from ..protocols import UNCHECKED, CostRow, LogQuery, Progress, SearchHit, note_changed
from ..locks import os_locks
from ..vault import MONTH, AgentFolder, readable_inside
from ..wordindex import WordIndex, body_of, words

def note_path(folder: AgentFolder, file: str) -> Path:
    """memory/<file> for a valid note file name; anything else (paths, '..', INDEX.md) is
    refused, so a name from a model or a command line never leaves memory/."""
    if not isinstance(file, str) or not FILENAME.match(file):
        raise NoteError(f"{file!r} is not a note file name", field="file",
                        fix="use TYPE_slug.md, e.g. project_verdemar.md (see `notes NAME list`)")
    return folder.memory / file


def snippet(text: str, terms: list[str], width: int = 160) -> str:
    """A one-line excerpt around the first matched term, matches wrapped in [ ]."""
    flat = " ".join(text.split())
    folded = flat.casefold()
    first = min((i for i in (folded.find(t) for t in terms) if i >= 0), default=0)
    start = max(0, first - width // 3)
    piece = flat[start:start + width]
    for term in sorted(set(terms), key=len, reverse=True):
        piece = re.sub(re.escape(term), lambda m: f"[{m.group(0)}]", piece, flags=re.IGNORECASE)
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


def check_match(match: str) -> str:
    """``match`` of ``MemoryBackend.search``, refused unless it is ``all`` or ``any``."""
    if match not in ("all", "any"):
        raise ValueError(f"match must be 'all' or 'any', not {match!r}")
    return match


def folder_mark(folder: AgentFolder) -> str:
    """memory/'s modification time and link count ("" when it is missing): what a create,
    a delete or a rename-over save in it changes."""
    try:
        st = os.stat(folder.memory)
    except OSError:
        return ""
    return f"{st.st_mtime_ns}:{st.st_nlink}"


class FileMemory:
    """Notes as memory/*.md files, INDEX as memory/INDEX.md. Search reads every note; the
    ranked search (``match="any"``) keeps a word index in .atomic_vault/ (``wordindex``)."""

    name = "files"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.url = url
        self._words: dict[Path, WordIndex] = {}
        self._seen: dict[Path, tuple[str, dict[str, dict[str, Any]]]] = {}

    def scan(self, folder: AgentFolder):
        refuse_linked_memory(folder)
        mark = folder_mark(folder)  # before the scan: a change during it moves the mark
        found = catalog.scan(folder)
        self._seen[folder.memory] = (mark, found[0])
        return found

    def _catalog(self, folder: AgentFolder) -> dict[str, dict[str, Any]]:
        """The catalog for a ranked search: this object's last scan while memory/ itself is
        unchanged since (its modification time and link count: creates, deletes and the
        rename-over saves of writes and most editors move them), else a new scan. A run
        scans first, so its search ranks the very notes it assembles from."""
        mark = folder_mark(folder)
        seen = self._seen.get(folder.memory)
        if seen is not None and mark and seen[0] == mark:
            return seen[1]
        notes, _ = catalog.scan(folder, persist=False)
        self._seen[folder.memory] = (mark, notes)
        return notes

    def changed_notes(self, folder: AgentFolder) -> list[str]:
        """The note files the catalog saw change since a run last took them (history.py)."""
        return catalog.take_changed(folder)

    def settle_changed_notes(self, folder: AgentFolder) -> None:
        catalog.settle_changed(folder)

    def list(self, folder: AgentFolder, *, type: str | None = None, pinned: bool | None = None,
             archived: bool | None = None, recent: int | None = None) -> list[dict[str, Any]]:
        refuse_linked_memory(folder)
        notes, _ = catalog.scan(folder, persist=False)
        return matching(notes.values(), type=type, pinned=pinned, archived=archived, recent=recent)

    def get(self, folder: AgentFolder, file: str) -> str | None:
        path = note_path(folder, file)
        refuse_linked_memory(folder)
        try:
            return read_text_cached(path)
        except UnicodeDecodeError as exc:
            raise NoteError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                            fix="re-save the note as UTF-8") from None

    def put(self, folder: AgentFolder, file: str, text: str, *,
            expected: str | None = UNCHECKED) -> None:
        path = note_path(folder, file)
        _refuse_links(folder, path)
        make_dirs(folder.memory)
        self._seen.pop(folder.memory, None)  # a write within the folder's timestamp tick
        if expected is UNCHECKED:
            atomic_write(path, text)
        else:
            replace_if(folder, path, text, expected)

    def delete(self, folder: AgentFolder, file: str) -> bool:
        path = note_path(folder, file)
        _refuse_links(folder, path)
        self._seen.pop(folder.memory, None)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def get_index(self, folder: AgentFolder) -> str | None:
        refuse_linked_memory(folder)
        if folder.index.is_symlink() or (folder.index.exists() and not folder.index.is_file()):
            raise NoteError("is a link or not a regular file", path=folder.index,
                            fix="move it away; `doctor --repair` then rebuilds INDEX.md from the notes")
        try:
            return read_text_cached(folder.index)
        except UnicodeDecodeError as exc:
            raise NoteError(f"is not valid UTF-8 (byte {exc.start})", path=folder.index,
                            fix="re-save INDEX.md as UTF-8, or `doctor --repair` to rebuild it") from None

    def put_index(self, folder: AgentFolder, text: str, *,
                  expected: str | None = UNCHECKED) -> None:
        _refuse_links(folder, folder.index)
        make_dirs(folder.memory)
        if expected is UNCHECKED:
            atomic_write(folder.index, text)
        else:
            replace_if(folder, folder.index, text, expected)

    def search(self, folder: AgentFolder, query: str, *, limit: int = 10,
               match: str = "all") -> list[SearchHit]:
        check_match(match)
        terms = words(query)
        if not terms:
            return []
        refuse_linked_memory(folder)
        if match == "any":
            notes = self._catalog(folder)
            index = self._words.get(folder.memory)
            if index is None:
                index = self._words[folder.memory] = WordIndex(folder)
            best = index.search(notes, lambda file: self.get(folder, file), terms, limit)
            return [SearchHit(file, notes[file]["name"], notes[file]["type"], score,
                              snippet(body_of(self.get(folder, file) or ""), terms))
                    for file, score in best]
        notes, _ = catalog.scan(folder, persist=False)
        hits = []
        for file, summary in notes.items():
            try:
                text = self.get(folder, file) or ""
            except NoteError:
                continue
            haystack = f"{summary['name']}\n{summary['description']}\n{text}".casefold()
            counts = [haystack.count(t) for t in terms]
            if all(counts):
                hits.append(SearchHit(file, summary["name"], summary["type"], float(sum(counts)),
                                      snippet(text.split("---", 2)[-1], terms)))
        hits.sort(key=lambda h: (-h.score, h.file))
        return hits[:max(limit, 0)]

    def destinations(self, folder: AgentFolder, day: date) -> list[Path]:
        """What a run's write-back may write here, checked before its first write (each
        note is checked again as it is written: a bad one rejects only its capture)."""
        return [folder.index]

    def reindex(self, folder: AgentFolder, progress: Progress | None = None) -> int:
        catalog.forget(folder)
        wordindex.forget(folder)
        self._words.pop(folder.memory, None)
        notes, errors = catalog.scan(folder)
        if progress:
            progress(len(notes) + len(errors))
        return len(notes)


def refuse_linked_folders(folder: AgentFolder, path: Path) -> None:
    """Every folder from the agent folder down to ``path`` must be a real folder: a link
    among them would carry a journal or log write out of the agent folder."""
    for parent in reversed(path.relative_to(folder.path).parents[:-1]):
        where = folder.path / parent
        if where.is_symlink() or (where.exists() and not where.is_dir()):
            raise NoteError(f"{parent.as_posix()}/ is a link or not a folder; nothing was written",
                            path=where, fix=f"make {parent.as_posix()}/ a plain folder inside the agent folder")


def refuse_linked_memory(folder: AgentFolder) -> None:
    """memory/ is read, as it is written, only as a plain folder of the agent: notes behind
    a link would reach the prompt from outside the agent folder."""
    memory = folder.memory
    if memory.is_symlink() or (memory.exists() and not memory.is_dir()):
        raise NoteError("memory/ is a link or not a folder; notes are read and written only "
                        "inside the agent folder", path=memory,
                        fix="make memory/ a plain folder inside the agent folder (move the notes into it)")


def check_destination(folder: AgentFolder, path: Path) -> None:
    """Refuse, before anything is written, a destination inside the agent folder that a
    write could not take: a link or a non-folder on the way down, a link or a non-regular
    file at the end, or a folder (missing, or the file's own) that cannot take it."""
    where = folder.path
    for part in path.relative_to(folder.path).parts:
        where = where / part
        last = where == path
        try:
            st = os.lstat(where)
        except FileNotFoundError:
            if not os.access(where.parent, os.W_OK | os.X_OK):
                parent = "the agent folder" if where.parent == folder.path else folder.relative(where.parent) + "/"
                raise NoteError(f"cannot be created: {parent} is not writable; nothing was written", path=where,
                                fix="make the agent folder writable by the user running the agent") from None
            return
        what = folder.relative(where) + ("" if last else "/")
        if stat.S_ISLNK(st.st_mode):
            raise NoteError(f"{what} is a link; the write-back writes only inside the agent folder, "
                            "and nothing was written", path=where,
                            fix=f"replace {what} with the plain {'file' if last else 'folder'} it points to")
        if not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
            raise NoteError(f"{what} is not a {'regular file' if last else 'folder'}; nothing was written",
                            path=where, fix=f"move it away and make {what} a plain "
                                            f"{'file' if last else 'folder'}")
    if not os.access(path.parent, os.W_OK | os.X_OK):  # a replace renames, an append may create
        raise NoteError(f"cannot be written: {folder.relative(path.parent)}/ is not writable; nothing "
                        "was written", path=path, fix="make the folder writable by the user running the agent")


def _refuse_links(folder: AgentFolder, path: Path) -> None:
    """memory/ and the note itself must be real files inside the agent folder."""
    memory = folder.memory
    if memory.is_symlink() or (memory.exists() and not memory.is_dir()):
        raise NoteError("memory/ is a link or not a folder; nothing was written", path=memory,
                        fix="make memory/ a plain folder inside the agent folder")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NoteError("exists but is not a regular file; nothing was written", path=path,
                        fix="move it away; notes are plain Markdown files")


def replace_if(folder: AgentFolder, path: Path, text: str, expected: str | None) -> bool:
    """Compare-and-swap of one file: write ``text`` only while ``path`` holds exactly
    ``expected`` (None: only while it does not exist); otherwise raise NoteChanged and
    leave the file alone. Returns False when it already held ``text``.

    Creation is exact: a hard link never replaces a file. A replacement compares the file
    again once the new text is safely on disk, then swaps (see ``_swap``). Replacements
    hold ``.atomic_vault/memory.lock`` from that check to the swap, so writers that go
    through here never lose each other's updates.
    """
    raw = text.encode("utf-8")
    want = None if expected is None else expected.encode("utf-8")
    current, _ = _read_signed(path)
    if current != want:  # stale already: spare the temporary file and its fsync
        raise note_changed(path, expected)
    if current == raw:
        return False
    temp = fileio.synced_temp(path, raw)
    renamed = False
    try:
        if want is None:
            try:
                os.link(temp, path)  # fails if anything took the name meanwhile
            except FileExistsError:
                raise note_changed(path, expected) from None
            renamed = True
        else:
            with _memory_lock(folder):
                renamed = True  # from here on names may move: even a refusal syncs the folder
                _swap(path, temp, want, raw, expected)
    finally:
        temp.unlink(missing_ok=True)  # after a swap: the replaced file
        if renamed:
            fsync_dir(path.parent)
    return True


def _swap(path: Path, temp: Path, want: bytes, raw: bytes, expected: str) -> None:
    """Move ``temp`` (holding ``raw``) to ``path`` if ``path`` holds ``want``.

    POSIX has no compare-and-rename. Where the system can exchange two names atomically
    (Linux), the file that was replaced is checked after the exchange and put back if it
    was not the one expected, so an editor's save is never lost, whenever it lands. Elsewhere
    the check comes just before the rename, and an edit landing in between is lost (spec/11).
    """
    current, signature = _read_signed(path)  # again: the fsync took milliseconds
    if current != want or _signature(path) != signature:
        raise note_changed(path, expected)
    try:
        exchanged = _exchange(temp, path)
    except FileNotFoundError:  # removed since the check
        raise note_changed(path, expected) from None
    if not exchanged:
        os.replace(temp, path)
        return
    if _read_signed(temp)[0] == want:  # temp now names exactly the file that was replaced
        return
    _exchange(temp, path)  # it changed after the check: put that change back
    if _read_signed(temp)[0] != raw:  # saved once more meanwhile: the newest save stays
        _exchange(temp, path)
    raise note_changed(path, expected)


_RENAMEAT2: Any = None  # the C function once looked up, False where there is none


def _exchange(first: Path, second: Path) -> bool:
    """Swap two names atomically (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or the file system cannot."""
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        _RENAMEAT2 = False
        if sys.platform.startswith("linux"):
            import ctypes  # only here: most runs never replace a note

            _RENAMEAT2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", False)
    if not _RENAMEAT2:
        return False
    import ctypes

    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if _RENAMEAT2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False  # this file system cannot exchange: check, then rename
    raise OSError(error, os.strerror(error), str(second))


def _read_signed(path: Path) -> tuple[bytes | None, tuple | None]:
    """(bytes, stat signature of the file read) or (None, None) when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None, None
    try:
        signature = _signed(os.fstat(fd))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), signature
    finally:
        os.close(fd)


def _signature(path: Path) -> tuple | None:
    try:
        return _signed(os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return None


def _signed(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _memory_lock(folder: AgentFolder):
    """Serialises the check-and-rename of every conditional write of an agent's memory."""
    return _state_lock(folder, "memory.lock")


class FileLog:
    """The run log as JSONL day files under log/YYYY-MM/ plus log/HEAD (spec/07).

    Appends serialise on ``.atomic_vault/log.lock`` (besides the agent's lock), so writers
    that do not share a LockBackend (doctor, a migration) cannot fork the chain."""

    name = "files"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.url = url
        self._words: dict[Path, WordIndex] = {}

    def ready(self, folder: AgentFolder) -> None:
        refuse_linked_folders(folder, folder.head)
        runlog.ready(folder)

    def destinations(self, folder: AgentFolder, day: date) -> list[Path]:
        return [folder.log_file(day), folder.head]

    def append(self, folder: AgentFolder, record: dict[str, Any],
               fence: tuple[str, int] | None = None) -> dict[str, Any]:
        refuse_linked_folders(folder, folder.log_file(_record_day(record)))
        with _log_lock(folder):
            chained = runlog.append(folder, record, fence=fence)
            # Keep the rollups of this month's day files on disk, so that the next run's
            # guardrail check (a new process, under cron) reads no whole day file.
            _rollups(folder, runlog.day_files(folder, since=str(chained.get("ts", ""))[:7] + "-01"),
                     persist=True)
            return chained

    def get(self, folder: AgentFolder, run_id: str) -> dict[str, Any] | None:
        needle = json.dumps(run_id, ensure_ascii=False).encode("utf-8")
        for path in runlog.newest_day_files(folder):
            with open(path, "rb") as handle:
                raw = handle.read()
            if needle not in raw:
                continue
            found, _ = read_jsonl(path)
            for _, record in reversed(found):
                if record.get("run_id") == run_id:
                    return record
        return None

    def query(self, folder: AgentFolder, query: LogQuery = LogQuery()) -> list[dict[str, Any]]:
        files = _files_between(folder, query.since, query.until)
        if query.limit is None:
            return [record for path in files for _, record in read_jsonl(path)[0] if _matches(record, query)]
        newest_first: list[dict[str, Any]] = []
        for path in reversed(files):  # the newest N: read day files from the end, stop early
            if len(newest_first) >= query.limit:
                break
            found, _ = read_jsonl(path)
            newest_first += [r for _, r in reversed(found) if _matches(r, query)]
        return newest_first[:max(query.limit, 0)][::-1]

    def cost(self, folder: AgentFolder, by: str = "day", *, since: str | None = None,
             until: str | None = None) -> list[CostRow]:
        width = _period_width(by)
        totals: dict[str, list] = {}
        for rollup in _rollups(folder, _files_between(folder, since, until)):
            for day, row in rollup.items():
                if (since and day < since[:10]) or (until and day > until[:10]):
                    continue
                total = totals.setdefault(day[:width], [0, 0, 0, 0.0, 0])
                for i, value in enumerate(row):
                    total[i] += value
        return [CostRow(period, int(t[0]), int(t[1]), int(t[2]), round(t[3], 10), int(t[4]))
                for period, t in sorted(totals.items())]

    def records(self, folder: AgentFolder) -> Iterator[dict[str, Any]]:
        for _, _, record in runlog.records(folder):
            yield record

    def generation(self, folder: AgentFolder) -> int:
        """Moves on every commit of this agent's log: the seq its HEAD names (one small read)."""
        return int((self.head(folder) or {}).get("seq", 0))

    def head(self, folder: AgentFolder) -> dict[str, Any] | None:
        return runlog.read_head(folder)

    def chain_text(self, folder: AgentFolder, record: dict[str, Any]) -> bytes | None:
        """The stored lines from ``record`` to HEAD, as stored (each the canonical JSON the
        chain hashes): an old run's evidence bundle copies the bytes of the day files from
        its line on instead of parsing and re-serialising every later record. None when the
        record's line is not found from its day on, or the lines do not count up to HEAD
        (a lagging HEAD, a blank line, a hand edit): the caller then reads the records."""
        head = runlog.read_head(folder) or {}
        seq = record.get("seq")
        if not (isinstance(seq, int) and isinstance(head.get("seq"), int) and isinstance(record.get("hash"), str)):
            return None
        needle = b'"hash":' + json.dumps(record["hash"]).encode("ascii")
        files = runlog.day_files(folder, str(record.get("ts", ""))[:10] or None)
        chunks: list[bytes] = []
        for path in files:
            raw = path.read_bytes()
            raw = raw[:raw.rfind(b"\n") + 1]  # a torn last line is no record
            if not chunks:
                start = _line_of(raw, needle, record)
                if start is None:
                    continue
                raw = raw[start:]
            chunks.append(raw)
        if sum(chunk.count(b"\n") for chunk in chunks) != head["seq"] - seq + 1:
            return None  # a blank line, a line more or less than the seqs say: read the records
        return b"".join(chunks)

    def verify(self, folder: AgentFolder, anchor: str | None = None) -> runlog.Verification:
        result = runlog.verify(folder, anchor)
        if result.ok:
            problems, warnings = rollup_problems(folder)
            result.warnings += warnings
            if problems:
                result.fail(folder.state / ROLLUP_CACHE, 1, None, problems[0])
        return result

    def import_records(self, folder: AgentFolder, records: Iterable[dict[str, Any]],
                       progress: Progress | None = None) -> int:
        count = 0
        with _log_lock(folder):
            seq, prev, newest = runlog.ready(folder)
            batch: list[str] = []
            batch_path: Path | None = None

            def flush() -> None:
                if batch:
                    append_text(batch_path, "".join(batch))
                    if progress:
                        progress(len(batch))
                    batch.clear()

            for record in records:
                seq, prev = runlog.continues(record, seq, prev, folder.name)
                path = folder.log_file(_record_day(record))
                if newest is not None and newest.name > path.name:
                    path = newest
                if path != batch_path or len(batch) >= 2000:
                    flush()
                    batch_path, newest = path, path
                batch.append(json.dumps(record, ensure_ascii=False, separators=(",", ":"),
                                        sort_keys=True) + "\n")
                count += 1
            flush()
            if count:
                _rollups(folder, runlog.day_files(folder), persist=True)
            if count and seq:
                runlog.write_head(folder, seq, prev, _fence_of(runlog.read_head(folder)))
        return count

    # Snapshots (spec/07): a pack per day, log/snapshots/YYYY-MM-DD.jsonl, with a derived
    # index (``packs``); one fsync'd append per run. Old log/snapshots/<sha>.txt still read.

    def put_snapshots(self, folder: AgentFolder, texts: dict[str, str]) -> None:
        if not texts:
            return
        pack = f"{clock.now(None).date().isoformat()}.jsonl"
        refuse_linked_folders(folder, packs.folder_of(folder) / pack)
        with _state_lock(folder, "snapshots.lock"):
            packs.put(folder, texts, pack)

    def get_snapshot(self, folder: AgentFolder, sha: str) -> str | None:
        snapshot_path(folder, sha)  # refuses anything but a hash
        return packs.read(folder, sha)

    def snapshot_hashes(self, folder: AgentFolder) -> list[str]:
        return packs.hashes(folder)

    def delete_snapshots(self, folder: AgentFolder, hashes: Iterable[str]) -> int:
        hashes = list(hashes)
        for sha in hashes:
            snapshot_path(folder, sha)
        with _state_lock(folder, "snapshots.lock"):
            return packs.delete(folder, hashes)


def _line_of(raw: bytes, needle: bytes, record: dict[str, Any]) -> int | None:
    """Where the line holding exactly ``record`` starts in ``raw`` (found by its hash)."""
    at = raw.find(needle)
    while at >= 0:
        start = raw.rfind(b"\n", 0, at) + 1
        try:
            if fileio.loads_strict(raw[start:raw.find(b"\n", at)]) == record:
                return start
        except ValueError:
            pass
        at = raw.find(needle, at + 1)
    return None


SNAPSHOTS = "snapshots"
SNAPSHOT_SHA = re.compile(r"[0-9a-f]{64}\Z")


def snapshot_path(folder: AgentFolder, sha: str) -> Path:
    """log/snapshots/<sha>.txt, where snapshots were stored one file each before packs;
    anything but a hex SHA-256 is refused (no path tricks)."""
    if not isinstance(sha, str) or not SNAPSHOT_SHA.match(sha):
        raise LogError(f"{str(sha)[:80]!r} is not a snapshot hash", field="snapshot",
                       fix="name a snapshot by the 64 hex digits of its SHA-256")
    return folder.log / SNAPSHOTS / f"{sha}.txt"


def _fence_of(head: dict[str, Any] | None) -> list | None:
    return head.get("fence") if head else None


def _log_lock(folder: AgentFolder):
    """Serialises appends to the files log, whatever lock backend the runs use."""
    return _state_lock(folder, "log.lock")


@contextmanager
def _state_lock(folder: AgentFolder, name: str) -> Iterator[None]:
    """An OS lock on ``.atomic_vault/<name>``, held for the ``with`` block."""
    portalocker = os_locks()  # imported here: only writers need it

    path = folder.ensure_state_dir() / name
    with open(path, "a", encoding="utf-8") as handle:
        portalocker.lock(handle, portalocker.LOCK_EX)
        try:
            yield
        finally:
            portalocker.unlock(handle)


def _record_day(record: dict[str, Any]) -> date:
    try:
        return date.fromisoformat(str(record.get("ts", ""))[:10])
    except ValueError:
        return date.today()


def _period_width(by: str) -> int:
    if by not in ("day", "month"):
        raise LogError(f"cannot group cost by {by!r}", field="--by", fix="use --by day or --by month")
    return 10 if by == "day" else 7


def _files_between(folder: AgentFolder, since: str | None, until: str | None) -> list[Path]:
    """Day files that can hold records of the range (a file's name is its append day;
    a record's ts is never later than that day, except after a clock change)."""
    return runlog.day_files(folder, since)


def _matches(record: dict[str, Any], query: LogQuery) -> bool:
    ts = str(record.get("ts", ""))
    if query.since and ts[:len(query.since)] < query.since:
        return False
    if query.until and ts[:len(query.until)] > query.until:
        return False
    return all(value is None or record.get(key) == value for key, value in
               (("status", query.status), ("trigger", query.trigger), ("kind", query.kind)))


ROLLUP_CACHE = "cost-rollup.json"
_TAIL = 256  # bytes before a cached offset that must be unchanged for an incremental read
ROLLUP_LAG = 64 * 1024  # bytes of new lines a new process may have to read (about 60 records)
_ROLLUPS: dict[Path, dict[str, Any]] = {}
_ON_DISK: dict[Path, dict[str, Any]] = {}  # the read offsets in the cache file as last saved


def _rollups(folder: AgentFolder, files: list[Path], persist: bool = False) -> list[dict[str, list]]:
    """{day: [runs, input tokens, output tokens, cost, unknown-cost runs]} of each day file.

    Derived, so it is kept in ``.atomic_vault/cost-rollup.json`` (deletable) and in memory:
    an unchanged file is not read at all, and a file that only grew (appends) is read from
    where it was last read. Anything else (an edit, a new inode) re-reads the whole file.
    Only writers persist (``persist=True``, from appends), so read-only commands change
    nothing on disk; and they persist only when a whole file had to be read, or when the
    newest file has grown by ROLLUP_LAG bytes since the copy on disk: a new process (a cron
    run's guardrail check) then reads at most that many bytes of new lines.

    The guardrail check trusts these sums, so each entry is sealed (``seal``) over the
    bytes it covers (offset and tail digest), the chain hash of the last record it read
    (``covers``) and its sums: an entry edited by hand is ignored and rebuilt, and
    ``verify`` recomputes every sealed entry from the day file (``rollup_problems``).
    """
    cache_path = folder.state / ROLLUP_CACHE
    saved = _ROLLUPS.get(cache_path)
    if saved is None:
        try:
            saved = json.loads(cache_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        _ON_DISK[cache_path] = {key: entry.get("read") for key, entry in saved.items()
                                if seal(entry) and entry.get("seal") == seal(entry)}
    on_disk = _ON_DISK.setdefault(cache_path, {})
    worth_saving = False
    out = []
    for path in files:
        key = path.name
        entry, fresh = _rollup_of(path, saved.get(key))
        if fresh:
            saved[key] = entry
            lag = entry["read"] - (on_disk.get(key) or 0)
            worth_saving = worth_saving or on_disk.get(key) is None or not 0 <= lag < ROLLUP_LAG
        out.append(entry["days"])
    _ROLLUPS[cache_path] = saved
    if worth_saving and persist and folder.path.is_dir():
        try:  # derived: failing to save it must not fail the append that already happened
            folder.ensure_state_dir()
            atomic_write(cache_path, json.dumps(saved, separators=(",", ":")), durable=False)
            _ON_DISK[cache_path] = {key: entry.get("read") for key, entry in saved.items()}
        except (OSError, NoteError, ConfigError):
            pass
    return out


def _rollup_of(path: Path, entry: Any) -> tuple[dict[str, Any], bool]:
    """(rollup entry, whether it was (re)computed) for one day file."""
    st = os.stat(path)
    entry = entry if isinstance(entry, dict) and entry.get("seal") == seal(entry) else None
    if entry is not None and (entry["ino"], entry["mtime"], entry["size"]) == (st.st_ino, st.st_mtime_ns, st.st_size):
        return entry, False
    days: dict[str, list] = {}
    start, covers = 0, None
    with open(path, "rb") as handle:
        if entry is not None and entry["ino"] == st.st_ino and 0 < entry["read"] <= st.st_size:
            handle.seek(max(entry["read"] - _TAIL, 0))
            if _digest(handle.read(min(entry["read"], _TAIL))) == entry["tail"]:
                start, covers = entry["read"], entry["covers"]
                days = {d: list(row) for d, row in entry["days"].items()}
        handle.seek(start)
        raw = handle.read()
    whole = raw.rfind(b"\n") + 1  # a torn last line is left for the next read
    covers = _add_lines(raw[:whole], days) or covers
    read = start + whole
    tail_from = max(read - _TAIL, 0)
    tail = (raw[tail_from - start:whole] if tail_from >= start else _head_bytes(path, tail_from, read))
    fresh = {"ino": st.st_ino, "mtime": st.st_mtime_ns, "size": st.st_size, "read": read,
             "tail": _digest(tail), "covers": covers, "days": days}
    fresh["seal"] = seal(fresh)
    return fresh, True


def _add_lines(raw: bytes, days: dict[str, list]) -> str | None:
    """Add the run records of whole lines ``raw`` to ``days``; the last record's hash."""
    last = None
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = fileio.loads_strict(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        last = record.get("hash") if isinstance(record.get("hash"), str) else last
        if record.get("kind", "run") not in ("run", "replay"):  # replays call the model too
            continue
        row = days.setdefault(str(record.get("ts", ""))[:10], [0, 0, 0, 0.0, 0])
        row[0] += 1
        row[1] += _int(record.get("input_tokens"))
        row[2] += _int(record.get("output_tokens"))
        cost = record.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            row[3] += cost
        else:
            row[4] += 1
    return last


_SEALED = ("ino", "mtime", "size", "read", "tail", "covers", "days")


def seal(entry: Any) -> str | None:
    """The digest binding a cached rollup to what it covers; None for a malformed entry."""
    if not isinstance(entry, dict) or set(_SEALED) - set(entry) or not isinstance(entry.get("read"), int):
        return None
    body = json.dumps([entry[key] for key in _SEALED], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def rollup_problems(folder: AgentFolder) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the cost rollup cache on disk against the day files: a
    sealed entry whose sums or chain hash differ from the bytes it covers would move a
    guardrail decision (a problem); an unsealed one is ignored by every reader (a warning)."""
    path = folder.state / ROLLUP_CACHE
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return [], []
    problems: list[str] = []
    warnings: list[str] = []
    files = {day.name: day for day in runlog.day_files(folder)}
    for name, entry in sorted(cache.items()) if isinstance(cache, dict) else []:
        if name not in files:
            continue
        if not isinstance(entry, dict) or entry.get("seal") != seal(entry):
            warnings.append(f"{path}: the cached cost rollup of {name} is not sealed (edited, or "
                            "written by an older atomic-vault); it is ignored and rebuilt at the next run")
            continue
        st = os.stat(files[name])
        with open(files[name], "rb") as handle:
            raw = handle.read(entry["read"])
        unchanged = (entry["ino"], entry["mtime"], entry["size"]) == (st.st_ino, st.st_mtime_ns, st.st_size)
        grown = (entry["ino"] == st.st_ino and 0 < entry["read"] == len(raw)
                 and _digest(raw[-_TAIL:]) == entry["tail"])
        if not (unchanged or grown):
            continue  # stale: readers rebuild it
        days: dict[str, list] = {}
        covers = _add_lines(raw[:raw.rfind(b"\n") + 1], days)
        same = days.keys() == entry["days"].keys() and all(
            row[:3] + row[4:] == list(entry["days"][day][:3]) + list(entry["days"][day][4:])
            and abs(row[3] - entry["days"][day][3]) <= 1e-9 for day, row in days.items())
        if not same or covers != entry["covers"]:
            problems.append(f"tampered: the cost rollup cache ({path}) disagrees with {name} "
                            "(edited outside atomic-vault; guardrail checks read it): "
                            "delete the file, it is rebuilt from the log")
    return problems, warnings


def _digest(raw: bytes) -> str:
    return hashlib.sha1(raw).hexdigest()


def _head_bytes(path: Path, start: int, stop: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(stop - start)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class FileJournal:
    """One Markdown file per day under journal/YYYY-MM/ (spec/08)."""

    name = "files"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.url = url
        self._words: dict[Path, WordIndex] = {}

    def destinations(self, folder: AgentFolder, day: date) -> list[Path]:
        return [folder.journal_file(day)]

    def append(self, folder: AgentFolder, when: datetime, section: str) -> None:
        path = folder.journal_file(when.date())
        refuse_linked_folders(folder, path)
        if not path.exists():
            create_new(path, f"# {when:%Y-%m-%d}\n")  # the heading, once, even when racing
        append_text(path, section)

    def recent(self, folder: AgentFolder, days: int) -> list[tuple[str, str]]:
        refuse_linked_folders(folder, folder.journal / "day")  # refused before the model is paid
        out = []
        for path in recent_journal_days(folder, days):
            real = readable_inside(folder, path)  # a day behind a link out, or a FIFO: refused
            if real is None:
                continue
            try:
                text = read_text_cached(real)
            except UnicodeDecodeError as exc:
                raise NoteError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                                fix="re-save the journal file as UTF-8") from None
            if text is not None:
                out.append((folder.relative(path), text))
        return out


def recent_journal_days(folder: AgentFolder, count: int) -> list[Path]:
    """The newest ``count`` journal day files, oldest first."""
    if count <= 0 or not folder.journal.is_dir():
        return []
    days: list[Path] = []
    for month in sorted((p for p in folder.journal.iterdir() if p.is_dir() and MONTH.match(p.name)),
                        reverse=True):
        days.extend(sorted(month.glob("????-??-??.md"), reverse=True))
        if len(days) >= count:
            break
    return sorted(days[:count])
