"""Provider API keys: from the environment first, then a keys file only its owner can read.

The keys file is JSON, ``{"anthropic": "sk-...", "openai": "sk-..."}``, at
``$ATOMIC_VAULT_KEYS_FILE``, else ``$XDG_CONFIG_HOME/atomic_vault/keys.json``, else
``~/.config/atomic_vault/keys.json``. It is refused unless its mode is 0600 (or stricter).
A key is never written anywhere: ``redact`` removes every key it knows of, and every long
enough fragment of one, from text that is about to be journaled, logged or shown (see its
docstring for which keys those are).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

KEYS_FILE_ENV = "ATOMIC_VAULT_KEYS_FILE"
_SEEN: set[str] = set()
_WATCHED: set[str] = set()  # variables that model.md names in api_key_env
_FILE_SECRETS: tuple[Any, frozenset[str]] = (None, frozenset())
_MIN_SECRET = 8  # shorter values (e.g. "none" for a local server) are not worth hiding
# A run of this many characters of a known key is hidden wherever it appears (a key cut
# short, or run on into other text). Shorter runs are left: 15 characters of a key do not
# reveal it, and shorter runs would hide ordinary text (every Anthropic key begins with the
# same 13 characters, "sk-ant-api03-").
FRAGMENT_MIN = 16
_ANCHOR = 8  # characters of a key searched for first (see Redactor)


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
    if not stat.S_ISREG(st.st_mode):  # a folder, or a FIFO that would block every run
        raise ConfigError("is not a regular file", path=path,
                          fix=f'make {path} a JSON file: {{"anthropic": "sk-...", "openai": "sk-..."}}')
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


def watch(env_name: str) -> None:
    """Treat variable ``env_name`` as holding a key (model.md names it in ``api_key_env``),
    so that ``redact`` hides its value even in a run that never reads it."""
    _WATCHED.add(env_name)


def _is_key_name(name: str) -> bool:
    upper = name.upper()
    return ("API_KEY" in upper or "APIKEY" in upper or name in _WATCHED
            or upper.endswith(("_TOKEN", "_SECRET", "_KEY", "_PASSWORD")))


def _keys_file_values() -> frozenset[str]:
    """The keys in the keys file, re-read when the file changes; nothing if unreadable.
    A key pasted from there must be hidden even in a run whose model never read it."""
    global _FILE_SECRETS
    path = keys_file()
    try:
        st = path.stat()
    except (OSError, ValueError):
        return frozenset()
    if not stat.S_ISREG(st.st_mode):
        return frozenset()
    signature = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    if _FILE_SECRETS[0] != signature:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        values = data.values() if isinstance(data, dict) else ()
        _FILE_SECRETS = (signature, frozenset(v for v in values
                                              if isinstance(v, str) and len(v) >= _MIN_SECRET))
    return _FILE_SECRETS[1]


def _secrets() -> list[str]:
    found = set(_SEEN) | _keys_file_values()
    for name, value in os.environ.items():
        if len(value) >= _MIN_SECRET and _is_key_name(name):
            found.add(value)
    return sorted(found, key=len, reverse=True)  # a key containing another goes first


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class Redactor:
    """Redaction with the known keys gathered once: one run's writes share one, instead of
    scanning the environment and the keys file for each text."""

    def __init__(self) -> None:
        self.secrets = _secrets()
        self._short = [secret for secret in self.secrets if len(secret) < FRAGMENT_MIN]
        # Any FRAGMENT_MIN characters of a key contain one of its anchors (the _ANCHOR
        # characters at every step-th offset), so a text is searched for the anchors alone
        # (str.find, fast) and examined only around the few places where one occurs.
        step = FRAGMENT_MIN - _ANCHOR + 1
        self._anchors = [(secret[at:at + _ANCHOR], secret, at) for secret in self.secrets
                         if len(secret) >= FRAGMENT_MIN
                         for at in range(0, len(secret) - _ANCHOR + 1, step)]

    def __call__(self, text: str) -> str:
        # long keys first, whole or in part; then short keys, which may lie inside long ones
        if self._anchors and len(text) >= FRAGMENT_MIN:
            text = self._hide_fragments(text)
        return _scrub(text, self._short)

    def _hide_fragments(self, text: str) -> str:
        """``text`` with each run of FRAGMENT_MIN or more characters of a long key, and
        each run of such runs, replaced by one ``***``."""
        spans = []
        for anchor, secret, at in self._anchors:
            found = text.find(anchor)
            while found != -1:
                left = 0  # how far text and key agree before and after the anchor
                while left < min(found, at) and text[found - left - 1] == secret[at - left - 1]:
                    left += 1
                right = _ANCHOR
                while (found + right < len(text) and at + right < len(secret)
                       and text[found + right] == secret[at + right]):
                    right += 1
                if left + right >= FRAGMENT_MIN:
                    spans.append((found - left, found + right))
                found = text.find(anchor, found + 1)
        if not spans:
            return text
        out, kept = [], 0
        for start, end in sorted(spans):
            if start > kept or not out:
                out += [text[kept:start], "***"]
            kept = max(kept, end)
        return "".join(out) + text[kept:]

    def all(self, value: Any) -> Any:
        """``value`` (a log record, an outcome: dicts, lists and strings, keys included)
        with every string in it redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.all(k): self.all(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.all(v) for v in value)
        return value


def redact(text: str) -> str:
    """``text`` with every key it knows of replaced by ``***``: each key this process read
    (``find_key``), each key in the keys file, and the value of each environment variable
    named by model.md's ``api_key_env`` or whose name says it holds a secret (containing
    ``API_KEY``, or ending in ``_KEY``, ``_TOKEN``, ``_SECRET``, ``_PASSWORD``). Values
    shorter than 8 characters are left alone. Any run of ``FRAGMENT_MIN`` (16) or more
    characters of one of these keys is replaced too, so a key cut short is hidden."""
    return Redactor()(text)


def redact_all(value: Any) -> Any:
    """``value`` with ``redact`` applied to every string in it."""
    return Redactor().all(value)
