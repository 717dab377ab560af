"""The files backend's word index: which notes hold which words, for the ranked search.

Derived from the catalog (spec/03) and kept like the catalog cache, in memory and between
processes in ``.atomic_vault/words-<python>.marshal`` plus ``words-<python>.changes``
(spec/11), so that a new process (a cron run) reads only the notes whose catalog entry
changed since the index was saved, not every note. A saved note is used only while its
stat signature equals the catalog's current, trusted one; anything else is read again.
Saving after a search that re-indexed a few notes appends one checksummed frame of their
postings; the base file is written anew when the frames hold a sixteenth of the notes.
A file that is torn, fails its checksum or is foreign (another version, byte order or
memory folder) is ignored and rebuilt: deleting both only costs time.

Scores are BM25 (k1 1.2, b 0.75) over whole casefolded words. Postings are compact
arrays (about 6 bytes per distinct word of a note), left as the bytes they were loaded as
until a search or a change needs them; a changed note gets a new number and its old
postings are skipped until enough are dead to rewrite the arrays.
"""

from __future__ import annotations

import heapq
import marshal
import math
import os
import re
import struct
import sys
import zlib
from array import array
from typing import Any, Callable

from . import catalog
from .errors import ConfigError, NoteError
from .fileio import FRAME, append_frame, atomic_write, read_frames
from .vault import AgentFolder

BASE_NAME = f"words-{sys.implementation.cache_tag}.marshal"
CHANGES_NAME = f"words-{sys.implementation.cache_tag}.changes"
VERSION = 1
# Arrays are saved as their machine bytes: a file from another layout is foreign.
LAYOUT = (sys.byteorder, array("I").itemsize, array("H").itemsize)
WORD = re.compile(r"\w+")
_HEAD = struct.Struct("<I")  # the length of the base file's header


def words(query: str) -> list[str]:
    """The words of a text or a search query, taken as plain text: punctuation, quotes and
    query operators of any search engine are separators, never syntax."""
    return [w.casefold() for w in WORD.findall(query)]


def body_of(text: str) -> str:
    """A note's text after its frontmatter (all of it when there is none)."""
    if not text.startswith("---"):
        return text
    closing = text.find("\n---", 3)
    return text[text.find("\n", closing + 4) + 1:] if closing > 0 else text


class Damaged(Exception):
    """A loaded posting that cannot be right (outside the file, note numbers out of range)."""


def _trusted(entry: tuple | None) -> tuple | None:
    """A catalog entry's signature when it can be trusted (not in the racy window)."""
    return None if entry is None or entry[3] is not None else entry[0]


class WordIndex:
    """The words of one memory folder's notes (name, description, body); saved in
    ``folder``'s .atomic_vault/ when one is given, else kept in memory only."""

    def __init__(self, folder: AgentFolder | None = None) -> None:
        self.folder = folder
        self.notes: dict[str, dict[str, Any]] | None = None  # the catalog it reflects
        # file -> (summary or None until checked against the catalog, id, words, signature)
        self.docs: dict[str, tuple] = {}
        self.files: list[str | None] = []  # id -> file; None once replaced or removed
        self.lengths = array("I")  # id -> words (0 once dead)
        # word -> [ids, counts] as arrays, or (where, count) in ``blob`` while as loaded
        self.postings: dict[str, list | tuple] = {}
        self.blob = memoryview(b"")  # the loaded base file's postings, not copied
        self.length = 0  # words of the live notes together
        self.dead = 0
        self.loaded = folder is None
        self.generation: str | None = None  # of the base file the changes belong to
        self.pending: int | None = None  # entries appended since it (None: no usable base)
        self.reads = 0  # notes read to index them, for tests and benchmarks

    def search(self, notes: dict[str, dict[str, Any]], read: Callable[[str], str | None],
               terms: list[str], limit: int) -> list[tuple[str, float]]:
        """``update``, then ``best``; a loaded posting found damaged rebuilds the index
        from the notes (what is on disk is not used again; the next save replaces it)."""
        try:
            self.update(notes, read)
            return self.best(terms, limit)
        except Damaged:
            folder, reads = self.folder, self.reads
            self.__init__(folder)  # type: ignore[misc]
            self.loaded, self.pending, self.reads = True, None, reads
            self.update(notes, read)
            return self.best(terms, limit)

    def update(self, notes: dict[str, dict[str, Any]], read: Callable[[str], str | None]) -> None:
        """Bring the index in line with ``notes``, a catalog scan's result."""
        if notes is self.notes:
            return
        if not self.loaded:
            self.loaded = True
            self._load(self.folder)
        # An older scan's result has no signatures at hand: nothing saved is used then.
        entries = catalog.entries(notes) or {}
        change = catalog.delta(notes)
        if change is not None and change[0] is self.notes:
            files = change[1]
        else:
            files = self._adopt(notes, entries) if self.notes is None else {*self.docs, *notes}
        changed: dict[str, tuple | None] = {}
        # Only as many changed notes as one frame may hold are kept for saving; past that
        # the base file is written anew from the index (keeping them all would double it).
        room = -1 if self.pending is None else max(64, len(self.docs) // 16) - self.pending
        dirty = False
        for file in files:
            summary, old = notes.get(file), self.docs.get(file)
            if old is not None and summary is not None and old[0] is summary:
                continue
            dirty, entry = True, None
            if old is not None:
                self._drop(file, old)
            if summary is not None:
                entry = self._index(file, summary, read, _trusted(entries.get(file)))
            if room >= 0:
                changed[file] = entry
                if len(changed) > room:
                    changed, room = {}, -1
        self.notes = notes
        if self.dead > len(self.docs) // 2 + 1000:
            self._compact()
        if dirty and self.folder is not None:
            self._save(self.folder, changed if room >= 0 else None)

    def _adopt(self, notes: dict[str, dict[str, Any]], entries: dict[str, tuple]) -> list[str]:
        """Take the loaded notes whose saved signature is the catalog's current, trusted
        one (tied to the catalog's summary from now on); the rest of the notes, and the
        loaded ones gone from the catalog, are returned to be indexed again or dropped."""
        docs = self.docs
        stale = [file for file in notes if file not in docs]
        for file, old in docs.items():
            summary, entry = notes.get(file), entries.get(file)
            if (summary is not None and entry is not None and entry[3] is None
                    and old[3] is not None and entry[0] == old[3]):
                docs[file] = (summary, old[1], old[2], old[3])  # saved, and still true
            else:
                stale.append(file)
        return stale

    def _index(self, file: str, summary: dict[str, Any], read, signature: tuple | None) -> tuple:
        """Read and add one note; returns its saved form (signature, words, counts)."""
        self.reads += 1
        try:
            text = read(file) or ""
        except NoteError:
            text = ""
        counts: dict[str, int] = {}
        for word in words(f"{summary['name']}\n{summary['description']}\n{body_of(text)}"):
            counts[word] = counts.get(word, 0) + 1
        size = sum(counts.values())
        self._add(file, summary, signature, size, counts)
        return (signature, size, counts)

    def _add(self, file: str, summary, signature, size: int, counts: dict[str, int]) -> None:
        doc = len(self.files)
        self.docs[file] = (summary, doc, size, signature)
        self.files.append(file)
        size = min(size, 2**32 - 1)
        self.lengths.append(size)
        self.length += size
        for word, n in counts.items():
            posting = self._posting(word)
            if posting is None:
                posting = self.postings[word] = [array("I"), array("H")]
            posting[0].append(doc)
            posting[1].append(min(n, 65535))

    def _drop(self, file: str, old: tuple) -> None:
        del self.docs[file]
        self.files[old[1]] = None
        self.length -= self.lengths[old[1]]
        self.lengths[old[1]] = 0
        self.dead += 1

    def _posting(self, word: str) -> list | None:
        """The posting of ``word`` as arrays (decoded and checked on first use)."""
        posting = self.postings.get(word)
        if type(posting) is list:
            return posting
        if posting is None:
            if word in self.postings:
                raise Damaged(word)
            return None
        ids, counts = array("I"), array("H")
        try:
            where, count = posting
            middle, end = where + count * ids.itemsize, where + count * (ids.itemsize + counts.itemsize)
            if not (type(where) is int and type(count) is int and 0 <= where <= end <= len(self.blob)):
                raise ValueError("out of the file")
            ids.frombytes(self.blob[where:middle])
            counts.frombytes(self.blob[middle:end])
        except (TypeError, ValueError):
            raise Damaged(word) from None
        if ids and max(ids) >= len(self.files):
            raise Damaged(word)
        posting = self.postings[word] = [ids, counts]
        return posting

    def _compact(self) -> None:
        renumber: dict[int, int] = {}
        files: list[str | None] = []
        lengths = array("I")
        for old, file in enumerate(self.files):
            if file is not None:
                renumber[old] = len(files)
                files.append(file)
                lengths.append(self.lengths[old])
        for word in list(self.postings):
            ids, counts = self._posting(word)
            kept = [(renumber[i], n) for i, n in zip(ids, counts) if i in renumber]
            if kept:
                self.postings[word] = [array("I", [i for i, _ in kept]), array("H", [n for _, n in kept])]
            else:
                del self.postings[word]
        self.docs = {file: (summary, renumber[doc], size, signature)
                     for file, (summary, doc, size, signature) in self.docs.items()}
        self.files, self.lengths, self.dead = files, lengths, 0  # saved frames name files, not numbers

    def best(self, terms: list[str], limit: int) -> list[tuple[str, float]]:
        """The ``limit`` best (file, score) for notes holding any of ``terms``."""
        total = len(self.docs)
        if not total:
            return []
        average = self.length / total or 1.0
        files, lengths = self.files, self.lengths
        scores: dict[int, float] = {}
        for term in dict.fromkeys(terms):
            posting = self._posting(term)
            if not posting:
                continue
            ids, counts = posting
            found = len(ids) if not self.dead else sum(1 for i in ids if files[i] is not None)
            if not found:
                continue
            idf = math.log(1 + (total - found + 0.5) / (found + 0.5))
            for i, n in zip(ids, counts):
                if files[i] is None:
                    continue
                norm = 1.2 * (0.25 + 0.75 * lengths[i] / average)
                scores[i] = scores.get(i, 0.0) + idf * n * 2.2 / (n + norm)
        if len(scores) > limit > 0:  # ties at the limit's score are kept, then ordered by file
            floor = heapq.nlargest(limit, scores.values())[-1]
            scores = {i: score for i, score in scores.items() if score >= floor}
        best = sorted(scores.items(), key=lambda item: (-item[1], files[item[0]]))[:max(limit, 0)]
        return [(files[i], round(score, 6)) for i, score in best]

    # On disk (spec/11): a base file of one frame, and a changes file of frames.

    def _load(self, folder: AgentFolder) -> None:
        """Take the saved index when its base file is whole and ours; then apply the
        frames of its generation in order, up to the first torn or damaged one."""
        try:
            payloads, whole = read_frames((folder.state / BASE_NAME).read_bytes())
            if not whole or len(payloads) != 1:
                return
            size = _HEAD.unpack_from(payloads[0])[0]
            version, layout, memory, generation, files, signatures, lengths, postings = \
                marshal.loads(payloads[0][_HEAD.size:_HEAD.size + size])
            blob = payloads[0][_HEAD.size + size:]
            if (version, layout, memory) != (VERSION, LAYOUT, str(folder.memory)):
                return
            docs, sizes = _docs(files, signatures, lengths)
            if not isinstance(postings, dict) or not isinstance(generation, str):
                return
        except (OSError, ValueError, EOFError, TypeError, struct.error):
            return
        self.docs, self.files, self.lengths, self.postings = docs, files, sizes, postings
        self.blob = blob
        self.length, self.dead = sum(sizes), len(files) - len(docs)
        self.generation, self.pending = generation, 0
        try:
            raw = (folder.state / CHANGES_NAME).read_bytes()
        except OSError:
            return
        payloads, whole = read_frames(raw)
        for payload in payloads:
            try:
                frame_generation, changes = marshal.loads(payload)
                if frame_generation != generation:
                    continue  # written against an older base file
                for file, entry in changes.items():
                    old = self.docs.get(file)
                    if old is not None:
                        self._drop(file, old)
                    if entry is not None:
                        signature, size, counts = _entry(entry)
                        self._add(file, None, signature, size, counts)
                self.pending += len(changes)
            except (ValueError, EOFError, TypeError, AttributeError):
                whole = False
                break
        if not whole:
            self.pending = None  # the next save writes the base file anew

    def _base(self, folder: AgentFolder, generation: str, signatures: list) -> bytearray:
        """The base file: one frame whose payload is a 4-byte little-endian header length,
        the header (marshal) and every posting's bytes, note numbers then counts. Built in
        place, so saving holds one copy of the postings beside the index, not several."""
        spans: list[tuple[str, Any]] = []
        where: dict[str, tuple[int, int]] = {}
        at, per = 0, array("I").itemsize + array("H").itemsize
        for word, posting in self.postings.items():
            if type(posting) is list:
                count = len(posting[0])
            else:  # still as loaded: copied over as it is
                count = posting[1]
                if not (type(posting[0]) is int and type(count) is int
                        and 0 <= posting[0] <= posting[0] + count * per <= len(self.blob)):
                    raise Damaged(word)
            where[word] = (at, count)
            spans.append((word, posting))
            at += count * per
        head = marshal.dumps((VERSION, LAYOUT, str(folder.memory), generation, self.files,
                              signatures, self.lengths, where))
        out = bytearray(FRAME.size) + _HEAD.pack(len(head)) + head
        for word, posting in spans:
            if type(posting) is list:
                out += memoryview(posting[0]).cast("B")
                out += memoryview(posting[1]).cast("B")
            else:
                out += self.blob[posting[0]:posting[0] + posting[1] * per]
        FRAME.pack_into(out, 0, len(out) - FRAME.size, zlib.crc32(memoryview(out)[FRAME.size:]))
        return out

    def _save(self, folder: AgentFolder, changed: dict[str, tuple | None] | None) -> None:
        """Append the changed notes' postings as one frame, or write the base file anew
        (``changed`` None) when there is no usable one or the frames would hold more than
        a sixteenth of the notes."""
        try:
            folder.ensure_state_dir()
            if changed is not None:
                append_frame(folder.state / CHANGES_NAME, marshal.dumps((self.generation, changed)))
                self.pending += len(changed)
                return
            generation = os.urandom(8).hex()
            signatures = [None] * len(self.files)
            for _, doc, _, signature in self.docs.values():
                signatures[doc] = signature
            atomic_write(folder.state / BASE_NAME, self._base(folder, generation, signatures),
                         durable=False)
            # Frames of the old generation are now ignored; emptying the file only saves reading them.
            atomic_write(folder.state / CHANGES_NAME, b"", durable=False)
            self.generation, self.pending = generation, 0
        except (OSError, NoteError, ConfigError):
            pass  # derived: a read-only vault (or a link at .atomic_vault) still searches, only slower


def _docs(files: Any, signatures: Any, lengths: Any) -> tuple[dict[str, tuple], array]:
    """The loaded notes (file -> (None, id, words, signature)) and their lengths; a
    ValueError or TypeError when the lists do not fit together."""
    if not isinstance(files, list) or not isinstance(signatures, list) or len(files) != len(signatures):
        raise ValueError("lists differ")
    sizes = array("I")
    sizes.frombytes(lengths)
    if len(sizes) != len(files):
        raise ValueError("lengths differ")
    docs = {file: (None, doc, sizes[doc], signatures[doc])
            for doc, file in enumerate(files) if file is not None}
    if len(docs) != len(files) - files.count(None) or not all(isinstance(f, str) for f in docs):
        raise ValueError("a note twice")
    return docs, sizes


def _entry(entry: Any) -> tuple[tuple | None, int, dict[str, int]]:
    """A saved note (signature, words, {word: count}), checked; TypeError when malformed."""
    signature, size, counts = entry
    if not isinstance(size, int) or not isinstance(counts, dict) or not (
            signature is None or isinstance(signature, tuple)):
        raise TypeError("malformed entry")
    if not all(isinstance(w, str) and isinstance(n, int) and 0 < n for w, n in counts.items()):
        raise TypeError("malformed counts")
    return signature, size, counts


def forget(folder: AgentFolder) -> None:
    """Delete the saved index (the next search of a new process reads every note)."""
    (folder.state / BASE_NAME).unlink(missing_ok=True)
    (folder.state / CHANGES_NAME).unlink(missing_ok=True)
