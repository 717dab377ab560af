"""A LockBackend in Redis (redis-py, extra ``[redis]``): one writer per agent across hosts.

The lock is a key set with NX and a lease (PX); the fencing token is a counter incremented
in the same script, so ownership and token are one atomic step. ``check()`` extends the
lease only while the key still holds this holder's value, and release deletes it only
then: a holder whose lease expired can neither extend nor delete its successor's lock, and
the log refuses its lower token (spec/11). A holder that dies leaves a key that expires
after the lease.

URL options: ``?prefix=`` (key prefix, default ``atomic_vault:``), ``?lease=SECONDS``
(default 30) and ``?vault=NAME`` (the vault's name in the keys; by default a hash of the
vault's absolute path, so hosts that mount one vault at different paths must set it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from ..errors import BackendError, LockLost, LockTimeout
from ..vault import AgentFolder
from . import redact

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
MAX_POLL = 0.05


@dataclass
class RedisLease:
    """A held Redis lock; ``check`` renews it or raises LockLost."""

    token: int
    lock: "RedisLock"
    key: str
    value: str
    fenced = True  # a lease can expire while held: the log must refuse older tokens

    def check(self) -> None:
        try:
            kept = self.lock._script("extend")(keys=[self.key], args=[self.value, self.lock.lease_ms])
        except redis.RedisError as exc:
            raise self.lock._unreachable(exc) from None
        if not kept:
            raise LockLost("the lock's lease expired and another holder may have it; this run writes "
                           "nothing more", field="lock", fix="raise ?lease= in the lock URL, or look for "
                                                              "a slow model call or a hung run")


class RedisLock:
    """Per-agent lock in Redis with lease expiry and a fencing token."""

    name = "redis"

    def __init__(self, url: str | None = None, root: Path | None = None):
        if not url:
            raise BackendError("the redis lock backend needs a URL", field="lock",
                               fix="set ATOMIC_VAULT_LOCK_URL, or url: in atomic_vault.yaml "
                                   "(e.g. redis://host:6379/0)")
        self.url = url
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        self.prefix = options.pop("prefix", "atomic_vault:")
        try:
            self.lease_ms = int(float(options.pop("lease", "30")) * 1000)
        except ValueError:
            raise BackendError("lease must be a number of seconds", field="lease", fix="e.g. ?lease=30") from None
        if self.lease_ms <= 0:
            raise BackendError("lease must be positive", field="lease", fix="e.g. ?lease=30")
        root_text = str(Path(root).absolute()) if root is not None else ""
        self.vault = options.pop("vault", None) or hashlib.sha256(root_text.encode()).hexdigest()[:16]
        self._conninfo = urlunsplit(parts._replace(query=urlencode(options)))
        self._client: Any = None
        self._pid = 0
        self._scripts: dict[str, Any] = {}

    def _redis(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self._conninfo, socket_connect_timeout=5, socket_timeout=10)
            self._pid = os.getpid()
            self._scripts = {name: self._client.register_script(code) for name, code in
                             (("acquire", _ACQUIRE), ("extend", _EXTEND), ("release", _RELEASE))}
        return self._client

    def _script(self, name: str) -> Any:
        self._redis()
        return self._scripts[name]

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(f"Redis at {redact(self.url)} cannot be reached ({exc})", field="lock",
                            fix="start Redis, or check ATOMIC_VAULT_LOCK_URL / atomic_vault.yaml")

    def keys(self, folder: AgentFolder) -> tuple[str, str]:
        base = f"{self.prefix}{self.vault}:{folder.name}"
        return f"{base}:lock", f"{base}:fence"

    @contextmanager
    def hold(self, folder: AgentFolder, timeout: float | None) -> Iterator[RedisLease]:
        key, fence = self.keys(folder)
        value = f"{secrets.token_hex(8)} {socket.gethostname()} pid={os.getpid()}"
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            try:
                token = self._script("acquire")(keys=[key, fence], args=[value, self.lease_ms])
            except redis.RedisError as exc:
                raise self._unreachable(exc) from None
            if token:
                break
            if deadline is not None and time.monotonic() >= deadline:
                holder = self._holder(key)
                raise LockTimeout(f"agent {folder.name!r} is busy (lock held by {holder})", field="lock",
                                  fix="retry later, raise --lock-timeout, or check for a hung run")
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL)
        try:
            yield RedisLease(int(token), self, key, value)
        finally:
            try:
                self._script("release")(keys=[key], args=[value])
            except redis.RedisError:
                pass  # the lease expires on its own

    def _holder(self, key: str) -> str:
        try:
            raw = self._redis().get(key)
        except redis.RedisError:
            return "another process"
        if not raw:
            return "another process"
        words = raw.decode("utf-8", "replace").split()
        return " ".join(words[1:]) or "another process"
