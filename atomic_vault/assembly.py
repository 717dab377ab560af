"""Prompt assembly: the agent's files in the canonical order, within the token budget.

The order (spec/04): IDENTITY, SOUL, USER, each project's goal, goal.md, tools.md, memory
INDEX, each project's INDEX, wiki INDEX, pinned notes, each project's pinned notes, the notes
most relevant to the work item, the most recent notes, the last journal days; the work item
is the user message. The manifest records every file that went in with its sha256 and token
estimate, and every cut made to fit the budget.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import catalog, relevance
from .config import ModelConfig
from .errors import BudgetError, ConfigError, NoteError
from .models import estimate_tokens
from .notes import NEWER_FIX, every_problem, is_live
from .fileio import read_text_cached
from .protocols import JournalBackend, MemoryBackend
from .vault import PERSONA_FILES, AgentFolder, readable_inside

TRUNCATION_MARK = "[… {count} more lines cut to fit the token budget]"
# Groups of layers that change at the same pace; providers that cache prompts may cache
# everything up to the end of each group.
_GROUPS = {"identity": 0, "soul": 0, "user": 0, "project goal": 1, "goal": 1, "tools": 1,
           "memory index": 2, "project index": 2, "wiki index": 2, "pinned note": 3,
           "project pinned note": 3, "relevant note": 4, "recent note": 3, "journal": 4}


@dataclass
class Layer:
    layer: str
    source: str
    text: str
    sha256: str
    tokens: int = 0
    truncated: bool = False
    rank: int | None = None  # relevant notes: rank and score of the search (spec/04)
    score: float | None = None

    def __post_init__(self) -> None:
        self.tokens = estimate_tokens(self.text)


@dataclass
class Prompt:
    """The assembled request: system layers in order, the work item, and the manifest."""

    layers: list[Layer]
    work_item: str
    budget: int
    cuts: list[dict[str, Any]] = field(default_factory=list)
    counted: int | None = None  # the provider's own count of the input tokens, when it gave one
    skipped: list[dict[str, str]] = field(default_factory=list)  # broken notes left out, with why
    share: float | None = None  # the relevant notes' share of the budget, when there are any
    turns: list[Any] = field(default_factory=list)  # a conversation's earlier turns, oldest first
    conversation: dict[str, Any] | None = None  # id, new, skipped and dropped before assembly
    turns_dropped: list[dict[str, Any]] = field(default_factory=list)  # by the budget

    @property
    def conversation_id(self) -> str | None:
        return self.conversation["id"] if self.conversation else None

    @property
    def system(self) -> list[dict[str, Any]]:
        last_of_group: dict[int, int] = {}
        chosen_by_work_item = False
        for i, layer in enumerate(self.layers):
            # Relevant notes change with every work item: no cached prefix ends after one.
            chosen_by_work_item = chosen_by_work_item or layer.layer == "relevant note"
            last_of_group[4 if chosen_by_work_item else _GROUPS[layer.layer]] = i
        marks = {i for group, i in last_of_group.items() if group < 4}
        return [{"layer": layer.layer, "source": layer.source, "text": layer.text,
                 "cache_breakpoint": i in marks} for i, layer in enumerate(self.layers)]

    @property
    def messages(self) -> list[dict[str, str]]:
        """The earlier turns of the conversation, if any, then the work item."""
        return [*(m for turn in self.turns for m in turn.messages()), {"role": "user", "content": self.work_item}]

    @property
    def tokens(self) -> int:
        return (sum(layer.tokens for layer in self.layers) + sum(turn.tokens for turn in self.turns)
                + estimate_tokens(self.work_item))

    @property
    def manifest(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "tokens": self.tokens,
            "files": [{"source": layer.source, "layer": layer.layer, "sha256": layer.sha256,
                       "tokens": layer.tokens, **({"truncated": True} if layer.truncated else {}),
                       **({"rank": layer.rank, "score": layer.score} if layer.rank is not None else {})}
                      for layer in self.layers],
            "work_item": {"sha256": _sha(self.work_item.encode("utf-8")),
                          "tokens": estimate_tokens(self.work_item)},
            "cuts": self.cuts,
            "cache_breakpoints": [block["source"] for block in self.system if block["cache_breakpoint"]],
            **({"tokens_counted": self.counted} if self.counted is not None else {}),
            **({"skipped": self.skipped} if self.skipped else {}),
            **({"conversation": {**self.conversation, "turns": [turn.entry() for turn in self.turns],
                                 "dropped": [*self.conversation["dropped"], *self.turns_dropped]}}
               if self.conversation else {}),
            **({"relevant_share": self.share} if self.share is not None else {}),
        }


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


_LAYERS: dict[str, tuple[str, str, str]] = {}


def _layer(source: str, text: str | None, layer: str) -> Layer | None:
    """``text`` as a prompt layer under the heading ``## source``. The heading copy and the
    hash are reused while the backend hands out the very same string (it does while the
    file is unchanged; INDEX.md alone is megabytes at 100,000 notes)."""
    if text is None:
        return None
    hit = _LAYERS.get(source)
    if hit is None or hit[0] is not text:
        hit = (text, f"## {source}\n\n{text.strip()}", _sha(text.encode("utf-8")))
        if len(_LAYERS) > 256:
            _LAYERS.clear()
        _LAYERS[source] = hit
    return Layer(layer, source, hit[1], hit[2])


def _file_text(folder: AgentFolder, path: Path) -> str | None:
    """Persona, goal, tools and wiki files are always plain files in the agent folder:
    anything else there is an error, not a layer silently left out (tools.md, a config
    file, may link to a shared one, as spec/06 allows)."""
    real = readable_inside(folder, path, shared=path == folder.tools)
    if real is None:
        return None
    try:
        return read_text_cached(real)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                          fix="re-save the file as UTF-8") from None


_SELECTION: dict[tuple[int, str, int], tuple[dict, tuple[list[str], list[str]]]] = {}


def select_notes(notes: dict[str, dict[str, Any]], today: str, count: int) -> tuple[list[str], list[str]]:
    """(pinned file names, the ``count`` most recently seen others, oldest first so the
    newest sits nearest the work item). Memoised: the catalog hands out the same dict
    object while no note has changed."""
    key = (id(notes), today, count)
    hit = _SELECTION.get(key)
    if hit is not None and hit[0] is notes:
        return hit[1][:2]
    newest = pinned = None
    change = catalog.delta(notes)
    last = next(iter(_SELECTION.items()), None)
    if change is not None and last is not None and last[1][0] is change[0] and last[0][1:] == key[1:]:
        # The catalog changed by a few notes since the last selection: unless one of the
        # chosen notes changed, the new choice is among the old one and the changed notes.
        parent, touched = change
        old_pinned, _, old_newest = last[1][1]
        if not any(file in touched for _, file in old_newest):
            fresh = [notes[f] for f in touched if f in notes and is_live(notes[f], today)]
            pinned = sorted({*(f for f in old_pinned if f not in touched),
                             *(s["file"] for s in fresh if s["pinned"])})
            newest = heapq.nlargest(count, [*old_newest, *((s["last_seen"] or "", s["file"])
                                                           for s in fresh if not s["pinned"])])
    if newest is None:
        live = [s for s in notes.values() if is_live(s, today)]
        pinned = sorted(s["file"] for s in live if s["pinned"])
        newest = heapq.nlargest(count, ((s["last_seen"] or "", s["file"]) for s in live if not s["pinned"]))
    selection = (pinned, [name for _, name in reversed(newest)], newest)
    _SELECTION.clear()  # one entry per process is enough: the current catalog
    _SELECTION[key] = (notes, selection)
    return selection[:2]


def assemble(folder: AgentFolder, config: ModelConfig, notes: dict[str, dict[str, Any]],
             work_item: str, today: str, memory: MemoryBackend | None = None,
             journal: JournalBackend | None = None,
             broken: dict[str, NoteError] | None = None,
             chosen: tuple[list[str], list[str]] | None = None,
             projects: list[Any] = (), history: Any = None) -> Prompt:
    """The prompt for one run; notes and journal come from the given backends (files
    when None). ``broken`` notes (the scan's errors) are left out and listed as skipped
    in the manifest, so that one bad hand edit does not stop the agent. ``projects``
    (projects.Project, the agent's) add their layers after the agent's own of each kind.
    ``history`` (conversations.History): the earlier turns, messages before the work item."""
    if memory is None or journal is None:
        from .backends.files import FileJournal, FileMemory
        memory, journal = memory or FileMemory(), journal or FileJournal()
    layers: list[Layer] = []

    def add(found: Layer | None) -> None:
        if found is not None:
            layers.append(found)

    def add_file(path: Path, layer: str) -> None:
        add(_layer(folder.relative(path), _file_text(folder, path), layer))

    shared = [_Shared(project, folder, memory, today) for project in projects]
    for name in PERSONA_FILES:
        add_file(folder.persona / name, name.removesuffix(".md").lower())
    for each in shared:
        add(each.goal)
    add_file(folder.goal, "goal")
    add_file(folder.tools, "tools")
    add(_layer("memory/INDEX.md", memory.get_index(folder), "memory index"))
    for each in shared:
        add(each.index)
    add_file(folder.wiki_index, "wiki index")
    pinned, recent = chosen or select_notes(notes, today, config.recent_notes)
    for name in pinned:
        add(_layer(f"memory/{name}", memory.get(folder, name), "pinned note"))
    for each in shared:
        layers.extend(each.pinned)
    found = relevance.relevant_notes(folder, memory, notes, work_item, today,
                                     config.relevant.count, {*pinned, *(broken or {})})
    pages, unread = relevance.relevant_pages(folder, work_item, config.relevant.count)
    found = relevance.merged([replace(note, file=f"memory/{note.file}") for note in found], pages,
                             config.relevant.count)
    for note in found:
        layer = _layer(note.file, note.text, "relevant note")
        if layer is not None:
            layer.rank, layer.score = note.rank, note.score
            layers.append(layer)
    shown = {layer.source for layer in layers}
    for name in recent:
        if f"memory/{name}" not in shown:
            add(_layer(f"memory/{name}", memory.get(folder, name), "recent note"))
    for source, text in journal.recent(folder, config.journal_days):
        add(_layer(source, text, "journal"))
    prompt = Prompt(layers, work_item, config.max_input_tokens, skipped=skipped(broken or {}),
                    cuts=[cut for each in shared for cut in each.cuts],
                    share=config.relevant.share if found else None)
    prompt.skipped += [entry for each in shared for entry in each.skipped] + unread
    if history is not None:
        prompt.turns = list(history.turns)
        prompt.conversation = {"id": history.id, "new": history.new, "skipped": list(history.skipped),
                               "dropped": list(history.dropped)}
    _fit(prompt, folder)
    return prompt


class _Shared:
    """One project's layers for a member's prompt: project.md, its INDEX, its pinned
    notes (a note the agent has under the same file name is left out: the agent's own
    files win), cut to the project's ``budget`` when it sets one, each cut recorded."""

    def __init__(self, project: Any, agent: AgentFolder, memory: MemoryBackend, today: str):
        from .backends.files import FileMemory

        shared, where = FileMemory(), project.folder
        self.cuts: list[dict[str, Any]] = []
        self.goal = _layer(project.source("project.md"), _file_text(where, project.file), "project goal")
        self.index = _layer(project.source("memory/INDEX.md"), shared.get_index(where), "project index")
        notes, broken = shared.scan(where)
        self.skipped = [{**entry, "source": project.source(entry["source"])} for entry in skipped(broken)]
        self.pinned: list[Layer] = []
        for file in sorted(s["file"] for s in notes.values() if s["pinned"] and is_live(s, today)):
            layer = _layer(project.source(f"memory/{file}"), shared.get(where, file), "project pinned note")
            if layer is None:
                continue
            if memory.get(agent, file) is not None:
                self.cuts.append({"source": layer.source, "action": f"shadowed by memory/{file}",
                                  "tokens": layer.tokens})
                continue
            self.pinned.append(layer)
        if project.budget is not None:
            self._fit(project.budget)

    def _fit(self, budget: int) -> None:
        def total() -> int:
            return sum(x.tokens for x in (self.goal, self.index, *self.pinned) if x is not None)
        while self.pinned and total() > budget:
            layer = self.pinned.pop()
            self.cuts.append({"source": layer.source, "action": "dropped (project budget)", "tokens": layer.tokens})
        for layer in (self.index, self.goal):
            if layer is not None and total() > budget:
                _shorten(layer, max(0, layer.tokens - (total() - budget)), self.cuts)


def skipped(broken: dict[str, NoteError]) -> list[dict[str, str]]:
    """Manifest entries for broken notes: the source and every problem, joined."""
    def why(error: NoteError) -> str:
        return f"{error.field}: {error.message}" if error.field else error.message
    out = []
    for name in sorted(broken):
        problems = every_problem(broken[name])
        newer = any(e.fix == NEWER_FIX for e in problems)  # the runtime is behind, not the note
        out.append({"source": f"memory/{name}", "reason": "; ".join(why(e) for e in problems),
                    **({"fix": NEWER_FIX} if newer else {})})
    return out


def index_share(budget: int) -> int:
    """The tokens an index (memory or wiki) keeps when the prompt is over its budget: a
    quarter of it. An INDEX larger than this is cut on every run that is over (lint warns)."""
    return budget // 4


def _fit(prompt: Prompt, folder: AgentFolder) -> None:
    """Cut the least important material until the prompt fits its budget (spec/04)."""
    budget = prompt.budget

    def over() -> int:
        return prompt.tokens - budget

    def of(kind: str) -> list[Layer]:
        return [layer for layer in prompt.layers if layer.layer == kind]

    def drop(layer: Layer) -> None:
        prompt.layers.remove(layer)
        prompt.cuts.append({"source": layer.source, "action": "dropped", "tokens": layer.tokens})

    def shorten(layer: Layer, limit: int) -> None:
        _shorten(layer, limit, prompt.cuts)

    if prompt.share is not None:
        _keep_share(prompt, of("relevant note"))
    if over() <= 0:
        return
    for layer in of("memory index"):
        _drop_archive(layer, prompt)
    for kind in ("wiki index", "project index", "memory index"):
        for layer in of(kind):
            if over() > 0:
                shorten(layer, max(index_share(budget), layer.tokens - over()))
    # A project's layers go before the agent's own of the same kind: the agent's files win.
    steps: list[tuple[str, bool]] = [("journal", False), ("turn", False), ("recent note", False),
                                     ("relevant note", True), ("project pinned note", True),
                                     ("wiki index", False), ("project index", False),
                                     ("memory index", True), ("pinned note", True), ("tools", False),
                                     ("project goal", False), ("goal", False)]
    for kind, last_first in steps:
        if kind == "turn":  # a conversation's earlier turns, oldest first
            while prompt.turns and over() > 0:
                turn = prompt.turns.pop(0)
                prompt.cuts.append({"source": f"turn {turn.run_id}", "action": "dropped", "tokens": turn.tokens})
                prompt.turns_dropped.append({"run_id": turn.run_id, "seq": turn.seq, "tokens": turn.tokens,
                                             "reason": "budget"})
            continue
        candidates = of(kind)
        if last_first:
            candidates.reverse()
        for layer in candidates:
            if over() <= 0:
                return
            if kind == "memory index" and layer.tokens - over() > 64:
                shorten(layer, layer.tokens - over())
            else:
                drop(layer)
    if over() > 0:
        raise BudgetError(
            f"the persona files and the work item alone need {prompt.tokens} tokens; "
            f"the budget is {budget}", path=folder.model, field="max_input_tokens",
            fix="raise max_input_tokens in model.md, or shorten the persona or the work item")


def _shorten(layer: Layer, limit: int, cuts: list[dict[str, Any]]) -> None:
    """Keep whole lines from the top that fit ``limit`` tokens, then a marker line."""
    if layer.tokens <= limit:
        return
    before = layer.tokens
    room = max(limit - 16, 0) * 4  # characters, by the same estimate
    cut = layer.text.rfind("\n", 0, room + 1)
    kept = layer.text[:cut] if cut > 0 else ""
    dropped = layer.text.count("\n", len(kept)) + (0 if kept else 1)
    layer.text = kept + ("\n" if kept else "") + TRUNCATION_MARK.format(count=dropped)
    layer.tokens = estimate_tokens(layer.text)
    layer.truncated = True
    cuts.append({"source": layer.source, "action": "truncated", "tokens": before - layer.tokens})


def _keep_share(prompt: Prompt, relevant: list[Layer]) -> None:
    """Relevant notes, best first, as long as they fit their share of the budget together;
    from the first that does not fit on, each is dropped (so a smaller budget, as in a
    replay, keeps a prefix of what a larger one kept)."""
    room = int((prompt.share or 0) * prompt.budget)
    for layer in relevant:
        if layer.tokens <= room:
            room -= layer.tokens
            continue
        room = -1
        prompt.layers.remove(layer)
        prompt.cuts.append({"source": layer.source, "action": "over relevant share", "tokens": layer.tokens})


def _drop_archive(layer: Layer, prompt: Prompt) -> None:
    text = layer.text
    start = text.find("\n## Archive\n")
    if start < 0:
        return
    stop = text.find("\n## ", start + 1)
    stop = len(text) if stop < 0 else stop
    if not text[start + len("\n## Archive\n"):stop].strip():
        return
    before = layer.tokens
    layer.text = (text[:start] + text[stop:]).rstrip("\n")
    layer.tokens = estimate_tokens(layer.text)
    layer.truncated = True
    prompt.cuts.append({"source": layer.source, "action": "archive section dropped",
                        "tokens": before - layer.tokens})
