"""The conformance suites of atomic_vault.testing, run against every built-in backend.

PostgreSQL and Redis runs use the real local servers (tests/conftest.py): each test gets
its own schema or key prefix.
"""

import json
import sqlite3

import pytest

from atomic_vault import runlog
from atomic_vault.backends import files as files_backend
from atomic_vault.backends import known, open_backend
from conftest import tamper_snapshot
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

    # The tamper hooks: each store edited behind its backend's back.

    def edit_stored(self, log, folder, seq, text):
        if log.name == "files":  # the seq-th line of the day files, whatever it holds now
            position = 0
            for path in runlog.day_files(folder):
                lines = path.read_bytes().decode("utf-8").splitlines(keepends=True)
                if position + len(lines) >= seq:
                    lines[seq - position - 1] = "" if text is None else text + "\n"
                    path.write_bytes("".join(lines).encode("utf-8"))
                    return
                position += len(lines)
            raise AssertionError(f"no record seq {seq}")
        table, column = ("records", "json") if log.name == "sqlite" else ("log_records", "record")
        if text is None:
            self._sql(log, folder, f"DELETE FROM {table} WHERE agent=? AND seq=?", folder.name, seq)
        else:
            self._sql(log, folder, f"UPDATE {table} SET {column}=? WHERE agent=? AND seq=?",
                      text, folder.name, seq)

    def edit_snapshot(self, log, folder, sha, text):
        if log.name == "files":
            tamper_snapshot(folder, sha, text)
            return
        table = "snapshots" if log.name == "sqlite" else "log_snapshots"
        self._sql(log, folder, f"UPDATE {table} SET text=? WHERE agent=? AND sha=?", text, folder.name, sha)

    def derived_forgeries(self, log):
        if log.name == "files":
            return {"the cost rollup cache": forge_rollup_cache}
        records, spend = ("records", "day_costs") if log.name == "sqlite" else ("log_records", "log_day_costs")

        def forge(sql):
            return lambda folder: self._sql(log, folder, sql, folder.name)

        return {
            # Raised, a cap skips the next run; lowered, it passes one it should stop.
            "the cost_usd column": forge(f"UPDATE {records} SET cost_usd = cost_usd + 5 WHERE agent=? AND seq=2"),
            "the status column": forge(f"UPDATE {records} SET status = 'error' WHERE agent=? AND seq=2"),
            "the trigger column": forge(f"UPDATE {records} SET trigger = 'manual' WHERE agent=? AND seq=2"),
            "the spend table": forge(f"UPDATE {spend} SET cost_usd = cost_usd - 0.25 WHERE agent=?"),
        }

    @staticmethod
    def _sql(log, folder, sql, *args):
        if log.name == "sqlite":
            conn = sqlite3.connect(log.path(folder), isolation_level=None)
            try:
                conn.execute(sql, args)
            finally:
                conn.close()
        else:
            with log.db.transaction() as conn:
                conn.execute(sql.replace("?", "%s"), args)


def forge_rollup_cache(folder):
    """Raise the cached spend of every day, sealed again as the backend would seal it, and
    forget the in-process copy (the next run is a new process)."""
    path = folder.state / files_backend.ROLLUP_CACHE
    cache = json.loads(path.read_text(encoding="utf-8"))
    for entry in cache.values():
        for row in entry["days"].values():
            row[3] += 5.0
        if hasattr(files_backend, "seal"):
            entry["seal"] = files_backend.seal(entry)
    path.write_text(json.dumps(cache), encoding="utf-8")
    files_backend._ROLLUPS.clear()
    files_backend._ON_DISK.clear()


class TestLock(LockBackendSuite):
    @pytest.fixture(params=["files", "redis"])
    def lock(self, request, tmp_path):
        backend = build("lock", request.param, request, tmp_path)
        self.stale_after = 2.0 if request.param == "redis" else 0.0
        return backend


class TestJournal(JournalBackendSuite):
    # Every registered journal backend (entry points), so a new one is covered at once.
    @pytest.fixture(params=sorted(known("journal")))
    def journal(self, request, tmp_path):
        return build("journal", request.param, request, tmp_path)


def test_default_backends_are_files(tmp_path, monkeypatch):
    for kind in ("memory", "log", "lock", "journal"):
        monkeypatch.delenv(f"ATOMIC_VAULT_{kind.upper()}_BACKEND", raising=False)
        assert open_backend(kind, None, tmp_path).name == "files"
