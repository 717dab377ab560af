"""Copying an agent's log or memory from one backend to another, verified on arrival.

The log is copied record by record, verbatim, so the chain (every seq, prev and hash) is
identical in the target; a target that already holds the source's first records gets the
rest (an interrupted migration resumes, and going back copies the records written
since). Memory is copied note by note, with INDEX.md. Nothing is deleted from the source.
Afterwards ``switch_backend`` selects the target for that one agent in the vault config,
or says exactly what to set when something else (the environment) decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import CONFIG_NAME, redact, vault_config
from .errors import BackendError, LogError
from .fileio import atomic_write
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
    switched: bool = False  # the agent now uses the target (see ``switch_backend``)
    note: str = ""  # what was switched, or the exact setting left to make

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
        if want is None:
            raise BackendError(f"the {target.name} log of {folder.name!r} is ahead of the {source.name} "
                               f"log (it holds records after seq {result.already}); nothing was copied",
                               field="target", fix=f"runs went to the {target.name} log: migrate the other "
                                                   f"way (--from {target.name} --to {source.name})")
        if want.get("hash") != have.get("hash") or want != have:
            raise BackendError(f"the {target.name} log of {folder.name!r} already holds records "
                               "that are not the source's; nothing was copied", field="target",
                               fix="migrate into an empty store, or export that store first")
        result.already += 1
        if progress:
            progress(1)
    result.copied = target.import_records(folder, records, progress)
    copy_snapshots(folder, source, target)
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


def copy_snapshots(folder: AgentFolder, source: LogBackend, target: LogBackend, batch: int = 500) -> int:
    """Snapshots travel with the log: every one the target lacks, copied as stored (an
    altered one stays altered, so verify still names it)."""
    have = set(target.snapshot_hashes(folder))
    want = [sha for sha in source.snapshot_hashes(folder) if sha not in have]
    for start in range(0, len(want), batch):
        texts = {sha: source.get_snapshot(folder, sha) for sha in want[start:start + batch]}
        target.put_snapshots(folder, {sha: text for sha, text in texts.items() if text is not None})
    return len(want)


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


def switch_backend(root: Path, agent: str, kind: str, backend: str, url: str | None) -> tuple[bool, str]:
    """Select ``backend`` for ``agent``'s ``kind`` under ``agents:`` in the vault config
    (per agent: the other agents' logs stay where they are), written atomically and
    keeping the rest of the file. Returns (switched, what to tell the operator): when the
    environment decides, or the file cannot be edited safely, the exact setting to make."""
    variable = f"ATOMIC_VAULT_{kind.upper()}_BACKEND"
    if os.environ.get(variable):
        return False, (f"{variable}={os.environ[variable]} chooses the {kind} backend, so {agent} does not "
                       f"use {backend} yet: set {variable}={backend} for its runs")
    value: Any = backend
    note = ""
    if url and redact(url) != url:
        note = (f"; its URL holds a password, so it is not written there: set "
                f"ATOMIC_VAULT_{kind.upper()}_URL to it")
    elif url:
        value = {"backend": backend, "url": url}
    path = Path(root) / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    updated = _with_agent_backend(text, agent, kind, value)
    if updated is None:
        return False, (f"{path} could not be edited safely; to switch, add under `agents:` in it:  "
                       f"{agent}: {{{kind}: {backend}}}")
    atomic_write(path, updated)
    chosen = vault_config(Path(root), agent).get(kind, {})
    if chosen.get("backend") != backend:  # the file says otherwise: never claim a switch
        return False, f"{path} still selects {chosen.get('backend')!r} for {agent}'s {kind}"
    return True, f"{agent} now uses the {backend} {kind} backend ({path}: agents.{agent}.{kind}){note}"


def _with_agent_backend(text: str, agent: str, kind: str, value: Any) -> str | None:
    """``text`` with agents.<agent>.<kind> set to ``value``: the top-level ``agents:``
    block is rewritten (or appended), every other line is kept as it was. None when the
    result would not mean exactly the old file plus that one setting."""
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        return None
    data = {} if data is None else data
    agents = data.get("agents") or {} if isinstance(data, dict) else None
    mine = agents.get(agent) or {} if isinstance(agents, dict) else None
    if not isinstance(mine, dict):
        return None
    agents = {**agents, agent: {**mine, kind: value}}
    block = yaml.safe_dump({"agents": agents}, sort_keys=False, default_flow_style=False, allow_unicode=True)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"agents\s*:", line)), None)
    if start is None:
        updated = (text if not text or text.endswith("\n") else text + "\n") + block
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1  # blank lines after the block stay
        updated = "".join(lines[:start]) + block + "".join(lines[end:])
    try:
        return updated if yaml.safe_load(updated) == {**data, "agents": agents} else None
    except yaml.YAMLError:
        return None
