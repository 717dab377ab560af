"""Schema upgrades: numbered, readable steps that rewrite a file of an older format as the
current one, shown as a diff before they are applied (``upgrade NAME``, spec/03).

Each step is a module of this package named ``<kind>_v<N>_to_v<N+1>.py`` holding ``KIND``,
``FROM``, ``TO``, a docstring saying what it changes, and one pure function
``upgrade(text) -> text``. A kind's version is read from the file itself: a note's is its
``schema_version``; model.md's is 0 in the older convention (models named in prose
sections), else 1. Log records are never rewritten: the hash chain forbids it, so the
runtime keeps reading every record version it ever wrote and no step applies to them.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import clock
from ..errors import AtomicVaultError, HeadBehind, NoteError
from ..notes import SCHEMA_VERSION, parse_note_text

STEP_MODULES = ("model_md_v0_to_v1",)  # in the order they apply


@dataclass(frozen=True)
class Step:
    kind: str
    source: int
    target: int
    name: str
    upgrade: Callable[[str], str]
    doc: str = ""


def steps() -> list[Step]:
    """The steps the package ships."""
    out = []
    for name in STEP_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        out.append(Step(module.KIND, module.FROM, module.TO, name, module.upgrade,
                        (module.__doc__ or "").strip().split("\n")[0]))
    return out


def _note_version(text: str) -> int | None:
    """A note's ``schema_version``; None when it has none a step could read (doctor's case)."""
    try:
        meta, _ = parse_note_text(text, Path("note.md"))
    except NoteError:
        return None
    version = meta.get("schema_version")
    return version if type(version) is int else None


def _model_version(text: str) -> int | None:
    from .model_md_v0_to_v1 import version

    try:
        return version(text)
    except AtomicVaultError:  # a block that does not parse: run and doctor say so
        return None


VERSIONS: dict[str, Callable[[str], int | None]] = {"note": _note_version, "model.md": _model_version}
CURRENT: dict[str, int] = {"note": SCHEMA_VERSION, "model.md": 1}


@dataclass
class Change:
    """One file an upgrade rewrites: its text before and after, and the steps taken."""

    source: str  # relative to the agent folder
    kind: str
    before: str
    after: str
    steps: list[str]
    versions: tuple[int, int]

    def diff(self) -> list[str]:
        return [line.rstrip("\n") for line in difflib.unified_diff(
            self.before.splitlines(), self.after.splitlines(), f"a/{self.source}", f"b/{self.source}",
            lineterm="")]

    def as_dict(self) -> dict[str, Any]:
        from ..snapshots import digest

        def sha256(text: str | None) -> str | None:
            return None if text is None else digest(text)

        return {"source": self.source, "kind": self.kind, "from": self.versions[0], "to": self.versions[1],
                "steps": self.steps, "before_sha256": sha256(self.before), "after_sha256": sha256(self.after)}


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # newer than this runtime, or no step


def chain(kind: str, text: str, version: int, available: list[Step], current: int
          ) -> tuple[str, list[str]] | str:
    """``text`` taken from ``version`` to ``current`` one step at a time, with the steps'
    names; or why it cannot be (a version no step reads)."""
    names = []
    while version < current:
        step = next((s for s in available if s.kind == kind and s.source == version), None)
        if step is None:
            return f"no upgrade step reads {kind} version {version}"
        text, version = step.upgrade(text), step.target
        names.append(step.name)
    return text, names


def _newer(kind: str, version: int, current: int) -> str:
    return (f"written for a newer atomic_vault ({kind} version {version}; this one reads {current}): "
            "left as it is (fix: upgrade atomic-vault, pip install -U atomic-vault)")


def plan(folder: Any, memory: Any, available: list[Step] | None = None,
         current: dict[str, int] | None = None) -> Plan:
    """Every file of the agent an upgrade would change, without changing anything."""
    available = steps() if available is None else available
    current = {**CURRENT, **(current or {})}
    out = Plan()
    files: list[tuple[str, str, str]] = []  # (kind, source, text)
    if folder.model.is_file():
        try:
            files.append(("model.md", "model.md", folder.model.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            pass  # not UTF-8: a run refuses it and says so
    valid, broken = memory.scan(folder)
    for name in sorted({*valid, *broken}):
        text = memory.get(folder, name)
        if text is not None:
            files.append(("note", f"memory/{name}", text))
    for kind, source, text in files:
        version = VERSIONS[kind](text)
        if version is None or version == current[kind]:
            continue
        if version > current[kind]:
            out.skipped.append({"source": source, "kind": kind, "version": version,
                                "reason": _newer(kind, version, current[kind])})
            continue
        done = chain(kind, text, version, available, current[kind])
        if kind == "model.md" and folder.model.is_symlink():  # a rename would replace the link
            done = "is a link: nothing is written through it (fix: upgrade the file it points to, " \
                   "or replace the link by a copy)"
        if isinstance(done, str):
            out.skipped.append({"source": source, "kind": kind, "version": version, "reason": done})
        elif done[0] != text:
            out.changes.append(Change(source, kind, text, done[0], done[1], (version, current[kind])))
    return out


def _unfinished(log: Any, folder: Any) -> int | None:
    """The seq of the last upgrade that began and never committed (killed midway)."""
    from ..protocols import LogQuery

    begun: int | None = None
    for record in log.query(folder, LogQuery(kind="upgrade")):
        if record.get("phase") == "begin":
            begun = record.get("seq")
        elif record.get("phase") == "commit" and record.get("begin") == begun:
            begun = None
    return begun


def _append(log: Any, folder: Any, record: dict[str, Any], fence: Any) -> dict[str, Any]:
    try:
        return log.append(folder, record, fence=fence)
    except HeadBehind as exc:  # durable; only log/HEAD lags, which the next append corrects
        return exc.record


def apply(folder: Any, memory: Any, log: Any, lock: Any, timeout: float = 60.0,
          available: list[Step] | None = None, current: dict[str, int] | None = None
          ) -> tuple[Plan, list[dict[str, Any]]]:
    """Plan again under the agent's lock, then log ``kind: upgrade`` ``phase: begin`` (every
    file with its hashes), write each file atomically as a compare-and-swap, and log
    ``phase: commit``. Killed midway, each file is whole, old or new; running again
    converts the rest (its begin names the unfinished one under ``resumes``)."""
    from ..agent import _fence
    from ..backends.files import replace_if
    from ..config import load_model_config
    from ..protocols import NoteChanged

    zone = load_model_config(folder.model).zone if folder.model.is_file() else None
    with lock.hold(folder, timeout) as lease:
        log.ready(folder)
        fresh = plan(folder, memory, available, current)
        if not fresh.changes:
            return fresh, []
        unfinished = _unfinished(log, folder)
        now = clock.now(zone).isoformat(timespec="milliseconds")
        begin = _append(log, folder, {
            "kind": "upgrade", "phase": "begin", "ts": now, "agent": folder.name, "trigger": "upgrade",
            "status": "ok", "files": [c.as_dict() for c in fresh.changes],
            **({"resumes": unfinished} if unfinished is not None else {}),
            "summary": f"upgrading {len(fresh.changes)} files"}, _fence(lock, lease))
        for change in fresh.changes:
            lease.check()
            try:
                if change.kind == "note":
                    memory.put(folder, change.source.removeprefix("memory/"), change.after, expected=change.before)
                else:
                    replace_if(folder, folder.path / change.source, change.after, change.before)
            except NoteChanged:
                raise NoteError("changed while the upgrade ran (a hand edit?); that change was kept",
                                path=folder.path / change.source, field="upgrade",
                                fix=f"run `atomic-vault upgrade {folder.name} --apply` again: it converts "
                                    "what is left") from None
        commit = _append(log, folder, {
            "kind": "upgrade", "phase": "commit", "ts": clock.now(zone).isoformat(timespec="milliseconds"),
            "agent": folder.name, "trigger": "upgrade", "status": "ok", "begin": begin["seq"],
            "summary": f"upgraded {len(fresh.changes)} files"}, _fence(lock, lease))
    return fresh, [begin, commit]
