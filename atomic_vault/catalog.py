"""What notes exist and what their frontmatter says, without re-parsing unchanged files.

The catalog is derived state: a file's entry is re-read whenever its stat signature
(mtime, ctime, size, inode) changes, so hand edits are seen on the next call. A file
changed within RACY_NS of a scan may change again inside the same timestamp tick without
its signature moving, so its entry keeps the text it was parsed from and the next scan
compares the file's text with it (a read, not a parse) until the file is old enough for
its signature alone to be trusted.

Entries are kept in memory per process and between processes in
``.atomic_vault/notes-<python>.marshal`` (marshal loads twice as fast as JSON; one file per
interpreter version) plus ``notes-<python>.changes``, where each scan that saw changes
appends only the changed entries as one checksummed frame. The frames are folded into a
new marshal file once they hold a quarter of the entries. Both files are private derived
state: a torn or foreign frame is ignored, and deleting them only costs time. When nothing
changed, ``scan`` returns the very same dicts as before, so callers may memoise work
derived from them (they must not mutate them).
"""

from __future__ import annotations

import marshal
import os
from stat import S_ISREG
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import NoteError
from .fileio import append_frame, atomic_write, read_frames
from .notes import check_note_text, error_from_record, error_record, read_note_text, summarize
from .vault import AgentFolder

CACHE_NAME = f"notes-{sys.implementation.cache_tag}.marshal"
CHANGES_NAME = f"notes-{sys.implementation.cache_tag}.changes"
CACHE_VERSION = 6
# A file changed within this window of a scan may change again inside the same timestamp
# tick without its signature moving, so its entry is not trusted on the next scan.
RACY_NS = 2_000_000_000


class _State:
    """Entries (file name -> (signature, summary, error record, text or None)) and the
    cache files' state: ``generation`` names the marshal file the changes belong to,
    ``pending`` counts the entries appended since it was written (None: no usable file)."""
    __slots__ = ("entries", "notes", "errors", "generation", "pending", "parent", "touched")

    def __init__(self, entries: dict[str, tuple], generation: str | None = None,
                 pending: int | None = None, base: _State | None = None,
                 changed: dict[str, tuple | None] | None = None):
        self.entries = entries
        self.generation = generation
        self.pending = pending
        self.parent, self.touched = None, None
        if base is None or changed is None:
            self.notes = {name: item[1] for name, item in entries.items() if item[1] is not None}
            self.errors = {name: error_from_record(item[2]) for name, item in entries.items()
                           if item[2] is not None}
            return
        # A few entries changed: copy the last result and apply them, rather than
        # rebuilding from every entry; ``touched`` lets callers update their own work.
        self.notes, self.errors = dict(base.notes), dict(base.errors)
        self.parent, self.touched = base.notes, set()
        for name, entry in changed.items():
            summary = None if entry is None else entry[1]
            if base.notes.get(name) is not summary:
                self.touched.add(name)
            self.notes.pop(name, None)
            self.errors.pop(name, None)
            if summary is not None:
                self.notes[name] = summary
            if entry is not None and entry[2] is not None:
                self.errors[name] = error_from_record(entry[2])


_MEMO: dict[Path, _State] = {}
# Set by the CLI when stderr is a terminal: called with the number of notes once a scan has
# spent PROGRESS_AFTER_S reading them, it returns (update(done), finish()) for a progress bar.
progress: Callable[[int], tuple[Callable[[int], None], Callable[[], None]]] | None = None
PROGRESS_AFTER_S = 1.0
_clock = time.monotonic


def scan(folder: AgentFolder, *, persist: bool = True
         ) -> tuple[dict[str, dict[str, Any]], dict[str, NoteError]]:
    """(summary by file name for every valid note, error by file name for the rest).

    ``persist=False`` keeps the disk untouched (for read-only commands).
    """
    memory = folder.memory
    state = _MEMO.get(memory)
    if state is None:
        entries, generation, pending = _load(folder)
    else:
        entries, generation, pending = state.entries, state.generation, state.pending
    known = state is not None or generation is not None  # not a first build
    fresh: dict[str, tuple] = {}
    changed: dict[str, tuple | None] = {}
    reread: list[str] = []
    added = 0
    racy_after = time.time_ns() - RACY_NS
    listed: list[int] = []
    bar, done, reads, started = None, 0, 0, _clock()
    for name, st in _note_stats(memory, listed):
        done += 1
        if bar is not None and done % 100 == 0:
            bar[0](100)
        signature = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        old = entries.get(name)
        if old is not None and old[0] == signature:
            if old[3] is None:
                fresh[name] = old
                continue
            # Changed recently: the signature alone may hide a same-tick edit; the text
            # it was parsed from tells (a read, no parse).
            if _same_text(memory / name, old[3]):
                if max(st.st_mtime_ns, st.st_ctime_ns) >= racy_after:
                    fresh[name] = old
                    continue
                fresh[name] = changed[name] = (signature, old[1], old[2], None)  # old enough now
                continue
        added += old is None
        reads += 1
        if bar is None and progress is not None and reads % 100 == 0 and _clock() - started > PROGRESS_AFTER_S:
            bar = progress(listed[0])
            bar[0](done - done % 100)
        racy = max(st.st_mtime_ns, st.st_ctime_ns) >= racy_after
        fresh[name] = changed[name] = _read(memory / name, signature, racy, S_ISREG(st.st_mode))
        reread.append(name)
    if bar is not None:
        bar[0](listed[0] - (done - done % 100))  # the rest, skipped names (INDEX.md) included
        bar[1]()
    if len(entries) + added != len(fresh):  # some were removed
        removed = [name for name in entries if name not in fresh]
        changed.update((name, None) for name in removed)
        reread += removed
    if state is None or changed:
        state = _State(fresh, generation, pending, state, changed if state is not None else None)
        if persist and changed:
            _save(folder, state, changed)
            if known and reread:
                _queue(folder, reread)
    _MEMO[memory] = state
    return state.notes, state.errors


def delta(notes: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
    """(the previous scan's notes, the names whose summary changed since) when ``notes``
    is the result of a scan that found only a few changes; None when not known."""
    for state in _MEMO.values():
        if state.notes is notes:
            return None if state.parent is None else (state.parent, state.touched)
    return None


def entries(notes: dict[str, dict[str, Any]]) -> dict[str, tuple] | None:
    """The entries (file name -> (signature, summary, error, text or None)) of the scan
    that returned ``notes``, for derived indexes (read only: never mutate them); None
    when ``notes`` is not the latest scan's result. A signature is to be trusted only
    when the text slot is None (not in the racy window)."""
    for state in _MEMO.values():
        if state.notes is notes:
            return state.entries
    return None


def signature_text(signature: tuple | None) -> str | None:
    return None if signature is None else ":".join(map(str, signature))


def signatures(folder: AgentFolder) -> dict[str, str | None]:
    """File name -> stat signature text of every note as of the last scan in this process
    (None for a file changed too recently to be trusted): for derived indexes."""
    state = _MEMO.get(folder.memory)
    if state is None:
        scan(folder)
        state = _MEMO[folder.memory]
    return {name: None if item[3] is not None else signature_text(item[0])
            for name, item in state.entries.items()}


def _note_stats(memory: Path, listed: list[int] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of every note file. Where the OS allows, each stat is relative to the
    open folder (fstatat), which saves a path walk per note: at 10,000 notes this loop is
    most of a call's cost. ``listed`` receives the number of names in the folder."""
    relative = os.stat in os.supports_dir_fd
    try:
        # O_DIRECTORY: a memory/ that is a file fails here, before a descriptor exists
        directory = os.open(memory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if relative else None
        names = os.listdir(directory if relative else memory)
    except (FileNotFoundError, NotADirectoryError):
        return
    if listed is not None:
        listed.append(len(names))
    try:
        for name in names:
            if not name.endswith(".md") or name[0] == "." or name == "INDEX.md":
                continue
            try:
                if relative:
                    yield name, os.stat(name, dir_fd=directory, follow_symlinks=False)
                else:
                    yield name, os.lstat(memory / name)
            except FileNotFoundError:
                continue  # removed since the listing
    finally:
        if directory is not None:
            os.close(directory)


def _read(path: Path, signature: tuple, racy: bool, regular: bool) -> tuple:
    """One catalog entry: (signature, summary, error, the text when ``racy`` else None)."""
    text = None
    try:
        text = read_note_text(path, regular)
        meta, _ = check_note_text(text, path)
        return (signature, summarize(meta, path.name), None, text if racy else None)
    except NoteError as exc:
        return (signature, None, error_record(exc), text if racy else None)
    except OSError as exc:
        return (signature, None, {"message": f"cannot be read ({exc.strerror})", "path": str(path),
                                  "field": None, "fix": "check the file's permissions"}, None)


def _same_text(path: Path, text: str | None) -> bool:
    """Whether the file holds ``text``. The entry's signature is the file's own (lstat),
    so a link put in its place has changed it; a plain read is enough here."""
    if text is None:
        return False
    try:
        with open(path, "rb") as file:
            return file.read() == text.encode("utf-8")
    except OSError:
        return False


# The names of the note files a scan re-read (changed, added, removed), for history.outside:
# appended here once per scan that saw changes, taken by the next run under its lock, and
# settled once that run's record is durable. Not written by a first build (everything is
# new to it, and nothing can be compared yet). Derived, like the rest of .atomic_vault/.
QUEUE_NAME = "notes-changed"


def _queue(folder: AgentFolder, names: list[str]) -> None:
    try:
        fd = os.open(folder.state / QUEUE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, ("".join(f"{name}\n" for name in names)).encode("utf-8"))  # one write
        finally:
            os.close(fd)
    except OSError:
        pass


def take_changed(folder: AgentFolder) -> list[str]:
    """The queued names, moved aside to ``notes-changed.taken`` (kept with any a run that
    failed before its record had taken) until ``settle_changed`` says they are recorded."""
    queue, taken = folder.state / QUEUE_NAME, folder.state / (QUEUE_NAME + ".taken")
    names: dict[str, None] = {}
    try:
        names.update(dict.fromkeys(taken.read_text(encoding="utf-8").split()))
    except (OSError, UnicodeDecodeError):
        pass
    moved = queue.with_name(f"{QUEUE_NAME}.{os.getpid()}")
    try:
        os.replace(queue, moved)
    except OSError:
        return list(names)
    try:
        names.update(dict.fromkeys(moved.read_text(encoding="utf-8").split()))
        atomic_write(taken, "".join(f"{name}\n" for name in names), durable=False)
        moved.unlink()
    except (OSError, UnicodeDecodeError):
        pass
    return list(names)


def settle_changed(folder: AgentFolder) -> None:
    (folder.state / (QUEUE_NAME + ".taken")).unlink(missing_ok=True)


def forget(folder: AgentFolder) -> None:
    """Drop the cached entries (the next scan re-reads every note)."""
    _MEMO.pop(folder.memory, None)
    (folder.state / CACHE_NAME).unlink(missing_ok=True)
    (folder.state / CHANGES_NAME).unlink(missing_ok=True)


def _load(folder: AgentFolder) -> tuple[dict[str, tuple], str | None, int | None]:
    """(entries, generation, entries appended since) from the cache files; ({}, None, None)
    when there is no usable marshal file. Frames of another generation are skipped, and
    reading stops at the first frame that is torn or fails its checksum."""
    try:
        version, memory, generation, entries = marshal.loads((folder.state / CACHE_NAME).read_bytes())
        if version != CACHE_VERSION or memory != str(folder.memory) or not isinstance(entries, dict):
            return {}, None, None
    except (OSError, ValueError, EOFError, TypeError):
        return {}, None, None  # missing or damaged cache: rebuilt from the files
    pending = 0
    try:
        raw = (folder.state / CHANGES_NAME).read_bytes()
    except OSError:
        raw = b""
    payloads, whole = read_frames(raw)
    for payload in payloads:
        try:
            frame_generation, changes = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            return entries, generation, None
        if frame_generation != generation or not isinstance(changes, dict):
            continue  # written against an older marshal file
        for name, entry in changes.items():
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
        pending += len(changes)
    if not whole:
        return entries, generation, None  # torn or damaged: the next save writes anew
    return entries, generation, pending


def _save(folder: AgentFolder, state: _State, changed: dict[str, tuple | None]) -> None:
    """Append the changed entries, or write every entry anew when there is no usable
    marshal file or the appended ones reach a quarter of the catalog."""
    try:
        folder.ensure_state_dir()
        if state.pending is not None and state.pending + len(changed) <= max(256, len(state.entries) // 4):
            append_frame(folder.state / CHANGES_NAME, marshal.dumps((state.generation, changed)))
            state.pending += len(changed)
            return
        generation = os.urandom(8).hex()
        atomic_write(folder.state / CACHE_NAME,
                     marshal.dumps((CACHE_VERSION, str(folder.memory), generation, state.entries)),
                     durable=False)
        # Frames of the old generation are now ignored; emptying the file only saves reading them.
        atomic_write(folder.state / CHANGES_NAME, b"", durable=False)
        state.generation, state.pending = generation, 0
    except OSError:
        pass  # a read-only vault still runs, only slower
