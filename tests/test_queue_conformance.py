"""The QueueBackend conformance suite against both built-in queues: files (one host) and
PostgreSQL (the real local server, a schema per test)."""

import pytest

from atomic_vault.backends import known
from atomic_vault.testing.queue import QueueBackendSuite



class TestQueue(QueueBackendSuite):
    @pytest.fixture(params=["files", "postgres"])
    def queue(self, request, tmp_path):
        url = request.getfixturevalue("pg_url_factory")() if request.param == "postgres" else None
        return known("queue")[request.param].load()(url=url, root=tmp_path)
