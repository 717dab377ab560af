"""Memory lint: what makes an agent's notes worse over time, each finding with its fix.

Read-only. Everything goes through the MemoryBackend Protocol, so files, SQLite and
PostgreSQL memory are linted alike. Near-duplicates are found without comparing every
pair: each note is reduced to word shingles, only notes that share one of their few
smallest shingle hashes become candidates, and only candidates are compared (spec/17).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from . import index
from .assembly import index_share
from .config import ModelConfig
from .errors import NoteError
from .models import estimate_tokens
from .notes import OPTIONAL, REQUIRED, SCHEMA_VERSION, is_current, parse_note_text, slugify
from .protocols import MemoryBackend
from .vault import AgentFolder

CHECKS = ("duplicate", "near_duplicate", "stale", "expired_listed", "index_dangling", "index_missing",
          "one_sided_supersession", "unknown_key", "old_schema", "oversized", "index_budget")
MAX_BODY = 32_000  # characters: what one capture may write (captures.LIMITS["body"])
SIMILAR_BODY = 0.7  # Jaccard of word 3-shingles at or above which two bodies are near-duplicates
SIMILAR_DESCRIPTION = 0.8  # the same for descriptions, on word pairs
SKETCH = 4  # smallest shingle hashes per text that make a note a candidate of another
BUCKET_LIMIT = 64  # a shingle this many notes share is boilerplate, not a sign of duplication
COMPARED: dict[str, int] = {}  # candidate pairs compared by the last duplicate_groups (bench/bench_lint.py)


@dataclass(frozen=True)
class Finding:
    """One problem: which check, the file at fault, what is wrong and how to fix it."""

    check: str
    file: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Note:
    """What lint reads of one note: its summary fields, frontmatter and body."""

    file: str
    text: str
    meta: dict[str, Any]
    body: str
    summary: dict[str, Any] | None  # None: the note breaks the schema (doctor lists why)


@dataclass(frozen=True)
class Group:
    """Current notes that look like one note written several times. ``exact``: same type
    and the same body (whitespace and case aside), so merging them loses nothing."""

    files: tuple[str, ...]
    why: str  # name | description | body
    exact: bool
    score: float


def read_notes(folder: AgentFolder, memory: MemoryBackend) -> tuple[dict[str, Note], str | None]:
    """Every note the backend holds (valid or not) and INDEX.md's text."""
    summaries, broken = memory.scan(folder)
    out: dict[str, Note] = {}
    for file in sorted({*summaries, *broken}):
        text = memory.get(folder, file)
        if text is None:
            continue
        try:
            meta, body = parse_note_text(text, folder.memory / file)
        except NoteError:
            continue  # unreadable frontmatter: doctor names the problem
        out[file] = Note(file, text, meta, body, summaries.get(file))
    return out, memory.get_index(folder)


def lint(folder: AgentFolder, memory: MemoryBackend, config: ModelConfig, today: date) -> list[Finding]:
    """Every finding for one agent, ordered by check then file. Nothing is changed."""
    notes, index_text = read_notes(folder, memory)
    found: list[Finding] = []
    found += _duplicates(notes, folder.name)
    found += _stale(notes, today, config.stale_days, folder.name)
    found += _index(notes, index_text, today, folder.name)
    found += _supersession(notes)
    found += _frontmatter(notes)
    found += _budget(index_text, config)
    order = {name: i for i, name in enumerate(CHECKS)}
    return sorted(found, key=lambda f: (order[f.check], f.file, f.message))


def _where(file: str) -> str:
    return f"memory/{file}"


# ---- duplicates ------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")
_PRIME = 1_000_003
_MASK = (1 << 61) - 1


def _words(text: str, ids: dict[str, int]) -> list[int]:
    """The text's words (letters and digits, case folded) as CRC32 numbers: deterministic
    across processes, unlike ``hash``. ``ids`` caches the words already seen."""
    words = _WORD.findall(text.casefold())
    for word in set(words).difference(ids):
        ids[word] = zlib.crc32(word.encode("utf-8"))
    return [ids[word] for word in words]


def _shingles(words: list[int], size: int) -> frozenset[int]:
    """One number per run of ``size`` words (all words when fewer)."""
    if len(words) <= size:
        value = 0
        for word in words:
            value = (value * _PRIME + word) & _MASK
        return frozenset([value]) if words else frozenset()
    if size == 2:
        return frozenset((a * _PRIME + b) & _MASK for a, b in zip(words, words[1:]))
    return frozenset(((a * _PRIME + b) * _PRIME + c) & _MASK for a, b, c in zip(words, words[1:], words[2:]))


def _jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def duplicate_groups(notes: dict[str, Note]) -> list[Group]:
    """Groups of current notes that duplicate each other: the same normalised name
    (``name``), else a description or body at least SIMILAR_* alike (``description``,
    ``body``). Candidates are bucketed first, so the cost grows with the number of notes,
    not with its square."""
    current = {f: n for f, n in notes.items() if n.summary is not None and is_current(n.summary)}
    groups: list[Group] = []
    by_name: dict[str, list[str]] = {}
    for file, note in current.items():
        by_name.setdefault(_name_key(note), []).append(file)
    named: set[str] = set()
    for key, files in sorted(by_name.items()):
        if key and len(files) > 1:
            files.sort()
            groups.append(Group(tuple(files), "name", _exact([current[f] for f in files]), 1.0))
            named.update(files)
    ids: dict[str, int] = {}
    bodies = {f: _shingles(_words(n.body, ids), 3) for f, n in current.items()}
    descriptions = {f: _shingles(_words(str(n.meta.get("description", "")), ids), 2) for f, n in current.items()}
    pairs: dict[tuple[str, str], tuple[str, float]] = {}
    compared = COMPARED
    compared.clear()
    for why, sets, limit in (("body", bodies, SIMILAR_BODY), ("description", descriptions, SIMILAR_DESCRIPTION)):
        found = _candidates(sets)
        compared[why] = len(found)
        for a, b in found:
            if (a, b) in pairs or (a in named and b in named and _name_key(current[a]) == _name_key(current[b])):
                continue
            score = _jaccard(sets[a], sets[b])
            if score >= limit:
                pairs[(a, b)] = (why, score)
    groups += _join(pairs, current)
    return groups


def _name_key(note: Note) -> str:
    return slugify(str(note.meta.get("name", "")))


def _candidates(sets: dict[str, frozenset[int]]) -> set[tuple[str, str]]:
    """Pairs of notes that share one of their SKETCH smallest shingle hashes (a pair
    whose shingles are J alike shares the smallest with probability J)."""
    buckets: dict[int, list[str]] = {}
    for file, shingles in sets.items():
        for value in sorted(shingles)[:SKETCH]:
            buckets.setdefault(value, []).append(file)
    out: set[tuple[str, str]] = set()
    for files in buckets.values():
        if 1 < len(files) <= BUCKET_LIMIT:
            files.sort()
            out.update((a, b) for i, a in enumerate(files) for b in files[i + 1:])
    return out


def _join(pairs: dict[tuple[str, str], tuple[str, float]], current: dict[str, Note]) -> list[Group]:
    """Similar pairs joined into groups (a note alike to two others makes one group of three)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        parent[root(b)] = root(a)
    members: dict[str, list[str]] = {}
    for file in parent:
        members.setdefault(root(file), []).append(file)
    out = []
    for files in members.values():
        files.sort()
        inside = [v for (a, b), v in pairs.items() if a in files and b in files]
        why = "body" if any(w == "body" for w, _ in inside) else "description"
        out.append(Group(tuple(files), why, _exact([current[f] for f in files]),
                         round(min(s for _, s in inside), 3)))
    return sorted(out, key=lambda g: g.files)


def _exact(notes: list[Note]) -> bool:
    first = notes[0]
    def words(note: Note) -> list[str]:
        return _WORD.findall(note.body.casefold())
    return all(n.meta.get("type") == first.meta.get("type") and words(n) == words(first) for n in notes[1:])


def _duplicates(notes: dict[str, Note], agent: str) -> list[Finding]:
    out = []
    for group in duplicate_groups(notes):
        first, rest = group.files[0], group.files[1:]
        same = "the same body" if group.exact else (
            "the same name" if group.why == "name" else f"a {group.why} {group.score:.0%} alike")
        for file in rest:
            check = "duplicate" if group.why == "name" or group.exact else "near_duplicate"
            out.append(Finding(check, _where(file), f"has {same} as {_where(first)}",
                               f"`atomic-vault consolidate {agent}` proposes merging them into one note "
                               "(the merged note supersedes both); or edit one so they differ"))
    return out


# ---- age, INDEX, links, schema ---------------------------------------------------------

def stale_files(notes: dict[str, Note], today: date, days: int) -> list[str]:
    """Current, unpinned notes whose ``last_seen`` is more than ``days`` days old."""
    cutoff = (today - timedelta(days=days)).isoformat()
    return [file for file, note in sorted(notes.items())
            if note.summary is not None and is_current(note.summary) and not note.summary["pinned"]
            and (note.summary.get("last_seen") or cutoff) < cutoff]


def _stale(notes: dict[str, Note], today: date, days: int, agent: str) -> list[Finding]:
    return [Finding("stale", _where(file), f"was last seen {notes[file].summary['last_seen']}, over "
                    f"stale_days ({days}) ago", f"`atomic-vault consolidate {agent}` proposes retiring it; or "
                    "set last_seen: to today if it still holds, or archived: true")
            for file in stale_files(notes, today, days)]


def _index(notes: dict[str, Note], text: str | None, today: date, agent: str) -> list[Finding]:
    if text is None:
        return [Finding("index_missing", "memory/INDEX.md", "is missing",
                        f"`atomic-vault doctor {agent} --repair` rebuilds it from the notes")]
    listed = index.listed(text)
    day = today.isoformat()
    out = []
    for file, section in sorted(listed.items()):
        if file not in notes:
            out.append(Finding("index_dangling", "memory/INDEX.md", f"lists {file}, which is not a note",
                               f"remove the line, or `atomic-vault doctor {agent} --repair`"))
            continue
        summary = notes[file].summary
        expires = summary.get("expires_at") if summary else None
        if expires is not None and expires < day and section != index.ARCHIVE:
            out.append(Finding("expired_listed", _where(file),
                               f"expired on {expires} but INDEX.md still lists it under {section}",
                               f"set archived: true in its frontmatter, then `atomic-vault doctor {agent} "
                               "--repair` moves its line to Archive (or change expires_at)"))
    for file in sorted(notes):
        if file not in listed and notes[file].summary is not None:
            out.append(Finding("index_missing", _where(file), "has no line in memory/INDEX.md",
                               f"`atomic-vault doctor {agent} --repair` adds it"))
    return out


def _supersession(notes: dict[str, Note]) -> list[Finding]:
    """Each supersedes link must be answered by a superseded_by link, and vice versa."""
    out = []
    for file, note in sorted(notes.items()):
        for key, back in (("supersedes", "superseded_by"), ("superseded_by", "supersedes")):
            other = note.meta.get(key)
            if not isinstance(other, str) or not other:
                continue
            if other not in notes:
                out.append(Finding("one_sided_supersession", _where(file),
                                   f"{key}: {other}, which is not a note",
                                   f"remove {key}:, or restore memory/{other}"))
            elif notes[other].meta.get(back) != file:
                found = notes[other].meta.get(back)
                out.append(Finding("one_sided_supersession", _where(file),
                                   f"{key}: {other}, but {other} has {back}: {found or '(none)'}",
                                   f"set {back}: {file} in memory/{other}, or remove {key}: here"))
    return out


def _frontmatter(notes: dict[str, Note]) -> list[Finding]:
    known = set(REQUIRED) | set(OPTIONAL)
    out = []
    for file, note in sorted(notes.items()):
        for key in note.meta:
            if key not in known:
                out.append(Finding("unknown_key", _where(file), f"frontmatter key {key!r} is not in the note schema",
                                   "remove it, or correct its spelling (spec/03 lists every key)"))
        version = note.meta.get("schema_version")
        if type(version) is int and version < SCHEMA_VERSION:
            out.append(Finding("old_schema", _where(file), f"schema_version is {version}; this version writes "
                               f"{SCHEMA_VERSION}", f"update the note to schema {SCHEMA_VERSION} and set "
                               f"schema_version: {SCHEMA_VERSION}"))
        if len(note.body) > MAX_BODY:
            out.append(Finding("oversized", _where(file), f"its body is {len(note.body):,} characters, over the "
                               f"{MAX_BODY:,} one note may hold", "split it into smaller notes, or move the "
                               "material to wiki/ and keep a short note that points to it"))
    return out


def _budget(text: str | None, config: ModelConfig) -> list[Finding]:
    if text is None:
        return []
    tokens, share = estimate_tokens(text), index_share(config.max_input_tokens)
    if tokens <= share:
        return []
    return [Finding("index_budget", "memory/INDEX.md",
                    f"is about {tokens:,} tokens, over its share of the prompt budget ({share:,} of "
                    f"max_input_tokens {config.max_input_tokens:,}): runs cut it to fit",
                    "archive or merge notes (their lines move to Archive, which is cut first), or raise "
                    "max_input_tokens in model.md")]


def as_lines(findings: list[Finding]) -> list[dict[str, str]]:
    return [f.as_dict() for f in findings]

