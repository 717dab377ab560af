"""Provider API keys: from the environment first, then a keys file only its owner can read.

The keys file is JSON, ``{"anthropic": "sk-...", "openai": "sk-..."}``, at
``$ATOMIC_VAULT_KEYS_FILE``, else ``$XDG_CONFIG_HOME/atomic_vault/keys.json``, else
``~/.config/atomic_vault/keys.json``. It is refused unless its mode is 0600 (or stricter).
A key is never written anywhere: ``redact`` removes every key this process has seen from
text that is about to be logged.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

KEYS_FILE_ENV = "ATOMIC_VAULT_KEYS_FILE"
_SEEN: set[str] = set()
_MIN_SECRET = 8  # shorter values (e.g. "none" for a local server) are not worth hiding


@dataclass(frozen=True)
class Key:
    """A key and where it came from (the source is safe to print; the value is not)."""

    value: str | None
    source: str

    def __repr__(self) -> str:
        return f"Key(source={self.source!r})"


def keys_file() -> Path:
    explicit = os.environ.get(KEYS_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "atomic_vault" / "keys.json"


def _file_keys(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"holds API keys but is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
                          path=path, fix=f"chmod 600 {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"is not valid JSON ({type(exc).__name__})", path=path,
                          fix='write {"anthropic": "sk-...", "openai": "sk-..."}') from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise ConfigError("must map provider names to key strings", path=path,
                          fix='write {"anthropic": "sk-...", "openai": "sk-..."}')
    return data


def find_key(provider: str, env_names: tuple[str, ...]) -> Key:
    """The key for ``provider``: the first set variable of ``env_names``, then the keys
    file's entry under the provider's name. ``Key(None, "not found ...")`` when neither."""
    for name in env_names:
        value = os.environ.get(name)
        if value:
            _remember(value)
            return Key(value, f"environment variable {name}")
    path = keys_file()
    value = _file_keys(path).get(provider)
    if value:
        _remember(value)
        return Key(value, f"{path} ({provider!r})")
    looked = " or ".join(env_names) if env_names else "no variable"
    return Key(None, f"not found (looked in {looked}, then {path})")


def _remember(value: str) -> None:
    if len(value) >= _MIN_SECRET:
        _SEEN.add(value)


def redact(text: str) -> str:
    """``text`` without any key this process has read, nor any value of an environment
    variable whose name says it is a key or token."""
    secrets = set(_SEEN)
    for name, value in os.environ.items():
        upper = name.upper()
        if len(value) >= _MIN_SECRET and ("API_KEY" in upper or upper.endswith(("_TOKEN", "_SECRET"))):
            secrets.add(value)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text
