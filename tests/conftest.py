import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from atomic_vault.models import ModelResponse
from provider_stubs import stub  # noqa: F401  (the stub-server fixture, for every test module)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


class ScriptedModel:
    """A model double that answers with a fixed text (or raises) and keeps the requests."""

    name = "scripted"

    def __init__(self, text="ok", error=None):
        self.text = text
        self.error = error
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        if self.error:
            raise self.error
        return ModelResponse(text=self.text, input_tokens=10, output_tokens=5, cost_usd=0.001,
                             model="scripted")


def tamper_snapshot(folder, sha: str, text: str) -> None:
    """Replace the stored text of snapshot ``sha`` in the files log behind its back, as an
    editor would: its line in the day pack (written whole), else its old per-file copy."""
    from atomic_vault.backends import packs

    for pack in packs.packs(folder):
        path = packs.folder_of(folder) / pack
        lines = path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if line and json.loads(line)["sha"] == sha:
                lines[i] = json.dumps({"sha": sha, "text": text}, ensure_ascii=False).encode("utf-8")
                path.write_bytes(b"\n".join(lines))
                return
    packs.legacy_path(folder, sha).write_text(text, encoding="utf-8")


def capture_block(**fields):
    data = {"type": "project", "name": "Test note", "description": "a test note",
            "confidence": "high", "sources": ["test"], "body": "Body text."}
    data.update(fields)
    return "```atomic_capture\n" + json.dumps(data) + "\n```"


@pytest.fixture
def vault(tmp_path):
    """A copy of the sample vault (agent 'atlas') in a temporary folder."""
    root = tmp_path / "vault"
    shutil.copytree(SAMPLES, root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (derived state excluded)."""
    out = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".atomic_vault"]
        for name in files:
            path = Path(directory) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snap():
    return snapshot


# ---- real servers for the PostgreSQL and Redis backends ---------------------------------


@pytest.fixture(autouse=True)
def _close_postgres_connections():
    """Close this process's shared PostgreSQL connections after each test (a backend
    reconnects on its next use): the server's connection slots are shared with other
    test runs, and a connection per schema per test would use them up."""
    yield
    if "atomic_vault.backends.postgres" in sys.modules:
        _close_shared()


POSTGRES = os.environ.get("ATOMIC_VAULT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ATOMIC_VAULT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _absent(what: str, error: Exception) -> None:
    """Skip with the reason when a server is truly absent; in CI it must be there."""
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run these tests (.ci/run starts the server)")
    pytest.skip(message)


@pytest.fixture
def pg_url():
    """A URL to the test database with a schema of its own, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"av_test_{uuid.uuid4().hex[:12]}"
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _absent(f"PostgreSQL at {POSTGRES}", exc)
    yield f"{POSTGRES}?schema={schema}"
    _close_shared()
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _close_shared():
    """Close this thread's shared backend connections: the backends keep one per schema
    for the life of the process, and a whole test run would otherwise hold one per test
    using PostgreSQL (the server's client limit is shared). Also before a schema is
    dropped, so that no idle connection of ours holds it."""
    from atomic_vault.backends import postgres

    shared = getattr(postgres._SHARED, "conns", None) or {}
    while shared:
        conn, _ = shared.popitem()[1]
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def pg_url_factory():
    """Several isolated schemas for one test (e.g. a migration's source and target)."""
    psycopg = pytest.importorskip("psycopg")
    made = []

    def make() -> str:
        schema = f"av_test_{uuid.uuid4().hex[:12]}"
        made.append(schema)
        return f"{POSTGRES}?schema={schema}"

    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _absent(f"PostgreSQL at {POSTGRES}", exc)
    yield make
    _close_shared()
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for schema in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["files", "sqlite", "postgres"])
def memory(request, monkeypatch):
    """Each memory backend in turn (files, SQLite, PostgreSQL), the CLI and AtomicAgent
    pointed at the same one through the environment. A test module may define its own."""
    name = request.param
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", name)
    if name == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("ATOMIC_VAULT_MEMORY_URL", url)
        from atomic_vault.backends.postgres import PostgresMemory
        return PostgresMemory(url)
    if name == "sqlite":
        from atomic_vault.backends.sqlite import SQLiteMemory
        return SQLiteMemory()
    from atomic_vault.backends.files import FileMemory
    return FileMemory()


@pytest.fixture
def redis_url():
    """A URL to the test Redis with a key prefix of its own, whose keys are removed after."""
    redis = pytest.importorskip("redis")
    prefix = f"avtest:{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        _absent(f"Redis at {REDIS}", exc)
    yield f"{REDIS}?prefix={prefix}"
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()
