"""Consolidation: the model proposes merging duplicates, retiring stale notes and distilling
old journal days into notes; a person approves the proposal before anything changes.

``propose`` gathers the candidates (lint's duplicate finder, stale notes, old journal
days), asks the model under the cost guardrails like any call, validates its answer
strictly and writes an approval file (approvals.py, ``kind: consolidation``) holding the
proposal, the sha256 of every note it touches and the full diff. ``take`` applies an
approved proposal, under the agent's lock, as supersessions and archivings (nothing is
deleted), refusing it when a note changed since the proposal was made. Its chained
``kind: approval`` record is the commit point. spec/17 says it all in plain words.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from . import (approvals, captures, clock, guardrails, index, journal, keys, lint, pricing, retries,
               writeback)
from .config import ModelConfig, load_model_config, load_vault_prices
from .errors import AtomicVaultError, CaptureError, ConfigError, HeadBehind, ModelError
from .models import Model, ModelRequest, estimate_tokens, load_model, token_ceiling
from .notes import (SCHEMA_VERSION, is_current, note_filename, parse_note_text, render_note, stamp_fields,
                    stamped, summarize, update_frontmatter, written_by_runtime)
from .protocols import NoteChanged
from .vault import AgentFolder

KIND = "consolidation"
CANDIDATES_TAG = "atomic_consolidation_candidates"
PROPOSAL_TAG = "atomic_consolidation"
MAX_GROUPS, MAX_STALE, MAX_DAYS = 20, 30, 5  # candidates offered in one proposal
JOURNAL_SCAN = 400  # journal days looked at for old ones (newest first)
_BLOCK = re.compile(r"^```" + PROPOSAL_TAG + r"[ \t]*\r?\n(.*?)\r?\n```[ \t]*\r?$", re.MULTILINE | re.DOTALL)
_OPENING = re.compile(r"^```" + PROPOSAL_TAG + r"\b", re.MULTILINE)
NOTE_KEYS = ("type", "name", "description", "confidence", "body")

INSTRUCTIONS = f"""You consolidate the memory notes of an agent. The user message holds a
fenced block tagged {CANDIDATES_TAG}: groups of notes that look like duplicates, notes not
seen for a long time (stale), and old journal days. Propose, in exactly one fenced block
tagged {PROPOSAL_TAG}, one strict JSON object with three lists (each may be empty):

- "merges": [{{"files": [two or more files of one duplicates group], "type", "name",
  "description", "confidence" (high, medium or low), "body": the merged note, "reason"}}]
- "retire": [{{"file": a stale note that no longer holds, "reason"}}]
- "distil": [{{"from": [journal sources], "type", "name", "description", "confidence",
  "body": a durable fact the days hold that no note holds, "reason"}}]

Types: user, feedback, project, decision, reference. Name only files and journal sources
listed in the candidates. Leave out anything you are unsure of: a person reviews the
proposal, and nothing changes unless they approve it."""


@dataclass
class Proposed:
    """What ``propose`` did: the approval id (None when nothing was proposed), the run's
    log record (None when the model was not asked), and the proposal."""

    approval: str | None
    record: dict[str, Any] | None
    proposal: dict[str, Any] | None = None
    status: str = "ok"
    message: str = ""
    warnings: list[str] = field(default_factory=list)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- candidates ------------------------------------------------------------------------

def candidates(folder: AgentFolder, memory: Any, journal_backend: Any, config: ModelConfig,
               today: date) -> tuple[dict[str, Any], dict[str, str]]:
    """(what the model is shown, sha256 of every note shown). Duplicate groups come from
    lint; stale notes are lint's; old journal days are days older than ``stale_days`` that
    no note names as a source yet, oldest first."""
    notes, _ = lint.read_notes(folder, memory)
    texts: dict[str, str] = {}

    def shown(file: str) -> dict[str, Any]:
        note = notes[file]
        texts[file] = note.text
        return {"file": file, **{k: note.meta.get(k) for k in ("type", "name", "description", "confidence")},
                "last_seen": note.summary["last_seen"], "body": note.body}

    groups = []
    for group in lint.duplicate_groups(notes)[:MAX_GROUPS]:
        members = sorted(group.files, key=lambda f: (notes[f].summary["last_seen"] or "", f), reverse=True)
        groups.append({"why": group.why, "exact": group.exact, "notes": [shown(f) for f in members]})
    in_groups = {n["file"] for g in groups for n in g["notes"]}
    stale = [shown(f) for f in lint.stale_files(notes, today, config.stale_days) if f not in in_groups][:MAX_STALE]
    cited = {source for note in notes.values() for source in (note.meta.get("sources") or [])
             if isinstance(source, str)}
    cutoff = (today - timedelta(days=config.stale_days)).isoformat()
    days = [{"source": source, "text": text} for source, text in journal_backend.recent(folder, JOURNAL_SCAN)
            if Path(source).stem < cutoff and source not in cited][:MAX_DAYS]
    shown_data = {"today": today.isoformat(), "stale_days": config.stale_days,
                  "duplicates": groups, "stale": stale, "journal": days}
    while _tokens(shown_data) > config.max_input_tokens and _drop_one(shown_data):
        pass  # the prompt must fit the budget: the least important candidates go first
    kept = {n["file"] for g in shown_data["duplicates"] for n in g["notes"]} | {n["file"] for n in shown_data["stale"]}
    return shown_data, {f: _sha(t) for f, t in texts.items() if f in kept}


def _tokens(data: dict[str, Any]) -> int:
    return estimate_tokens(INSTRUCTIONS) + estimate_tokens(json.dumps(data, ensure_ascii=False, default=str))


def _drop_one(data: dict[str, Any]) -> bool:
    for key in ("journal", "stale", "duplicates"):
        if data[key]:
            data[key].pop()
            return True
    return False


def anything(data: dict[str, Any]) -> bool:
    return bool(data["duplicates"] or data["stale"] or data["journal"])


def work_item(data: dict[str, Any]) -> str:
    return ("Consolidate these memory candidates.\n\n"
            f"```{CANDIDATES_TAG}\n{json.dumps(data, ensure_ascii=False, indent=1, default=str)}\n```\n")


def request_for(data: dict[str, Any], config: ModelConfig, agent: str) -> ModelRequest:
    system = [{"layer": "consolidation", "source": "consolidate", "text": INSTRUCTIONS, "cache_breakpoint": True}]
    return ModelRequest(model="", system=system, messages=[{"role": "user", "content": work_item(data)}],
                        max_output_tokens=config.max_output_tokens, agent=agent)


# ---- the model's proposal, validated strictly --------------------------------------------

def _bad(message: str) -> ModelError:
    return ModelError(f"the model's consolidation proposal is invalid: {message}; nothing was proposed",
                      field="proposal", fix="run consolidate again, or with another --model (the answer is "
                                            "in the run's log record and snapshots)")


def _strict_json(raw: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _bad(f"key {key!r} is set twice")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise _bad(f"{name} is not JSON")
    try:
        return json.loads(raw, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _bad(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (RecursionError, ValueError) as exc:
        raise _bad(f"invalid JSON: {exc}") from None


def parse_proposal(text: str, shown: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The answer's one ``atomic_consolidation`` block as a checked proposal, or ModelError
    naming the first problem. Only candidates shown may be named; no file twice."""
    blocks = _BLOCK.findall(text)
    if len(blocks) != 1 or len(_OPENING.findall(text)) != 1:
        raise _bad(f"the answer holds {len(_OPENING.findall(text))} {PROPOSAL_TAG} blocks; exactly one "
                   "complete block is expected")
    data = _strict_json(blocks[0])
    if not isinstance(data, dict):
        raise _bad("the block must hold one JSON object")
    unknown = sorted(set(data) - {"merges", "retire", "distil"})
    if unknown:
        raise _bad(f"unknown key {unknown[0]!r}; allowed: merges, retire, distil")
    groups = [{n["file"] for n in g["notes"]} for g in shown["duplicates"]]
    stale = {n["file"] for n in shown["stale"]}
    days = {d["source"] for d in shown["journal"]}
    used: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {"merges": [], "retire": [], "distil": []}
    for key in out:
        items = data.get(key, [])
        if not isinstance(items, list):
            raise _bad(f"{key} must be a list")
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise _bad(f"{where} must be an object")
            allowed = {"merges": {"files", "reason", *NOTE_KEYS}, "retire": {"file", "reason"},
                       "distil": {"from", "reason", *NOTE_KEYS}}[key]
            extra = sorted(set(item) - allowed)
            if extra:
                raise _bad(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
            reason = item.get("reason", "")
            if not isinstance(reason, str) or len(reason) > 500 or "\n" in reason:
                raise _bad(f"{where}: reason must be one line of at most 500 characters")
            entry: dict[str, Any] = {"reason": reason.strip()}
            if key == "merges":
                files = item.get("files")
                if (not isinstance(files, list) or len(files) < 2 or not all(isinstance(f, str) for f in files)
                        or len(set(files)) != len(files)):
                    raise _bad(f"{where}: files must list two or more different note files")
                if not any(set(files) <= group for group in groups):
                    raise _bad(f"{where}: {', '.join(files)} are not all of one duplicates group shown")
                entry["files"] = files
            elif key == "retire":
                file = item.get("file")
                if not isinstance(file, str) or file not in stale:
                    raise _bad(f"{where}: file {str(file)[:80]!r} is not a stale note shown")
                entry["file"] = file
            else:
                sources = item.get("from")
                if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s in days
                                                                           for s in sources):
                    raise _bad(f"{where}: from must list journal sources shown")
                entry["from"] = sorted(set(sources))
            if key != "retire":
                entry["note"] = _note_fields(item, where, entry.get("from") or ["consolidation"])
            for file in entry.get("files", [entry.get("file")] if key == "retire" else []):
                if file in used:
                    raise _bad(f"{where}: {file} is named by two actions")
                used.add(file)
            out[key].append(entry)
    return out


def _note_fields(item: dict[str, Any], where: str, sources: list[str]) -> dict[str, Any]:
    """The note fields of a merge or distil, checked exactly as a capture's are."""
    missing = [k for k in NOTE_KEYS if k not in item]
    if missing:
        raise _bad(f"{where}: missing {missing[0]!r}")
    try:
        capture = captures.parse(json.dumps({**{k: item[k] for k in NOTE_KEYS}, "sources": sources}))
    except CaptureError as exc:
        raise _bad(f"{where}: {exc.message}") from None
    return {k: getattr(capture, k) for k in NOTE_KEYS}


# ---- the changes a proposal makes ----------------------------------------------------------

@dataclass
class Plan:
    """Every note text before and after (before None: a new note), the INDEX changes, and
    the proposal completed with file names and dates."""

    writes: list[tuple[str, str | None, str]]
    index_changes: dict[str, tuple[str, str] | None]


def _load(texts: dict[str, str | None], file: str, folder: AgentFolder) -> tuple[str, dict[str, Any], str]:
    text = texts.get(file)
    if text is None:
        raise NoteChanged(f"memory/{file} is gone", path=folder.memory / file,
                          fix="make a new proposal: atomic-vault consolidate " + folder.name)
    meta, body = parse_note_text(text, folder.memory / file)
    return text, meta, body


def _free(file: str, taken: set[str], memory: Any, folder: AgentFolder) -> str:
    stem = file.removesuffix(".md")
    for n in range(1, 1000):
        name = file if n == 1 else f"{stem}_v{n}.md"
        if name not in taken and memory.get(folder, name) is None:
            taken.add(name)
            return name
    raise ConfigError(f"no free file name for {file}", path=folder.memory / file, fix="archive old versions")


def name_files(proposal: dict[str, Any], memory: Any, folder: AgentFolder) -> None:
    """Give each new note (a merge's result, a distilled note) its file name, once, when the
    proposal is made: the approved diff names it."""
    taken: set[str] = set()
    for entry in proposal["merges"] + proposal["distil"]:
        note = entry["note"]
        entry["into"] = _free(note_filename(note["type"], note["name"]), taken, memory, folder)


def _edited(text: str, updates: dict[str, Any], path: Path) -> str:
    """A frontmatter edit that keeps key order and body bytes, and keeps a runtime note
    marked as the runtime's (a person's stays a person's)."""
    after = update_frontmatter(text, updates, path)
    return stamped(after, path) if written_by_runtime(text) else after


def plan(folder: AgentFolder, proposal: dict[str, Any], texts: dict[str, str | None]) -> Plan:
    """The writes of a named proposal over these note texts. A merge links its notes as one
    chain of versions, so that every link has its answer: the new note supersedes the first,
    each note is superseded by the one before it and supersedes the next (a note that
    already supersedes another must come last)."""
    day = date.fromisoformat(proposal["day"])
    writes: list[tuple[str, str | None, str]] = []
    changes: dict[str, tuple[str, str] | None] = {}

    def retire(file: str, loaded: tuple[str, dict[str, Any], str], updates: dict[str, Any]) -> None:
        text, meta, _ = loaded
        writes.append((file, text, _edited(text, updates, folder.memory / file)))
        summary = summarize({**meta, **updates}, file)
        changes[file] = (index.ARCHIVE, index.entry_line(summary))

    def create(file: str, note: dict[str, Any], extra: dict[str, Any], captured: Any, sources: list[str]) -> None:
        fields: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "name": note["name"],
                                  "description": note["description"], "type": note["type"],
                                  "captured": captured, "last_seen": day, "sources": sources,
                                  "confidence": note["confidence"], **extra}
        writes.append((file, None, render_note(stamp_fields(fields, note["body"]), note["body"])))
        summary = summarize({**fields, "superseded_by": None}, file)
        changes[file] = (index.SECTIONS[note["type"]], index.entry_line(summary))

    for entry in proposal["merges"]:
        loaded = {f: _load(texts, f, folder) for f in entry["files"]}
        for f, (_, meta, _) in loaded.items():
            summary = summarize(meta, f)
            if not is_current(summary):
                raise NoteChanged(f"memory/{f} is no longer current (archived or superseded)", path=folder.memory / f,
                                  fix="make a new proposal: atomic-vault consolidate " + folder.name)
        chain = sorted(entry["files"], key=lambda f: bool(loaded[f][1].get("supersedes")))
        if sum(bool(loaded[f][1].get("supersedes")) for f in chain) > 1:
            raise ConfigError(f"{', '.join(chain)}: more than one already supersedes another note, so they "
                              "cannot be linked as one chain of versions", field="merges",
                              fix="merge them in two proposals, or clear an old supersedes: link")
        sources: list[str] = []
        for f in chain:
            sources += [s for s in loaded[f][1].get("sources") or [] if isinstance(s, str) and s not in sources]
        sources = sources[:captures.LIMITS["items"] - 1] + [f"consolidation {proposal['run']}"]
        extra: dict[str, Any] = {}
        if any(loaded[f][1].get("pinned") for f in chain):
            extra["pinned"] = True
        extra["supersedes"] = chain[0]
        tags = sorted({t for f in chain for t in loaded[f][1].get("tags") or [] if isinstance(t, str)})
        if tags:
            extra["tags"] = tags[:captures.LIMITS["items"]]
        captured = min((str(loaded[f][1].get("captured")) for f in chain), default=day.isoformat())
        create(entry["into"], entry["note"], extra, date.fromisoformat(captured[:10]), sources)
        for i, f in enumerate(chain):
            updates: dict[str, Any] = {"superseded_by": entry["into"] if i == 0 else chain[i - 1]}
            if i + 1 < len(chain):
                updates["supersedes"] = chain[i + 1]
            retire(f, loaded[f], updates)
    for entry in proposal["retire"]:
        retire(entry["file"], _load(texts, entry["file"], folder), {"archived": True})
    for entry in proposal["distil"]:
        create(entry["into"], entry["note"], {}, day, entry["from"])
    return Plan(writes, changes)


def diff(plan_: Plan, index_before: str, index_after: str) -> str:
    """The unified diff of every note and INDEX.md, as the approval file shows it."""
    parts = []
    for file, before, after in plan_.writes:
        parts += difflib.unified_diff((before or "").splitlines(keepends=True), after.splitlines(keepends=True),
                                      "/dev/null" if before is None else f"a/memory/{file}", f"b/memory/{file}")
    parts += difflib.unified_diff(index_before.splitlines(keepends=True), index_after.splitlines(keepends=True),
                                  "a/memory/INDEX.md", "b/memory/INDEX.md")
    return "".join(line if line.endswith("\n") else line + "\n" for line in parts)


# ---- proposing -------------------------------------------------------------------------------

def _fence(lock: Any, lease: Any) -> tuple[str, int] | None:
    return (lock.name, lease.token) if getattr(lease, "fenced", True) else None


def propose(folder: AgentFolder, memory: Any, log: Any, lock: Any, journal_backend: Any,
            model: str | Model | None = None, lock_timeout: float | None = 60.0) -> Proposed:
    """Ask the model for a proposal and write it as an approval file. The call is logged as
    a ``run`` record (trigger ``consolidate``) so its spend counts against the caps; a call
    the caps refuse is logged as skipped; an invalid answer is logged as an error and
    raises ModelError, and then no approval file is written."""
    config = load_model_config(folder.model)
    started = clock.now(config.zone)
    today = started.date()
    shown, shas = candidates(folder, memory, journal_backend, config, today)
    if not anything(shown):
        return Proposed(None, None, message="nothing to consolidate: no duplicates, stale notes or old "
                                            "journal days")
    chosen = load_model(model or config.model, config.options_for(model or config.model)) \
        if not (model is not None and not isinstance(model, str)) else model
    name = getattr(chosen, "name", "custom")
    request = request_for(shown, config, folder.name)
    prices = load_vault_prices(folder.root)
    price = pricing.price_for(name, prices, config.prices)
    run_id = f"{started:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}"
    redact, warnings = keys.Redactor(), []
    budget = None
    if guardrails.enabled(config):
        with lock.hold(folder, lock_timeout):
            budget = guardrails.reserve(folder, log, config, started, model=name, price=price,
                                        input_tokens=token_ceiling(request), critical=False)
        if budget.action == "skip":
            return _skipped(folder, log, lock, journal_backend, lock_timeout, run_id, started, name,
                            request, budget, redact)
        if budget.action in ("alert", "fallback") or budget.reasons:
            warnings += budget.reasons
    try:
        calls = [lambda: chosen]
        if budget is not None and budget.action == "fallback" and config.fallback:
            calls = [lambda: load_model(config.fallback, config.options_for(config.fallback))]
        done = retries.complete(calls, request, config.retries)
        response = done.response
        with lock.hold(folder, lock_timeout) as lease:
            used = response.model if response and response.model else getattr(done.model, "name", name)
            cost = pricing.run_cost(pricing.price_for(used, prices, config.prices), response) if response else 0.0
            if budget is not None:
                warnings += guardrails.settle(folder, log, config, budget, started, cost)
                budget.reservation = None
            proposal, error, approval_id = None, done.error, None
            if response is not None:
                try:
                    proposal = parse_proposal(response.text, shown)
                except ModelError as exc:
                    error = exc.message
            if proposal is not None and any(proposal.values()):
                proposal.update(run=run_id, day=today.isoformat())
                name_files(proposal, memory, folder)
                texts = {f: memory.get(folder, f) for f in shas}
                if any(_sha(texts[f] or "") != sha for f, sha in shas.items()):
                    error = "a note changed while the model was answering; nothing was proposed"
                else:
                    try:
                        changes = plan(folder, proposal, texts)
                    except AtomicVaultError as exc:
                        error = f"the proposal cannot be applied: {exc.message}"
                    else:
                        touched = {f for f, before, _ in changes.writes if before is not None}
                        proposal["notes_sha256"] = {f: shas[f] for f in sorted(touched)}
                        proposal["new_notes"] = sorted(f for f, before, _ in changes.writes if before is None)
                        index_before = memory.get_index(folder) or ""
                        text = diff(changes, index_before, index.upsert(index_before, changes.index_changes))
                        said = summary(proposal)
                        approvals.propose(
                            folder.path, f"{run_id}-{KIND}", agent=folder.name, kind=KIND, arguments=proposal,
                            reason=said, now=started, run=run_id,
                            expires_after=timedelta(hours=config.approval_hours),
                            title=f"Run {run_id} of agent **{folder.name}** proposes a {KIND}: {said}.",
                            explain=("Applying refuses a proposal whose notes changed since it was made (their "
                                     "sha256 is in notes_sha256 above); nothing is deleted.\n\n## Changes\n\n"
                                     + approvals.fenced_diff(text)))
                        approval_id = f"{run_id}-{KIND}"
            status = "error" if error else "ok"
            said = (f"consolidation proposal {approval_id}: {summary(proposal)}" if approval_id else
                    error or "the model proposed no change")
            record = {"kind": "run", "ts": started.isoformat(timespec="milliseconds"),
                      "finished": clock.now(started.tzinfo).isoformat(timespec="milliseconds"),
                      "run_id": run_id, "agent": folder.name, "trigger": "consolidate", "model": used,
                      "input_tokens": response.input_tokens if response else 0,
                      "output_tokens": response.output_tokens if response else 0,
                      "cache_read_tokens": response.cache_read_tokens if response else 0,
                      "cache_write_tokens": response.cache_write_tokens if response else 0,
                      "tokens_estimated": bool(response and response.tokens_estimated),
                      "cost_usd": cost, "status": status, "critical": False,
                      "summary": journal.shorten(said, 200), "captures": [],
                      "manifest": _manifest(request, config), "attempts": done.attempts,
                      "proposal": approval_id, "fallback_from": done.fallback_from,
                      **({"guardrail": budget.as_record()} if budget else {}),
                      "warnings": warnings, "error": error}
            try:
                record = log.append(folder, redact.all(record), fence=_fence(lock, lease))
            except HeadBehind as exc:
                record = exc.record
            except BaseException:
                if approval_id:  # the record is the commit point: no record, no proposal
                    approvals.path_of(folder.path, approval_id).unlink(missing_ok=True)
                raise
            _journal(journal_backend, folder, started, run_id, said, status, redact, warnings)
    finally:
        if budget is not None and budget.reservation is not None:
            with lock.hold(folder, lock_timeout):
                guardrails.release(folder, budget.reservation)
    if error:
        raise ModelError(f"{error} (logged as run {run_id}, seq {record.get('seq')})", field="proposal",
                         fix=done.fix or "run consolidate again, or with another --model")
    return Proposed(approval_id, record, proposal, message=said, warnings=warnings)


def _manifest(request: ModelRequest, config: ModelConfig) -> dict[str, Any]:
    work = request.messages[0]["content"]
    return {"budget": config.max_input_tokens, "tokens": estimate_tokens(request.system_text + work),
            "files": [], "work_item": {"sha256": _sha(work), "tokens": estimate_tokens(work)},
            "cuts": [], "cache_breakpoints": []}


def _journal(backend: Any, folder: AgentFolder, started: datetime, run_id: str, said: str, status: str,
             redact: Any, warnings: list[str]) -> None:
    try:
        backend.append(folder, started, redact(journal.section(
            started, trigger="consolidate", run_id=run_id, work_item="consolidate the memory notes",
            answer=said, outcomes=[], status=status)))
    except (AtomicVaultError, OSError) as exc:
        warnings.append(f"the run is logged, but its journal section was not written ({exc})")


def _skipped(folder: AgentFolder, log: Any, lock: Any, journal_backend: Any, lock_timeout: float | None,
             run_id: str, started: datetime, name: str, request: ModelRequest, budget: Any,
             redact: Any) -> Proposed:
    reason = "; ".join(budget.reasons)
    said = f"skipped: {journal.shorten(reason, 180)}"
    config = load_model_config(folder.model)
    record = {"kind": "run", "ts": started.isoformat(timespec="milliseconds"),
              "finished": clock.now(started.tzinfo).isoformat(timespec="milliseconds"), "run_id": run_id,
              "agent": folder.name, "trigger": "consolidate", "model": name, "input_tokens": 0,
              "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0, "tokens_estimated": False,
              "cost_usd": 0.0, "status": "skipped", "critical": False, "summary": said, "captures": [],
              "manifest": _manifest(request, config), "attempts": [], "proposal": None, "fallback_from": None,
              "guardrail": budget.as_record(), "warnings": [], "error": None}
    with lock.hold(folder, lock_timeout) as lease:
        try:
            record = log.append(folder, redact.all(record), fence=_fence(lock, lease))
        except HeadBehind as exc:
            record = exc.record
        warnings: list[str] = []
        _journal(journal_backend, folder, started, run_id, said, "skipped", redact, warnings)
    return Proposed(None, record, None, status="skipped", message=f"skipped by the cost guardrails: {reason}",
                    warnings=warnings)


def summary(proposal: dict[str, Any] | None) -> str:
    if not proposal:
        return "no change"
    return (f"{len(proposal['merges'])} merge(s), {len(proposal['retire'])} retirement(s), "
            f"{len(proposal['distil'])} distilled note(s)")


# ---- applying --------------------------------------------------------------------------------

def is_proposal(approval: approvals.Approval) -> bool:
    return approval.fields.get("kind") == KIND


def decide(folder: AgentFolder, backend: Any, log: Any, approval_id: str, decision: str, by: str,
           note: str | None = None) -> dict[str, Any] | None:
    """The one way to decide an approval (CLI and MCP server): a tool call's decision is
    written into its file (``resume`` takes it); a proposal (consolidation, promotion) is
    taken, and applied when approved, at once: its record is returned. ``backend(kind)`` opens the agent's memory
    and lock backends, only for a proposal."""
    try:
        proposal = is_proposal(approvals.read(folder.path, approval_id))
    except ConfigError:
        proposal = False  # approvals.decide names what is wrong with the file
    if not proposal:
        decided = approvals.decide(folder.path, approval_id, decision, by, note)
        if decided.fields.get("kind") == "promotion":  # taken at once too: nothing to resume
            from .agent import AtomicAgent
            from .promotion import take as take_promotion

            return take_promotion(AtomicAgent(folder.name, root=folder.root), approval_id)
        return None
    return take(folder, backend("memory"), log, backend("lock"), approval_id, decision, by, note)


def take(folder: AgentFolder, memory: Any, log: Any, lock: Any, approval_id: str, decision: str, by: str,
         note: str | None = None, lock_timeout: float | None = 60.0) -> dict[str, Any]:
    """Decide a consolidation proposal and, when approved, apply it; returns the logged
    ``kind: approval`` record. Under the agent's lock: every note the proposal read must
    still have the sha256 it recorded and every new note must still be absent, or nothing
    is written (NoteChanged names the file). The notes, then INDEX.md, then the record (the
    commit point); a failure before the record takes every write back."""
    from .protocols import LogQuery

    with lock.hold(folder, lock_timeout) as lease:
        approval = approvals.read(folder.path, approval_id)
        if not is_proposal(approval):
            raise ConfigError(f"approval {approval_id} is not a consolidation proposal", path=approval.path,
                              field="kind", fix="decide it with atomic-vault approvals (and resume its run)")
        if any(r.get("approval") == approval_id for r in log.query(folder, LogQuery(kind="approval"))):
            raise ConfigError(f"proposal {approval_id} was already decided and taken", path=approval.path,
                              field="decision", fix=f"make a new proposal: atomic-vault consolidate {folder.name}")
        if approval.decision not in ("pending", decision):
            raise ConfigError(f"proposal {approval_id} says decision: {approval.decision}", path=approval.path,
                              field="decision", fix="a decision is taken once; make a new proposal to change it")
        if approval.expired(clock.now(None)):
            raise ConfigError(f"proposal {approval_id} expired at {approval.fields.get('expires_at')}",
                              path=approval.path, field="expires_at",
                              fix=f"make a new proposal: atomic-vault consolidate {folder.name}")
        proposal = approval.fields["arguments"]
        before_file = approval.path.read_text(encoding="utf-8")
        changes = None
        if decision == "approve":
            texts = {f: memory.get(folder, f) for f in proposal["notes_sha256"]}
            for file, sha in proposal["notes_sha256"].items():
                if texts[file] is None or _sha(texts[file]) != sha:
                    raise NoteChanged(f"changed since proposal {approval_id} was made (edited by hand or by a "
                                      "run): the proposal is refused and nothing was written",
                                      path=f"memory/{file}",
                                      fix=f"make a new proposal: atomic-vault consolidate {folder.name}")
            for file in proposal["new_notes"]:
                if memory.get(folder, file) is not None:
                    raise NoteChanged(f"exists now, but the proposal {approval_id} creates it: the proposal is "
                                      "refused and nothing was written", path=f"memory/{file}",
                                      fix=f"make a new proposal: atomic-vault consolidate {folder.name}")
            changes = plan(folder, proposal, texts)
        if approval.decision == "pending":
            approval = approvals.decide(folder.path, approval_id, decision, by, note)
        notes = writeback.Notes(memory, lease)
        try:
            if changes is not None:
                for file, before, after in changes.writes:
                    notes.put(folder, file, after, expected=before)
                current = memory.get_index(folder)
                notes.put_index(folder, index.upsert(current or "", changes.index_changes), expected=current)
            lease.check()
            record = {"kind": "approval", "ts": clock.now(None).isoformat(timespec="milliseconds"),
                      "agent": folder.name, "trigger": "approvals", "approval": approval_id,
                      "run": approval.fields.get("run"), "step": 0, "call": "proposal", "tool": KIND,
                      "args_sha256": approval.fields.get("args_sha256"), "decision": decision,
                      "decided_by": approval.fields.get("decided_by"), "note": approval.fields.get("note"),
                      "why": KIND, "file_sha256": approval.file_sha256,
                      "applied": [{"file": f"memory/{f}", "sha256_before": _sha(b) if b is not None else None,
                                   "sha256_after": _sha(a)} for f, b, a in (changes.writes if changes else [])]}
            try:
                return log.append(folder, keys.Redactor().all(record), fence=_fence(lock, lease))
            except HeadBehind as exc:
                return exc.record
        except BaseException as exc:
            left = notes.take_back(folder)
            from . import fileio
            fileio.atomic_write(approval.path, before_file)  # the decision was not taken
            if left:
                raise writeback.failed(exc, left, folder.name) from exc
            raise
