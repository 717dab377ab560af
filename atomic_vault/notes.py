"""Typed memory notes: the frontmatter schema, file names, parsing and order-keeping edits."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable

import yaml
from frontmatter.default_handlers import YAMLHandler

from .errors import NoteError

SCHEMA_VERSION = 1
NOTE_TYPES = ("user", "feedback", "project", "decision", "reference")
CONFIDENCES = ("high", "medium", "low")
REQUIRED = ("schema_version", "name", "description", "type", "captured", "last_seen",
            "sources", "confidence")
OPTIONAL = ("pinned", "expires_at", "supersedes", "superseded_by", "tags", "archived", "runtime_hash")
RUNTIME_HASH = "runtime_hash"
MAX_NAME = 200
MAX_DESCRIPTION = 300
# \Z, not $: "$" also matches before a final newline, and "x.md\n" must not pass.
FILENAME = re.compile(r"^(user|feedback|project|decision|reference)_([^\W_]|_)+\.md\Z")


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loading (libyaml when installed) that refuses a key set twice in one
    mapping, instead of silently keeping the last value."""

    def construct_object(self, node, deep=False):
        # A value that matches a YAML type but cannot be built (a date 2026-02-30, a tagged
        # `!!int abc`) raises ValueError and friends, not YAMLError: report it as YAML at
        # the value's line instead of letting it escape as a crash.
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            kind = str(node.tag).rpartition(":")[2] or "value"
            shown = repr(node.value) if isinstance(node.value, str) else "this value"
            detail = f" ({exc})" if isinstance(exc, ValueError) and str(exc) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} is not a valid {kind}{detail}", node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable keys are reported by the constructor itself
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is set twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_YAML_LOADER = StrictLoader


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Plain YAML for people: no &anchors / *aliases even when two values are equal."""

    def ignore_aliases(self, data: Any) -> bool:
        return True



class _Frontmatter(YAMLHandler):
    """python-frontmatter's YAML handler, with libyaml's loader when it is installed."""

    def load(self, fm: str, **kwargs: object) -> Any:
        simple = simple_frontmatter(fm)
        if simple is not None:
            return simple
        kwargs.setdefault("Loader", _YAML_LOADER)
        return yaml.load(fm, **kwargs)  # noqa: S506 - a safe loader is always chosen


# The frontmatter the runtime writes, and most written by hand, is one `key: value` per
# line and lists of `- item` lines. Building it through PyYAML's constructor costs most of
# a first catalog build, so such text is read here directly; anything else, or any value
# whose YAML type is not certain at a glance, goes to YAML (tests/test_notes_and_index.py
# checks both readings agree).
_SIMPLE_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?\Z")
_SIMPLE_ITEM = re.compile(r"( *)- (.*)\Z")
_NOT_PLAIN_TEXT = re.compile(r"(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON"
                             r"|off|Off|OFF|y|Y|n|N|null|Null|NULL)\Z")
_SIMPLE_DAY = re.compile(r"([0-9]{4})-([0-9][0-9])-([0-9][0-9])\Z")
_SIMPLE_INT = re.compile(r"(?:[1-9][0-9]*|0)\Z")
_FLOW_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*(?: [A-Za-z0-9_.-]+)*\Z")  # a word in [a, b]
_SIMPLE_HEX = re.compile(r"[0-9a-f]+\Z")
_MISSING = object()


def simple_frontmatter(fm: str) -> dict[str, Any] | None:
    """``fm`` read as YAML would, when it is simple enough to be sure; else None."""
    if not fm or "\r" in fm or "\t" in fm:
        return None
    meta: dict[str, Any] = {}
    lines = fm.strip("\n").split("\n")  # YAML ignores blank lines around the fields
    i = 0
    while i < len(lines):
        match = _SIMPLE_KEY.match(lines[i])
        if match is None:
            return None
        key, raw = match.groups()
        if key in meta or _NOT_PLAIN_TEXT.match(key):
            return None
        i += 1
        if raw is not None:
            value = _simple_value(raw)
            if value is _MISSING:
                return None
        else:  # a list of items on the following lines
            value, indent = [], None
            while i < len(lines) and (item := _SIMPLE_ITEM.match(lines[i])) is not None:
                if indent is not None and item.group(1) != indent:
                    return None
                indent = item.group(1)
                element = _simple_value(item.group(2))
                if element is _MISSING or isinstance(element, list):
                    return None
                value.append(element)
                i += 1
            if not value:
                return None
        meta[key] = value
    return meta


def _simple_value(raw: str) -> Any:
    """One plain value, or _MISSING when only YAML can say what it is."""
    first = raw[:1]
    if "a" <= first <= "z" or "A" <= first <= "Z":
        if first in "yYnNtTfFoO" and _NOT_PLAIN_TEXT.match(raw):
            return raw == "true" if raw in ("true", "false") else _MISSING
        if ": " in raw or " #" in raw or raw[-1] in ": " or not raw.isprintable():
            return _MISSING
        return raw
    if "0" <= first <= "9":
        day = _SIMPLE_DAY.match(raw)
        if day:
            try:
                return date(int(day.group(1)), int(day.group(2)), int(day.group(3)))
            except ValueError:
                return _MISSING  # YAML reports the bad date, with its line
        if _SIMPLE_INT.match(raw):
            return int(raw)
        if _SIMPLE_HEX.match(raw) and not raw.isdigit() and raw[:2] not in ("0b", "0x"):
            return raw  # a hash such as runtime_hash: no YAML type but a string fits it
        return _MISSING
    if first == "[" and raw[-1] == "]":
        items = [item.strip() for item in raw[1:-1].split(",")] if raw[1:-1].strip() else []
        if all(_FLOW_WORD.match(item) and not _NOT_PLAIN_TEXT.match(item) for item in items):
            return items
    return _MISSING


_HANDLER = _Frontmatter()


def slugify(name: str) -> str:
    """Snake-case topic for a file name: letters and digits of any script, joined by '_'.

    Anything else (slashes, dots, control characters, spaces) becomes a separator, so a
    slug can never name a path outside memory/.
    """
    # lower() after casefold(): case folding maps a few letters (Cherokee) to capitals,
    # and file names must be lower case (spec/03) or the note would not validate.
    # Case folding turns "İ" into "i" plus a combining dot above, which is no letter and
    # would split the word ("i_stanbul"); on an "i" that dot adds nothing, so it goes.
    text = unicodedata.normalize("NFKC", name).casefold().lower().replace("i\u0307", "i")
    slug = re.sub(r"[\W_]+", "_", text).strip("_")[:80].rstrip("_")
    return slug


def note_filename(note_type: str, name: str) -> str:
    slug = slugify(name)
    if not slug:
        raise NoteError(f"name {name!r} has no letters or digits to make a file name from",
                        field="name", fix="give the note a name with letters or digits")
    return f"{note_type}_{slug}.md"


def iso_day(value: Any) -> str | None:
    """'YYYY-MM-DD' for a YAML date or a string in that form; None for anything else.
    A YAML timestamp with a time of day counts as its date."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat() if len(value) == 10 else None
        except ValueError:
            return None
    return None


def read_note(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a note file into (frontmatter, body), or raise NoteError naming the problem."""
    return parse_note_text(read_note_text(path), path)


def read_note_text(path: Path, regular: bool = False) -> str:
    """A note file's text: a regular file of UTF-8 text, or NoteError. ``regular``: the
    caller's lstat of the file just showed a regular file (a link put in its place since
    changes its stat signature, so the caller notices on its next look)."""
    if not regular and (path.is_symlink() or not path.is_file()):
        raise NoteError("is not a regular file", path=path,
                        fix="notes must be plain files; remove or replace it")
    if regular:  # a link swapped in since the caller's lstat is refused, not followed
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise NoteError("is not a regular file", path=path,
                            fix="notes must be plain files; remove or replace it") from None
        with open(fd, "rb") as file:
            raw = file.read()
    else:
        raw = path.read_bytes()
    if b"\0" in raw:
        raise NoteError("is binary (contains NUL bytes), not a Markdown note", path=path,
                        fix="move the file out of memory/")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                        fix="re-save the note as UTF-8") from None
    return text


def parse_note_text(text: str, path: Path) -> tuple[dict[str, Any], str]:
    text = text.lstrip("\ufeff")
    if not text.startswith("---"):
        raise NoteError("has no YAML frontmatter", path=path, field="frontmatter",
                        fix="start the file with a '---' line, the fields, and another '---' line")
    try:
        fm, body = _HANDLER.split(text)
    except ValueError:
        raise NoteError("frontmatter is not closed", path=path, field="frontmatter",
                        fix="end the frontmatter with a line holding only '---'") from None
    try:
        meta = _HANDLER.load(fm)
    except RecursionError:
        raise NoteError("frontmatter is not valid YAML: it is nested too deeply", path=path,
                        field="frontmatter", fix="correct the YAML between the '---' lines") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {_first_line(text) + mark.line}" if mark is not None else "frontmatter"
        problem = getattr(exc, "problem", None) or str(exc)
        raise NoteError(f"frontmatter is not valid YAML: {problem}", path=path, field=where,
                        fix="correct the YAML between the '---' lines") from None
    if not isinstance(meta, dict):
        raise NoteError("frontmatter is not a YAML mapping of fields", path=path,
                        field="frontmatter", fix="write one 'key: value' per line")
    return meta, body.strip("\n")


def _first_line(text: str) -> int:
    """The file line number of the frontmatter text's first line (its line 0 is what
    follows the opening dashes on their own line; blank lines the fence pattern took
    along are counted too)."""
    fence = _HANDLER.FM_BOUNDARY.search(text.lstrip("\ufeff"))
    return 1 + (text.lstrip("\ufeff").count("\n", 0, fence.end()) if fence else 0)


class BrokenNote(NoteError):
    """Every problem of one note at once (``problems``, in the order of spec/03); the error
    itself reads as the first one."""

    def __init__(self, problems: list[NoteError]):
        self.problems = list(problems)
        first = problems[0]
        super().__init__(first.message, path=first.path, field=first.field, fix=first.fix)

    def __str__(self) -> str:
        rest = [f"{e.field}: {e.message} (fix: {e.fix})" if e.field else f"{e.message} (fix: {e.fix})"
                for e in self.problems[1:]]
        return "; ".join([super().__str__(), *rest])


def every_problem(error: NoteError) -> list[NoteError]:
    return list(getattr(error, "problems", None) or [error])


def error_record(error: NoteError) -> dict[str, Any]:
    """A note's error as plain JSON values (for caches and databases)."""
    def one(e: NoteError) -> dict[str, Any]:
        return {"message": e.message, "path": e.path, "field": e.field, "fix": e.fix}
    problems = every_problem(error)
    return {**one(problems[0]), **({"problems": [one(e) for e in problems]} if len(problems) > 1 else {})}


def error_from_record(record: dict[str, Any]) -> NoteError:
    problems = record.get("problems")
    if problems:
        return BrokenNote([NoteError(**item) for item in problems])
    return NoteError(**{key: record.get(key) for key in ("message", "path", "field", "fix")})


def check_note_text(text: str, path: Path) -> tuple[dict[str, Any], str]:
    """Parse and validate a note's text: (frontmatter, body), or a NoteError holding every
    problem of the schema, each field named with the line it is on."""
    meta, body = parse_note_text(text, path)
    found = problems(meta, path)
    if found:
        lines = _key_lines(text)
        raise BrokenNote([NoteError(e.message, path=e.path, fix=e.fix,
                                    field=f"line {lines[e.field]}: {e.field}" if e.field in lines else e.field)
                          for e in found])
    return meta, body


def _key_lines(text: str) -> dict[str, int]:
    """Top-level frontmatter key -> its file line number (only asked for broken notes)."""
    try:
        fm, _ = _HANDLER.split(text.lstrip("\ufeff"))
        node = yaml.compose(fm, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (ValueError, yaml.YAMLError, RecursionError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    first = _first_line(text)
    return {str(key.value): first + key.start_mark.line for key, _ in node.value
            if isinstance(key, yaml.ScalarNode)}


# The fix of a note written for a newer schema: the runtime, not the note, is behind.
NEWER_FIX = "upgrade atomic-vault (pip install -U atomic-vault): the note was written for a newer schema"


def validate(meta: dict[str, Any], path: Path) -> None:
    """Raise NoteError (a BrokenNote listing every problem) when the frontmatter breaks
    the note schema (spec/03)."""
    found = problems(meta, path)
    if found:
        raise BrokenNote(found)


def problems(meta: dict[str, Any], path: Path) -> list[NoteError]:
    """Every way the frontmatter breaks the note schema, in the order of spec/03. A field
    that is missing is reported once, not again for its type."""
    found: list[NoteError] = []

    def fail(field: str, problem: str, fix: str) -> None:
        found.append(NoteError(problem, path=path, field=field, fix=fix))

    named = bool(FILENAME.match(path.name)) and path.name == path.name.lower()
    if not named:
        fail("file name", f"{path.name!r} is not <type>_<snake_case_topic>.md",
             f"rename it, e.g. to {_suggested_name(meta, path)}")
    for key in REQUIRED:
        if key not in meta or meta[key] is None:
            fail(key, "required field is missing", f"add '{key}:' to the frontmatter")
    version = meta.get("schema_version")
    if version is not None and (type(version) is not int or version != SCHEMA_VERSION):
        newer = type(version) is int and version > SCHEMA_VERSION
        fail("schema_version", f"is {version!r}; this version reads {SCHEMA_VERSION}",
             NEWER_FIX if newer else f"set schema_version: {SCHEMA_VERSION}")
    for key, limit in (("name", MAX_NAME), ("description", MAX_DESCRIPTION)):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            fail(key, "must be a non-empty string", f"write a short text after '{key}:'")
        elif len(value) > limit or "\n" in value.strip():
            fail(key, f"must be one line of at most {limit} characters", f"shorten '{key}'")
    note_type = meta.get("type")
    if note_type is not None and note_type not in NOTE_TYPES:
        fail("type", f"{note_type!r} is not a note type", f"use one of {', '.join(NOTE_TYPES)}")
    elif note_type is not None and named and not path.name.startswith(note_type + "_"):
        fail("type", f"is {note_type!r} but the file name starts otherwise",
             f"rename the file to start with '{note_type}_' or correct 'type'")
    confidence = meta.get("confidence")
    if confidence is not None and confidence not in CONFIDENCES:
        fail("confidence", f"{confidence!r} is not allowed", f"use one of {', '.join(CONFIDENCES)}")
    for key in ("captured", "last_seen", "expires_at"):
        if key in meta and meta[key] is not None and iso_day(meta[key]) is None:
            fail(key, f"{meta[key]!r} is not a date", "write the date as YYYY-MM-DD")
    for key in ("sources", "tags"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(item, str) for item in value)):
            fail(key, "must be a list of strings", f"write '{key}:' followed by '- item' lines")
    for key in ("pinned", "archived"):
        if key in meta and not isinstance(meta[key], bool):
            fail(key, f"{meta[key]!r} is not true or false", f"write '{key}: true' or remove it")
    for key in ("supersedes", "superseded_by"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) and FILENAME.match(value)):
            fail(key, f"{value!r} is not a note file name", "name the other note's file, e.g. decision_x.md")
    return found


def _suggested_name(meta: dict[str, Any], path: Path) -> str:
    """A valid file name for a misnamed note, from its type and name (or its file stem)."""
    note_type = meta.get("type") if meta.get("type") in NOTE_TYPES else "reference"
    for source in (meta.get("name"), path.stem):
        if isinstance(source, str) and slugify(source):
            return note_filename(note_type, source)
    return f"{note_type}_note.md"


def summarize(meta: dict[str, Any], filename: str) -> dict[str, Any]:
    """The few fields the runtime needs about a note, as plain JSON values (for caches).
    Types and dates are interned: 100,000 notes share a few hundred of them, in memory and
    in the catalog cache (marshal writes an interned string once)."""
    return {
        "file": filename,
        "name": meta["name"],
        "description": meta["description"],
        "type": _interned(meta["type"]),
        "captured": _interned(iso_day(meta["captured"])),
        "last_seen": _interned(iso_day(meta["last_seen"])),
        "pinned": bool(meta.get("pinned", False)),
        "archived": bool(meta.get("archived", False)),
        "superseded_by": meta.get("superseded_by"),
        "expires_at": _interned(iso_day(meta.get("expires_at"))),
    }


def _interned(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def is_current(summary: dict[str, Any]) -> bool:
    """Neither archived nor superseded: listed under its type's INDEX section."""
    return not (summary["archived"] or summary["superseded_by"])


def is_live(summary: dict[str, Any], today: str) -> bool:
    """Current and not expired: eligible for prompts. (Expiry does not move a note in
    INDEX.md; the operator archives expired notes.)"""
    expired = summary.get("expires_at") is not None and summary["expires_at"] < today
    return is_current(summary) and not expired


def _dump(fields: dict[str, Any]) -> str:
    return yaml.dump(fields, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=4096)


def render_note(fields: dict[str, Any], body: str) -> str:
    """A new note file: frontmatter in schema order, then the body, LF and a final newline."""
    return f"---\n{_dump(fields)}---\n{body.strip(chr(10))}\n"


def update_frontmatter(text: str, updates: dict[str, Any], path: Path | None = None) -> str:
    """Change some frontmatter keys in place: other keys keep their order and formatting,
    the body stays byte-for-byte. A key set to None is removed. A byte-order mark is dropped."""
    lines = text.lstrip("\ufeff").split("\n")
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if lines[0].rstrip() != "---" or end is None:
        raise NoteError("its frontmatter is not delimited by two '---' lines", path=path,
                        field="frontmatter", fix="put exactly '---' on the lines before and after the fields")
    head = lines[1:end]
    for key, value in updates.items():
        start = next((i for i, line in enumerate(head)
                      if line.startswith(f"{key}:") and not line.startswith(" ")), None)
        new = [] if value is None else _dump({key: value}).rstrip("\n").split("\n")
        if start is None:
            head.extend(new)
            continue
        stop = start + 1
        while stop < len(head) and (head[stop].startswith((" ", "\t", "- ")) or head[stop] == "-"):
            stop += 1
        head[start:stop] = new
    _check_edit(lines[1:end], head, updates, path)
    return "\n".join([lines[0], *head, *lines[end:]])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stamp_fields(fields: dict[str, Any], body: str) -> dict[str, Any]:
    """``fields`` plus the ``runtime_hash`` of the note they render to with ``body``."""
    return {**fields, RUNTIME_HASH: _digest(render_note(fields, body))}


def stamped(text: str, path: Path | None = None) -> str:
    """A note text the runtime writes, marked as written by it: ``runtime_hash`` is the
    hash of the text without that line (spec/03)."""
    bare = update_frontmatter(text, {RUNTIME_HASH: None}, path)
    return update_frontmatter(bare, {RUNTIME_HASH: _digest(bare)}, path)


def written_by_runtime(text: str) -> bool:
    """Whether the runtime wrote this note text last: its ``runtime_hash`` matches the rest
    of the text. Any edit by a person or another tool breaks the match; a note without the
    field, or one that cannot be read, counts as a person's (the side that keeps it)."""
    try:
        meta, _ = parse_note_text(text, Path("note.md"))
        claimed = meta.get(RUNTIME_HASH)
        return isinstance(claimed, str) and _digest(update_frontmatter(text, {RUNTIME_HASH: None})) == claimed
    except NoteError:
        return False


def _check_edit(old: list[str], new: list[str], updates: dict[str, Any], path: Path | None) -> None:
    """The line edit must mean exactly the update: keys written in a form the line rules do
    not see (quoted, `key : value`, a {…} mapping) would otherwise end up set twice or
    lost, leaving a broken note behind."""
    def load(head: list[str]) -> Any:
        return yaml.load("\n".join(head), Loader=_YAML_LOADER)  # noqa: S506 - safe loader

    try:
        before, after = load(old), load(new)
    except (yaml.YAMLError, RecursionError) as exc:
        problem = f"the edit would not be valid YAML ({getattr(exc, 'problem', None) or exc})"
    else:
        wanted = {**before, **updates} if isinstance(before, dict) else None
        if wanted is not None:
            wanted = {k: v for k, v in wanted.items() if v is not None or k not in updates}
        try:
            same = after == wanted
        except RecursionError:  # a value that contains itself (a YAML alias loop)
            same = False
        same = same or repr(after) == repr(wanted)  # repr: NaN is not equal to itself
        problem = None if same else "the edited fields do not read back as written"
    if problem:
        raise NoteError(f"its frontmatter cannot be edited in place: {problem}", path=path,
                        field="frontmatter",
                        fix="write one plain 'key: value' line per field (no quoted keys, "
                            "no {…} mapping), as notes written by the runtime are")


def matching(summaries: Iterable[dict[str, Any]], *, type: str | None = None,
             pinned: bool | None = None, archived: bool | None = None,
             recent: int | None = None) -> list[dict[str, Any]]:
    """The filters of ``MemoryBackend.list``, shared by every backend: newest ``last_seen``
    first, then file name; ``archived=True`` keeps notes that are not current."""
    if type is not None and type not in NOTE_TYPES:
        raise NoteError(f"unknown note type {type!r}", field="type", fix=f"use one of: {', '.join(NOTE_TYPES)}")
    rows = [s for s in summaries
            if (type is None or s["type"] == type)
            and (pinned is None or s["pinned"] == pinned)
            and (archived is None or (not is_current(s)) == archived)]
    rows.sort(key=lambda s: s["file"])
    rows.sort(key=lambda s: s["last_seen"] or "", reverse=True)
    return rows if recent is None else rows[:max(recent, 0)]


def files_named(memory: Any, folder: Any, word: str) -> list[str]:
    """The note files ``word`` names, as `notes show` and the MCP server read it: the file
    itself, or with ``.md`` added, when that note exists; else every note (current or
    archived) whose name is ``word``, spaces and case ignored. Never a path."""
    for file in (word, word + ".md"):
        if FILENAME.match(file) and memory.get(folder, file) is not None:
            return [file]
    wanted = " ".join(word.split()).casefold()
    return sorted(row["file"] for row in memory.list(folder)
                  if " ".join(str(row.get("name", "")).split()).casefold() == wanted)
