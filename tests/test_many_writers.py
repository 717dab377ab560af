"""Many writers, one agent (spec/08): 8 processes calling one agent at once, each call
capturing one note, on every storage combination. Nothing may be lost: one log record per
call, seq without a gap, an unbroken chain, every capture in INDEX.md, one journal
section per run.

Files and SQLite run 8 x 50 calls; PostgreSQL with the Redis lock runs 8 x 25 to keep this
file near a minute on two cores. bench/bench_many_writers.py runs the same check at the
full size (or any other) for every backend and reports the timings.
"""

import pytest

from atomic_vault.testing import check_many_writers, many_writers

WORKERS, CALLS, POSTGRES_CALLS = 8, 50, 25


def test_files(vault):
    many_writers(vault, "atlas", workers=WORKERS, calls=CALLS)


def test_sqlite(vault):
    many_writers(vault, "atlas", workers=WORKERS, calls=CALLS, memory="sqlite", log="sqlite")


def test_postgres_with_the_redis_lock(vault, pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_URL", pg_url)
    monkeypatch.setenv("ATOMIC_VAULT_LOG_URL", pg_url)
    monkeypatch.setenv("ATOMIC_VAULT_LOCK_URL", redis_url)
    many_writers(vault, "atlas", workers=WORKERS, calls=POSTGRES_CALLS, memory="postgres",
                 log="postgres", lock="redis")


def test_the_check_names_a_capture_missing_from_the_index(vault):
    """The check can fail: an INDEX line lost after the runs is reported."""
    many_writers(vault, "atlas", workers=2, calls=2)
    index_md = vault / "atlas" / "memory" / "INDEX.md"
    index_md.write_text(index_md.read_text().replace("(project_worker_1_item_1.md)", "(elsewhere.md)"))
    with pytest.raises(AssertionError, match="not in INDEX.md"):
        check_many_writers(vault, "atlas", workers=2, calls=2)
