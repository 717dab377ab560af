"""The write-back of a run, all or nothing up to its commit point (spec/02, spec/08).

Under the agent's lock: every destination is checked before the first write; the notes
and INDEX are written, the lease checked before each write; then the log record is
appended. The durable record is the commit point. A run that fails or is refused before
it takes back what it wrote, so it leaves nothing; after it the run is done, and what
still fails (log/HEAD, the journal section, written last) is a warning, not an error.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from .errors import AtomicVaultError, NoteError
from .index import upsert
from .protocols import UNCHECKED
from .vault import AgentFolder


def preflight(folder: AgentFolder, day: date, *backends: Any) -> None:
    """Refuse the run before anything is written when a destination of its write-back
    cannot take it (a link, a file that is not a regular file, a folder that cannot be
    made). A backend names its destinations with ``destinations(folder, day)``, optional:
    backends that keep nothing in the agent folder have none."""
    from .backends.files import check_destination  # the files backends' own rule

    for backend in backends:
        destinations = getattr(backend, "destinations", None)
        if callable(destinations):
            for path in destinations(folder, day):
                check_destination(folder, path)


class Notes:
    """The run's MemoryBackend as captures.write sees it: the lease is checked before
    every write, so a holder whose lease expired stops writing, and every write is
    remembered, so that a run that fails before its commit point can take it back."""

    def __init__(self, base: Any, lease: Any):
        self.base, self.lease, self.name = base, lease, base.name
        self.done: list[tuple[str | None, str | None, str | None]] = []  # (file, None: INDEX; before; after)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.base, attr)

    def put(self, folder: AgentFolder, file: str, text: str, *, expected: Any = UNCHECKED) -> None:
        self.lease.check()
        before = self.base.get(folder, file) if expected is UNCHECKED else expected
        self.base.put(folder, file, text, expected=expected)
        self.done.append((file, before, text))

    def put_index(self, folder: AgentFolder, text: str, *, expected: Any = UNCHECKED) -> None:
        self.lease.check()
        before = self.base.get_index(folder) if expected is UNCHECKED else expected
        self.base.put_index(folder, text, expected=expected)
        self.done.append((None, before, text))

    def delete(self, folder: AgentFolder, file: str) -> bool:
        self.lease.check()
        before = self.base.get(folder, file)
        deleted = self.base.delete(folder, file)
        if deleted:
            self.done.append((file, before, None))
        return deleted

    def changes(self, start: int = 0) -> list[tuple[str, str | None, str | None]]:
        """(file, text before, text after) of every note the writes since ``start`` (an
        index into ``done``) changed, in the order first written; INDEX.md is not a note,
        and a note written and taken back again is no change."""
        net: dict[str, list[str | None]] = {}
        for file, before, after in self.done[start:]:
            if file is not None:
                net.setdefault(file, [before, after])[1] = after
        return [(file, before, after) for file, (before, after) in net.items() if before != after]

    def take_back(self, folder: AgentFolder) -> list[str]:
        """Undo this run's writes: each file gets back the text it had before the run, only
        while it still holds what this run wrote (a compare-and-swap: a hand edit made
        since is kept). Notes first, INDEX last. Returns the files left as they are:
        changed since, or failing again (a full disk)."""
        net: dict[str | None, list[str | None]] = {}
        for file, before, after in self.done:
            net.setdefault(file, [before, after])[1] = after
        index = net.pop(None, None)
        left = []
        for file, (before, after) in reversed(list(net.items())):
            try:
                if before == after:
                    continue
                if self.base.get(folder, file) != after:
                    left.append(f"memory/{file}")
                elif after is None:
                    self.base.put(folder, file, before, expected=None)
                elif before is None:
                    self.base.delete(folder, file)
                else:
                    self.base.put(folder, file, before, expected=after)
            except (AtomicVaultError, OSError):
                left.append(f"memory/{file}")
        if index is not None and index[0] != index[1]:
            before, after = index
            created = {f: None for f, (b, a) in net.items() if b is None and a is not None}
            try:
                self.base.put_index(folder, before if before is not None else upsert(after or "", created),
                                    expected=after)
            except (AtomicVaultError, OSError):
                left.append("memory/INDEX.md")
        self.done = []
        return left


def failed(exc: BaseException, left: list[str], agent: str) -> BaseException:
    """The error to raise for a run that failed before its commit point: ``exc`` itself
    when everything was taken back, else an error that also names what is left."""
    if not left:
        return exc
    return NoteError(f"the run failed before it was logged ({exc}), and {len(left)} of its writes "
                     f"could not be taken back: {', '.join(sorted(set(left))[:5])}",
                     path=None, fix=f"run `atomic-vault doctor {agent} --repair` once the cause "
                                    "is fixed (INDEX.md is rebuilt from the notes)")
