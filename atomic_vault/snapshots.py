"""Snapshots: the exact texts of a run (layers as sent, work item, answer, errors, raw
captures), stored once each under the SHA-256 of their UTF-8 bytes, beside the log.

The record names the hashes (``snapshots`` and each manifest file's ``snapshot``); the
texts live in the log backend (``put_snapshots`` / ``get_snapshot``, spec/09), so they
travel with the log. A stored text that no longer hashes to its name was altered: that
is tampering, never trusted. A missing one is "pruned" only when a prune record says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

SHA = re.compile(r"[0-9a-f]{64}\Z")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_LAYER_HASHES: dict[str, tuple[str, tuple, str, str]] = {}


def _layer(taken: "Taken", redact: Any, block: dict[str, Any]) -> str:
    """A layer's snapshot hash. Redacting and hashing a large unchanged layer (INDEX.md at
    10,000 notes) every run would cost more than the rest of the snapshot: while assembly
    hands out the very same string and the known keys are the same, the result is reused."""
    text, source = block["text"], block["source"]
    keys = tuple(getattr(redact, "secrets", ()) or ())
    hit = _LAYER_HASHES.get(source)
    if hit is not None and hit[0] is text and hit[1] == keys:
        taken.texts.setdefault(hit[2], hit[3])
        return hit[2]
    clean = redact(text)
    sha = taken.add(clean)
    if len(_LAYER_HASHES) > 512:
        _LAYER_HASHES.clear()
    _LAYER_HASHES[source] = (text, keys, sha, clean)
    return sha


@dataclass
class Taken:
    """A run's snapshots: the texts to store (hash -> text) and what the record names."""

    texts: dict[str, str] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)  # one hash per manifest file, in order
    refs: dict[str, Any] = field(default_factory=dict)  # the record's ``snapshots``

    def add(self, text: str) -> str:
        sha = digest(text)
        self.texts.setdefault(sha, text)
        return sha


def take(redact: Any, system: list[dict[str, Any]], work_item: str, answer: str | None,
         errors: list[str], captures: list[str],
         tool_calls: Iterable[tuple[int, str, str, str]] = ()) -> Taken:
    """Every text of one run, redacted (keys never reach the store) before hashing. The
    system is the layers in manifest order (each file entry's ``snapshot``); each tool call
    (step, call id, arguments, result) is stored whole, its step record holding a shortened
    copy."""
    taken = Taken()
    taken.layers = [_layer(taken, redact, block) for block in system]
    taken.refs = {
        "work_item": taken.add(redact(work_item)),
        "answer": taken.add(redact(answer)) if answer is not None else None,
        "errors": [taken.add(redact(text)) for text in errors],
        "captures": [taken.add(redact(text)) for text in captures],
    }
    calls = [{"step": step, "call": call, "args": taken.add(redact(arguments)),
              "result": taken.add(redact(result))} for step, call, arguments, result in tool_calls]
    if calls:
        taken.refs["tools"] = calls
    return taken


def named(record: dict[str, Any]) -> list[str]:
    """Every snapshot hash a record names, in a stable order, each once."""
    refs = record.get("snapshots")
    if not isinstance(refs, dict):
        return list(dict.fromkeys(sha for sha in note_texts(record) if isinstance(sha, str) and SHA.match(sha)))
    found: list[str] = []
    for entry in (record.get("manifest") or {}).get("files") or []:
        if isinstance(entry, dict):
            found.append(entry.get("snapshot"))
    for turn in ((record.get("manifest") or {}).get("conversation") or {}).get("turns") or []:
        if isinstance(turn, dict):  # a conversation's earlier turns, as this run sent them
            found.extend((turn.get("work_item"), turn.get("answer")))
    for key in ("work_item", "answer"):
        found.append(refs.get(key))
    for key in ("errors", "captures"):
        found.extend(refs.get(key) or [])
    for call in refs.get("tools") or []:
        if isinstance(call, dict):
            found.extend((call.get("args"), call.get("result")))
    found.extend(note_texts(record))
    seen: dict[str, None] = {}
    for sha in found:
        if isinstance(sha, str) and SHA.match(sha):
            seen.setdefault(sha)
    return list(seen)


def note_texts(record: dict[str, Any]) -> list[Any]:
    """The before and after hashes of the notes a record changed (spec/07: ``changes`` of
    a note edit, ``changes`` of each capture outcome, ``hand_edits``)."""
    lists = [record.get("changes"), record.get("hand_edits")]
    lists += [outcome.get("changes") for outcome in record.get("captures") or [] if isinstance(outcome, dict)]
    return [entry.get(key) for items in lists if isinstance(items, list) for entry in items
            if isinstance(entry, dict) for key in ("before", "after")]


def pruned_by(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """hash -> seq of the prune record that removed it."""
    gone: dict[str, int] = {}
    for record in records:
        if record.get("kind") == "prune":
            for sha in record.get("removed") or []:
                if isinstance(sha, str):
                    gone.setdefault(sha, record.get("seq"))
    return gone


@dataclass
class Loaded:
    """What ``load`` found for each hash: the text, or why there is none."""

    texts: dict[str, str] = field(default_factory=dict)
    tampered: list[str] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)  # hash -> seq of the prune record
    missing: list[str] = field(default_factory=list)

    def text(self, sha: str | None) -> str | None:
        return self.texts.get(sha) if sha else None

    def state(self, sha: str | None) -> str:
        if not sha:
            return "none"
        if sha in self.texts:
            return "ok"
        if sha in self.tampered:
            return "tampered"
        return "pruned" if sha in self.pruned else "missing"


def load(log: Any, folder: Any, hashes: Iterable[str], prunes: dict[str, int] | None = None) -> Loaded:
    """Read and re-hash each snapshot: a text is returned only when it matches its hash."""
    out = Loaded()
    for sha in hashes:
        text = log.get_snapshot(folder, sha)
        if text is None:
            if prunes is not None and sha in prunes:
                out.pruned[sha] = prunes[sha]
            else:
                out.missing.append(sha)
        elif digest(text) != sha:
            out.tampered.append(sha)
        else:
            out.texts[sha] = text
    return out


def prune_records(log: Any, folder: Any) -> dict[str, int]:
    """The hashes every prune record of the log removed (prune records are few)."""
    from .protocols import LogQuery

    return pruned_by(log.query(folder, LogQuery(kind="prune")))


def check(log: Any, folder: Any, records: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """(record, problem) for each snapshot a record names that is altered (tampering) or
    absent without a prune record saying it was removed (missing)."""
    records = list(records)
    prunes = pruned_by(records)
    states: dict[str, str] = {}  # a text many records name (a persona file) is read once
    for record in records:
        names = named(record)
        unread = [sha for sha in names if sha not in states]
        if unread:
            found = load(log, folder, unread, prunes)
            states.update({sha: found.state(sha) for sha in unread})
        for sha in names:
            if states[sha] == "tampered":
                yield record, f"tampered: snapshot {sha} does not match its hash"
            elif states[sha] == "missing":
                yield record, f"missing: snapshot {sha} is gone and no prune record removed it"


def verify_snapshots(log: Any, folder: Any, result: Any) -> None:
    """Fail ``result`` (a ``runlog.Verification`` of a chain that verified) at the first
    record naming a tampered or unexplained missing snapshot."""
    for record, problem in check(log, folder, log.records(folder)):
        result.fail(f"snapshots of run {record.get('run_id')}", 1, record.get("seq"), problem)
        return
