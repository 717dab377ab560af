"""A note's history: every change the runtime makes to a note, and every change it finds
made outside it, is part of a log record as the SHA-256 of the note's text before and
after; the texts themselves are snapshots in the log backend (spec/03, spec/07).

What the log last recorded for each note is kept, derived, in
``.atomic_vault/note-hashes/<file>`` (one small file per note, so that a run reads and
writes only the notes it looks at). A note whose text differs from it was changed
outside atomic_vault. Which notes to look at comes from the catalog, which queues the
names of the files it re-read (catalog.py): a run pays for the notes that changed, not
for the vault. The folder is rebuilt from the log when it is missing.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from . import fileio, snapshots
from .errors import NoteError
from .notes import FILENAME

HASHES = "note-hashes"
GONE = "-"  # the marker of a note the log last recorded as removed (renamed)


def hashed(changes: Iterable[tuple[str, str | None, str | None]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(one ``{file, before, after}`` of hashes per change, the texts by hash to store)."""
    entries, texts = [], {}
    for file, before, after in changes:
        entry: dict[str, Any] = {"file": file}
        for key, text in (("before", before), ("after", after)):
            entry[key] = None if text is None else snapshots.digest(text)
            if text is not None:
                texts[entry[key]] = text
        entries.append(entry)
    return entries, texts


def changes_of(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every note change a record holds, in the order they happened, each with its ``op``:
    changes found made outside first (a run sees them before it writes), then the rest."""
    kind = record.get("kind", "run")
    for entry in record.get("hand_edits") or []:
        if isinstance(entry, dict):
            yield {**entry, "op": "outside"}
    if kind == "note_edit":
        for entry in record.get("changes") or []:
            if isinstance(entry, dict):
                yield {**entry, "op": record.get("op")}
    elif kind in ("run", "replay"):
        for outcome in record.get("captures") or []:
            for entry in (outcome.get("changes") or []) if isinstance(outcome, dict) else []:
                if isinstance(entry, dict):
                    yield {**entry, "op": f"capture ({outcome.get('status')})"}


def entries(log: Any, folder: Any, file: str) -> list[dict[str, Any]]:
    """The history of ``file``, oldest first: one row per record that changed it."""
    rows = []
    for record in log.records(folder):
        for entry in changes_of(record):
            if entry.get("file") == file:
                rows.append({"seq": record.get("seq"), "ts": record.get("ts"), "run_id": record.get("run_id"),
                             "kind": record.get("kind", "run"), "op": entry["op"],
                             "before": entry.get("before"), "after": entry.get("after"),
                             **({"by": record["by"]} if record.get("by") else {})})
    return rows


def version(log: Any, folder: Any, file: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """(the text ``file`` had after record ``run_id`` changed it, that record), or NoteError
    naming why there is none: no such record, the record did not change the note, or its
    snapshot was pruned (naming the prune record) or does not match its hash."""
    record = log.get(folder, run_id)
    where = folder.memory / file
    if record is None:
        raise NoteError(f"the log has no record {run_id!r}", path=where, field="--to",
                        fix=f"pick a run id from `atomic-vault notes {folder.name} history {file}`")
    found = [e for e in changes_of(record) if e.get("file") == file]
    if not found:
        raise NoteError(f"record {run_id} (seq {record.get('seq')}) did not change {file}", path=where,
                        field="--to", fix=f"pick a run id from `atomic-vault notes {folder.name} history {file}`")
    sha = found[-1].get("after")
    if not sha:
        raise NoteError(f"record {run_id} removed {file} (a rename): there is no version to bring back",
                        path=where, field="--to", fix="restore the note under its new name")
    loaded = snapshots.load(log, folder, [sha], snapshots.prune_records(log, folder))
    state = loaded.state(sha)
    if state == "pruned":
        raise NoteError(f"the version of {file} after {run_id} was pruned by the prune record seq "
                        f"{loaded.pruned[sha]} (snapshot {sha[:12]}); nothing was written", path=where,
                        field="--to", fix="pick a later version that `history` shows, or raise `retention:`")
    if state != "ok":
        raise NoteError(f"the snapshot of {file} after {run_id} is {state} ({sha[:12]}); nothing was written",
                        path=where, field="--to",
                        fix=f"`atomic-vault verify {folder.name}` says more; pick another version")
    return loaded.texts[sha], record


# ---- what the log last recorded for each note (derived) ----------------------------------

def _folder(folder: Any, log: Any):
    """.atomic_vault/note-hashes/, built from the log first when it is missing."""
    path = folder.ensure_state_dir() / HASHES
    if not path.is_dir():
        last: dict[str, str] = {}
        for record in log.records(folder):
            for entry in changes_of(record):
                if isinstance(entry.get("file"), str) and FILENAME.match(entry["file"]):
                    last[entry["file"]] = entry.get("after") or GONE
        temp = path.with_name(f"{HASHES}.{os.getpid()}.tmp")
        fileio.make_dirs(temp)
        for file, sha in last.items():
            fileio.atomic_write(temp / file, sha, durable=False)
        try:
            os.rename(temp, path)
        except OSError:  # another process built it meanwhile
            for item in temp.iterdir():
                item.unlink()
            temp.rmdir()
    return path


UNKNOWN = "?"  # note-hashes/ cannot be read or built (a read-only vault): nothing is reported


def last_hash(folder: Any, log: Any, file: str) -> str | None:
    """The hash the log last recorded for ``file`` (GONE: removed), None: never."""
    try:
        return (_folder(folder, log) / file).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    except OSError:
        return UNKNOWN


def remember(folder: Any, log: Any, changes: Iterable[dict[str, Any]]) -> None:
    """Note what a durable record says each note now holds. Derived: a failure here only
    means a later run reports a change as made outside, which its record then settles."""
    try:
        path = _folder(folder, log)
        for entry in changes:
            if isinstance(entry.get("file"), str) and FILENAME.match(entry["file"]):
                fileio.atomic_write(path / entry["file"], entry.get("after") or GONE, durable=False)
    except OSError:
        pass


def outside(folder: Any, memory: Any, log: Any, also: Iterable[str] = ()) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Notes whose text is not what the log last recorded for them: the notes the catalog
    saw change since the last run took them (``memory.changed_notes``, where the backend
    keeps files), and ``also``. Each is ``{file, before, after}``: ``before`` the hash
    last recorded (None: the log never recorded the note), ``after`` the hash now (None:
    removed)."""
    taken = getattr(memory, "changed_notes", None)
    candidates = dict.fromkeys([*(taken(folder) if callable(taken) else []), *also])
    found, texts = [], {}
    for file in candidates:
        if not FILENAME.match(file):
            continue
        try:
            text = memory.get(folder, file)
        except NoteError:  # not text (binary, not UTF-8): the run reports it as a broken note
            continue
        entry = _differs(folder, log, file, text)
        if entry is not None:
            found.append(entry)
            if text is not None:
                texts[entry["after"]] = text
    return found, texts


def unrecorded(folder: Any, log: Any, changes: Iterable[tuple[str, str | None, str | None]]) -> list[dict[str, Any]]:
    """Of the notes a change is about to record, those whose text before it is not what
    the log last recorded: changed outside atomic_vault since (``{file, before, after}``)."""
    return [entry for file, before, _ in changes
            if (entry := _differs(folder, log, file, before)) is not None]


def _differs(folder: Any, log: Any, file: str, text: str | None) -> dict[str, Any] | None:
    now = None if text is None else snapshots.digest(text)
    last = last_hash(folder, log, file)
    if last == UNKNOWN or (last or GONE) == (now or GONE):
        return None
    return {"file": file, "before": None if last in (None, GONE) else last, "after": now}


def recorded(folder: Any, memory: Any, log: Any, record: dict[str, Any]) -> None:
    """``record`` is durable: remember what it says each note holds, and settle the
    changed names ``outside`` took for it."""
    remember(folder, log, changes_of(record))
    done = getattr(memory, "settle_changed_notes", None)
    if callable(done):
        try:
            done(folder)
        except OSError:
            pass
