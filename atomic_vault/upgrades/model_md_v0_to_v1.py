"""model.md, version 0 → 1: the models move from prose sections into the yaml block.

The older vault convention named the model on the first line under a "## Default model"
heading and the fallback under "## Fallback"; version 1 keeps every setting in the one
```yaml block. This step writes `model:` (and `fallback:`, when that section names one)
as the first lines of the block, or as a new block at the end of the file when there is
none. The prose stays as it was, for people: the block is read first from now on, so a
later change of model belongs in the block. A value the block already sets is kept.
"""

from __future__ import annotations

from pathlib import Path

from ..config import _has_heading, _section_value, yaml_blocks

KIND, FROM, TO = "model.md", 0, 1
_PATH = Path("model.md")


def _missing(text: str) -> dict[str, str]:
    """The settings the prose sections name and the block does not set, in order."""
    if not _has_heading(text, "default model"):
        return {}
    blocks = yaml_blocks(text, _PATH)
    data = blocks[0][1] if blocks else {}
    found = {"model": _section_value(text, "default model"), "fallback": _section_value(text, "fallback")}
    return {key: value for key, value in found.items()
            if value and not (key == "model" and data.get("model")) and key not in data}


def version(text: str) -> int:
    """0 while a prose section names a model the yaml block does not set, else 1."""
    return FROM if _missing(text) else TO


def upgrade(text: str) -> str:
    missing = _missing(text)
    if not missing:
        return text
    lines = text.split("\n")
    settings = [f"{key}: {value}" for key, value in missing.items()]
    blocks = yaml_blocks(text, _PATH)
    if blocks:
        at = blocks[0][0] - 1  # the line after the block's opening fence (0-based)
        return "\n".join([*lines[:at], *settings, *lines[at:]])
    tail = text.rstrip("\n")
    return tail + "\n\n```yaml\n" + "\n".join(settings) + "\n```\n"
