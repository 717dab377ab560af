"""The storage Protocols the runtime talks to (four for an agent's state, one for the
work queue), and the small values they exchange.

Every method takes the agent's folder first: one backend object serves every agent of a
vault (a database backend keys its rows by ``folder.name``). spec/11-backends.md says
what each method promises; ``atomic_vault.testing`` checks those promises against any
implementation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import (Any, Callable, ContextManager, Iterable, Iterator, Protocol,
                    runtime_checkable)

from .errors import NoteError
from .vault import AgentFolder

Progress = Callable[[int], None]  # called with how many more items are done


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Any = _Unchecked()
"""The default ``expected`` of ``MemoryBackend.put`` / ``put_index``: replace whatever is
stored, without comparing. (None is not the default because None is what ``get`` returns
for a missing note: passing back what was read must always be the safe choice.)"""


class NoteChanged(NoteError):
    """A conditional ``put`` / ``put_index`` found something other than ``expected`` stored:
    a hand edit or another writer changed (or created, or removed) it since it was read.
    Nothing was written; read it again and re-apply the change."""


def note_changed(path: Any, expected: str | None) -> NoteChanged:
    """The error every memory backend raises for a failed compare-and-swap."""
    if expected is None:
        return NoteChanged("appeared while being created (someone else wrote it since it was "
                           "read as missing); nothing was written", path=path,
                           fix="read it again and re-apply the change (a hand edit or another run made it)")
    return NoteChanged("changed while being updated (it no longer holds the text that was read); "
                       "nothing was written", path=path,
                       fix="read it again and re-apply the change (a hand edit or another run changed it)")


@dataclass(frozen=True)
class SearchHit:
    """One search result: the note, a relevance score (higher is better) and a snippet
    where the matched words are wrapped in ``[`` ``]``."""

    file: str
    name: str
    type: str
    score: float
    snippet: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CostRow:
    """Spend and tokens of one day (``YYYY-MM-DD``) or month (``YYYY-MM``) of runs.
    ``unknown_cost`` counts runs whose cost was not known (they add nothing to the sum)."""

    period: str
    runs: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unknown_cost: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogQuery:
    """Filters for ``LogBackend.query``. ``since`` / ``until`` are ISO dates or times,
    compared with the record's ``ts`` as recorded (inclusive; a bare date covers its day).
    ``limit`` keeps the newest that many records; results are always in chain order."""

    since: str | None = None
    until: str | None = None
    status: str | None = None
    trigger: str | None = None
    kind: str | None = None
    limit: int | None = None


@runtime_checkable
class MemoryBackend(Protocol):
    """Notes and INDEX.md of an agent. A note is addressed by its file name
    (``project_x.md``) and stored as its whole Markdown text."""

    name: str

    def scan(self, folder: AgentFolder) -> tuple[dict[str, dict[str, Any]], dict[str, NoteError]]:
        """(summary by file for every valid note, error by file for every invalid one).
        Summaries have the shape of ``notes.summarize``."""
        ...

    def list(self, folder: AgentFolder, *, type: str | None = None, pinned: bool | None = None,
             archived: bool | None = None, recent: int | None = None) -> list[dict[str, Any]]:
        """Summaries of valid notes matching every given filter. ``archived=True`` means not
        current (archived or superseded); ``recent=N`` keeps the N latest by ``last_seen``.
        Sorted by ``last_seen`` newest first, then file name."""
        ...

    def get(self, folder: AgentFolder, file: str) -> str | None:
        """A note's text, or None when there is no such note."""
        ...

    def put(self, folder: AgentFolder, file: str, text: str, *,
            expected: str | None = UNCHECKED) -> None:
        """Create or replace a note, all or nothing. With ``expected`` (the text the caller
        read, or None when it read no note) it is a compare-and-swap: when the stored note
        differs, nothing is written and ``NoteChanged`` names the file."""
        ...

    def delete(self, folder: AgentFolder, file: str) -> bool:
        """Remove a note; False when there was none. (The runtime archives and supersedes;
        it deletes only a note it created a moment before for a capture it then rejects.
        This is for operators and migrations.)"""
        ...

    def get_index(self, folder: AgentFolder) -> str | None:
        """INDEX.md's text, or None when there is none yet."""
        ...

    def put_index(self, folder: AgentFolder, text: str, *,
                  expected: str | None = UNCHECKED) -> None:
        """Replace INDEX.md, all or nothing; ``expected`` as for ``put``."""
        ...

    def search(self, folder: AgentFolder, query: str, *, limit: int = 10,
               match: str = "all") -> list[SearchHit]:
        """Notes matching every word of ``query`` (taken as plain text, never as a query
        language), best first. ``match="any"``: notes matching at least one word, ranked
        by relevance (what the prompt's relevant layer asks for, spec/04)."""
        ...

    def reindex(self, folder: AgentFolder, progress: Progress | None = None) -> int:
        """Rebuild whatever this backend derives (search index, caches) from its notes;
        returns how many notes were indexed."""
        ...


@runtime_checkable
class LogBackend(Protocol):
    """The hash-chained run log of an agent. ``append`` takes care of ``seq``, ``prev`` and
    ``hash``; concurrent appends to one agent never fork the chain."""

    name: str

    def ready(self, folder: AgentFolder) -> None:
        """Raise LogError when a record cannot be appended safely (torn tail, records
        missing behind HEAD, store unreachable). Cheap: called before every model call."""
        ...

    def append(self, folder: AgentFolder, record: dict[str, Any],
               fence: tuple[str, int] | None = None) -> dict[str, Any]:
        """Chain and store one record; returns it with ``seq``, ``prev`` and ``hash``.
        ``fence`` is (lock backend name, fencing token): a token lower than one already
        seen for the same lock backend is refused with LockLost."""
        ...

    def get(self, folder: AgentFolder, run_id: str) -> dict[str, Any] | None:
        """The record of one run, or None."""
        ...

    def query(self, folder: AgentFolder, query: LogQuery = LogQuery()) -> list[dict[str, Any]]:
        """Records matching the filters, in chain order."""
        ...

    def cost(self, folder: AgentFolder, by: str = "day", *, since: str | None = None,
             until: str | None = None) -> list[CostRow]:
        """Spend and tokens of ``run`` records grouped by ``day`` or ``month`` of their
        ``ts``, oldest first."""
        ...

    def records(self, folder: AgentFolder) -> Iterator[dict[str, Any]]:
        """Every whole record, in chain order, exactly as stored."""
        ...

    def head(self, folder: AgentFolder) -> dict[str, Any] | None:
        """``{"seq", "hash"}`` of the chain's end as the store's HEAD says, or None."""
        ...

    def generation(self, folder: AgentFolder) -> int:
        """A number that moves on every commit to this agent's log (0 before the first),
        cheap enough to poll: a reader learns whether anything changed without reading a
        record. Ordered like the records (by seq), never by a clock."""
        ...

    def verify(self, folder: AgentFolder, anchor: str | None = None) -> Any:
        """Walk the whole chain; a ``runlog.Verification`` naming the first bad record."""
        ...

    def import_records(self, folder: AgentFolder, records: Iterable[dict[str, Any]],
                       progress: Progress | None = None) -> int:
        """Store already-chained records verbatim after this store's end (migration).
        Each must continue the chain; returns how many were stored."""
        ...

    # Snapshots (spec/07): the texts of each run, stored once each under the SHA-256 of
    # their UTF-8 bytes. History like the records, so they live (and migrate) with them.

    def put_snapshots(self, folder: AgentFolder, texts: dict[str, str]) -> None:
        """Store each text under its hash (``{sha256: text}``; the caller hashed it), all
        durable before this returns; a hash already stored is left alone. Called before the
        record that names them is appended (a crash between leaves harmless orphans)."""
        ...

    def get_snapshot(self, folder: AgentFolder, sha: str) -> str | None:
        """The stored text exactly as stored (the caller re-hashes it), or None."""
        ...

    def snapshot_hashes(self, folder: AgentFolder) -> list[str]:
        """Every stored snapshot's hash, sorted."""
        ...

    def delete_snapshots(self, folder: AgentFolder, hashes: Iterable[str]) -> int:
        """Remove these snapshots (prune); returns how many were there."""
        ...


class Lease(Protocol):
    """A held lock. ``token`` grows with every acquisition of the agent's lock."""

    token: int
    fenced: bool  # True when the lease can expire while held, so writes carry the token

    def check(self) -> None:
        """Raise LockLost when the lock is no longer held by this lease (it expired and
        someone else may hold it); extend it otherwise."""
        ...


@runtime_checkable
class LockBackend(Protocol):
    """Mutual exclusion of one agent's write-back across threads, processes and hosts.
    A holder that dies never leaves the agent locked for long (stale-lock recovery)."""

    name: str

    def hold(self, folder: AgentFolder, timeout: float | None) -> ContextManager[Lease]:
        """Wait up to ``timeout`` seconds (None: forever, 0: not at all; LockTimeout after),
        yield the lease, release on exit (only if still the owner)."""
        ...


@runtime_checkable
class JournalBackend(Protocol):
    """The daily journal, for people to read: one Markdown section per run."""

    name: str

    def append(self, folder: AgentFolder, when: datetime, section: str) -> None:
        """Add a section to the day of ``when`` (the day starts with a ``# YYYY-MM-DD``
        heading the first time)."""
        ...

    def recent(self, folder: AgentFolder, days: int) -> list[tuple[str, str]]:
        """(source, text) of the newest ``days`` days that have entries, oldest first;
        ``source`` is the day's path in the folder layout (``journal/YYYY-MM/DAY.md``)."""
        ...


@dataclass(frozen=True)
class QueueItem:
    """One work item of the queue. ``id`` grows with each enqueue; ``key`` is the run's
    idempotency key (given, or made at enqueue), so a re-delivered item never runs twice.
    ``due`` is the earliest time (Unix seconds) it may be claimed; ``token`` is the fencing
    token of its latest claim and ``attempts`` how many claims counted as tries."""

    id: int
    agent: str
    work: str
    key: str
    priority: int = 0
    max_attempts: int = 5
    enqueued: str = ""
    state: str = "ready"  # ready, claimed, done, dead
    due: float = 0.0
    token: int = 0
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """A claimed item and the fencing token of this claim: renew, complete and fail are
    refused (LeaseLost) once the lease expired and someone claimed the item again."""

    item: QueueItem
    token: int
    worker: str
    handle: Any = None  # the backend's own reference (a file path, a row id)


@runtime_checkable
class QueueBackend(Protocol):
    """The vault's work queue: items for any agent, claimed with a lease that expires.
    Exactly one claimer wins an item; an item whose lease ran out is delivered again with
    a higher token; the holder of an older token can no longer renew, complete or fail it."""

    name: str

    def enqueue(self, agent: str, work: str, *, key: str | None = None, priority: int = 0,
                due: float | None = None, max_attempts: int = 5) -> QueueItem:
        """Store a new ready item (durable when this returns); ``due`` (Unix seconds)
        delays it; a missing ``key`` is made up, unique, and kept with the item."""
        ...

    def claim(self, worker: str, lease: float, agents: Iterable[str] | None = None) -> Claim | None:
        """The next due item (highest priority, then oldest), held for ``lease`` seconds,
        or None. An expired claim is taken back first: delivered again, or dead once it
        used up its attempts."""
        ...

    def renew(self, claim: Claim, lease: float) -> None:
        """Extend the lease by ``lease`` seconds from now; LeaseLost when it is not held."""
        ...

    def complete(self, claim: Claim, result: dict[str, Any]) -> None:
        """Mark the item done with ``result`` (run id, status); LeaseLost when not held."""
        ...

    def fail(self, claim: Claim, error: str, retry_in: float | None, *, counted: bool = True) -> str:
        """Give the item back: ready again after ``retry_in`` seconds, or dead when
        ``retry_in`` is None. ``counted=False`` (a worker stopping) does not use up an
        attempt. Returns the new state; LeaseLost when not held."""
        ...

    def stats(self, agent: str | None = None) -> dict[str, int]:
        """Counts: ``ready`` (due now), ``scheduled`` (due later), ``claimed``, ``done``, ``dead``."""
        ...

    def list(self, state: str | None = None, agent: str | None = None,
             limit: int | None = None) -> list[QueueItem]:
        """Items (of one state, of one agent), oldest first."""
        ...
