"""Choosing a backend for each Protocol: keyword argument, environment, vault config, default.

Backends are found through the entry-point groups ``atomic_vault.backends.<kind>``; the
built-ins are registered there like any third-party backend. An entry point names a
factory called as ``factory(url=URL or None, root=VAULT_ROOT)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError

KINDS = ("memory", "log", "lock", "journal", "queue")  # queue: the vault's own, not per agent
DEFAULT = "files"
CONFIG_NAME = "atomic_vault.yaml"
GROUP = "atomic_vault.backends.{kind}"
_METHODS = {"memory": ("scan", "get", "put", "search"), "log": ("append", "records", "verify"),
            "lock": ("hold",), "journal": ("append", "recent"),
            "queue": ("enqueue", "claim", "renew", "complete", "fail", "stats", "list")}

_ALL: Any = None  # every installed entry point, from one scan
_ENTRY_POINTS: dict[str, dict[str, Any]] = {}


def entry_points_of(group: str) -> dict[str, Any]:
    """Entry points of one group by name. The installed packages are scanned once per
    process (a scan costs about as much as the rest of a cold start's imports) and each
    group is then picked from memory: backends of each kind, models and hooks."""
    global _ALL
    if group not in _ENTRY_POINTS:
        if _ALL is None:
            from importlib.metadata import entry_points
            _ALL = entry_points()
        _ENTRY_POINTS[group] = {ep.name: ep for ep in _ALL.select(group=group)}
    return _ENTRY_POINTS[group]


def known(kind: str) -> dict[str, Any]:
    """Entry points of one backend kind by name."""
    return entry_points_of(GROUP.format(kind=kind))


def redact(url: str | None) -> str:
    """A URL safe to print: the password (if any) replaced by ***."""
    if not url:
        return "(no URL)"
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)


def vault_config(root: Path, agent: str | None = None) -> dict[str, dict[str, str | None]]:
    """The ``backends:`` block of ``<root>/atomic_vault.yaml`` as {kind: {backend, url}},
    overlaid for ``agent`` with its entry under ``agents:`` (``migrate`` writes those: one
    agent moves to another store while the others stay where their logs are)."""
    path = root / CONFIG_NAME
    data = vault_file(root)
    out = _backends_block(data.get("backends", {}) if data is not None else None, path, "backends")
    agents = data.get("agents", {}) if data is not None else {}
    if not isinstance(agents, dict):
        raise ConfigError("`agents` must be a mapping of agent name to backends", path=path, field="agents",
                          fix="write e.g.  agents: {atlas: {log: sqlite}}")
    if agent is not None and agents.get(agent) is not None:
        out.update(_backends_block(agents[agent], path, f"agents.{agent}"))
    return out


def vault_file(root: Path) -> dict[str, Any] | None:
    """The top-level mapping of ``<root>/atomic_vault.yaml`` ({} when there is no file,
    None when it is not a mapping): the one reader of the file's keys besides ``prices:``."""
    from ..config import cached_file  # parsed once per change of the file, not per run

    path = Path(root) / CONFIG_NAME

    def parse(text: str | None) -> dict[str, Any] | None:
        if text is None:
            return {}
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"is not valid YAML ({exc})", path=path, fix="fix the YAML syntax") from None
        return data if isinstance(data, dict) else None
    return cached_file(path, parse)


def _backends_block(block: Any, path: Path, where: str) -> dict[str, dict[str, str | None]]:
    if not isinstance(block, dict):
        raise ConfigError(f"`{where}` must be a mapping of kind to backend", path=path, field=where,
                          fix="write e.g.  backends: {log: sqlite, lock: {backend: redis, url: redis://host}}")
    out: dict[str, dict[str, str | None]] = {}
    for kind, value in block.items():
        if kind not in KINDS:
            raise ConfigError(f"unknown backend kind {kind!r}", path=path, field=f"{where}.{kind}",
                              fix=f"use one of: {', '.join(KINDS)}")
        if isinstance(value, str):
            value = {"backend": value}
        if (not isinstance(value, dict) or not isinstance(value.get("backend"), str)
                or set(value) - {"backend", "url"} or not isinstance(value.get("url", ""), (str, type(None)))):
            raise ConfigError("must be a backend name or {backend: NAME, url: URL}", path=path,
                              field=f"{where}.{kind}", fix="e.g.  log: {backend: postgres, url: postgresql://host/db}")
        out[kind] = {"backend": value["backend"], "url": value.get("url")}
    return out


def choice(kind: str, root: Path, agent: str | None = None) -> tuple[str, str | None, str]:
    """(backend name, URL, where the choice came from) for one kind, without a kwarg."""
    env = os.environ.get(f"ATOMIC_VAULT_{kind.upper()}_BACKEND")
    env_url = os.environ.get(f"ATOMIC_VAULT_{kind.upper()}_URL") or None
    if env:
        return env.strip(), env_url, f"ATOMIC_VAULT_{kind.upper()}_BACKEND"
    configured = vault_config(root, agent).get(kind)
    if configured:
        return configured["backend"], env_url or configured["url"], str(root / CONFIG_NAME)
    return DEFAULT, env_url, "default"


def open_backend(kind: str, value: Any, root: Path, agent: str | None = None) -> Any:
    """The backend for ``kind``: ``value`` may be an object implementing the Protocol, a
    backend name, or None to follow the environment, then the vault config (``agent``'s
    own entry first), then files."""
    root = Path(root)
    if value is not None and not isinstance(value, str):
        missing = [m for m in _METHODS[kind] if not callable(getattr(value, m, None))]
        if missing:
            raise BackendError(f"{type(value).__name__} is not a {kind} backend (no {', '.join(missing)})",
                               field=kind, fix=f"pass a {kind} backend name or object")
        return value
    if isinstance(value, str):
        name, url, source = value, os.environ.get(f"ATOMIC_VAULT_{kind.upper()}_URL") or None, "argument"
    else:
        name, url, source = choice(kind, root, agent)
    entries = known(kind)
    if name not in entries:
        names = ", ".join(sorted(entries)) or "none (is atomic-vault installed? pip install -e .)"
        raise BackendError(f"unknown {kind} backend {name!r} (from {source})", field=kind,
                           fix=f"use one of: {names}")
    try:
        factory = entries[name].load()
    except ImportError as exc:
        raise BackendError(f"the {name} {kind} backend cannot be loaded ({exc})", field=kind,
                           fix=f"pip install 'atomic-vault[{name}]'") from None
    return factory(url=url, root=root)
