"""Copying an agent's log or memory from one backend to another, verified on arrival.

The log is copied record by record, verbatim, so the chain (every seq, prev and hash) is
identical in the target; a target that already holds the source's first records gets the
rest (an interrupted migration resumes). Memory is copied note by note, with INDEX.md.
Nothing is deleted from the source: switching backends is a separate, deliberate step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import BackendError, LogError
from .protocols import LogBackend, MemoryBackend, Progress
from .vault import AgentFolder


@dataclass
class Migration:
    kind: str
    source: str
    target: str
    copied: int = 0
    already: int = 0
    head: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def migrate_log(folder: AgentFolder, source: LogBackend, target: LogBackend,
                progress: Progress | None = None) -> Migration:
    """Copy the records ``target`` lacks, then verify the target's whole chain and that
    its HEAD is the source's."""
    result = Migration("log", source.name, target.name)
    checked = source.verify(folder)
    if not checked.ok:
        bad = checked.first_bad
        raise LogError(f"the {source.name} log does not verify (seq {bad['seq']}: {bad['reason']}); "
                       "nothing was copied", field="source",
                       fix="repair or restore the source first (`atomic-vault verify`, `doctor --repair`)")
    records = source.records(folder)
    existing = target.records(folder)
    for have in existing:
        want = next(records, None)
        if want is None or want.get("hash") != have.get("hash") or want != have:
            raise BackendError(f"the {target.name} log of {folder.name!r} already holds records "
                               "that are not the source's; nothing was copied", field="target",
                               fix="migrate into an empty store, or export that store first")
        result.already += 1
        if progress:
            progress(1)
    result.copied = target.import_records(folder, records, progress)
    arrived = target.verify(folder)
    source_head = source.head(folder)
    result.head = target.head(folder)
    if not arrived.ok:
        bad = arrived.first_bad
        raise LogError(f"the copied log does not verify in {target.name} (seq {bad['seq']}: "
                       f"{bad['reason']})", fix="report this as a bug; the source is unchanged")
    if (source_head or {}).get("hash") != (result.head or {}).get("hash") and checked.records:
        raise LogError("the copied log ends elsewhere than the source's HEAD",
                       fix="a run appended to the source meanwhile: stop the agent's runs and migrate again")
    return result


def migrate_memory(folder: AgentFolder, source: MemoryBackend, target: MemoryBackend,
                   progress: Progress | None = None) -> Migration:
    """Copy every note (valid or not, byte for byte) and INDEX.md; check each arrived."""
    result = Migration("memory", source.name, target.name)
    notes, broken = source.scan(folder)
    for file in sorted({*notes, *broken}):
        text = source.get(folder, file)
        if text is None:
            result.skipped.append(f"{file}: vanished during the copy")
            continue
        if target.get(folder, file) == text:
            result.already += 1
        else:
            target.put(folder, file, text)
            if target.get(folder, file) != text:
                raise BackendError(f"memory/{file} did not arrive intact in {target.name}",
                                   fix="report this as a bug; the source is unchanged")
            result.copied += 1
        if progress:
            progress(1)
    index = source.get_index(folder)
    if index is not None and target.get_index(folder) != index:
        target.put_index(folder, index)
    target.reindex(folder)
    return result


def count_records(log: LogBackend, folder: AgentFolder) -> int:
    """How many records a store holds (for a progress bar's length)."""
    head = log.head(folder)
    return int(head["seq"]) if head else sum(1 for _ in log.records(folder))
