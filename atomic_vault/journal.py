"""The daily journal: one Markdown section per run, for people to read (stored by a
JournalBackend; files by default)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


GIST_CHARS = 400
WORK_CHARS = 600


def shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def captures_line(outcomes: list[dict[str, Any]]) -> str:
    written = [f"`{o.get('source') or o['file']}` ({o['status']})" if o["status"] != "written"
               else f"`{o.get('source') or o['file']}`" for o in outcomes if o["status"] != "rejected"]
    rejected = [f"{o.get('name') or 'capture'}: {o['reason']}" for o in outcomes
                if o["status"] == "rejected"]
    parts = []
    if written:
        parts.append("written " + ", ".join(written))
    if rejected:
        parts.append("rejected " + "; ".join(shorten(r, 200) for r in rejected))
    return "; ".join(parts) or "none"


def section(when: datetime, *, trigger: str, run_id: str, work_item: str, answer: str,
            outcomes: list[dict[str, Any]], status: str = "ok") -> str:
    """This run's journal section (the JournalBackend adds the day's heading)."""
    status_note = "" if status == "ok" else f" · {status}"
    return (f"\n## {when:%H:%M:%S} · {trigger} · run {run_id}{status_note}\n\n"
            f"**Work item:** {shorten(work_item, WORK_CHARS)}\n\n"
            f"**Answer:** {shorten(answer, GIST_CHARS) or '(empty)'}\n\n"
            f"**Captures:** {captures_line(outcomes)}\n")
