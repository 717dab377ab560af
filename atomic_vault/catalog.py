"""What notes exist and what their frontmatter says, without re-parsing unchanged files.

The catalog is derived state: a file's entry is re-read whenever its stat signature
(mtime, ctime, size, inode) changes, so hand edits are seen on the next call. Entries are
kept in memory per process and in ``.atomic_vault/notes-<python>.marshal`` between
processes (marshal loads twice as fast as JSON; the file is private derived state, one per
interpreter version); deleting that file only costs time. When nothing changed, ``scan`` returns the very same dicts as
before, so callers may memoise work derived from them (they must not mutate them).
"""

from __future__ import annotations

import marshal
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import NoteError
from .fileio import atomic_write
from .notes import check_note_text, error_from_record, error_record, read_note_text, summarize
from .vault import AgentFolder

CACHE_NAME = f"notes-{sys.implementation.cache_tag}.marshal"
CACHE_VERSION = 5
# A file changed within this window of a scan may change again inside the same timestamp
# tick without its signature moving, so its entry is not trusted on the next scan.
RACY_NS = 2_000_000_000


class _State:
    __slots__ = ("entries", "notes", "errors")

    def __init__(self, entries: dict[str, tuple]):
        self.entries = entries
        self.notes = {name: item[1] for name, item in entries.items() if item[1] is not None}
        self.errors = {name: error_from_record(item[2]) for name, item in entries.items() if item[2] is not None}


_MEMO: dict[Path, _State] = {}


def scan(folder: AgentFolder, *, persist: bool = True
         ) -> tuple[dict[str, dict[str, Any]], dict[str, NoteError]]:
    """(summary by file name for every valid note, error by file name for the rest).

    ``persist=False`` keeps the disk untouched (for read-only commands).
    """
    memory = folder.memory
    state = _MEMO.get(memory)
    entries = state.entries if state is not None else _load(folder)
    fresh: dict[str, tuple] = {}
    changed = False
    racy_after = time.time_ns() - RACY_NS
    for name, st in _note_stats(memory):
        signature = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        old = entries.get(name)
        if old is not None and old[0] == signature:
            fresh[name] = old
            continue
        changed = True
        racy = max(st.st_mtime_ns, st.st_ctime_ns) >= racy_after
        fresh[name] = _read(memory / name, None if racy else signature)
    if state is None or changed or len(fresh) != len(entries):
        state = _State(fresh)
        if persist and (changed or len(fresh) != len(entries)):
            _save(folder, fresh)
    _MEMO[memory] = state
    return state.notes, state.errors


def signature_text(signature: tuple | None) -> str | None:
    return None if signature is None else ":".join(map(str, signature))


def signatures(folder: AgentFolder) -> dict[str, str | None]:
    """File name -> stat signature text of every note as of the last scan in this process
    (None for a file changed too recently to be trusted): for derived indexes."""
    state = _MEMO.get(folder.memory)
    if state is None:
        scan(folder)
        state = _MEMO[folder.memory]
    return {name: signature_text(item[0]) for name, item in state.entries.items()}


def _note_stats(memory: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of every note file. Where the OS allows, each stat is relative to the
    open folder (fstatat), which saves a path walk per note: at 10,000 notes this loop is
    most of a call's cost."""
    relative = os.stat in os.supports_dir_fd
    try:
        # O_DIRECTORY: a memory/ that is a file fails here, before a descriptor exists
        directory = os.open(memory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if relative else None
        names = os.listdir(directory if relative else memory)
    except (FileNotFoundError, NotADirectoryError):
        return
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


def _read(path: Path, signature: tuple | None) -> tuple:
    """One catalog entry: (signature or None to re-read next time, summary, error)."""
    try:
        meta, _ = check_note_text(read_note_text(path), path)
        return (signature, summarize(meta, path.name), None)
    except NoteError as exc:
        return (signature, None, error_record(exc))
    except OSError as exc:
        return (signature, None, {"message": f"cannot be read ({exc.strerror})", "path": str(path),
                                  "field": None, "fix": "check the file's permissions"})


def forget(folder: AgentFolder) -> None:
    """Drop the cached entries (the next scan re-reads every note)."""
    _MEMO.pop(folder.memory, None)
    (folder.state / CACHE_NAME).unlink(missing_ok=True)


def _load(folder: AgentFolder) -> dict[str, tuple]:
    try:
        version, memory, entries = marshal.loads((folder.state / CACHE_NAME).read_bytes())
        if version == CACHE_VERSION and memory == str(folder.memory) and isinstance(entries, dict):
            return entries
    except (OSError, ValueError, EOFError, TypeError):
        pass  # missing or damaged cache: rebuilt from the files
    return {}


def _save(folder: AgentFolder, entries: dict[str, tuple]) -> None:
    try:
        folder.ensure_state_dir()
        atomic_write(folder.state / CACHE_NAME,
                     marshal.dumps((CACHE_VERSION, str(folder.memory), entries)), durable=False)
    except OSError:
        pass  # a read-only vault still runs, only slower
