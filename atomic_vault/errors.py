"""One exception hierarchy: every error says what is wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class AtomicVaultError(Exception):
    """Base of every error atomic_vault raises on purpose.

    ``path`` is the file at fault, ``field`` the key or line inside it, ``fix`` what the
    operator should do. ``str(error)`` joins them into one readable message.
    """

    def __init__(self, message: str, *, path: Path | str | None = None,
                 field: str | None = None, fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} (fix: {self.fix})" if self.fix else text


class AgentNotFound(AtomicVaultError):
    """The agent folder, or a file every agent must have, is missing."""


class ConfigError(AtomicVaultError):
    """model.md, tools.md or a work item is malformed."""


class NoteError(AtomicVaultError):
    """A memory note or INDEX.md is malformed."""


class CaptureError(AtomicVaultError):
    """A capture from the model was rejected; nothing was written for it."""


class BudgetError(AtomicVaultError):
    """The parts of a prompt that cannot be trimmed do not fit the token budget."""


class ModelError(AtomicVaultError):
    """A model backend is unknown, unavailable, or failed to answer. ``retryable`` marks
    a transient failure (rate limit, timeout, 5xx) worth another attempt, after
    ``retry_after`` seconds when the provider said so."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None, **where):
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(message, **where)


class LogError(AtomicVaultError):
    """The run log is torn, broken or cannot be appended to."""


class LockTimeout(AtomicVaultError):
    """The agent's write lock was not acquired in time."""


class BackendError(AtomicVaultError):
    """A storage backend is unknown, misconfigured or unreachable."""


class AwaitingApproval(AtomicVaultError):
    """A run cannot go on before a person decides (exit code 5)."""


class LockLost(AtomicVaultError):
    """The lock expired or was taken over while held: this holder must not write."""


class HeadBehind(LogError):
    """The record is appended and durable (the run's commit point has passed), but log/HEAD
    could not be moved to it. The run *is* logged: HEAD lags one record behind, which
    ``verify`` reports and the next append or ``doctor --repair`` corrects. ``record`` is
    the record as written."""

    def __init__(self, record: dict, reason: OSError):
        self.record = record
        where = reason.filename or "log/HEAD"
        super().__init__(f"the run is logged as seq {record.get('seq')}, but log/HEAD could not be "
                         f"moved to it ({reason.strerror or reason}): HEAD lags one record behind",
                         path=where, fix="free space or fix the disk; the next run, or "
                                         "`atomic-vault doctor AGENT --repair`, moves HEAD")
