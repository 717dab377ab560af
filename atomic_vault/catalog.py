"""What notes exist and what their frontmatter says, without re-parsing unchanged files.

The catalog is derived state: a file's entry is re-read whenever its stat signature
(mtime, ctime, size, inode) changes, so hand edits are seen on the next call. Entries are
kept in memory per process and in ``.atomic_vault/notes.json`` between processes; deleting
that file only costs time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import NoteError
from .fileio import atomic_write
from .notes import read_note, summarize, validate
from .vault import AgentFolder

CACHE_NAME = "notes.json"
CACHE_VERSION = 2
# A file changed within this window of a scan may change again inside the same timestamp
# tick without its signature moving, so its entry is not trusted on the next scan.
RACY_NS = 2_000_000_000

_MEMO: dict[Path, dict[str, list]] = {}


def is_note_name(name: str) -> bool:
    return name.endswith(".md") and name != "INDEX.md" and not name.startswith(".")


def scan(folder: AgentFolder, *, persist: bool = True
         ) -> tuple[dict[str, dict[str, Any]], dict[str, NoteError]]:
    """(summary by file name for every valid note, error message by file name for the rest).

    ``persist=False`` keeps the disk untouched (for read-only commands).
    """
    memory = folder.memory
    cached = _MEMO.get(memory)
    if cached is None:
        cached = _load(folder)
    fresh: dict[str, list] = {}
    changed = False
    racy_after = time.time_ns() - RACY_NS
    try:
        entries = list(os.scandir(memory))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        name = entry.name
        if not is_note_name(name):
            continue
        st = entry.stat(follow_symlinks=False)
        signature = [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]
        old = cached.get(name)
        if old is not None and old[0] == signature:
            fresh[name] = old
            continue
        changed = True
        path = memory / name
        try:
            meta, _ = read_note(path)
            validate(meta, path)
            item = [signature, summarize(meta, name), None]
        except NoteError as exc:
            item = [signature, None, {"message": exc.message, "path": exc.path,
                                      "field": exc.field, "fix": exc.fix}]
        except OSError as exc:
            item = [signature, None, {"message": f"cannot be read ({exc.strerror})",
                                      "path": str(path), "field": None,
                                      "fix": "check the file's permissions"}]
        if max(st.st_mtime_ns, st.st_ctime_ns) >= racy_after:
            item[0] = None  # re-read next time
        fresh[name] = item
    if persist and (changed or len(fresh) != len(cached)):
        _save(folder, fresh)
    _MEMO[memory] = fresh
    summaries = {name: item[1] for name, item in fresh.items() if item[1] is not None}
    errors = {name: NoteError(**item[2]) for name, item in fresh.items() if item[2] is not None}
    return summaries, errors


def forget(folder: AgentFolder) -> None:
    """Drop the cached entries (the next scan re-reads every note)."""
    _MEMO.pop(folder.memory, None)
    (folder.state / CACHE_NAME).unlink(missing_ok=True)


def _load(folder: AgentFolder) -> dict[str, list]:
    try:
        data = json.loads((folder.state / CACHE_NAME).read_bytes())
        if data.get("version") == CACHE_VERSION and data.get("memory") == str(folder.memory):
            return data["entries"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # missing or damaged cache: rebuilt from the files
    return {}


def _save(folder: AgentFolder, entries: dict[str, list]) -> None:
    payload = {"version": CACHE_VERSION, "memory": str(folder.memory), "entries": entries}
    try:
        folder.ensure_state_dir()
        atomic_write(folder.state / CACHE_NAME, json.dumps(payload, separators=(",", ":")),
                     durable=False)
    except OSError:
        pass  # a read-only vault still runs, only slower
