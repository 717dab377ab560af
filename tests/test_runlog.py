"""The chained log (spec/07): seq, prev, hash, HEAD, verify's verdicts, legacy history."""

import json
from datetime import date

import pytest

from atomic_vault import runlog
from atomic_vault.errors import LogError
from atomic_vault.vault import AgentFolder


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "bot" / "persona").mkdir(parents=True)
    return AgentFolder(tmp_path, "bot")


def put(folder, record, day):
    """Append ``record`` dated ``day`` (a record goes to the day file of its ts)."""
    return runlog.append(folder, {**record, "ts": day.isoformat()})


def fill(folder, days=3, per_day=4):
    for d in range(days):
        for i in range(per_day):
            put(folder, {"kind": "run", "agent": folder.name, "status": "ok",
                                   "summary": f"day {d} run {i}"}, date(2026, 10, 30 + d) if d < 2 else date(2026, 11, d))
    return runlog.day_files(folder)


def lines(path):
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_records_are_chained_across_day_files(folder):
    files = fill(folder)
    assert [f.name for f in files] == ["2026-10-30.jsonl", "2026-10-31.jsonl", "2026-11-02.jsonl"]
    records = [r for _, _, r in runlog.records(folder)]
    assert [r["seq"] for r in records] == list(range(1, 13))
    assert records[0]["prev"] is None
    assert all(b["prev"] == a["hash"] == runlog.record_hash(a) for a, b in zip(records, records[1:]))
    assert json.loads(folder.head.read_text()) == {"seq": 12, "hash": records[-1]["hash"]}
    result = runlog.verify(folder)
    assert result.ok and result.records == 12 and result.warnings == []


def test_the_hash_is_sha256_of_canonical_json_without_hash(folder):
    import hashlib
    record = put(folder, {"agent": "bot", "x": "é", "a": [1, 2]}, date(2026, 1, 1))
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert record["hash"] == hashlib.sha256(canonical).hexdigest()


def test_a_clock_that_goes_back_never_appends_before_the_chain_end(folder):
    put(folder, {"agent": "bot"}, date(2026, 5, 2))
    put(folder, {"agent": "bot"}, date(2026, 5, 1))
    assert [f.name for f in runlog.day_files(folder)] == ["2026-05-02.jsonl"]
    assert runlog.verify(folder).ok


def rewrite(path, new_lines):
    path.write_text("".join(new_lines), encoding="utf-8")


def test_edited_record(folder):
    files = fill(folder)
    content = lines(files[1])
    content[1] = content[1].replace("day 1 run 1", "day 1 run X")
    rewrite(files[1], content)
    bad = runlog.verify(folder).first_bad
    assert bad["seq"] == 6 and bad["reason"].startswith("edited") and bad["line"] == 2


def test_deleted_record(folder):
    files = fill(folder)
    content = lines(files[0])
    del content[2]
    rewrite(files[0], content)
    bad = runlog.verify(folder).first_bad
    assert bad["seq"] == 4 and bad["reason"].startswith("missing: seq 3")


def test_inserted_forged_record(folder):
    files = fill(folder)
    records = [json.loads(line) for line in lines(files[0])]
    forged = {**records[1], "summary": "forged"}
    forged["hash"] = runlog.record_hash(forged)
    content = lines(files[0])
    content.insert(2, json.dumps(forged) + "\n")
    rewrite(files[0], content)
    bad = runlog.verify(folder).first_bad
    assert bad["seq"] == 2 and bad["line"] == 3 and bad["reason"].startswith("reordered or duplicated")


def test_swapped_records(folder):
    files = fill(folder)
    content = lines(files[0])
    content[1], content[2] = content[2], content[1]
    rewrite(files[0], content)
    bad = runlog.verify(folder).first_bad
    assert bad["seq"] == 3 and bad["reason"].startswith("missing")


def test_truncated_tail_and_dropped_day_file(folder):
    files = fill(folder)
    rewrite(files[2], lines(files[2])[:2])
    bad = runlog.verify(folder).first_bad
    assert bad["reason"].startswith("truncated: HEAD says seq 12") and bad["seq"] == 10
    files[1].unlink()
    assert runlog.verify(folder).first_bad["reason"].startswith("missing: seq 5-8")


def test_records_of_another_agent(folder, tmp_path):
    other = AgentFolder(tmp_path, "other")
    (tmp_path / "other").mkdir()
    fill(other)
    files = fill(folder)
    rewrite(files[0], lines(files[0]) + [lines(runlog.day_files(other)[0])[0]])
    bad = runlog.verify(folder).first_bad
    assert bad["reason"] == "belongs to another agent ('other')" and bad["line"] == 5


def test_rewritten_or_missing_head(folder):
    fill(folder)
    folder.head.write_text(json.dumps({"seq": 12, "hash": "0" * 64}))
    assert "HEAD's hash does not match" in runlog.verify(folder).first_bad["reason"]
    folder.head.unlink()
    assert "HEAD is missing" in runlog.verify(folder).first_bad["reason"]


def test_head_behind_is_a_warning_not_a_break(folder):
    fill(folder)
    records = [r for _, _, r in runlog.records(folder)]
    runlog.write_head(folder, 11, records[10]["hash"])
    result = runlog.verify(folder)
    assert result.ok and "HEAD is behind" in result.warnings[0]
    put(folder, {"agent": "bot"}, date(2026, 11, 3))
    assert runlog.verify(folder).ok and runlog.read_head(folder)["seq"] == 13


def test_appending_after_truncation_is_refused(folder):
    files = fill(folder)
    rewrite(files[2], lines(files[2])[:1])
    with pytest.raises(LogError, match="records are missing"):
        put(folder, {"agent": "bot"}, date(2026, 11, 3))


def test_legacy_unchained_records_come_first_then_the_chain(folder):
    legacy = folder.log_file(date(2026, 9, 1))
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"ts": "2026-09-01T07:00:00", "agent": "bot", "status": "ok"}\n' * 3)
    record = put(folder, {"agent": "bot"}, date(2026, 9, 1))
    assert record["seq"] == 1 and record["prev"] is None
    result = runlog.verify(folder)
    assert result.ok and result.legacy == 3 and result.records == 1
    with open(legacy, "a") as handle:
        handle.write('{"ts": "late", "agent": "bot"}\n')
    assert runlog.verify(folder).first_bad["reason"].startswith("inserted: an unchained record")


def test_anchor_catches_a_consistent_rewrite(folder):
    fill(folder)
    head = runlog.read_head(folder)
    anchor = f"{head['seq']}:{head['hash']}"
    assert runlog.verify(folder, anchor).ok
    # A full, consistent rewrite: every record re-chained with one edit, HEAD rewritten too.
    for path in runlog.day_files(folder):
        path.unlink()
    folder.head.unlink()
    for i in range(12):
        put(folder, {"kind": "run", "agent": "bot", "status": "ok", "summary": f"rewritten {i}"},
                      date(2026, 10, 30))
    assert runlog.verify(folder).ok  # the one case verify cannot catch alone
    assert runlog.verify(folder, anchor).first_bad["reason"].startswith("differs from the anchor")
