"""memory/INDEX.md: one line per current note under its type's section, plus an archive."""

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
# The note's own link ends at the line's first unescaped "](": the name in brackets may
# hold brackets and backslash escapes, and the description after it may link elsewhere.
_LINK = re.compile(r"^\s*[-*]\s+\[(?:\\.|[^\\])*?\]\((?P<file>[^)\s]+)\)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def entry_line(summary: dict[str, Any]) -> str:
    name = _one_line(summary["name"]).replace("\\", "\\\\").replace("]", "\\]")
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


def lists(text: str, filename: str) -> bool:
    """Whether an INDEX text has a note line linking to ``filename``: a string search, so
    checking one new line does not parse the whole INDEX."""
    needle, at = f"]({filename})", 0
    while (at := text.find(needle, at)) >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        match = _LINK.match(text[start:end if end >= 0 else len(text)])
        if match and match.group("file") == filename:
            return True
        at += len(needle)
    return False


def upsert(text: str, changes: dict[str, tuple[str, str] | None]) -> str:
    """Apply changes to an INDEX text: file name -> (section title, line), or None to drop.

    Every other line, heading and blank line is kept as it was, so hand edits survive.
    Works on the text with string searches: INDEX.md is megabytes at 100,000 notes.
    """
    if not text.strip():
        text = render([])
    text = text.rstrip("\n") + "\n"
    for filename in changes:
        text = _without(text, filename)
    for change in changes.values():
        if change is not None:
            text = _insert(text, *change)
    return text.rstrip("\n") + "\n"


def _without(text: str, filename: str) -> str:
    """``text`` minus every list line linking to ``filename``."""
    needle, at = f"]({filename})", 0
    while (at := text.find(needle, at)) >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at) + 1 or len(text)
        match = _LINK.match(text[start:end])
        if match and match.group("file") == filename:
            text = text[:start] + text[end:]
            at = start
        else:
            at = end
    return text


def _insert(text: str, title: str, line: str) -> str:
    """Add ``line`` at the end of section ``title`` (created in canonical order if missing)."""
    heading = f"## {title}\n"
    at = 0 if text.startswith(heading) else text.find("\n" + heading) + 1
    if at == 0 and not text.startswith(heading):
        lines = text.rstrip("\n").split("\n")
        slot = _section_slot(lines, title)
        if slot < len(lines):
            lines[slot:slot] = [heading.rstrip("\n"), ""]
        else:
            lines.extend(["", heading.rstrip("\n")] if lines[-1] != "" else [heading.rstrip("\n")])
        text = "\n".join(lines) + "\n"
        at = 0 if text.startswith(heading) else text.find("\n" + heading) + 1
    body = at + len(heading)
    following = text.find("\n## ", body - 1)
    end = len(text) if following < 0 else following + 1
    while end > body and text[end - 2:end] == "\n\n":
        end -= 1  # keep the blank line(s) before the next heading
    return text[:end] + line + "\n" + text[end:]


def _section_slot(lines: list[str], title: str) -> int:
    """Where a missing section goes: before the first later canonical section present."""
    later = _ORDER[_ORDER.index(title) + 1:] if title in _ORDER else []
    for i, line in enumerate(lines):
        if line.startswith("## ") and line[3:].strip() in later:
            return i
    return len(lines)
