"""memory/INDEX.md: one line per live note under its type's section, plus an archive."""

from __future__ import annotations

import re
from typing import Any, Iterable

SECTIONS = {
    "user": "User Profile",
    "feedback": "Critical Feedback",
    "project": "Active Projects",
    "decision": "Locked Decisions",
    "reference": "Reference",
}
ARCHIVE = "Archive"
TITLE = "# Memory Index"
_ORDER = [*SECTIONS.values(), ARCHIVE]
_LINK = re.compile(r"^\s*[-*]\s+\[.*\]\((?P<file>[^)\s]+)\)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def entry_line(summary: dict[str, Any]) -> str:
    name = _one_line(summary["name"]).replace("]", "\\]")
    return f"- [{name}]({summary['file']}) — {_one_line(summary['description'])}"


def section_for(summary: dict[str, Any], live: bool) -> str:
    return SECTIONS[summary["type"]] if live else ARCHIVE


def render(entries: Iterable[tuple[str, str]]) -> str:
    """A whole INDEX from (section title, line) pairs, sections in canonical order."""
    by_section: dict[str, list[str]] = {title: [] for title in _ORDER}
    for title, line in entries:
        by_section[title].append(line)
    parts = [TITLE, ""]
    for title in _ORDER:
        parts.append(f"## {title}")
        parts.extend(sorted(by_section[title], key=str.casefold))
        parts.append("")
    return "\n".join(parts)


def listed(text: str) -> dict[str, str]:
    """File name -> section title, for every note line in an INDEX text."""
    found: dict[str, str] = {}
    section = ""
    for line in text.split("\n"):
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        match = _LINK.match(line)
        if match:
            found[match.group("file")] = section
    return found


def upsert(text: str, changes: dict[str, tuple[str, str] | None]) -> str:
    """Apply changes to an INDEX text: file name -> (section title, line), or None to drop.

    Every other line, heading and blank line is kept as it was, so hand edits survive.
    """
    if not text.strip():
        text = render([])
    lines = [line for line in text.rstrip("\n").split("\n")
             if not ((m := _LINK.match(line)) and m.group("file") in changes)]
    for change in changes.values():
        if change is None:
            continue
        title, new_line = change
        heading = f"## {title}"
        if heading not in lines:
            slot = _section_slot(lines, title)
            if slot < len(lines):
                lines[slot:slot] = [heading, ""]
            else:
                lines.extend(["", heading] if lines and lines[-1] != "" else [heading])
        at = lines.index(heading) + 1
        while at < len(lines) and not lines[at].startswith("## "):
            at += 1
        while lines[at - 1] == "" and at - 1 > lines.index(heading):
            at -= 1
        lines.insert(at, new_line)
    return "\n".join(lines).rstrip("\n") + "\n"


def _section_slot(lines: list[str], title: str) -> int:
    """Where a missing section goes: before the first later canonical section present."""
    later = _ORDER[_ORDER.index(title) + 1:] if title in _ORDER else []
    for i, line in enumerate(lines):
        if line.startswith("## ") and line[3:].strip() in later:
            return i
    return len(lines)
