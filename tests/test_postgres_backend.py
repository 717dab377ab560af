"""PostgreSQL specifics, against the real server: migrations, tampering, a database that
is down at start or lost mid-run."""

import multiprocessing
from pathlib import Path

import psycopg
import pytest

from atomic_vault import AtomicAgent
from atomic_vault.backends import postgres
from atomic_vault.backends.postgres import MIGRATIONS, PostgresLog, PostgresMemory
from atomic_vault.errors import BackendError
from atomic_vault.testing import make_agent, note_text
from atomic_vault.vault import AgentFolder, open_agent

from conftest import POSTGRES, ScriptedModel, capture_block


def record(agent, i):
    return {"kind": "run", "ts": f"2026-11-20T10:00:{i:02d}", "agent": agent, "run_id": f"r{i}",
            "cost_usd": 0.5, "status": "ok"}


def schema_of(url):
    return url.rsplit("schema=", 1)[1]


def make_agent_stub():
    return AgentFolder(Path("/nonexistent"), "bot")


def _open(url, _):
    PostgresLog(url).ready(make_agent_stub())


def test_migrations_create_the_schema_once_even_when_racing(pg_url):
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_open, args=(pg_url, i)) for i in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    PostgresLog(pg_url).ready(make_agent_stub())  # idempotent
    with psycopg.connect(POSTGRES) as conn:
        versions = conn.execute(f'SELECT version FROM "{schema_of(pg_url)}".atomic_vault_schema').fetchall()
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


def test_a_database_newer_than_the_code_is_refused(pg_url):
    PostgresLog(pg_url).ready(make_agent_stub())
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema_of(pg_url)}".atomic_vault_schema VALUES (99)')
    with pytest.raises(BackendError) as caught:
        PostgresLog(pg_url).ready(make_agent_stub())
    assert "newer" in caught.value.message and "upgrade" in caught.value.fix


def test_tampering_in_the_database_is_named(pg_url, tmp_path):
    agent = make_agent(tmp_path)
    log = PostgresLog(pg_url)
    for i in range(6):
        log.append(agent, record("bot", i))
    table = f'"{schema_of(pg_url)}".log_records'
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        text = conn.execute(f"SELECT record FROM {table} WHERE seq=2").fetchone()[0]
        conn.execute(f"UPDATE {table} SET record=%s WHERE seq=2", (text.replace("0.5", "0.05"),))
        assert log.verify(agent).first_bad["seq"] == 2
        conn.execute(f"UPDATE {table} SET record=%s WHERE seq=2", (text,))
        conn.execute(f"DELETE FROM {table} WHERE seq=5")
        bad = log.verify(agent).first_bad
        assert bad["seq"] == 6 and bad["reason"].startswith("missing")
        conn.execute(f"DELETE FROM {table} WHERE seq=6")
        conn.execute(f'UPDATE "{schema_of(pg_url)}".log_heads SET seq=4, hash=%s', ("0" * 64,))
        assert "HEAD's hash" in log.verify(agent).first_bad["reason"]


def test_a_database_down_at_start_fails_clearly_and_writes_nothing(vault, snap, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_LOG_URL", "postgresql://av:s3cret@127.0.0.1:1/agents")
    before = snap(vault)
    agent = AtomicAgent("atlas", root=vault, log="postgres", model=ScriptedModel(capture_block()))
    with pytest.raises(BackendError) as caught:
        agent.call("remember this")
    assert "s3cret" not in str(caught.value) and "av:***@127.0.0.1:1" in caught.value.message
    assert "start PostgreSQL" in caught.value.fix
    assert agent.model.requests == []  # failed before the model was paid for
    assert snap(vault) == before


def test_a_connection_lost_mid_append_leaves_no_half_record(pg_url, tmp_path, monkeypatch):
    agent = make_agent(tmp_path)
    log = PostgresLog(pg_url)
    log.append(agent, record("bot", 1))
    real_hash = postgres.runlog.record_hash

    def kill_my_connection(chained):
        pid = log.db.connection().info.backend_pid
        with psycopg.connect(POSTGRES, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return real_hash(chained)

    monkeypatch.setattr(postgres.runlog, "record_hash", kill_my_connection)
    with pytest.raises(BackendError):
        log.append(agent, record("bot", 2))
    monkeypatch.setattr(postgres.runlog, "record_hash", real_hash)
    assert [r["seq"] for r in log.records(agent)] == [1]  # reconnected; nothing half-written
    log.append(agent, record("bot", 3))
    assert [r["seq"] for r in log.records(agent)] == [1, 2] and log.verify(agent).ok


def test_an_agent_runs_on_postgres_and_migrates_back_to_files(vault, pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ATOMIC_VAULT_LOG_URL", pg_url)
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_URL", pg_url)
    folder = open_agent("atlas", vault)
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.migrate import migrate_memory
    memory = PostgresMemory(pg_url)
    copied = migrate_memory(folder, FileMemory(), memory)
    assert copied.copied == len(FileMemory().scan(folder)[0]) + len(FileMemory().scan(folder)[1])
    agent = AtomicAgent("atlas", root=vault, log="postgres", memory="postgres",
                        model=ScriptedModel(capture_block(name="Stored in postgres", body="row, not file")))
    result = agent.call("go")
    assert result.captures[0]["status"] == "written"
    assert not (vault / "atlas" / "memory" / result.captures[0]["file"]).exists()
    assert "row, not file" in memory.get(folder, result.captures[0]["file"])
    assert result.captures[0]["file"] in memory.get_index(folder)
    assert [h.file for h in memory.search(folder, "stored postgres")] == [result.captures[0]["file"]]
    export = make_agent(tmp_path / "export", "atlas")
    back = migrate_memory(folder, memory, _Elsewhere(export))
    assert back.copied >= copied.copied + 1
    assert FileMemory().get(export, result.captures[0]["file"]) == memory.get(folder, result.captures[0]["file"])


class _Elsewhere:
    """FileMemory writing into another agent folder (the export target)."""

    name = "files"

    def __init__(self, target):
        from atomic_vault.backends.files import FileMemory
        self.files, self.target = FileMemory(), target

    def get(self, folder, file):
        return self.files.get(self.target, file)

    def put(self, folder, file, text):
        self.files.put(self.target, file, text)

    def get_index(self, folder):
        return self.files.get_index(self.target)

    def put_index(self, folder, text):
        self.files.put_index(self.target, text)

    def reindex(self, folder, progress=None):
        return self.files.reindex(self.target, progress)


def test_memory_search_treats_tsquery_syntax_as_text(pg_url, tmp_path):
    agent = make_agent(tmp_path)
    memory = PostgresMemory(pg_url)
    memory.put(agent, "project_ops.md", note_text("ops", "deploy the foo & bar service; baz:* is a glob"))
    for query in ["foo & !bar", "(baz:*)", "'foo'", "foo |", "deploy-the"]:
        assert [h.file for h in memory.search(agent, query)] == ["project_ops.md"], query
    assert memory.search(agent, "foo & !nowhere") == []


def test_doctor_reports_note_files_that_differ_from_the_database(vault, pg_url, monkeypatch):
    import json as _json
    from click.testing import CliRunner
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.cli import cli
    from atomic_vault.migrate import migrate_memory

    folder = open_agent("atlas", vault)
    migrate_memory(folder, FileMemory(), PostgresMemory(pg_url))
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", "postgres")
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_URL", pg_url)
    run = lambda: [_json.loads(line) for line in CliRunner().invoke(  # noqa: E731
        cli, ["--root", str(vault), "doctor", "atlas", "--json"]).stdout.splitlines()]
    assert not [f for f in run() if "differ" in f["message"]]
    note = next(vault.glob("atlas/memory/project_*.md"))
    note.write_text(note.read_text() + "\nHand edit.\n")
    found = [f for f in run() if "differ" in f["message"]]
    assert found and found[0]["level"] == "warn" and "--what memory" in found[0]["fix"]


def test_a_broken_note_keeps_every_problem_in_the_database(pg_url, tmp_path):
    folder = AgentFolder(tmp_path, "bot")
    memory = PostgresMemory(pg_url)
    text = "---\nschema_version: 1\nname: A\ndescription: d\ntype: gossip\ncaptured: 2026-01-01\n" \
           "last_seen: 2026-01-01\nsources: []\nconfidence: sure\n---\nbody\n"
    memory.put(folder, "project_a.md", text)
    error = memory.scan(folder)[1]["project_a.md"]
    assert [(p.field, p.message) for p in error.problems] == [
        ("line 5: type", "'gossip' is not a note type"), ("line 9: confidence", "'sure' is not allowed")]


def test_the_database_picks_the_same_prompt_notes_as_a_sort_of_every_summary(vault, pg_url):
    """PostgresMemory.selection (indexed queries, so a call does not read every summary)
    chooses exactly what assembly.select_notes chooses from a scan."""
    import random
    from atomic_vault import assembly
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.migrate import migrate_memory
    from atomic_vault.notes import render_note

    folder = open_agent("atlas", vault)
    rng = random.Random(3)
    for n in range(60):
        fields = {"schema_version": 1, "name": f"Pick {n}", "description": "d",
                  "type": rng.choice(["project", "decision"]), "captured": "2026-01-01",
                  "last_seen": rng.choice(["2026-03-01", "2026-03-02", "2026-05-09"]),
                  "sources": ["s"], "confidence": "high"}
        if n % 7 == 0:
            fields["pinned"] = True
        if n % 11 == 0:
            fields["archived"] = True
        if n % 13 == 0:
            fields["expires_at"] = rng.choice(["2026-04-01", "2026-09-01"])
        name = rng.choice(["Pick_", "pick", "PICK", "p_b"]) + str(n)  # mixed case: code point order matters
        (folder.memory / f"{fields['type']}_{name}.md").write_text(render_note(fields, "b"), encoding="utf-8")
    (folder.memory / "project_broken.md").write_text("---\nname: [unclosed\n---\nb\n", encoding="utf-8")
    memory = PostgresMemory(pg_url)
    migrate_memory(folder, FileMemory(), memory)
    notes, broken = memory.scan(folder)
    for today in ("2026-05-01", "2026-10-01"):
        for count in (0, 3, 12, 200):
            assembly._SELECTION.clear()
            pinned, recent, errors = memory.selection(folder, today, count)
            assert (pinned, recent) == assembly.select_notes(notes, today, count), (today, count)
            assert set(errors) == set(broken) and "project_broken.md" in broken
