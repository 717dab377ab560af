"""Capture markers: find them in an answer, validate them, and write them as notes.

A capture is a fenced block tagged ``atomic_capture`` (three or four backticks) holding one
strict JSON object. A rejected capture writes nothing and carries its reason to the
journal and the log. What happens when a name already exists is spelled out in spec/05.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import PurePath
from typing import Any

from . import history, index, writeback
from .config import ToolsConfig
from .errors import CaptureError, NoteError
from .notes import (CONFIDENCES, FILENAME, NOTE_TYPES, SCHEMA_VERSION, is_current, iso_day,
                    note_filename, parse_note_text, render_note, stamp_fields, stamped, summarize,
                    update_frontmatter, written_by_runtime)
from .protocols import MemoryBackend, NoteChanged
from .vault import AgentFolder

_BLOCK = re.compile(r"^(`{3,4})atomic_capture[ \t]*\r?\n(.*?)\r?\n\1[ \t]*\r?$", re.MULTILINE | re.DOTALL)
_OPENING = re.compile(r"^`{3,4}atomic_capture\b", re.MULTILINE)
REQUIRED = ("type", "name", "description", "confidence", "sources", "body")
OPTIONAL = ("supersedes", "merge_into", "pinned", "expires_at", "tags", "scope", "project")
SCOPES = ("agent", "project")
LIMITS = {"name": 200, "description": 300, "body": 32_000, "source": 500, "tag": 64, "items": 32}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
INDEX_TRIES = 5  # INDEX.md changed by hand this many times in a row mid-update: give up


@dataclass(frozen=True)
class Capture:
    type: str
    name: str
    description: str
    confidence: str
    sources: list[str]
    body: str
    supersedes: str | None = None
    merge_into: str | None = None
    pinned: bool = False
    expires_at: str | None = None
    tags: list[str] = field(default_factory=list)
    scope: str = "agent"  # project: the note goes to a project's shared memory (spec/18)
    project: str | None = None  # which project, when the agent is a member of several


# The same capture offered as a tool, for providers that support tool calls: the model
# calls it once per note, and its arguments go through exactly the validation of a block.
TOOL_NAME = "atomic_capture"
TOOL_DESCRIPTION = ("Save one durable memory note for later runs (a fact about the user, "
                    "feedback, a project, a decision, or a reference). Call once per note.")
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(NOTE_TYPES)},
        "name": {"type": "string", "description": "short title, one line"},
        "description": {"type": "string", "description": "one-line hook for the INDEX"},
        "confidence": {"type": "string", "enum": list(CONFIDENCES)},
        "sources": {"type": "array", "items": {"type": "string"}},
        "body": {"type": "string", "description": "the note itself, Markdown"},
        "supersedes": {"type": "string", "description": "file or name of a note this replaces"},
        "merge_into": {"type": "string", "description": "file or name of a note to add this to"},
        "pinned": {"type": "boolean"},
        "expires_at": {"type": "string", "description": "YYYY-MM-DD"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "scope": {"type": "string", "enum": list(SCOPES),
                  "description": "project: save to the shared memory of a project the agent is a member of"},
        "project": {"type": "string", "description": "the project's name (scope project, several projects)"},
    },
    "required": list(REQUIRED),
    "additionalProperties": False,
}
TOOL: dict[str, Any] = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_SCHEMA}


def extract(text: str, tool_captures: tuple[str, ...] | list[str] = ()) -> tuple[list[Capture], list[dict[str, str]]]:
    """(valid captures, rejections) from a model's answer: its fenced blocks first, then
    the raw JSON arguments of its ``atomic_capture`` tool calls."""
    captures: list[Capture] = []
    rejected: list[dict[str, str]] = []
    blocks = list(_BLOCK.finditer(text))
    starts = {match.start() for match in blocks}
    for opening in _OPENING.finditer(text):
        if opening.start() not in starts and not any(m.start() < opening.start() < m.end() for m in blocks):
            rejected.append({"status": "rejected", "excerpt": text[opening.start():opening.start() + 200],
                             "reason": "an atomic_capture block is opened but never closed "
                                       "(or its fence is malformed)"})
    for raw in raw_texts(text, tool_captures, blocks):
        try:
            captures.append(parse(raw))
        except CaptureError as exc:
            rejected.append({"status": "rejected", "reason": exc.message, "excerpt": raw[:200]})
    return captures, rejected


def raw_texts(text: str, tool_captures: tuple[str, ...] | list[str] = (), blocks: list | None = None) -> list[str]:
    """The raw JSON of every capture in an answer, as the model wrote it: fenced blocks,
    then tool-call arguments (what a run snapshots, valid or not)."""
    blocks = list(_BLOCK.finditer(text)) if blocks is None else blocks
    return [match.group(2) for match in blocks] + [str(raw) for raw in tool_captures]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    dupes = sorted({key for key in keys if keys.count(key) > 1})
    if dupes:
        raise CaptureError(f"key {dupes[0]!r} appears twice")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise CaptureError(f"{name} is not valid JSON")


def parse(raw: str) -> Capture:
    """Strict JSON object -> Capture, or CaptureError with the reason."""
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise CaptureError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise CaptureError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise CaptureError(f"invalid JSON: {exc}") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise CaptureError("invalid JSON: a \\u escape names half of a character (a lone surrogate)") from None
    if not isinstance(data, dict):
        raise CaptureError("the block must hold one JSON object")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise CaptureError(f"unknown field {unknown[0]!r}; allowed: {', '.join(REQUIRED + OPTIONAL)}")
    for key in REQUIRED:
        if key not in data:
            raise CaptureError(f"missing required field {key!r}")
    if data["type"] not in NOTE_TYPES:
        raise CaptureError(f"type {data['type']!r} is not one of {', '.join(NOTE_TYPES)}")
    if data["confidence"] not in CONFIDENCES:
        raise CaptureError(f"confidence {data['confidence']!r} is not one of {', '.join(CONFIDENCES)}")
    for key in ("name", "description"):
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise CaptureError(f"{key} must be a non-empty string")
        if len(value) > LIMITS[key]:
            raise CaptureError(f"{key} is {len(value)} characters; the limit is {LIMITS[key]}")
        if _CONTROL.search(value) or "\n" in value:
            raise CaptureError(f"{key} must be one line without control characters")
    body = data["body"]
    if isinstance(body, str):
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not isinstance(body, str) or not body.strip():
        raise CaptureError("body must be a non-empty string")
    if len(body) > LIMITS["body"]:
        raise CaptureError(f"body is {len(body)} characters; the limit is {LIMITS['body']}")
    if _CONTROL.search(body.replace("\t", " ")):
        raise CaptureError("body contains control characters")
    lists = {}
    for key, limit in (("sources", LIMITS["source"]), ("tags", LIMITS["tag"])):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            raise CaptureError(f"{key} must be a list of non-empty strings")
        if len(items) > LIMITS["items"] or any(len(x) > limit or _CONTROL.search(x) or "\n" in x
                                               for x in items):
            raise CaptureError(f"{key} has too many or too long items (at most {LIMITS['items']}"
                               f" of {limit} characters, one line each)")
        lists[key] = items
    for key in ("supersedes", "merge_into"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()
                                  or len(value) > LIMITS["name"]):
            raise CaptureError(f"{key} must name an existing note (its file name or its name)")
    if data.get("supersedes") and data.get("merge_into"):
        raise CaptureError("supersedes and merge_into exclude each other; use one")
    if not isinstance(data.get("pinned", False), bool):
        raise CaptureError("pinned must be true or false")
    expires = data.get("expires_at")
    if expires is not None and iso_day(expires) is None:
        raise CaptureError(f"expires_at {expires!r} is not a YYYY-MM-DD date")
    scope = data.get("scope", "agent")
    if scope not in SCOPES:
        raise CaptureError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    project = data.get("project")
    if project is not None and (not isinstance(project, str) or not project.strip()):
        raise CaptureError("project must be a project's name")
    if project is not None and scope != "project":
        raise CaptureError("project is set but scope is not project; write \"scope\": \"project\"")
    return Capture(type=data["type"], name=data["name"].strip(),
                   description=data["description"].strip(), confidence=data["confidence"],
                   sources=lists["sources"], body=body.strip("\n"),
                   supersedes=data.get("supersedes"), merge_into=data.get("merge_into"),
                   pinned=data.get("pinned", False), expires_at=expires, tags=lists["tags"],
                   scope=scope, project=project)


class _Writer:
    """Applies captures through the MemoryBackend and gathers the INDEX changes to write
    once at the end. Notes are named by file name; the backend refuses anything else.

    Every write is a compare-and-swap against the text the decision was made on, so a note
    edited by hand meanwhile is never overwritten: the capture is applied once more from a
    fresh read, and rejected if the note changes again (spec/05)."""

    def __init__(self, folder: AgentFolder, memory: MemoryBackend, today: date):
        self.folder = folder
        self.memory = memory
        self.today = today
        self.index_changes: dict[str, tuple[str, str] | None] = {}
        self.ensure_listed: dict[str, tuple[str, str]] = {}  # lines to add only where missing
        self._created: list[tuple[str, str]] = []  # (file, text) made by the current attempt

    def _text(self, file: str) -> str | None:
        if not FILENAME.match(file):
            raise CaptureError(f"{file!r} is not a note file name")
        return self.memory.get(self.folder, file)

    def _ref(self, value: str, note_type: str) -> str:
        """A note named by file name or by name; it must exist."""
        file = value if FILENAME.match(value) else note_filename(note_type, value)
        if self._text(file) is None:
            raise CaptureError(f"no note memory/{file} to refer to")
        return file

    def _load(self, file: str) -> tuple[str, dict[str, Any], str]:
        """(text as read, frontmatter, body): the text is what a later write expects."""
        where = self.folder.memory / file
        try:
            text = self._text(file)
            if text is None:
                raise CaptureError(f"memory/{file} disappeared while being updated")
            meta, body = parse_note_text(text, where)
        except NoteError as exc:
            raise CaptureError(f"memory/{file} cannot be updated: {exc}") from None
        return text, meta, body

    def _fields(self, capture: Capture, supersedes: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "name": capture.name,
            "description": capture.description, "type": capture.type,
            "captured": self.today, "last_seen": self.today,
            "sources": capture.sources, "confidence": capture.confidence,
        }
        if capture.pinned:
            fields["pinned"] = True
        if capture.expires_at:
            fields["expires_at"] = date.fromisoformat(iso_day(capture.expires_at))
        if supersedes:
            fields["supersedes"] = supersedes
        if capture.tags:
            fields["tags"] = capture.tags
        return fields

    def _write_new(self, file: str, capture: Capture, supersedes: str | None) -> None:
        fields = self._fields(capture, supersedes)
        text = render_note(stamp_fields(fields, capture.body), capture.body)
        self.memory.put(self.folder, file, text, expected=None)  # never over a note made meanwhile
        self._created.append((file, text))
        summary = summarize({**fields, "superseded_by": None}, file)
        self.index_changes[file] = (index.SECTIONS[capture.type], index.entry_line(summary))

    def _supersede(self, old: str, loaded: tuple[str, dict[str, Any], str], new: str,
                   capture: Capture) -> None:
        """Write ``new`` and mark ``old`` superseded by it; the old note is checked first so
        that a note that cannot be updated stops the capture before anything is written."""
        text, meta, _ = loaded
        retired = update_frontmatter(text, {"superseded_by": new}, self.folder.memory / old)
        if written_by_runtime(text):  # a person's note stays marked as theirs
            retired = stamped(retired, self.folder.memory / old)
        self._write_new(new, capture, old)
        self.memory.put(self.folder, old, retired, expected=text)
        summary = summarize({**meta, "superseded_by": new}, old)
        self.index_changes[old] = (index.ARCHIVE, index.entry_line(summary))

    def _refresh(self, file: str, loaded: tuple[str, dict[str, Any], str], capture: Capture,
                 extra_body: str | None) -> None:
        text, meta, _ = loaded
        sources = list(meta.get("sources") or [])
        sources += [s for s in capture.sources if s not in sources]
        updated = update_frontmatter(text, {"last_seen": self.today, "sources": sources},
                                     self.folder.memory / file)
        if extra_body:
            updated = updated.rstrip("\n") + f"\n\nUpdate {self.today.isoformat()}: {extra_body}\n"
        if written_by_runtime(text):  # a person's note stays marked as theirs
            updated = stamped(updated, self.folder.memory / file)
        if updated != text:  # an unchanged note is not rewritten
            self.memory.put(self.folder, file, updated, expected=text)
        # A note missing from INDEX (its line lost with a failed INDEX write, say) gets it
        # back; a line that is there, perhaps edited by hand, is left as it is.
        summary = summarize({**meta, "last_seen": self.today, "sources": sources}, file)
        self.ensure_listed[file] = (index.section_for(summary, is_current(summary)), index.entry_line(summary))

    def _current(self, file: str) -> tuple[str, tuple[str, dict[str, Any], str]]:
        """Follow superseded_by links to the version of a note that is current now; returns
        it with its loaded text."""
        seen = {file}
        while True:
            loaded = self._load(file)
            successor = loaded[1].get("superseded_by")
            if not (isinstance(successor, str) and FILENAME.match(successor)) or successor in seen:
                return file, loaded
            if self._text(successor) is None:
                return file, loaded
            seen.add(successor)
            file = successor

    def _free_version(self, file: str) -> str:
        stem = file.removesuffix(".md")
        for n in range(2, 1000):
            candidate = f"{stem}_v{n}.md"
            if self._text(candidate) is None:
                return candidate
        raise CaptureError(f"too many versions of memory/{file}")

    def apply(self, capture: Capture) -> dict[str, Any]:
        """Apply one capture, all or nothing: a failed attempt takes back the note it made.
        A note that changed meanwhile gets one more attempt from a fresh read."""
        for attempt in (1, 2):
            before, self._created = dict(self.index_changes), []
            try:
                return self._apply(capture)
            except NoteChanged as exc:
                self._take_back(before)
                if attempt == 2:
                    where = "memory/" + PurePath(exc.path or "").name
                    raise CaptureError(f"{where} changed while being updated, twice (a hand edit "
                                       "or another writer); that change was kept and this "
                                       "capture was not applied") from None
            except (CaptureError, NoteError):
                self._take_back(before)
                raise
        raise AssertionError("unreachable")

    def _take_back(self, index_before: dict[str, tuple[str, str] | None]) -> None:
        """Remove the notes the failed attempt created, unless someone already edited one
        (then it stays, with its INDEX line): a rejected capture leaves nothing behind."""
        kept = {}
        for file, text in reversed(self._created):
            if self.memory.get(self.folder, file) == text:
                self.memory.delete(self.folder, file)
            else:
                kept[file] = self.index_changes.get(file)
        self.index_changes = {**index_before, **kept}
        self._created = []

    def _apply(self, capture: Capture) -> dict[str, Any]:
        outcome: dict[str, Any] = {"name": capture.name, "type": capture.type}
        if capture.merge_into:
            target, loaded = self._current(self._ref(capture.merge_into, capture.type))
            same = capture.body.strip() in loaded[2]
            self._refresh(target, loaded, capture, None if same else capture.body.strip())
            return {**outcome, "status": "merged", "file": target}
        file = note_filename(capture.type, capture.name)
        exists = self._text(file) is not None
        if capture.supersedes:
            old = self._ref(capture.supersedes, capture.type)
            new = self._free_version(file) if exists else file  # never overwrite a note
            self._supersede(old, self._load(old), new, capture)
            return {**outcome, "status": "written", "file": new, "supersedes": old}
        if exists:
            current, loaded = self._current(file)
            if loaded[2].strip() == capture.body.strip():
                self._refresh(current, loaded, capture, None)
                return {**outcome, "status": "refreshed", "file": current}
            if not written_by_runtime(loaded[0]):  # hand edits win over repeated captures
                raise CaptureError(
                    f"memory/{current} has the same name and another body, and was last written by "
                    "a person (or another tool); it was kept and this capture was not applied "
                    f"(to replace it, capture again with \"supersedes\": \"{current}\")")
            new = self._free_version(file)
            self._supersede(current, loaded, new, capture)
            return {**outcome, "status": "written", "file": new, "supersedes": current,
                    "note": f"memory/{current} had the same name and another body; "
                            "the new note supersedes it and both are kept"}
        self._write_new(file, capture, None)
        return {**outcome, "status": "written", "file": file}


def write(folder: AgentFolder, memory: MemoryBackend, tools: ToolsConfig, captures: list[Capture],
          today: date, lease: Any = None) -> list[dict[str, Any]]:
    """Write accepted captures (notes first, then INDEX once); returns one outcome each.
    ``lease.check()`` runs before each note, so a holder whose lock expired stops writing."""
    if not captures:
        return []
    if not tools.may_write("memory/"):
        refusal = "tools.md does not allow writing memory/ (add memory/ to its write list)"
        return [{"name": c.name, "type": c.type, "status": "rejected", "reason": refusal}
                for c in captures]
    writer = _Writer(folder, memory, today)
    outcomes = []
    tracked = isinstance(memory, writeback.Notes)  # each write remembered: its history
    for capture in captures:
        if lease is not None:
            lease.check()
        mark = len(memory.done) if tracked else 0
        try:
            outcome = writer.apply(capture)
            if tracked:
                outcome["changes"] = history.hashed(memory.changes(mark))[0]
            outcomes.append(outcome)
        except (CaptureError, NoteError) as exc:
            outcomes.append({"name": capture.name, "type": capture.type, "status": "rejected",
                             "reason": getattr(exc, "message", str(exc))})
    if writer.index_changes or writer.ensure_listed:
        write_index(folder, memory, writer.index_changes, writer.ensure_listed, outcomes, lease)
    return outcomes


def write_index(folder: AgentFolder, memory: MemoryBackend,
                 changes: dict[str, tuple[str, str] | None], missing: dict[str, tuple[str, str]],
                 outcomes: list[dict[str, Any]], lease: Any) -> None:
    """Upsert this run's lines into INDEX.md as a compare-and-swap. When INDEX.md changed
    since it was read (a hand edit), the upsert is applied again to the new text, so the
    edit is kept; after INDEX_TRIES changes in a row the written notes carry a warning."""
    for attempt in range(INDEX_TRIES):
        if attempt > 1:
            time.sleep(0.005 * (attempt - 1))  # 5, 10, 15 ms: an editor's save may be half done
        if lease is not None:
            lease.check()
        current = memory.get_index(folder)
        wanted = {**{file: line for file, line in missing.items() if not index.lists(current or "", file)},
                  **changes}
        if not wanted:
            return
        try:
            memory.put_index(folder, index.upsert(current or "", wanted), expected=current)
            return
        except NoteChanged:
            continue
    warning = (f"memory/INDEX.md changed while being updated, {INDEX_TRIES} times in a row; "
               f"this note's line was not written (fix: run `atomic-vault doctor {folder.name} "
               "--repair`)")
    for outcome in outcomes:
        if outcome.get("status") == "written":
            outcome["warning"] = warning
