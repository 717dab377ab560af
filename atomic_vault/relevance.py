"""The relevant-notes layer: the live notes that best match the work item's words.

The work item is turned into plain search words here (never into a query language: every
backend takes words as text, spec/11), the memory backend ranks the notes holding any of
them (``MemoryBackend.search(match="any")``), and only live, unpinned, valid notes are
kept. spec/04 gives the rules; assembly places and trims the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import NoteError
from .notes import check_note_text, is_live, summarize
from .protocols import MemoryBackend
from .vault import AgentFolder

MAX_TERMS = 24  # a pasted page as the work item must not become a query of a thousand words
_WORD = re.compile(r"\w+")
# Words that say nothing about which note is meant (English; a question's frame).
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves please tell know
""".split())


@dataclass(frozen=True)
class Relevant:
    """One note chosen for the layer: its rank among the eligible matches (1 is best),
    the backend's score and the text that is sent."""

    file: str
    rank: int
    score: float
    text: str


def query_terms(work_item: str) -> list[str]:
    """The search words of a work item: its casefolded words (punctuation, quotes and the
    operators of any search syntax are separators), without stop words and one-letter
    words, each once, in order of first appearance, at most MAX_TERMS."""
    terms: dict[str, None] = {}
    for word in _WORD.findall(work_item.casefold()):
        if word not in STOP_WORDS and (len(word) > 1 or not word.isascii()) and word.strip("_"):
            terms.setdefault(word, None)
            if len(terms) >= MAX_TERMS:
                break
    return list(terms)


def relevant_notes(folder: AgentFolder, memory: MemoryBackend, notes: dict[str, dict[str, Any]],
                   work_item: str, today: str, count: int, shown: set[str]) -> list[Relevant]:
    """Up to ``count`` live notes best matching ``work_item``, best first. ``notes`` is the
    catalog (empty when the backend chose the notes itself: then each hit's own text says
    whether it is live); ``shown`` are notes already in the prompt (pinned, broken)."""
    terms = query_terms(work_item)
    if count <= 0 or not terms:
        return []
    # Archived, superseded, expired and pinned notes match too: ask for a few more than
    # needed, and again for more while they crowd out the rest.
    limit = count + len(shown) + 2
    while True:
        hits = memory.search(folder, " ".join(terms), limit=limit, match="any")
        chosen: list[Relevant] = []
        for hit in hits:
            if hit.file in shown:
                continue
            try:
                text = memory.get(folder, hit.file)
            except NoteError:
                continue
            summary = notes.get(hit.file) if notes else _summary(folder, hit.file, text)
            if text is None or summary is None or summary["pinned"] or not is_live(summary, today):
                continue
            chosen.append(Relevant(hit.file, len(chosen) + 1, hit.score, text))
            if len(chosen) == count:
                return chosen
        if len(hits) < limit or limit >= 64 * (count + len(shown) + 2):
            return chosen
        limit *= 4


def _summary(folder: AgentFolder, file: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        meta, _ = check_note_text(text, folder.memory / file)
        return summarize(meta, file)
    except NoteError:
        return None


# ---- wiki pages -----------------------------------------------------------------------

_WIKI: dict[Any, tuple[dict[str, tuple[tuple[int, int], dict[str, Any], str]], Any]] = {}


def relevant_pages(folder: AgentFolder, work_item: str, count: int) -> tuple[list[Relevant], list[dict[str, str]]]:
    """Up to ``count`` wiki pages (``wiki/*.md`` but INDEX.md) best matching ``work_item``,
    best first, by BM25 over their words (the files backend's word index, whatever the
    memory backend: wiki pages are always files in the agent folder), and the pages left
    out because they cannot be read as sent (a link out of the folder, not UTF-8), each
    ``{source, reason}``. A page is read again only when its size or mtime changed."""
    from .backends.files import WordIndex
    from .errors import ConfigError
    from .fileio import read_text_cached
    from .vault import readable_inside

    terms = query_terms(work_item)
    wiki = folder.path / "wiki"
    if count <= 0 or not terms or not wiki.is_dir():
        return [], []
    known, index = _WIKI.get(wiki, ({}, None))
    if index is None:
        index = WordIndex()
    pages: dict[str, tuple[tuple[int, int], dict[str, Any], str]] = {}
    skipped: list[dict[str, str]] = []
    for path in sorted(wiki.glob("*.md")):
        if path.name == "INDEX.md":
            continue
        source = f"wiki/{path.name}"
        try:
            real = readable_inside(folder, path)
            if real is None:
                continue
            stat = real.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            old = known.get(path.name)
            if old is not None and old[0] == signature:
                pages[path.name] = old
                continue
            text = read_text_cached(real)
        except UnicodeDecodeError as exc:
            skipped.append({"source": source, "reason": f"not valid UTF-8 (byte {exc.start})"})
            continue
        except (ConfigError, OSError) as exc:
            skipped.append({"source": source, "reason": str(getattr(exc, "message", exc))})
            continue
        pages[path.name] = (signature, {"name": path.stem.replace("-", " "), "description": ""}, text)
    index.update({name: entry[1] for name, entry in pages.items()}, lambda name: pages[name][2])
    _WIKI[wiki] = (pages, index)
    chosen = [Relevant(f"wiki/{name}", rank, score, pages[name][2])
              for rank, (name, score) in enumerate(index.best(terms, count), 1)]
    return chosen, skipped


def merged(notes: list[Relevant], pages: list[Relevant], count: int) -> list[Relevant]:
    """Notes and wiki pages in one list of at most ``count``, best first. Their scores
    come from different rankers (the memory backend's, BM25 over the wiki), so each is
    taken relative to the best of its own list; a tie goes to the note. Ranks are given
    again, 1 to n; each keeps its own score."""
    def relative(found: list[Relevant]) -> list[tuple[float, int, Relevant]]:
        top = max((r.score for r in found), default=0.0) or 1.0
        return [(r.score / top, i, r) for i, r in enumerate(found)]

    both = sorted([(-s, 0, i, r) for s, i, r in relative(notes)] + [(-s, 1, i, r) for s, i, r in relative(pages)],
                  key=lambda item: item[:3])
    return [Relevant(r.file, rank, r.score, r.text) for rank, (*_, r) in enumerate(both[:count], 1)]
