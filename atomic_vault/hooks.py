"""The commit doorbell: code of other packages called after each run's record commits.

A hook is an entry point of the group ``atomic_vault.hooks`` naming a callable
``hook(folder, record)``; it is called with the agent folder and the record exactly as
logged (with its ``seq`` and ``hash``), once the record is durable. A hook that raises
is reported as a warning on stderr and never fails the run: the run is already on the
record. The group is read from the same one scan of the installed entry points that
finds the backends (backends.known), so a process pays nothing more for it, and a
process with no hook installed loads nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

GROUP = "atomic_vault.hooks"
_LOADED: list[tuple[str, Callable[..., Any]]] | None = None


def installed() -> list[tuple[str, Callable[..., Any]]]:
    """(name, callable) of every hook, loaded once per process; one that cannot be loaded
    is reported and left out."""
    global _LOADED
    if _LOADED is None:
        from .backends import entry_points_of

        loaded = []
        for name, entry in sorted(entry_points_of(GROUP).items()):
            try:
                loaded.append((name, entry.load()))
            except Exception as exc:  # a broken plug-in must not stop the agents
                _warn(f"hook {name!r} ({entry.value}) cannot be loaded: {type(exc).__name__}: {exc}")
        _LOADED = loaded
    return _LOADED


def committed(folder: Any, record: dict[str, Any]) -> list[str]:
    """Call every hook with the committed record; returns the warnings of hooks that failed."""
    problems = []
    for name, hook in installed():
        try:
            hook(folder, record)
        except Exception as exc:
            problems.append(f"hook {name!r} failed after run {record.get('run_id')} (seq "
                            f"{record.get('seq')}) was logged: {type(exc).__name__}: {str(exc)[:200]}")
            _warn(problems[-1])
    return problems


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)
