"""Edit commands for notes: archive, pin, supersede, rename, write, edit, restore (spec/03).

Each is one change under the agent's lock, through the MemoryBackend, so it works on
every memory backend: each note is written as a compare-and-swap against the text the
change was made from (a hand edit made meanwhile is kept, and the command refused or
made again from the new text), frontmatter keys keep their order and the body its bytes
(notes.update_frontmatter), INDEX.md is updated by the captures' own updater, and one
chained ``note_edit`` record names every note's text before and after by hash, the
texts stored as snapshots (history.py). A change that fails before its record is
durable takes back what it wrote.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

from . import captures, clock, fileio, history, index, snapshots, writeback
from .config import load_model_config, load_tools_config
from .errors import CaptureError, HeadBehind, NoteError
from .notes import (FILENAME, check_note_text, files_named, is_current, note_filename, stamped,
                    summarize, update_frontmatter, written_by_runtime)
from .protocols import NoteChanged

FLAGS = {"archive": {"archived": True}, "unarchive": {"archived": None},
         "pin": {"pinned": True}, "unpin": {"pinned": None}}
OPS = (*FLAGS, "supersede", "rename", "write", "edit", "restore")


@dataclass
class Edited:
    """What an edit command did: its record (None when there was nothing to change)."""

    op: str
    file: str
    message: str
    record: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    outcome: dict[str, Any] | None = None  # write: the capture's outcome (spec/05)


class EditRefused(NoteError):
    """An edit that was kept aside (``kept``: its path) instead of being written."""

    def __init__(self, message: str, *, kept: str, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.kept = kept


def note_file(memory: Any, folder: Any, word: str, *, may_be_gone: bool = False) -> str:
    """The one note ``word`` names (notes.files_named), or NoteError: none, or several
    (each candidate listed). ``may_be_gone``: a file name of a note that no longer exists
    (renamed) is taken as it is (history, restore)."""
    matches = files_named(memory, folder, word)
    if len(matches) > 1:
        raise NoteError(f"{word!r} names {len(matches)} notes: {', '.join(matches)}", field="NOTE",
                        fix="name one by its file name")
    if matches:
        return matches[0]
    shaped = next((f for f in (word, word + ".md") if FILENAME.match(f)), None)
    if shaped and may_be_gone:
        return shaped
    raise NoteError((f"there is no note {shaped!r}" if shaped else
                     f"{word[:80]!r} is not a note file name, nor the name of a note"),
                    path=folder.memory, field="NOTE", fix=f"see `atomic-vault notes {folder.name} list`")


# ---- one change, all or nothing ----------------------------------------------------------

Plan = Callable[[writeback.Notes], dict[str, Any]]


def commit(agent: Any, op: str, file: str, plan: Plan, *, retry: bool = True,
           trigger: str = "notes") -> Edited:
    """Run ``plan`` under the agent's lock and log what it changed as one ``note_edit``
    record. ``plan`` reads and writes through the Notes it is given (compare-and-swap
    writes) and returns the record's extra keys, with ``index``: the INDEX lines to
    change (file -> (section, line) or None), ``listed``: lines to add where missing.
    A note changed meanwhile (NoteChanged) is planned once more from a fresh read when
    ``retry``; after that, or on any error, everything written is taken back. ``trigger``
    says who asked: ``notes`` (the CLI's edit commands) or ``mcp`` (the write_note tool)."""
    from .agent import _fence

    folder = agent.folder
    now = clock.now(load_model_config(folder.model).zone)
    with agent.lock.hold(folder, agent.lock_timeout) as lease:
        agent.log.ready(folder)
        writeback.preflight(folder, now.date(), agent.memory, agent.log)
        notes = writeback.Notes(agent.memory, lease)
        warnings: list[str] = []
        try:
            for attempt in (1, 2):
                try:
                    extra = plan(notes)
                    break
                except NoteChanged:
                    left = notes.take_back(folder)
                    if attempt == 2 or not retry or left:
                        raise
            else:  # pragma: no cover
                raise AssertionError("unreachable")
            changed_index, listed = extra.pop("index", {}), extra.pop("listed", {})
            file = extra.pop("file", file)  # the note the plan found it was about
            if changed_index or listed:
                outcome = [{"status": "written"}]
                captures.write_index(folder, notes, changed_index, listed, outcome, lease)
                warnings += [outcome[0]["warning"]] if "warning" in outcome[0] else []
            changes = notes.changes()
            if not changes:
                return Edited(op, file, extra.get("unchanged") or f"{file}: nothing to change", None, warnings)
            extra.pop("unchanged", None)
            entries, texts = history.hashed(changes)
            hand = history.unrecorded(folder, agent.log, changes)
            lease.check()
            agent.log.put_snapshots(folder, texts)
            main = next((e for e in entries if e["file"] == file), entries[0])
            record = {
                "kind": "note_edit", "ts": now.isoformat(timespec="milliseconds"),
                "run_id": f"{now:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}", "agent": agent.name,
                "trigger": trigger, "status": "ok", "op": op, "file": file,
                "before": main["before"], "after": main["after"], "by": _user(),
                "summary": extra.pop("summary", f"{op} {file}"), **extra,
                **({"hand_edits": hand} if hand else {}), "changes": entries,
                **({"warnings": warnings} if warnings else {}),
            }
            try:
                record = agent.log.append(folder, record, fence=_fence(agent.lock, lease))
            except HeadBehind as exc:  # the record is durable: the change is logged
                warnings.append(str(exc))
                record = exc.record
        except BaseException as exc:
            left = notes.take_back(folder)
            if left:
                raise writeback.failed(exc, left, agent.name) from exc
            raise
        history.remember(folder, agent.log, history.changes_of(record))
    return Edited(op, record["file"], f"{record['summary']} (logged as seq {record['seq']})", record, warnings)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return None


def _load(notes: writeback.Notes, folder: Any, file: str) -> tuple[str, dict[str, Any]]:
    """(text, frontmatter) of a valid note, or NoteError naming every problem and the fix."""
    text = notes.get(folder, file)
    where = folder.memory / file
    if text is None:
        raise NoteError("is not there (removed or renamed meanwhile)", path=where, field="NOTE",
                        fix=f"see `atomic-vault notes {folder.name} list`")
    try:
        meta, _ = check_note_text(text, where)
    except NoteError as exc:
        raise NoteError(f"is not a valid note, so it is not changed: {exc}", path=where, field=exc.field,
                        fix=f"correct it first (`atomic-vault notes {folder.name} edit {file}`, or "
                            f"`atomic-vault doctor {folder.name}` for every problem)") from None
    return text, meta


def _updated(text: str, updates: dict[str, Any], path: Any) -> str:
    """``text`` with ``updates``; a note the runtime wrote last stays marked as its own."""
    new = update_frontmatter(text, updates, path)
    return stamped(new, path) if written_by_runtime(text) and new != text else new


def _line(meta: dict[str, Any], file: str) -> tuple[str, str]:
    summary = summarize(meta, file)
    return index.section_for(summary, is_current(summary)), index.entry_line(summary)


def _meta(text: str, folder: Any, file: str) -> dict[str, Any]:
    return check_note_text(text, folder.memory / file)[0]


# ---- the commands ------------------------------------------------------------------------

def set_flag(agent: Any, op: str, word: str) -> Edited:
    """archive / unarchive / pin / unpin: one frontmatter key set or removed."""
    folder = agent.folder
    file = note_file(agent.memory, folder, word)
    updates = FLAGS[op]

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        text, meta = _load(notes, folder, file)
        key, value = next(iter(updates.items()))
        if bool(meta.get(key, False)) == bool(value):
            return {"unchanged": f"{file} is already {'' if value else 'not '}{key}"}
        new = _updated(text, updates, folder.memory / file)
        notes.put(folder, file, new, expected=text)
        section_line = _line(_meta(new, folder, file), file)
        if key == "archived":
            return {"index": {file: section_line}}
        return {"listed": {file: section_line}}

    return commit(agent, op, file, plan)


def supersede(agent: Any, old_word: str, new_word: str) -> Edited:
    """Mark OLD superseded by NEW and NEW as superseding OLD; a link that would close a
    loop of supersessions, or replace another link, is refused."""
    folder = agent.folder
    old, new = note_file(agent.memory, folder, old_word), note_file(agent.memory, folder, new_word)
    if old == new:
        raise NoteError(f"{old} cannot supersede itself", path=folder.memory / old, field="NEW",
                        fix="name two different notes: OLD first, then the note that replaces it")

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        old_text, old_meta = _load(notes, folder, old)
        new_text, new_meta = _load(notes, folder, new)
        if old_meta.get("superseded_by") == new and new_meta.get("supersedes") == old:
            return {"unchanged": f"{new} already supersedes {old}"}
        for meta, key, other, fix in ((old_meta, "superseded_by", new, "unarchive"),
                                      (new_meta, "supersedes", old, "")):
            if meta.get(key) not in (None, other):
                holder = old if meta is old_meta else new
                raise NoteError(f"already has {key}: {meta[key]}; one link each way is kept",
                                path=folder.memory / holder, field=key,
                                fix=f"edit {holder} to remove that link first (`notes {folder.name} edit {holder}`)")
        chain, at = [new], new_meta
        while isinstance(at.get("superseded_by"), str):  # NEW -> ... -> OLD would be a loop
            nxt = at["superseded_by"]
            if nxt == old or nxt in chain:
                raise NoteError(f"a loop: {new} already leads to {old} by superseded_by links ({' -> '.join([*chain, nxt])}), "
                                f"so {new} cannot supersede {old}", path=folder.memory / new,
                                field="supersedes", fix="supersede the other way round, or not at all")
            chain.append(nxt)
            text = notes.get(folder, nxt)
            try:
                at = _meta(text, folder, nxt) if text is not None else {}
            except NoteError:
                break
        retired = _updated(old_text, {"superseded_by": new}, folder.memory / old)
        replacing = _updated(new_text, {"supersedes": old}, folder.memory / new)
        notes.put(folder, old, retired, expected=old_text)
        notes.put(folder, new, replacing, expected=new_text)
        return {"supersedes": old, "summary": f"supersede {old} by {new}",
                "index": {old: _line(_meta(retired, folder, old), old),
                          new: _line(_meta(replacing, folder, new), new)}}

    return commit(agent, "supersede", new, plan)


def rename(agent: Any, word: str, to: str) -> Edited:
    """Rename a note's file; the supersedes / superseded_by links to it (its own two and
    every note whose superseded_by names it) and its INDEX line follow."""
    folder = agent.folder
    file = note_file(agent.memory, folder, word)
    target = to if to.endswith(".md") else to + ".md"
    note_type = file.split("_", 1)[0]
    if not FILENAME.match(target) or not target.startswith(note_type + "_"):
        raise NoteError(f"{to[:80]!r} is not a file name for a {note_type} note", field="NEW",
                        fix=f"write {note_type}_<lower_case_topic>.md (letters, digits and _; the type stays)")
    if target == file:
        raise NoteError(f"{file} already has that name", field="NEW", fix="give another file name")

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        text, meta = _load(notes, folder, file)
        if notes.get(folder, target) is not None:
            raise NoteError("exists already; a rename never overwrites a note", path=folder.memory / target,
                            field="NEW", fix="choose another name, or supersede one note by the other")
        linked = {meta.get("supersedes"), meta.get("superseded_by")}
        linked |= {row["file"] for row in notes.list(folder) if row.get("superseded_by") == file}
        notes.put(folder, target, text, expected=None)
        changes = {target: _line(meta, target), file: None}
        for other in sorted(f for f in linked if isinstance(f, str) and FILENAME.match(f) and f != file):
            other_text = notes.get(folder, other)
            if other_text is None:
                continue
            other_meta = _meta(other_text, folder, other)
            updates = {key: target for key in ("supersedes", "superseded_by") if other_meta.get(key) == file}
            if updates:
                moved = _updated(other_text, updates, folder.memory / other)
                notes.put(folder, other, moved, expected=other_text)
                changes[other] = _line(_meta(moved, folder, other), other)
        if notes.get(folder, file) != text:  # edited since it was read: keep that edit
            raise NoteChanged("changed while being renamed; nothing was renamed", path=folder.memory / file,
                              fix="run the rename again")
        notes.delete(folder, file)
        return {"to": target, "summary": f"rename {file} to {target}", "index": changes}

    return commit(agent, "rename", file, plan)


def write(agent: Any, raw: str, *, trigger: str = "notes", expected_sha256: str | None = None,
          field: str = "standard input") -> Edited:
    """A note from a capture's JSON (spec/05), validated and written as a run's capture is.
    ``expected_sha256`` (a client's read, e.g. MCP read_note) joins the compare-and-swap:
    the note it names (the one superseded or merged into, else the capture's own file)
    must still hold that text, or a hand edit made since is kept and nothing is written."""
    folder = agent.folder
    try:
        capture = captures.parse(raw)
    except CaptureError as exc:
        raise CaptureError(exc.message, field=field,
                           fix="pass one JSON object with the fields of a capture (spec/05); nothing was written") from None
    tools = load_tools_config(folder.tools)
    day = clock.now(load_model_config(folder.model).zone).date()
    done: dict[str, Any] = {}

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        if expected_sha256 is not None:
            target = capture.supersedes or capture.merge_into
            file = note_file(agent.memory, folder, target) if target else note_filename(capture.type, capture.name)
            current = notes.get(folder, file)
            if current is None or snapshots.digest(current) != expected_sha256:
                raise NoteError("changed since it was read (a hand edit or another writer); that change was "
                                "kept and nothing was written", path=folder.memory / file, field="expected_sha256",
                                fix="read the note again and write from what it holds now")
        outcome = captures.write(folder, notes, tools, [capture], day, notes.lease)[0]
        if outcome.get("status") == "rejected":
            raise CaptureError(outcome["reason"], path=folder.memory, field=field,
                               fix="nothing was written; correct the note or name the one to supersede")
        outcome.pop("changes", None)  # the record's own changes say it
        done.update(outcome)
        return {"outcome": outcome, "file": outcome["file"],
                "summary": f"write {outcome['file']} ({outcome['status']})"}

    edited = commit(agent, "write", note_filename(capture.type, capture.name), plan, retry=False, trigger=trigger)
    edited.outcome = {**done, **({"seq": edited.record["seq"]} if edited.record else {})}
    return edited


def edit(agent: Any, word: str, run_editor: Callable[[str], int] | None = None) -> Edited:
    """Open the note in $VISUAL / $EDITOR; write the result when the editor exits 0 and the
    note is valid and unchanged on disk meanwhile. Otherwise the edit is kept aside in
    ``.atomic_vault/rejected/`` (EditRefused names the path) and the note is left alone."""
    folder = agent.folder
    file = note_file(agent.memory, folder, word)
    original = agent.memory.get(folder, file)
    if original is None:
        raise NoteError("is not there", path=folder.memory / file, field="NOTE", fix="see notes list")
    work = folder.ensure_state_dir() / "editing"
    fileio.make_dirs(work)
    path = work / f"{os.getpid()}-{file}"
    fileio.atomic_write(path, original)
    try:
        code = (run_editor or _run_editor)(str(path))
        edited = path.read_bytes().decode("utf-8", errors="replace")
    finally:
        path.unlink(missing_ok=True)
    if code != 0:
        raise _kept(folder, file, edited, f"the editor exited with status {code}")
    if edited == original:
        return Edited("edit", file, f"{file}: not changed")
    try:
        meta, _ = check_note_text(edited, folder.memory / file)
    except NoteError as exc:
        raise _kept(folder, file, edited, f"the edited note is not valid: {exc}") from None

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        try:
            notes.put(folder, file, edited, expected=original)
        except NoteChanged:
            raise _kept(folder, file, edited, "the note changed on disk while it was being edited "
                                              "(a hand edit or a run); that change was kept") from None
        return {"index": {file: _line(meta, file)}}

    return commit(agent, "edit", file, plan, retry=False)


def _run_editor(path: str) -> int:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not command or not command.strip():
        raise NoteError("no editor is set", field="VISUAL", fix="set $VISUAL or $EDITOR (e.g. EDITOR=nano)")
    try:
        return subprocess.run([*shlex.split(command), path]).returncode
    except (OSError, ValueError) as exc:
        raise NoteError(f"the editor {command!r} cannot be started ({exc})", field="EDITOR",
                        fix="set $VISUAL or $EDITOR to a command that exists") from None


def _kept(folder: Any, file: str, text: str, why: str) -> EditRefused:
    """Keep a refused edit aside; the error names where."""
    now = clock.now(None)
    kept = folder.ensure_state_dir() / "rejected" / f"{file.removesuffix('.md')}.{now:%Y%m%dT%H%M%S}-{os.urandom(2).hex()}.md"
    fileio.make_dirs(kept.parent)
    fileio.atomic_write(kept, text)
    shown = folder.relative(kept)
    return EditRefused(f"{why}; nothing was written, the edit is kept in {shown}", kept=str(kept),
                       path=folder.memory / file, field="edit",
                       fix=f"fix it there, then copy it over memory/{file} or run `notes {folder.name} edit {file}` again")


def restore(agent: Any, word: str, run_id: str) -> Edited:
    """Bring back the text ``file`` had after record ``run_id`` changed it: a change like
    any other (its own record); a pruned version is an error naming the prune record."""
    folder = agent.folder
    file = note_file(agent.memory, folder, word, may_be_gone=True)
    text, source = history.version(agent.log, folder, file, run_id)
    meta = _meta(text, folder, file)

    def plan(notes: writeback.Notes) -> dict[str, Any]:
        current = notes.get(folder, file)
        if current == text:
            return {"unchanged": f"{file} already holds that version"}
        notes.put(folder, file, text, expected=current)
        return {"restored_from": run_id, "restored_seq": source.get("seq"),
                "summary": f"restore {file} to its version after {run_id}",
                "index": {file: _line(meta, file)}}

    return commit(agent, "restore", file, plan)
