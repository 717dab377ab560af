"""Conversations: the earlier turns of a conversation, read back from the log's snapshots.

A run with a conversation id carries it in its record (``conversation_id``). The next
run in that conversation sends each earlier run's work item and answer (the texts its
snapshots hold, re-hashed) as user / assistant messages before its own work item. The
log is the only store: there is no conversation file to drift from it (spec/04, spec/07).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import snapshots
from .errors import ConfigError
from .models import estimate_tokens
from .protocols import LogQuery

NEW, LATEST = "new", "latest"  # words, not ids: start a conversation / continue the newest
CONVERSATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}\Z")
LATEST_WINDOW = 200  # runs looked at first for ``latest``
_GENERATED = re.compile(r"conv-(\d{4})(\d{2})(\d{2})T\d{6}-[0-9a-f]{8}\Z")


class NoConversation(ConfigError):
    """``latest`` asked of an agent none of whose runs took part in a conversation."""


def check_id(value: Any, field: str = "conversation_id") -> str:
    """A conversation id as given: one token of 1-100 letters, digits, ``. _ : -``."""
    if not isinstance(value, str) or not CONVERSATION_ID.match(value):
        raise ConfigError(f"{str(value)[:80]!r} is not a conversation id", field=field,
                          fix="use 1-100 letters, digits, '.', '_', ':' or '-' (no spaces), "
                              f"{NEW!r} to start a conversation or {LATEST!r} for the newest one")
    return value


def new_id(started: datetime) -> str:
    """``conv-<start as YYYYmmddTHHMMSS>-<8 hex>``: the date bounds the log read later."""
    return f"conv-{started:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}"


@dataclass(frozen=True)
class Turn:
    """One earlier run of the conversation as it goes into the prompt."""

    run_id: str
    seq: int | None
    work_item: str
    answer: str
    work_sha: str
    answer_sha: str

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.work_item) + estimate_tokens(self.answer)

    def entry(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "work_item": self.work_sha,
                "answer": self.answer_sha, "tokens": self.tokens}

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.work_item}, {"role": "assistant", "content": self.answer}]


@dataclass
class History:
    """The earlier turns that may go in (oldest first) and those that cannot, with why."""

    id: str
    new: bool
    turns: list[Turn] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # pruned, missing, tampered, no answer
    dropped: list[dict[str, Any]] = field(default_factory=list)  # for the budget

    named: bool = False  # the caller gave the id (not new / latest)

    def warnings(self) -> list[str]:
        out = [f"conversation {self.id} has no earlier runs: this run starts it"] \
            if self.new and self.named else []
        return out + [f"conversation {self.id}: the turn of run {s['run_id']} was left out: {s['reason']}"
                      for s in self.skipped if s["reason"].startswith("snapshot")]  # a text lost


def _runs(log: Any, folder: Any, since: str | None) -> list[dict[str, Any]]:
    return [r for r in log.query(folder, LogQuery(kind="run", since=since)) if r.get("conversation_id")]


def resolve(log: Any, folder: Any, given: str, started: datetime) -> tuple[str, list[dict[str, Any]]]:
    """The conversation id a run takes part in, and that conversation's earlier run
    records in chain order. ``new``: a fresh id; ``latest``: the conversation of the
    agent's newest run that had one (an error when none did); any other id: that one,
    new when no run has it yet."""
    given = check_id(given)
    if given == NEW:
        return new_id(started), []
    if given == LATEST:  # the newest runs first; the whole log only when none of them had one
        runs = [r for r in log.query(folder, LogQuery(kind="run", limit=LATEST_WINDOW)) if r.get("conversation_id")]
        runs = runs or _runs(log, folder, None)
        if not runs:
            raise NoConversation(f"{folder.name} has no conversation to continue", path=folder.log,
                                 field="--continue", fix=f"start one with --continue {NEW}")
        given = runs[-1]["conversation_id"]
    dated = _GENERATED.match(given)
    since = f"{dated.group(1)}-{dated.group(2)}-{dated.group(3)}" if dated else None
    return given, [r for r in _runs(log, folder, since) if r["conversation_id"] == given]


def prior(log: Any, folder: Any, given: str, started: datetime, budget: int) -> History:
    """The history of conversation ``given`` for a run starting at ``started``. Turns are
    read newest first: once they alone fill ``budget``, older ones are dropped unread
    (the budget drops the oldest first anyway, spec/04). A turn whose snapshot is gone or
    altered is skipped and said so, never sent in part."""
    cid, records = resolve(log, folder, given, started)
    history = History(cid, new=not records, named=given not in (NEW, LATEST))
    prunes: dict[str, int] | None = None
    used = 0
    for record in reversed(records):
        where = {"run_id": record.get("run_id"), "seq": record.get("seq")}
        refs = record.get("snapshots") or {}
        work, answer = refs.get("work_item"), refs.get("answer")
        if record.get("status") != "ok" or not work or not answer:
            history.skipped.append({**where, "reason": f"status {record.get('status')}: it has no answer "
                                                       "to continue from" if record.get("status") != "ok"
                                    else "recorded without snapshots"})
            continue
        if used > budget:
            history.dropped.append({**where, "tokens": None, "reason": "older than the turns that "
                                                                       "already fill the budget"})
            continue
        loaded = snapshots.load(log, folder, [work, answer])
        if loaded.missing and prunes is None:
            prunes = snapshots.prune_records(log, folder)
        gone = [(sha, loaded.state(sha) if sha not in (prunes or {}) else "pruned")
                for sha in (work, answer) if loaded.state(sha) != "ok"]
        if gone:
            history.skipped.append({**where, "reason": "; ".join(
                f"snapshot {sha} is {state}" + (f" (prune record seq {prunes[sha]})" if state == "pruned" else "")
                for sha, state in gone)})
            continue
        turn = Turn(str(record.get("run_id")), record.get("seq"), loaded.text(work), loaded.text(answer),
                    work, answer)
        used += turn.tokens
        history.turns.append(turn)
    history.turns.reverse()
    history.skipped.reverse()
    history.dropped.reverse()
    return history
