"""atomic_vault: AI agents whose whole state lives in plain Markdown and JSONL files.

    from atomic_vault import AtomicAgent
    result = AtomicAgent("atlas", root="samples").call("Plan my week")

Names are imported on first use so that ``import atomic_vault`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["AtomicAgent", "RunResult", "AtomicVaultError", "ModelRequest", "ModelResponse"]

_HOMES = {"AtomicAgent": "agent", "RunResult": "agent", "AtomicVaultError": "errors",
          "ModelRequest": "models", "ModelResponse": "models"}


def __getattr__(name: str):
    if name in _HOMES:
        from importlib import import_module
        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'atomic_vault' has no attribute {name!r}")
