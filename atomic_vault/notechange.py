"""A note changed outside a run (an MCP client's ``write_note``): one chained log record,
``kind: note_write``, naming the file and its SHA-256 before and after, appended under the
same lock hold as the write. Like a run's record it is the commit point: a change whose
record cannot be written is taken back (writeback.Notes), so memory/ never changes
without the log saying so (spec/07)."""

from __future__ import annotations

import hashlib
from typing import Any

from . import clock, keys

KIND = "note_write"


def sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def changes(done: list[tuple[str | None, str | None, str | None]]) -> list[tuple[str, str | None, str | None]]:
    """The net change of each note file from ``writeback.Notes.done`` (INDEX.md left out:
    it is rebuilt from the notes): (file, text before, text after), files that ended as
    they began left out."""
    net: dict[str, list[str | None]] = {}
    for file, before, after in done:
        if file is not None:
            net.setdefault(file, [before, after])[1] = after
    return [(file, before, after) for file, (before, after) in net.items() if before != after]


def record_change(folder: Any, log: Any, file: str, before_sha: str | None, after_sha: str | None,
                  source: str = "mcp", *, also: list[dict[str, Any]] | None = None,
                  outcome: dict[str, Any] | None = None, zone: Any = None,
                  fence: tuple[str, int] | None = None) -> dict[str, Any]:
    """Append the record of one change of ``memory/<file>`` (``before_sha`` None: created;
    ``after_sha`` None: deleted). ``also``: other notes the same change rewrote (a
    superseded note's link), each ``{file, before_sha256, after_sha256}``. Returns the
    record as stored (seq, hash); raises ``HeadBehind`` once it is durable but HEAD lags."""
    summary = f"{source}: {'created' if before_sha is None else 'deleted' if after_sha is None else 'changed'} " \
              f"memory/{file}" + (f" and {len(also)} more" if also else "")
    record = {
        "kind": KIND,
        "ts": clock.now(zone).isoformat(timespec="milliseconds"),
        "agent": folder.name,
        "trigger": source,
        "status": "ok",
        "source": source,
        "file": f"memory/{file}",
        "before_sha256": before_sha,
        "after_sha256": after_sha,
        **({"also": [{**a, "file": f"memory/{a['file']}"} for a in also]} if also else {}),
        **({"capture": outcome} if outcome is not None else {}),
        "summary": summary,
    }
    return log.append(folder, keys.Redactor().all(record), fence=fence)
