"""SQLite specifics: the derived search index notices hand edits, survives damage and is
rebuilt; the log database detects tampering and keeps agents apart."""

import os
import sqlite3

import pytest

from atomic_vault.backends import rows
from atomic_vault.backends.sqlite import SQLiteLog, SQLiteMemory
from atomic_vault.errors import BackendError, LogError
from atomic_vault.testing import make_agent, note_text


@pytest.fixture
def agent(tmp_path):
    return make_agent(tmp_path / "vault")


def files_found(memory, agent, query):
    return [hit.file for hit in memory.search(agent, query)]


def test_a_rename_over_hand_edit_is_seen_by_search(agent):
    memory = SQLiteMemory()
    memory.put(agent, "project_a.md", note_text("a", "apricot"))
    assert files_found(memory, agent, "apricot") == ["project_a.md"]
    temp = agent.memory / ".edit.tmp"
    temp.write_text(note_text("a", "blueberry"), encoding="utf-8")
    os.replace(temp, agent.memory / "project_a.md")  # how most editors save
    assert files_found(memory, agent, "blueberry") == ["project_a.md"]
    assert files_found(memory, agent, "apricot") == []
    (agent.memory / "project_new.md").write_text(note_text("new", "cranberry"), encoding="utf-8")
    assert files_found(memory, agent, "cranberry") == ["project_new.md"]
    (agent.memory / "project_new.md").unlink()
    assert files_found(memory, agent, "cranberry") == []


def test_an_in_place_edit_is_seen_after_the_next_scan(agent):
    memory = SQLiteMemory()
    memory.put(agent, "project_a.md", note_text("a", "apricot"))
    memory.search(agent, "apricot")
    path = agent.memory / "project_a.md"
    with open(path, "r+", encoding="utf-8") as handle:  # same inode, folder untouched
        text = handle.read().replace("apricot", "damson!")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    memory.scan(agent)  # every run scans
    assert files_found(memory, agent, "damson") == ["project_a.md"]


def test_a_damaged_index_is_detected_and_rebuilt_from_the_files(agent):
    memory = SQLiteMemory()
    for i in range(5):
        memory.put(agent, f"project_n{i}.md", note_text(f"n{i}", f"elderberry {i}"))
    database = agent.state / "search.sqlite3"
    other = SQLiteMemory()  # a fresh process would open the file anew
    database.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (agent.state / f"search.sqlite3{suffix}").unlink(missing_ok=True)
    assert "damaged" in other.check(agent)[0]
    assert len(other.search(agent, "elderberry")) == 5
    assert other.check(agent) == []
    database.unlink()
    assert len(SQLiteMemory().search(agent, "elderberry")) == 5
    assert SQLiteMemory().reindex(agent) == 5


def test_check_reports_an_index_out_of_step(agent):
    memory = SQLiteMemory()
    memory.put(agent, "project_a.md", note_text("a", "fig"))
    (agent.memory / "project_b.md").write_text(note_text("b", "grape"), encoding="utf-8")
    problems = SQLiteMemory().check(agent)
    assert any("misses 1" in p for p in problems)


def test_cjk_and_syntax_characters(agent):
    memory = SQLiteMemory()
    memory.put(agent, "reference_tokyo.md", note_text("tokyo", "東京タワーで会いましょう。北京烤鸭很好吃。", type="reference"))
    memory.put(agent, "project_ops.md", note_text("ops", 'Run "make deploy-prod" AND NOT (x*) NEAR/2 ^a col:umn'))
    assert files_found(memory, agent, "東京") == ["reference_tokyo.md"]
    assert files_found(memory, agent, "北京烤鸭") == ["reference_tokyo.md"]
    assert files_found(memory, agent, "タワー") == ["reference_tokyo.md"]
    for query in ['"make deploy-prod"', "AND NOT (x*)", "NEAR/2 ^a", "col:umn", "deploy-prod AND"]:
        assert files_found(memory, agent, query) == ["project_ops.md"], query


def test_the_log_database_detects_edits_deletions_and_a_moved_head(agent):
    log = SQLiteLog()
    for i in range(6):
        log.append(agent, {"kind": "run", "ts": f"2026-11-2{i}T10:00:00", "agent": agent.name,
                           "run_id": f"r{i}", "cost_usd": 0.1, "status": "ok"})
    assert log.verify(agent).ok
    db = sqlite3.connect(agent.log / "log.sqlite3")
    text = db.execute("SELECT json FROM records WHERE seq=3").fetchone()[0]
    db.execute("UPDATE records SET json=? WHERE seq=3", (text.replace('"cost_usd":0.1', '"cost_usd":0.0'),))
    db.commit()
    bad = log.verify(agent).first_bad
    assert bad["seq"] == 3 and bad["reason"].startswith("edited")
    db.execute("UPDATE records SET json=? WHERE seq=3", (text,))
    db.execute("DELETE FROM records WHERE seq=4")
    db.commit()
    bad = log.verify(agent).first_bad
    assert bad["seq"] == 5 and bad["reason"].startswith("missing")
    db.execute("DELETE FROM records WHERE seq>=5")
    db.commit()
    assert "truncated" in log.verify(agent).first_bad["reason"]
    with pytest.raises(LogError):
        log.ready(agent)  # records missing behind HEAD: nothing may be appended
    db.close()


def test_a_shared_database_keeps_agents_apart(tmp_path):
    first, second = make_agent(tmp_path / "v", "one"), make_agent(tmp_path / "v", "two")
    log = SQLiteLog(url="sqlite:shared.db", root=tmp_path / "v")
    log.append(first, {"kind": "run", "ts": "2026-11-20T10:00:00", "agent": "one", "cost_usd": 1.0})
    log.append(second, {"kind": "run", "ts": "2026-11-20T10:00:00", "agent": "two", "cost_usd": 2.0})
    assert (tmp_path / "v" / "shared.db").is_file()
    assert [r.cost_usd for r in log.cost(first)] == [1.0] and [r.cost_usd for r in log.cost(second)] == [2.0]
    assert log.verify(first).ok and log.verify(second).ok


def test_a_damaged_log_database_is_a_clear_error(agent):
    log = SQLiteLog()
    log.append(agent, {"kind": "run", "ts": "2026-11-20T10:00:00", "agent": agent.name})
    (agent.log / "log.sqlite3").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (agent.log / f"log.sqlite3{suffix}").unlink(missing_ok=True)
    with pytest.raises((BackendError, LogError)) as caught:
        SQLiteLog().ready(agent)
    assert "log.sqlite3" in str(caught.value) and "migrate" in str(caught.value)


def test_the_spend_table_is_backfilled_by_its_migration_and_follows_row_edits(agent):
    from atomic_vault.backends import sqlite as backend
    log = SQLiteLog()
    path = log.path(agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path, isolation_level=None)
    backend._migrate(old, backend.LOG_SCHEMA[:2], path)  # a database made before step 3
    old.close()
    for i, (day, cost) in enumerate([("2026-11-01", 0.5), ("2026-11-01", None), ("2026-11-02", 2.0)]):
        conn = sqlite3.connect(path, isolation_level=None)
        record = {"kind": "run", "agent": agent.name, "ts": f"{day}T09:00:0{i}.000+00:00", "seq": i + 1,
                  "cost_usd": cost, "input_tokens": 10, "output_tokens": 1}
        conn.execute(backend._INSERT, rows.columns(agent.name, record))
        conn.close()
    days = {r.period: (r.runs, r.cost_usd, r.unknown_cost) for r in log.cost(agent, "day")}
    assert days == {"2026-11-01": (2, 0.5, 1), "2026-11-02": (1, 2.0, 0)}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE records SET cost_usd = 3.0 WHERE seq = 3")
    conn.execute("DELETE FROM records WHERE seq = 1")
    conn.close()
    months = {r.period: (r.runs, r.cost_usd, r.unknown_cost) for r in log.cost(agent, "month")}
    assert months == {"2026-11": (2, 3.0, 1)}


def test_a_legacy_record_with_a_numeric_status_still_verifies(agent):
    # SQLite keeps a number bound to a TEXT column as text: not a forged column.
    log = SQLiteLog()
    legacy = {"agent": agent.name, "ts": "2026-01-01T00:00:00", "status": 200, "trigger": 7}
    assert log.import_records(agent, iter([legacy])) == 1
    log.append(agent, {"kind": "run", "agent": agent.name, "ts": "2026-11-20T09:00:00", "cost_usd": 1})
    assert log.verify(agent).ok
