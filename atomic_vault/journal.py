"""The daily journal: one Markdown section appended per run, for people to read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .fileio import append_text
from .vault import AgentFolder

GIST_CHARS = 400
WORK_CHARS = 600


def shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def captures_line(outcomes: list[dict[str, Any]]) -> str:
    written = [f"`{o['file']}` ({o['status']})" if o["status"] != "written" else f"`{o['file']}`"
               for o in outcomes if o["status"] != "rejected"]
    rejected = [f"{o.get('name') or 'capture'}: {o['reason']}" for o in outcomes
                if o["status"] == "rejected"]
    parts = []
    if written:
        parts.append("written " + ", ".join(written))
    if rejected:
        parts.append("rejected " + "; ".join(shorten(r, 200) for r in rejected))
    return "; ".join(parts) or "none"


def append_entry(folder: AgentFolder, when: datetime, *, trigger: str, run_id: str,
                 work_item: str, answer: str, outcomes: list[dict[str, Any]],
                 status: str = "ok") -> None:
    """Append this run's section to today's journal file (created with its heading)."""
    path = folder.journal_file(when.date())
    heading = "" if path.exists() else f"# {when:%Y-%m-%d}\n"
    status_note = "" if status == "ok" else f" · {status}"
    section = (f"{heading}\n## {when:%H:%M:%S} · {trigger} · run {run_id}{status_note}\n\n"
               f"**Work item:** {shorten(work_item, WORK_CHARS)}\n\n"
               f"**Answer:** {shorten(answer, GIST_CHARS) or '(empty)'}\n\n"
               f"**Captures:** {captures_line(outcomes)}\n")
    append_text(path, section)
