"""The default LockBackend: per-agent mutual exclusion for the write-back with an OS lock.

The file implementation holds an OS lock (portalocker: flock / LockFileEx) on
``.atomic_vault/lock``. The OS drops it when the holder dies, so a crashed run never
leaves the agent locked; the holder's pid is written into the file for diagnostics only.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import LockTimeout
from .vault import AgentFolder

POLL_SECONDS = 0.005


def os_locks():
    """portalocker, imported on first use, without its optional Redis lock: when the redis
    package is installed (our [redis] extra), portalocker's package import loads it, about
    0.14 s per process for a lock atomic_vault never uses (it has its own Redis backend).
    A process that wants ``portalocker.RedisLock`` itself must import portalocker first."""
    if "portalocker" not in sys.modules:
        sys.modules.setdefault("portalocker.redis", None)  # None: that import fails, quietly
    import portalocker
    return portalocker


@dataclass(frozen=True)
class FileLease:
    """A held OS lock: it cannot expire while this process lives, so ``check`` never fails
    and writes need no fencing (``fenced`` is False)."""

    token: int
    fenced = False

    def check(self) -> None:
        return None


class FileLock:
    """The default LockBackend: an OS file lock in the agent's state folder."""

    name = "files"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.url = url

    @contextmanager
    def hold(self, folder: AgentFolder, timeout: float | None) -> Iterator[FileLease]:
        portalocker = os_locks()  # imported here: only the write-back needs it

        path = folder.ensure_state_dir() / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        handle = open(fd, "r+", encoding="utf-8")  # not append mode: the token is rewritten in place
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
                    break
                except portalocker.LockException:
                    if deadline is not None and time.monotonic() >= deadline:
                        holder = " ".join(path.read_text(encoding="utf-8").split()[:1]) or "another process"
                        raise LockTimeout(
                            f"agent {folder.name!r} is busy (lock held by {holder})", path=path,
                            fix="retry later, raise --lock-timeout, or check for a hung run") from None
                    time.sleep(POLL_SECONDS)
            token = _next_token(handle)
            try:
                yield FileLease(token)
            finally:
                portalocker.unlock(handle)
        finally:
            handle.close()


def _next_token(handle) -> int:
    """Bump the counter kept in the lock file; the file also says who holds the lock.
    Fixed-width text is overwritten in place (no truncate: it costs a journal commit)."""
    handle.seek(0)
    words = handle.read(64).split()
    last = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
    handle.seek(0)
    handle.write(f"pid={os.getpid():<10} {last + 1:<20}\n")
    handle.flush()
    return last + 1


def holder_pid(folder: AgentFolder) -> int | None:
    """The pid recorded by the last holder, if any (used by doctor to spot dead holders)."""
    try:
        first = (folder.state / "lock").read_text(encoding="utf-8").split()[0]
    except (FileNotFoundError, IndexError):
        return None
    return int(first[4:]) if first.startswith("pid=") and first[4:].isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` still runs (stale-holder checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
