"""The tamper matrix (spec/07 "What verify catches"): a log of 300 records over five day
files (and the same records in SQLite) is edited, cut, reordered, padded and rewritten in
every way the matrix lists; ``verify`` must name the first bad record exactly (file, line,
seq, reason). The one case it cannot catch alone, a consistent rewrite of log and HEAD,
is caught with ``--anchor``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from atomic_vault import fileio, runlog
from atomic_vault.backends import rows
from atomic_vault.backends.files import FileLog
from atomic_vault.backends.sqlite import SQLiteLog
from atomic_vault.cli import cli
from atomic_vault.vault import AgentFolder

AGENT = "bot"
DAYS = [date(2026, 10, 30) + timedelta(days=i) for i in range(5)]  # across a month boundary
PER_DAY = 60
TOTAL = PER_DAY * len(DAYS)


def make_record(agent: str, day: date, i: int) -> dict:
    return {"kind": "run", "ts": f"{day.isoformat()}T{8 + i // 60:02d}:{i % 60:02d}:00.000+00:00",
            "finished": f"{day.isoformat()}T{8 + i // 60:02d}:{i % 60:02d}:01.000+00:00",
            "run_id": f"{day:%Y%m%d}T08{i:04d}-{agent}", "agent": agent, "trigger": "cron", "model": "offline",
            "input_tokens": 100 + i, "output_tokens": 20, "cost_usd": 0.001, "status": "ok",
            "summary": f"{agent} run {i} of {day}", "captures": [], "warnings": [], "error": None}


def fill(store, folder: AgentFolder, days=DAYS, per_day=PER_DAY) -> None:
    folder.path.joinpath("persona").mkdir(parents=True, exist_ok=True)
    for day in days:
        for i in range(per_day):
            store.append(folder, make_record(folder.name, day, i))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One template vault: 'bot' with 300 records in day files and in SQLite, and 'other'
    with a short log of its own. Each test works on a copy."""
    root = tmp_path_factory.mktemp("tamper") / "vault"
    bot, other = AgentFolder(root, AGENT), AgentFolder(root, "other")
    sqlite = SQLiteLog()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fileio, "_fsync", lambda fd: None)  # building only; durability is not at stake
        fill(FileLog(), bot)
        fill(FileLog(), other, DAYS[:1], 10)
        fill(sqlite, bot)
    db = sqlite.path(bot)
    sqlite._conns.drop(db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return root


@pytest.fixture
def vault(built, tmp_path):
    root = tmp_path / "vault"
    shutil.copytree(built, root)
    return root


@pytest.fixture
def bot(vault):
    return AgentFolder(vault, AGENT)


# ---- the files log --------------------------------------------------------------------------

def files(folder: AgentFolder) -> list[Path]:
    return runlog.day_files(folder)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def rewrite(path: Path, new: list[str]) -> None:
    path.write_text("".join(new), encoding="utf-8")


def record_at(path: Path, line: int) -> dict:
    return json.loads(lines(path)[line - 1])


def as_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"


def rehashed(record: dict, **changes) -> dict:
    out = {**record, **changes}
    out["hash"] = runlog.record_hash(out)
    return out


def verify(folder: AgentFolder, anchor: str | None = None) -> runlog.Verification:
    return FileLog().verify(folder, anchor)


def bad(folder: AgentFolder, where, line, seq, reason, anchor=None) -> runlog.Verification:
    """verify fails, and names exactly this record and reason."""
    result = verify(folder, anchor)
    assert not result.ok
    assert result.first_bad == {"file": str(where), "line": line, "seq": seq, "reason": reason}
    return result


def test_the_untouched_log_verifies(bot):
    result = verify(bot)
    assert result.ok and result.records == TOTAL and result.warnings == [] and result.legacy == 0
    assert [p.name for p in files(bot)] == [f"{d}.jsonl" for d in DAYS]
    assert [len(lines(p)) for p in files(bot)] == [PER_DAY] * len(DAYS)


# Day file k holds seq 60k+1 .. 60k+60 on lines 1..60.

def test_edited_field(bot):
    f = files(bot)[1]
    content = lines(f)
    content[9] = content[9].replace('"summary":"bot run 9', '"summary":"bot run X')
    rewrite(f, content)
    bad(bot, f, 10, 70, "edited: the content does not match its hash")


def test_edited_seq_field(bot):
    f = files(bot)[1]
    content = lines(f)
    content[9] = content[9].replace('"seq":70,', '"seq":71,')
    rewrite(f, content)
    bad(bot, f, 10, 71, "edited: the content does not match its hash")


def test_edited_field_with_its_hash_recomputed(bot):
    """The edited record is self-consistent; the next one's link to it breaks."""
    f = files(bot)[1]
    content = lines(f)
    content[9] = as_line(rehashed(record_at(f, 10), cost_usd=0.0))
    rewrite(f, content)
    bad(bot, f, 11, 71, "inserted or replaced: prev does not match the record before")


def test_edited_last_record_with_its_hash_recomputed(bot):
    f = files(bot)[-1]
    content = lines(f)
    content[-1] = as_line(rehashed(record_at(f, PER_DAY), status="error"))
    rewrite(f, content)
    bad(bot, bot.head, 1, TOTAL, "HEAD's hash does not match the last record (rewritten?)")


def test_deleted_record(bot):
    f = files(bot)[1]
    content = lines(f)
    del content[9]
    rewrite(f, content)
    bad(bot, f, 10, 71, "missing: seq 70 absent before this record")


def test_deleted_first_record_of_a_day(bot):
    f = files(bot)[2]
    rewrite(f, lines(f)[1:])
    bad(bot, f, 1, 122, "missing: seq 121 absent before this record")


def test_deleted_range(bot):
    f = files(bot)[1]
    content = lines(f)
    del content[9:19]
    rewrite(f, content)
    bad(bot, f, 10, 80, "missing: seq 70-79 absent before this record")


def test_inserted_forged_record_with_a_correct_hash_of_its_own(bot):
    f = files(bot)[1]
    content = lines(f)
    content.insert(10, as_line(rehashed(record_at(f, 10), summary="forged")))
    rewrite(f, content)
    bad(bot, f, 11, 70, "reordered or duplicated: seq 70 where 71 was due")


def test_inserted_forged_record_chained_into_place(bot):
    """A forgery that takes the next seq and links to its predecessor passes itself; the
    genuine record after it no longer fits, and that is where verify stops."""
    f = files(bot)[1]
    content = lines(f)
    before = record_at(f, 10)
    forged = rehashed({**record_at(f, 11), "summary": "forged"}, prev=before["hash"])
    content.insert(10, as_line(forged))
    rewrite(f, content)
    bad(bot, f, 12, 71, "reordered or duplicated: seq 71 where 72 was due")


def test_inserted_unchained_record(bot):
    f = files(bot)[1]
    content = lines(f)
    plain = make_record(AGENT, DAYS[1], 99)
    content.insert(10, as_line(plain))
    rewrite(f, content)
    bad(bot, f, 11, None, "inserted: an unchained record after the chain began")


def test_duplicated_record(bot):
    f = files(bot)[1]
    content = lines(f)
    content.insert(10, content[9])
    rewrite(f, content)
    bad(bot, f, 11, 70, "reordered or duplicated: seq 70 where 71 was due")


def test_swapped_adjacent_records(bot):
    f = files(bot)[1]
    content = lines(f)
    content[9], content[10] = content[10], content[9]
    rewrite(f, content)
    bad(bot, f, 10, 71, "missing: seq 70 absent before this record")


def test_swapped_records_across_day_files(bot):
    first, second = files(bot)[1], files(bot)[2]
    a, b = lines(first), lines(second)
    a[-1], b[0] = b[0], a[-1]
    rewrite(first, a)
    rewrite(second, b)
    bad(bot, first, 60, 121, "missing: seq 120 absent before this record")


def test_swapped_distant_records(bot):
    first, later = files(bot)[1], files(bot)[3]
    a, b = lines(first), lines(later)
    a[9], b[19] = b[19], a[9]
    rewrite(first, a)
    rewrite(later, b)
    bad(bot, first, 10, 200, "missing: seq 70-199 absent before this record")


def test_truncated_tail(bot):
    f = files(bot)[-1]
    rewrite(f, lines(f)[:-10])
    bad(bot, f, 50, 290, f"truncated: HEAD says seq {TOTAL} but the log ends at seq 290")


def test_truncated_mid_line(bot):
    """Cut inside a record: the torn line is a warning, the missing records are not."""
    f = files(bot)[-1]
    kept = "".join(lines(f)[:50])
    f.write_text(kept + lines(f)[50][:40], encoding="utf-8")
    result = bad(bot, f, 50, 290, f"truncated: HEAD says seq {TOTAL} but the log ends at seq 290")
    assert result.warnings == [f"{f}:51: torn last line (no newline: a crash during a write?); "
                               "`doctor --repair` moves it aside"]


def test_torn_line_inside_an_older_day_file(bot):
    f = files(bot)[1]
    f.write_text("".join(lines(f)[:-1]) + lines(f)[-1][:30], encoding="utf-8")
    bad(bot, f, 60, None, "unreadable line: torn last line (no newline: a crash during a write?)")


def test_dropped_middle_day_file(bot):
    gone = files(bot)[2]
    gone.unlink()
    bad(bot, files(bot)[2], 1, 181, "missing: seq 121-180 absent before this record")


def test_dropped_first_day_file(bot):
    files(bot)[0].unlink()
    bad(bot, files(bot)[0], 1, 61, "missing: seq 1-60 absent before this record")


def test_dropped_last_day_file(bot):
    files(bot)[-1].unlink()
    bad(bot, files(bot)[-1], 60, 240, f"truncated: HEAD says seq {TOTAL} but the log ends at seq 240")


def test_dropped_month_folder(bot):
    shutil.rmtree(files(bot)[0].parent)
    bad(bot, files(bot)[0], 1, 121, "missing: seq 1-120 absent before this record")


def test_emptied_day_file(bot):
    files(bot)[2].write_text("", encoding="utf-8")
    bad(bot, files(bot)[3], 1, 181, "missing: seq 121-180 absent before this record")


def test_renamed_day_file_changes_the_order(bot):
    f = files(bot)[2]
    f.rename(f.with_name(f"{DAYS[-1] + timedelta(days=1)}.jsonl"))
    bad(bot, files(bot)[2], 1, 181, "missing: seq 121-180 absent before this record")


def test_record_copied_from_another_agent(bot, vault):
    theirs = lines(files(AgentFolder(vault, "other"))[0])[4]
    f = files(bot)[1]
    content = lines(f)
    content.insert(10, theirs)
    rewrite(f, content)
    bad(bot, f, 11, 5, "belongs to another agent ('other')")


def test_another_agents_whole_log_copied_over(bot, vault):
    for f in files(bot):
        f.unlink()
    other = AgentFolder(vault, "other")
    target = bot.log_file(DAYS[0])
    shutil.copy(files(other)[0], target)
    shutil.copy(other.head, bot.head)
    bad(bot, target, 1, 1, "belongs to another agent ('other')")


def test_record_copied_from_another_agent_and_renamed(bot, vault):
    theirs = json.loads(lines(files(AgentFolder(vault, "other"))[0])[4])
    f = files(bot)[1]
    content = lines(f)
    content.insert(10, as_line({**theirs, "agent": AGENT}))
    rewrite(f, content)
    bad(bot, f, 11, 5, "edited: the content does not match its hash")


def test_line_that_is_not_json(bot):
    f = files(bot)[1]
    content = lines(f)
    content[9] = "this is not json\n"
    rewrite(f, content)
    try:
        json.loads("this is not json")
    except ValueError as exc:
        problem = str(exc)
    bad(bot, f, 10, None, f"unreadable line: not valid JSON ({problem})")


def test_line_that_is_not_an_object(bot):
    f = files(bot)[1]
    content = lines(f)
    content[9] = "[1, 2, 3]\n"
    rewrite(f, content)
    bad(bot, f, 10, None, "unreadable line: not a JSON object")


@pytest.mark.parametrize("head, reason, seq", [
    ('{"seq": 300, "hash": "' + "0" * 64 + '"}\n', "HEAD's hash does not match the last record (rewritten?)", TOTAL),
    ("not json\n", "log/HEAD is not valid JSON", None),
    ('{"hash": "x"}\n', "log/HEAD does not hold a seq and a hash", None),
    ('{"seq": "300", "hash": "x"}\n', "log/HEAD does not hold a seq and a hash", None),
    ("[300]\n", "log/HEAD does not hold a seq and a hash", None),
])
def test_rewritten_head(bot, head, reason, seq):
    bot.head.write_text(head, encoding="utf-8")
    bad(bot, bot.head, 1, seq, reason)


def test_head_ahead_of_the_log(bot):
    bot.head.write_text(json.dumps({"seq": TOTAL + 1, "hash": "x"}) + "\n", encoding="utf-8")
    bad(bot, files(bot)[-1], PER_DAY, TOTAL, f"truncated: HEAD says seq {TOTAL + 1} but the log ends at seq {TOTAL}")


def test_head_deleted(bot):
    bot.head.unlink()
    bad(bot, bot.head, 1, None, "log/HEAD is missing (deleted, or a rewrite?)")


def test_head_moved_back_alone_is_only_a_warning(bot):
    """HEAD only guards the tail; moved back, it hides nothing by itself (documented)."""
    previous = record_at(files(bot)[-1], PER_DAY - 1)
    runlog.write_head(bot, previous["seq"], previous["hash"])
    result = verify(bot)
    assert result.ok and result.warnings == [
        f"HEAD is behind the log (seq {TOTAL - 1} < {TOTAL}): a run was cut off after its append; "
        "`doctor --repair` advances HEAD"]


# ---- what verify cannot catch alone, and the anchor that does -----------------------------

def anchor_of(folder: AgentFolder) -> str:
    head = runlog.read_head(folder)
    return f"{head['seq']}:{head['hash']}"


def rewrite_consistently(folder: AgentFolder, start_seq: int = 1, change=lambda r: {**r, "cost_usd": 0.0}):
    """Re-chain every record from ``start_seq`` on after ``change``, and rewrite HEAD: what
    someone with write access and the hashing rule can do."""
    prev, seq, digest = None, 0, None
    for path in files(folder):
        out = []
        for line in lines(path):
            record = json.loads(line)
            if record["seq"] >= start_seq:
                record = rehashed(change(record), prev=prev)
            prev, seq, digest = record["hash"], record["seq"], record["hash"]
            out.append(as_line(record))
        rewrite(path, out)
    runlog.write_head(folder, seq, digest)


def test_a_consistent_rewrite_of_log_and_head_passes_verify_but_not_the_anchor(bot):
    """The one blind spot of verify alone, and its remedy (spec/07)."""
    anchor = anchor_of(bot)
    middle = record_at(files(bot)[2], 30)
    rewrite_consistently(bot)
    assert verify(bot).ok
    bad(bot, files(bot)[-1], PER_DAY, TOTAL, "differs from the anchor: the log was rewritten", anchor)
    bad(bot, files(bot)[2], 30, middle["seq"], "differs from the anchor: the log was rewritten",
        f"{middle['seq']}:{middle['hash']}")


def test_an_anchor_vouches_for_history_up_to_its_seq_only(bot):
    early = record_at(files(bot)[1], 30)
    late = anchor_of(bot)
    rewrite_consistently(bot, start_seq=200)
    assert verify(bot).ok and verify(bot, f"{early['seq']}:{early['hash']}").ok
    bad(bot, files(bot)[-1], PER_DAY, TOTAL, "differs from the anchor: the log was rewritten", late)


def test_a_cut_tail_with_head_moved_back_is_caught_by_the_anchor(bot):
    anchor = anchor_of(bot)
    f = files(bot)[-1]
    rewrite(f, lines(f)[:-10])
    last = record_at(f, 50)
    runlog.write_head(bot, last["seq"], last["hash"])
    assert verify(bot).ok
    bad(bot, bot.head, 1, TOTAL, "the anchored record is not in the log", anchor)


def test_a_forged_record_appended_at_the_end_looks_like_a_new_run(bot):
    """Documented: a record correctly chained after the last one is what a run writes; no
    anchor taken before it can tell (with HEAD left behind it shows as a warning)."""
    anchor = anchor_of(bot)
    last = record_at(files(bot)[-1], PER_DAY)
    forged = rehashed({**make_record(AGENT, DAYS[-1], 99), "seq": TOTAL + 1}, prev=last["hash"])
    with open(files(bot)[-1], "a", encoding="utf-8") as handle:
        handle.write(as_line(forged))
    result = verify(bot, anchor)
    assert result.ok and result.warnings and "HEAD is behind" in result.warnings[0]
    runlog.write_head(bot, TOTAL + 1, forged["hash"])
    assert verify(bot, anchor).ok and verify(bot).warnings == []


@pytest.mark.parametrize("month", ["٢٠٢٦-١١", "2026-11\n", "2026-1x"])
def test_folders_that_only_look_like_months_are_not_part_of_the_log(bot, month):
    """Regression: the month pattern took any script's digits and a trailing newline, so
    such a folder's day files were read as part of the chain."""
    odd = bot.log / month
    odd.mkdir()
    (odd / "2026-11-05.jsonl").write_text("junk\n", encoding="utf-8")
    assert verify(bot).ok and runlog.tail(bot)[0] == TOTAL


def test_an_unchained_record_before_the_chain_counts_as_legacy(bot):
    """Documented: records before the first chained one are legacy history, counted and not
    checked; a vault that never had any shows `legacy` > 0 only after tampering."""
    f = files(bot)[0]
    rewrite(f, [as_line(make_record(AGENT, DAYS[0], 99))] + lines(f))
    result = verify(bot)
    assert result.ok and result.legacy == 1 and result.records == TOTAL


def test_the_cli_reports_the_first_bad_record_and_checks_anchors(bot, vault):
    anchor = anchor_of(bot)
    bot.persona.mkdir(exist_ok=True)
    (bot.persona / "IDENTITY.md").write_text("bot\n", encoding="utf-8")
    ok = CliRunner().invoke(cli, ["--root", str(vault), "verify", AGENT])
    assert ok.exit_code == 0 and ok.output.startswith(f"ok: {TOTAL} records verify; head {anchor}")
    rewrite_consistently(bot)
    fooled = CliRunner().invoke(cli, ["--root", str(vault), "verify", AGENT])
    assert fooled.exit_code == 0
    caught = CliRunner().invoke(cli, ["--root", str(vault), "verify", AGENT, "--anchor", anchor, "--json"])
    assert caught.exit_code == 1
    assert json.loads(caught.output)["first_bad"] == {
        "file": str(files(bot)[-1]), "line": PER_DAY, "seq": TOTAL,
        "reason": "differs from the anchor: the log was rewritten"}
    f = files(bot)[1]
    content = lines(f)
    del content[9]
    rewrite(f, content)
    broken = CliRunner().invoke(cli, ["--root", str(vault), "verify", AGENT])
    assert broken.exit_code == 1
    assert broken.output == f"BROKEN at {f}:10 (seq 71): missing: seq 70 absent before this record\n"


# ---- the same matrix on the SQLite log ------------------------------------------------------

@pytest.fixture
def db(bot):
    """(SQLiteLog, connection for tampering, database path)."""
    store = SQLiteLog()
    path = store.path(bot)
    conn = sqlite3.connect(path, isolation_level=None)
    yield store, conn, path
    conn.close()
    store._conns.drop(path)


def row(conn, seq: int) -> tuple[int, dict]:
    row_id, text = conn.execute("SELECT id, json FROM records WHERE agent=? AND seq=?", (AGENT, seq)).fetchone()
    return row_id, json.loads(text)


def set_json(conn, row_id: int, record: dict) -> None:
    conn.execute("UPDATE records SET json=? WHERE id=?", (json.dumps(record, sort_keys=True, separators=(",", ":"),
                                                                        ensure_ascii=False), row_id))


def insert_at(conn, row_id: int, agent: str, record: dict) -> None:
    """Insert a row so that it is read at ``row_id`` (later rows move up by 1000); its seq
    column is left empty so that the table's own constraint does not stop the forgery."""
    conn.execute("UPDATE records SET id = id + 1000 WHERE id >= ?", (row_id,))
    conn.execute("INSERT INTO records (id, agent, seq, kind, ts, day, json) VALUES (?,?,?,?,?,?,?)",
                 (row_id, agent, None, "run", record["ts"], record["ts"][:10],
                  json.dumps(record, sort_keys=True, separators=(",", ":"))))


def sql_bad(store, bot, path, row_id, seq, reason, anchor=None, line=None):
    result = store.verify(bot, anchor)
    where = f"{path}#{row_id}"
    assert not result.ok
    assert result.first_bad == {"file": where, "line": row_id if line is None else line, "seq": seq,
                                "reason": reason}
    return result


def test_sqlite_untouched_log_verifies(db, bot):
    store, conn, _ = db
    result = store.verify(bot)
    assert result.ok and result.records == TOTAL
    assert conn.execute("SELECT min(id), max(id) FROM records").fetchone() == (1, TOTAL)  # row id == seq


def test_sqlite_edited_field(db, bot):
    store, conn, path = db
    row_id, record = row(conn, 70)
    set_json(conn, row_id, {**record, "summary": "edited"})
    sql_bad(store, bot, path, 70, 70, "edited: the content does not match its hash")


def test_sqlite_edited_field_with_its_hash_recomputed(db, bot):
    store, conn, path = db
    row_id, record = row(conn, 70)
    set_json(conn, row_id, rehashed(record, cost_usd=0.0))
    # Caught at the row itself: its columns (hash, cost_usd) still say what was hashed.
    result = store.verify(bot)
    assert not result.ok and result.first_bad["seq"] == 70
    assert result.first_bad["reason"].startswith("tampered: its hash column holds ")


def test_sqlite_deleted_record(db, bot):
    store, conn, path = db
    conn.execute("DELETE FROM records WHERE seq=70")
    sql_bad(store, bot, path, 71, 71, "missing: seq 70 absent before this record")


def test_sqlite_inserted_forged_record(db, bot):
    store, conn, path = db
    _, record = row(conn, 70)
    insert_at(conn, 71, AGENT, rehashed(record, summary="forged"))
    sql_bad(store, bot, path, 71, 70, "reordered or duplicated: seq 70 where 71 was due")


def test_sqlite_swapped_records(db, bot):
    store, conn, path = db
    (a, first), (b, second) = row(conn, 70), row(conn, 71)
    set_json(conn, a, second)
    set_json(conn, b, first)
    sql_bad(store, bot, path, 70, 71, "missing: seq 70 absent before this record")


def test_sqlite_truncated_tail(db, bot):
    store, conn, path = db
    conn.execute("DELETE FROM records WHERE seq > 290")
    sql_bad(store, bot, path, 290, 290, f"truncated: HEAD says seq {TOTAL} but the log ends at seq 290")


def test_sqlite_dropped_day(db, bot):
    store, conn, path = db
    conn.execute("DELETE FROM records WHERE day=?", (DAYS[2].isoformat(),))
    sql_bad(store, bot, path, 181, 181, "missing: seq 121-180 absent before this record")


def test_sqlite_record_copied_from_another_agent(db, bot, vault):
    store, conn, path = db
    theirs = json.loads(lines(files(AgentFolder(vault, "other"))[0])[4])
    insert_at(conn, 71, AGENT, theirs)
    sql_bad(store, bot, path, 71, 5, "belongs to another agent ('other')")


def test_sqlite_row_that_is_not_json(db, bot):
    store, conn, path = db
    conn.execute("UPDATE records SET json='not json' WHERE seq=70")
    try:
        json.loads("not json")
    except ValueError as exc:
        problem = str(exc)
    sql_bad(store, bot, path, 70, None, f"unreadable line: not valid JSON ({problem})")


@pytest.mark.parametrize("change, line_of, seq, reason", [
    ("UPDATE heads SET hash='x'", "heads", TOTAL, "HEAD's hash does not match the last record (rewritten?)"),
    ("DELETE FROM heads", "heads", None, "log/HEAD is missing (deleted, or a rewrite?)"),
    ("UPDATE heads SET seq=seq+1", TOTAL, TOTAL, f"truncated: HEAD says seq {TOTAL + 1} but the log ends at seq {TOTAL}"),
])
def test_sqlite_rewritten_head(db, bot, change, line_of, seq, reason):
    store, conn, path = db
    conn.execute(change)
    if line_of == "heads":
        result = store.verify(bot)
        assert result.first_bad == {"file": f"{path}#heads", "line": 1, "seq": seq, "reason": reason}
    else:
        sql_bad(store, bot, path, line_of, seq, reason)


def test_sqlite_consistent_rewrite_is_caught_by_the_anchor(db, bot):
    store, conn, path = db
    head = store.head(bot)
    anchor = f"{head['seq']}:{head['hash']}"
    prev = None
    for seq in range(1, TOTAL + 1):
        row_id, record = row(conn, seq)
        record = rehashed({**record, "cost_usd": 0.0}, prev=prev)
        # A consistent rewrite: the indexed columns too (verify checks them against the JSON).
        values = rows.columns(AGENT, record)
        conn.execute(f"UPDATE records SET {', '.join(c + '=?' for c in rows.COLUMNS)}, json=? WHERE id=?",
                     (*values, row_id))
        prev = record["hash"]
    conn.execute("UPDATE heads SET hash=?", (prev,))
    assert store.verify(bot).ok
    sql_bad(store, bot, path, TOTAL, TOTAL, "differs from the anchor: the log was rewritten", anchor)
