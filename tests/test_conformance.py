"""The conformance suites of atomic_vault.testing, run against every built-in backend.

PostgreSQL and Redis runs use the real local servers (tests/conftest.py): each test gets
its own schema or key prefix.
"""

import pytest

from atomic_vault.backends import open_backend
from atomic_vault.testing import (JournalBackendSuite, LockBackendSuite, LogBackendSuite,
                                  MemoryBackendSuite)


def build(kind, name, request, tmp_path):
    """The ``name`` backend of ``kind``, isolated for this test."""
    url = None
    if name == "postgres":
        url = request.getfixturevalue("pg_url_factory")()
    elif name == "redis":
        url = request.getfixturevalue("redis_url") + "&lease=2"
    return open_backend_with_url(kind, name, url, tmp_path)


def open_backend_with_url(kind, name, url, root):
    from atomic_vault.backends import known
    return known(kind)[name].load()(url=url, root=root)


class TestMemory(MemoryBackendSuite):
    @pytest.fixture(params=["files", "sqlite", "postgres"])
    def memory(self, request, tmp_path):
        return build("memory", request.param, request, tmp_path)


class TestLog(LogBackendSuite):
    @pytest.fixture(params=["files", "sqlite", "postgres"])
    def log(self, request, tmp_path):
        return build("log", request.param, request, tmp_path)

    @pytest.fixture
    def other_log(self, log, request, tmp_path):
        if log.name == "postgres":
            return build("log", "postgres", request, tmp_path)
        return log


class TestLock(LockBackendSuite):
    @pytest.fixture(params=["files", "redis"])
    def lock(self, request, tmp_path):
        backend = build("lock", request.param, request, tmp_path)
        self.stale_after = 2.0 if request.param == "redis" else 0.0
        return backend


class TestJournal(JournalBackendSuite):
    @pytest.fixture(params=["files"])
    def journal(self, request, tmp_path):
        return build("journal", request.param, request, tmp_path)


def test_default_backends_are_files(tmp_path, monkeypatch):
    for kind in ("memory", "log", "lock", "journal"):
        monkeypatch.delenv(f"ATOMIC_VAULT_{kind.upper()}_BACKEND", raising=False)
        assert open_backend(kind, None, tmp_path).name == "files"
