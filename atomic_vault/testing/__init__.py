"""Conformance suites: one per storage Protocol, for every implementation.

A backend conforms when its suite passes. Subclass the suite in a test module and give it
the fixture that builds your backend (``memory``, ``log``, ``lock`` or ``journal``)::

    import pytest
    from atomic_vault.testing import LogBackendSuite

    class TestMyLog(LogBackendSuite):
        @pytest.fixture
        def log(self, tmp_path):
            return MyLog(url="mydb://...", root=tmp_path)

Every test builds its agents under pytest's ``tmp_path`` (the ``agent`` fixture), so a
backend that keys rows by agent name must isolate tests itself (a fresh schema, database or
key prefix per test). Multi-process tests fork: the backend object must reopen its
connections in a child process. A lock backend whose stale locks expire after a lease
overrides ``stale_after`` (seconds).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ..errors import AtomicVaultError, LockLost, LockTimeout, LogError, NoteError
from ..notes import render_note
from ..protocols import (JournalBackend, LockBackend, LogBackend, LogQuery, MemoryBackend,
                         NoteChanged)
from .. import snapshots
from ..runlog import record_hash
from ..vault import AgentFolder

__all__ = ["MemoryBackendSuite", "LogBackendSuite", "LockBackendSuite", "JournalBackendSuite",
           "make_agent", "note_text", "many_writers", "check_many_writers"]

_FORK = multiprocessing.get_context("fork")


def make_agent(root: Path, name: str = "bot") -> AgentFolder:
    """A minimal agent folder (persona/IDENTITY.md) under ``root``."""
    (root / name / "persona").mkdir(parents=True, exist_ok=True)
    (root / name / "persona" / "IDENTITY.md").write_text(f"# {name}\n", encoding="utf-8")
    return AgentFolder(root, name)


def note_text(name: str, body: str, *, type: str = "project", last_seen: str = "2026-11-20",
              **extra: Any) -> str:
    """A valid note's Markdown text."""
    fields = {"schema_version": 1, "name": name, "description": f"about {name}", "type": type,
              "captured": "2026-11-01", "last_seen": last_seen, "sources": ["test"],
              "confidence": "high", **extra}
    return render_note(fields, body)


def _run_children(target, count: int, *args: Any) -> None:
    children = [_FORK.Process(target=target, args=(i, *args)) for i in range(count)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0, f"a writer process failed (exit code {child.exitcode})"


class _Suite:
    @pytest.fixture
    def agent(self, tmp_path: Path) -> AgentFolder:
        return make_agent(tmp_path / "vault")


# ---------------------------------------------------------------- memory

def _put_notes(i: int, memory: MemoryBackend, folder: AgentFolder, per: int) -> None:
    for n in range(per):
        memory.put(folder, f"project_w{i}_{n}.md", note_text(f"w{i} {n}", f"writer {i} note {n}"))


def _swap_in_lines(i: int, memory: MemoryBackend, folder: AgentFolder, per: int) -> None:
    """Add lines to INDEX.md and to one note by read, change, compare-and-swap, retrying
    on NoteChanged, as the runtime does: no line may be lost."""
    for n in range(per):
        for get, put in ((lambda: memory.get_index(folder),
                          lambda text, seen: memory.put_index(folder, text, expected=seen)),
                         (lambda: memory.get(folder, "project_shared.md"),
                          lambda text, seen: memory.put(folder, "project_shared.md", text, expected=seen))):
            while True:
                seen = get()
                try:
                    put(seen + f"- w{i} {n}\n", seen)
                    break
                except NoteChanged:
                    continue


class MemoryBackendSuite(_Suite):
    """MemoryBackend: notes and INDEX by file name, filters, search as plain text."""

    @pytest.fixture
    def memory(self) -> MemoryBackend:
        raise NotImplementedError("provide a `memory` fixture returning the backend under test")

    def test_is_a_memory_backend(self, memory):
        assert isinstance(memory, MemoryBackend) and isinstance(memory.name, str)

    def test_put_then_get_returns_the_exact_text(self, memory, agent):
        text = note_text("Straße 東京 ✓", "line one\n\nline two — ünïcödé 🚀\n")
        assert memory.get(agent, "project_a.md") is None
        memory.put(agent, "project_a.md", text)
        assert memory.get(agent, "project_a.md") == text
        changed = text.replace("line two", "line 2")
        memory.put(agent, "project_a.md", changed)
        assert memory.get(agent, "project_a.md") == changed

    def test_a_large_body_round_trips(self, memory, agent):
        body = "\n".join(f"paragraph {i}: " + "lorem ipsum dolor " * 20 for i in range(3000))
        text = note_text("big", body, type="reference")
        assert len(text) > 1_000_000
        memory.put(agent, "reference_big.md", text)
        assert memory.get(agent, "reference_big.md") == text
        assert "reference_big.md" in memory.scan(agent)[0]

    @pytest.mark.parametrize("bad", ["../escape.md", "project_a/../../x.md", "/etc/passwd",
                                     "INDEX.md", "project_a.txt", "notatype_a.md", "",
                                     "project_a.md/", "C:\\project_a.md", "project_\x00.md"])
    def test_names_that_are_not_note_files_are_refused(self, memory, agent, bad):
        with pytest.raises(NoteError):
            memory.put(agent, bad, note_text("x", "y"))
        with pytest.raises(NoteError):
            memory.get(agent, bad)
        assert not (agent.root / "escape.md").exists()

    def test_scan_reports_valid_notes_and_errors(self, memory, agent):
        memory.put(agent, "project_ok.md", note_text("ok", "fine"))
        memory.put(agent, "project_bad.md", "---\nname: [unclosed\n---\nbody\n")
        notes, errors = memory.scan(agent)
        assert set(notes) == {"project_ok.md"} and set(errors) == {"project_bad.md"}
        summary = notes["project_ok.md"]
        assert summary["name"] == "ok" and summary["type"] == "project"
        assert summary["last_seen"] == "2026-11-20" and summary["pinned"] is False
        assert isinstance(errors["project_bad.md"], NoteError)

    def test_list_filters(self, memory, agent):
        memory.put(agent, "user_pref.md", note_text("pref", "tea", type="user", pinned=True,
                                                     last_seen="2026-11-10"))
        memory.put(agent, "project_old.md", note_text("old", "x", last_seen="2026-10-01",
                                                      superseded_by="project_new.md"))
        memory.put(agent, "project_new.md", note_text("new", "y", last_seen="2026-11-21",
                                                      supersedes="project_old.md"))
        memory.put(agent, "decision_gone.md", note_text("gone", "z", type="decision",
                                                        archived=True, last_seen="2026-11-15"))
        files = lambda rows: [r["file"] for r in rows]  # noqa: E731
        assert files(memory.list(agent)) == ["project_new.md", "decision_gone.md",
                                             "user_pref.md", "project_old.md"]
        assert files(memory.list(agent, type="project")) == ["project_new.md", "project_old.md"]
        assert files(memory.list(agent, pinned=True)) == ["user_pref.md"]
        assert files(memory.list(agent, archived=True)) == ["decision_gone.md", "project_old.md"]
        assert files(memory.list(agent, archived=False, recent=1)) == ["project_new.md"]
        with pytest.raises(NoteError):
            memory.list(agent, type="nonsense")

    def test_delete(self, memory, agent):
        memory.put(agent, "project_a.md", note_text("a", "b"))
        assert memory.delete(agent, "project_a.md") is True
        assert memory.get(agent, "project_a.md") is None
        assert memory.delete(agent, "project_a.md") is False
        assert "project_a.md" not in memory.scan(agent)[0]

    def test_index_round_trips(self, memory, agent):
        assert memory.get_index(agent) is None
        text = "# Memory Index\n\n## Active Projects\n- [a](project_a.md) — about a ✓\n"
        memory.put_index(agent, text)
        assert memory.get_index(agent) == text

    def test_search_matches_every_word_as_plain_text(self, memory, agent):
        memory.put(agent, "project_launch.md", note_text(
            "launch plan", "The Verdemar launch moves to Thursday; the follow-up call is on "
            "Friday. Verdemar again: Verdemar."))
        memory.put(agent, "project_other.md", note_text("other", "Thursday is a weekday."))
        memory.put(agent, "reference_city.md", note_text("city", "会議は東京で開催します。北京也可以。", type="reference"))
        hits = memory.search(agent, "verdemar thursday")
        assert [h.file for h in hits] == ["project_launch.md"]
        assert "[" in hits[0].snippet and hits[0].score > 0 and hits[0].type == "project"
        assert {h.file for h in memory.search(agent, "Thursday")} == {"project_launch.md",
                                                                      "project_other.md"}
        assert [h.file for h in memory.search(agent, "東京")] == ["reference_city.md"]
        assert [h.file for h in memory.search(agent, "北京也")] == ["reference_city.md"]
        for hostile in ['"follow-up"', "follow-up AND NOT (x*)", "verdemar:* & !x | y",
                        "NEAR(a b) ^c", "'; DROP TABLE notes; --", "%_\\", "()"]:
            memory.search(agent, hostile)  # never a syntax error
        assert [h.file for h in memory.search(agent, '"follow-up"')] == ["project_launch.md"]
        assert memory.search(agent, "nowhere-to-be-found") == []
        assert memory.search(agent, "") == []
        assert len(memory.search(agent, "thursday", limit=1)) == 1

    def test_search_any_word_ranks_by_relevance(self, memory, agent):
        memory.put(agent, "project_lisbon.md", note_text(
            "lisbon office", "The door code of the Lisbon office is 4417."))
        memory.put(agent, "project_porto.md", note_text("porto office", "The Porto office opens at nine."))
        memory.put(agent, "project_other.md", note_text("other", "Nothing about that here."))
        hits = memory.search(agent, "door code lisbon", match="any")
        assert [h.file for h in hits] == ["project_lisbon.md"]
        hits = memory.search(agent, "lisbon office door", match="any")
        assert [h.file for h in hits][:2] == ["project_lisbon.md", "project_porto.md"]
        assert hits[0].score > hits[1].score > 0
        assert memory.search(agent, "lisbon office door", match="all")[0].file == "project_lisbon.md"
        assert len(memory.search(agent, "office", match="any", limit=1)) == 1
        for hostile in ['"office', "office AND NOT (x*)", "NEAR(office door) ^c", "office OR",
                        "'; DROP TABLE notes; --", "*", "()", '" OR "']:
            memory.search(agent, hostile, match="any")  # never a syntax error
        assert memory.search(agent, "", match="any") == []
        with pytest.raises(ValueError):
            memory.search(agent, "office", match="some")

    def test_search_sees_every_change(self, memory, agent):
        memory.put(agent, "project_a.md", note_text("a", "apricot banana"))
        assert [h.file for h in memory.search(agent, "apricot")] == ["project_a.md"]
        assert [h.file for h in memory.search(agent, "apricot", match="any")] == ["project_a.md"]
        memory.put(agent, "project_a.md", note_text("a", "cherry banana"))
        assert memory.search(agent, "apricot") == []
        assert memory.search(agent, "apricot", match="any") == []
        assert [h.file for h in memory.search(agent, "cherry")] == ["project_a.md"]
        assert [h.file for h in memory.search(agent, "cherry", match="any")] == ["project_a.md"]
        memory.delete(agent, "project_a.md")
        assert memory.search(agent, "cherry") == []
        assert memory.search(agent, "cherry", match="any") == []

    def test_reindex_counts_the_notes(self, memory, agent):
        for i in range(5):
            memory.put(agent, f"project_n{i}.md", note_text(f"n{i}", f"body {i} quince"))
        done: list[int] = []
        assert memory.reindex(agent, done.append) == 5
        assert sum(done) >= 5
        assert len(memory.search(agent, "quince")) == 5

    def test_agents_are_kept_apart(self, memory, agent):
        other = make_agent(agent.root, "other")
        memory.put(agent, "project_a.md", note_text("a", "mine"))
        memory.put(other, "project_a.md", note_text("a", "theirs"))
        assert "mine" in memory.get(agent, "project_a.md")
        assert [h.file for h in memory.search(other, "mine")] == []

    def test_concurrent_writers_lose_nothing(self, memory, agent):
        memory.scan(agent)
        _run_children(_put_notes, 4, memory, agent, 10)
        notes, errors = memory.scan(agent)
        assert not errors and len(notes) == 40

    # -- compare-and-swap: ``expected`` is the text the caller read (None: no note)

    def test_put_with_expected_replaces_only_the_text_that_was_read(self, memory, agent):
        memory.put(agent, "project_a.md", note_text("a", "first"), expected=None)
        seen = memory.get(agent, "project_a.md")
        by_hand = note_text("edited by hand", "first, and a hand edit")
        memory.put(agent, "project_a.md", by_hand)  # someone else, between read and write
        with pytest.raises(NoteChanged) as caught:
            memory.put(agent, "project_a.md", note_text("a", "zucchini from the run"), expected=seen)
        assert isinstance(caught.value, NoteError)
        assert "project_a.md" in str(caught.value)
        assert "changed while being updated" in caught.value.message and caught.value.fix
        assert memory.get(agent, "project_a.md") == by_hand
        assert memory.scan(agent)[0]["project_a.md"]["name"] == "edited by hand"
        assert memory.search(agent, "zucchini") == []
        memory.put(agent, "project_a.md", note_text("a", "zucchini, re-applied"), expected=by_hand)
        assert "re-applied" in memory.get(agent, "project_a.md")
        assert [h.file for h in memory.search(agent, "zucchini")] == ["project_a.md"]

    def test_put_expecting_no_note_never_replaces_one(self, memory, agent):
        memory.put(agent, "project_a.md", note_text("a", "there first"))
        with pytest.raises(NoteChanged) as caught:
            memory.put(agent, "project_a.md", note_text("a", "mine"), expected=None)
        assert "project_a.md" in str(caught.value)
        assert "there first" in memory.get(agent, "project_a.md")

    def test_put_expecting_a_note_that_was_removed_is_refused(self, memory, agent):
        text = note_text("a", "short-lived")
        memory.put(agent, "project_a.md", text)
        memory.delete(agent, "project_a.md")
        with pytest.raises(NoteChanged):
            memory.put(agent, "project_a.md", note_text("a", "revived"), expected=text)
        assert memory.get(agent, "project_a.md") is None
        assert "project_a.md" not in memory.scan(agent)[0]

    def test_put_with_the_text_already_stored_succeeds(self, memory, agent):
        text = note_text("a", "steady")
        memory.put(agent, "project_a.md", text)
        memory.put(agent, "project_a.md", text, expected=text)
        assert memory.get(agent, "project_a.md") == text

    def test_put_index_with_expected_is_a_compare_and_swap(self, memory, agent):
        with pytest.raises(NoteChanged):
            memory.put_index(agent, "# Memory Index\n", expected="# an index never stored\n")
        assert memory.get_index(agent) is None
        first = "# Memory Index\n\n## Active Projects\n- [a](project_a.md) — a\n"
        memory.put_index(agent, first, expected=None)
        with pytest.raises(NoteChanged):
            memory.put_index(agent, "# Memory Index\n", expected=None)
        by_hand = first + "- [b](project_b.md) — added by hand\n"
        memory.put_index(agent, by_hand)
        with pytest.raises(NoteChanged) as caught:
            memory.put_index(agent, first + "- [c](project_c.md) — c\n", expected=first)
        assert "INDEX.md" in str(caught.value)
        assert memory.get_index(agent) == by_hand
        memory.put_index(agent, by_hand + "- [c](project_c.md) — c\n", expected=by_hand)
        assert memory.get_index(agent) == by_hand + "- [c](project_c.md) — c\n"

    def test_concurrent_compare_and_swaps_lose_no_update(self, memory, agent):
        memory.put_index(agent, "# lines\n")
        memory.put(agent, "project_shared.md", note_text("shared", "lines:") + "\n")
        _run_children(_swap_in_lines, 4, memory, agent, 12)
        expected = sorted(f"- w{i} {n}" for i in range(4) for n in range(12))
        assert sorted(memory.get_index(agent).splitlines()[1:]) == expected
        note = memory.get(agent, "project_shared.md")
        assert sorted(line for line in note.splitlines() if line.startswith("- w")) == expected


# ---------------------------------------------------------------- log

def _run_record(agent: str, i: int, *, day: str = "2026-11-20", status: str = "ok",
                trigger: str = "cron", cost: float | None = 0.25, **extra: Any) -> dict[str, Any]:
    return {"kind": "run", "ts": f"{day}T09:{i // 60 % 60:02d}:{i % 60:02d}.000+01:00",
            "run_id": f"{day.replace('-', '')}T0900-{i:06d}", "agent": agent, "trigger": trigger,
            "model": "offline", "input_tokens": 100 + i, "output_tokens": 10, "cost_usd": cost,
            "status": status, "summary": f"run {i} ✓", "captures": [], "manifest": {"files": []},
            **extra}


def _append_many(i: int, log: LogBackend, folder: AgentFolder, per: int) -> None:
    for n in range(per):
        log.append(folder, _run_record(folder.name, i * 1000 + n))


def _stored_text(record: dict[str, Any]) -> str:
    """A record's JSON as every built-in store keeps it (sorted keys, compact)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _SnapshotDict:
    """A snapshot store in a dict, the other end of a migration in the suite."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def put_snapshots(self, folder: AgentFolder, texts: dict[str, str]) -> None:
        for sha, text in texts.items():
            self.texts.setdefault(sha, text)

    def get_snapshot(self, folder: AgentFolder, sha: str) -> str | None:
        return self.texts.get(sha)

    def snapshot_hashes(self, folder: AgentFolder) -> list[str]:
        return sorted(self.texts)


class LogBackendSuite(_Suite):
    """LogBackend: the chain, queries, cost rollups, verification, migration imports, and
    a tamper matrix: what someone with access to the store can change, verify must see.

    The tamper tests edit the store behind the backend's back through two hooks a store's
    suite overrides: ``edit_stored`` (replace or remove one record's stored JSON) and
    ``derived_forgeries`` (change each derived value the store keeps: indexed columns,
    spend tables, rollup caches). Without ``edit_stored`` those tests are skipped.
    """

    @pytest.fixture
    def log(self) -> LogBackend:
        raise NotImplementedError("provide a `log` fixture returning the backend under test")

    def edit_stored(self, log: LogBackend, folder: AgentFolder, seq: int, text: str | None) -> None:
        """Replace the stored JSON text of the record stored as ``seq`` (its row, or the
        seq-th line of a file log) with ``text`` (None: remove it), bypassing the backend,
        as an editor or a database client would."""
        pytest.skip(f"{type(self).__name__} has no edit_stored hook for the tamper matrix")

    def derived_forgeries(self, log: LogBackend) -> dict[str, Any]:
        """{name: function(folder)}, each changing one derived value the store keeps
        (an indexed column, a spend table, a rollup cache) and leaving the records alone.
        Empty when the store keeps nothing derived."""
        return {}

    def edit_snapshot(self, log: LogBackend, folder: AgentFolder, sha: str, text: str) -> None:
        """Replace the stored text of snapshot ``sha`` behind the backend's back."""
        pytest.skip(f"{type(self).__name__} has no edit_snapshot hook")

    @pytest.fixture
    def other_log(self, log) -> LogBackend:
        """A second, empty store of the same kind, for the import tests. The default reuses
        ``log`` with an agent folder in another vault root, which is a separate store only
        for backends that keep the log inside the agent folder: override it otherwise."""
        return log

    def test_is_a_log_backend(self, log):
        assert isinstance(log, LogBackend) and isinstance(log.name, str)

    def test_append_chains_records(self, log, agent):
        log.ready(agent)
        assert log.head(agent) is None and list(log.records(agent)) == []
        first = log.append(agent, _run_record(agent.name, 1))
        second = log.append(agent, _run_record(agent.name, 2))
        assert (first["seq"], first["prev"]) == (1, None)
        assert (second["seq"], second["prev"]) == (2, first["hash"])
        assert second["hash"] == record_hash(second)
        assert log.head(agent) == {"seq": 2, "hash": second["hash"], **_fence_part(log.head(agent))}
        assert list(log.records(agent)) == [first, second]
        result = log.verify(agent)
        assert result.ok and result.records == 2

    def test_the_generation_moves_on_every_commit(self, log, agent):
        assert log.generation(agent) == 0
        seen = [log.generation(agent)]
        for i in range(3):
            log.append(agent, _run_record(agent.name, i + 1))
            seen.append(log.generation(agent))
        assert seen == sorted(set(seen)) and len(seen) == 4  # strictly growing, one step per record
        assert log.generation(agent) == log.generation(agent)  # reading it changes nothing

    def test_records_come_back_exactly(self, log, agent):
        big = {"files": [{"source": f"memory/n{i}.md", "sha256": "ab" * 32, "tokens": i}
                         for i in range(5000)]}
        record = _run_record(agent.name, 1, summary="ünïcödé 東京 \"quoted\" \\ \n newline",
                             manifest=big, nested={"a": [1, 2.5, None, True, {"b": "c"}]})
        stored = log.append(agent, record)
        assert list(log.records(agent)) == [stored]
        assert log.get(agent, record["run_id"]) == stored
        assert log.get(agent, "no-such-run") is None
        assert log.verify(agent).ok

    def test_a_record_of_another_agent_is_refused(self, log, agent):
        with pytest.raises(AtomicVaultError):
            log.append(agent, _run_record("someone-else", 1))
        assert list(log.records(agent)) == []

    def test_query_filters_and_keeps_chain_order(self, log, agent):
        for i, (day, status, trigger) in enumerate([
                ("2026-10-30", "ok", "cron"), ("2026-10-31", "error", "manual"),
                ("2026-11-01", "ok", "manual"), ("2026-11-01", "skipped", "cron"),
                ("2026-11-02", "ok", "cron")]):
            log.append(agent, _run_record(agent.name, i, day=day, status=status, trigger=trigger))
        log.append(agent, {"kind": "repair", "ts": "2026-11-02T10:00:00.000+01:00",
                           "agent": agent.name, "status": "ok", "trigger": "doctor"})
        seqs = lambda q: [r["seq"] for r in log.query(agent, q)]  # noqa: E731
        assert seqs(LogQuery()) == [1, 2, 3, 4, 5, 6]
        assert seqs(LogQuery(since="2026-11-01")) == [3, 4, 5, 6]
        assert seqs(LogQuery(until="2026-10-31")) == [1, 2]
        assert seqs(LogQuery(since="2026-10-31", until="2026-11-01")) == [2, 3, 4]
        assert seqs(LogQuery(since="2026-11-02T09:30")) == [6]
        assert seqs(LogQuery(status="ok")) == [1, 3, 5, 6]
        assert seqs(LogQuery(trigger="cron", status="ok")) == [1, 5]
        assert seqs(LogQuery(kind="repair")) == [6]
        assert seqs(LogQuery(limit=2)) == [5, 6]
        assert seqs(LogQuery(status="ok", limit=2)) == [5, 6]
        assert seqs(LogQuery(status="nonexistent")) == []

    def test_cost_by_day_and_month(self, log, agent):
        for i, (day, cost) in enumerate([("2026-10-31", 0.5), ("2026-11-01", 0.25),
                                         ("2026-11-01", None), ("2026-11-03", 1.0)]):
            log.append(agent, _run_record(agent.name, i, day=day, cost=cost))
        log.append(agent, {"kind": "repair", "ts": "2026-11-03T10:00:00.000+01:00",
                           "agent": agent.name, "cost_usd": 99.0})
        days = [row.as_dict() for row in log.cost(agent, "day")]
        assert days == [
            {"period": "2026-10-31", "runs": 1, "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.5, "unknown_cost": 0},
            {"period": "2026-11-01", "runs": 2, "input_tokens": 203, "output_tokens": 20, "cost_usd": 0.25, "unknown_cost": 1},
            {"period": "2026-11-03", "runs": 1, "input_tokens": 103, "output_tokens": 10, "cost_usd": 1.0, "unknown_cost": 0}]
        months = {row.period: (row.runs, row.cost_usd) for row in log.cost(agent, "month")}
        assert months == {"2026-10": (1, 0.5), "2026-11": (3, 1.25)}
        assert [r.period for r in log.cost(agent, "day", since="2026-11-01", until="2026-11-02")] == ["2026-11-01"]
        with pytest.raises(LogError):
            log.cost(agent, "week")

    def test_concurrent_appends_never_fork_the_chain(self, log, agent):
        log.ready(agent)
        _run_children(_append_many, 4, log, agent, 15)
        records = list(log.records(agent))
        assert [r["seq"] for r in records] == list(range(1, 61))
        assert len({r["run_id"] for r in records}) == 60
        assert log.verify(agent).ok

    def test_a_lower_fencing_token_is_refused(self, log, agent):
        log.append(agent, _run_record(agent.name, 1), fence=("test-lock", 5))
        log.append(agent, _run_record(agent.name, 2), fence=("test-lock", 5))
        with pytest.raises(LockLost):
            log.append(agent, _run_record(agent.name, 3), fence=("test-lock", 4))
        log.append(agent, _run_record(agent.name, 4), fence=("other-lock", 1))
        log.append(agent, _run_record(agent.name, 5), fence=("test-lock", 6))
        assert [r["run_id"][-1] for r in log.records(agent)] == ["1", "2", "4", "5"]
        assert log.verify(agent).ok

    def test_verify_checks_an_anchor(self, log, agent):
        records = [log.append(agent, _run_record(agent.name, i)) for i in range(3)]
        assert log.verify(agent, anchor=f"2:{records[1]['hash']}").ok
        bad = log.verify(agent, anchor=f"2:{'0' * 64}")
        assert not bad.ok and "anchor" in bad.first_bad["reason"] and bad.first_bad["seq"] == 2
        assert not log.verify(agent, anchor=f"9:{'0' * 64}").ok
        with pytest.raises(LogError):
            log.verify(agent, anchor="nonsense")

    def test_import_copies_the_chain_verbatim(self, log, other_log, agent):
        source = [log.append(agent, _run_record(agent.name, i, day=f"2026-11-{1 + i % 3:02d}"))
                  for i in range(12)]
        target = make_agent(agent.root.parent / "copy", agent.name)
        done: list[int] = []
        assert other_log.import_records(target, iter(source[:5]), done.append) == 5
        assert other_log.import_records(target, iter(source[5:])) == 7
        assert sum(done) == 5
        assert list(other_log.records(target)) == source
        assert other_log.head(target)["hash"] == source[-1]["hash"]
        assert other_log.verify(target).ok
        assert other_log.cost(target, "day") == log.cost(agent, "day")  # rollups follow imports
        other_log.append(target, _run_record(agent.name, 99))
        assert other_log.verify(target).ok

    def test_import_refuses_what_does_not_continue_the_chain(self, log, other_log, agent):
        source = [log.append(agent, _run_record(agent.name, i)) for i in range(4)]
        target = make_agent(agent.root.parent / "copy2", agent.name)
        with pytest.raises(LogError):
            other_log.import_records(target, iter(source[1:]))  # a gap at the start
        forged = {**source[0], "summary": "forged"}
        with pytest.raises(LogError):
            other_log.import_records(target, iter([forged]))  # hash no longer matches
        assert list(other_log.records(target)) == []

    def test_agents_have_separate_chains(self, log, agent):
        other = make_agent(agent.root, "other")
        log.append(agent, _run_record(agent.name, 1))
        stored = log.append(other, _run_record("other", 1))
        assert stored["seq"] == 1 and [r["agent"] for r in log.records(other)] == ["other"]
        assert log.verify(agent).ok and log.verify(other).ok


    # ---- snapshots (spec/07): content-addressed texts beside the records

    def test_snapshots_are_stored_once_and_read_back_exactly(self, log, agent):
        texts = {snapshots.digest(t): t for t in ["answer ✓\n", "", "x" * 200_000, "line\r\nnext"]}
        log.put_snapshots(agent, texts)
        log.put_snapshots(agent, texts)  # again: nothing changes, nothing fails
        assert log.snapshot_hashes(agent) == sorted(texts)
        assert all(log.get_snapshot(agent, sha) == text for sha, text in texts.items())
        assert log.get_snapshot(agent, "0" * 64) is None
        other = make_agent(agent.root, "other")
        assert log.snapshot_hashes(other) == [] and log.get_snapshot(other, next(iter(texts))) is None
        gone = sorted(texts)[:2]
        assert log.delete_snapshots(agent, gone + ["f" * 64]) == 2
        assert log.snapshot_hashes(agent) == sorted(texts)[2:]

    def test_a_run_names_its_snapshots_and_they_verify(self, log, agent):
        taken = snapshots.take(str, [{"layer": "soul", "source": "persona/SOUL.md", "text": "## s\n\nkind"}],
                               "the work", "the answer", ["timeout"], ['{"type": "fact"}'])
        log.put_snapshots(agent, taken.texts)
        record = log.append(agent, _run_record(agent.name, 1, snapshots=taken.refs,
                                               manifest={"files": [{"source": "persona/SOUL.md",
                                                                    "snapshot": taken.layers[0]}]}))
        assert set(snapshots.named(record)) == set(taken.texts)
        assert list(snapshots.check(log, agent, log.records(agent))) == []
        assert log.verify(agent).ok

    def test_an_altered_snapshot_is_named_as_tampering(self, log, agent):
        taken = snapshots.take(str, [], "the work", "the answer", [], [])
        log.put_snapshots(agent, taken.texts)
        log.append(agent, _run_record(agent.name, 1, snapshots=taken.refs))
        self.edit_snapshot(log, agent, taken.refs["answer"], "a forged answer")
        problems = [p for _, p in snapshots.check(log, agent, log.records(agent))]
        assert problems == [f"tampered: snapshot {taken.refs['answer']} does not match its hash"]

    def test_a_missing_snapshot_is_pruned_only_when_a_prune_record_says_so(self, log, agent):
        taken = snapshots.take(str, [], "the work", "the answer", [], [])
        log.put_snapshots(agent, taken.texts)
        log.append(agent, _run_record(agent.name, 1, snapshots=taken.refs))
        log.delete_snapshots(agent, [taken.refs["answer"]])
        problems = [p for _, p in snapshots.check(log, agent, log.records(agent))]
        assert problems == [f"missing: snapshot {taken.refs['answer']} is gone and no prune record removed it"]
        log.append(agent, {"kind": "prune", "ts": "2026-11-21T09:00:00.000+01:00", "agent": agent.name,
                           "status": "ok", "removed": [taken.refs["answer"]]})
        assert list(snapshots.check(log, agent, log.records(agent))) == []
        assert log.verify(agent).ok

    def test_migrate_copies_the_snapshots(self, log, agent):
        from ..migrate import copy_snapshots

        texts = {snapshots.digest(t): t for t in ["one", "two ✓"]}
        log.put_snapshots(agent, texts)
        outside = _SnapshotDict()
        assert copy_snapshots(agent, log, outside) == 2 and outside.texts == texts
        assert copy_snapshots(agent, log, outside) == 0  # already there
        other = make_agent(agent.root, "arrived")
        assert copy_snapshots(other, outside, log) == 2
        assert {sha: log.get_snapshot(other, sha) for sha in log.snapshot_hashes(other)} == texts

    # ---- the tamper matrix (every store, through the hooks above)

    def _four_runs(self, log: LogBackend, folder: AgentFolder) -> list[dict[str, Any]]:
        return [log.append(folder, _run_record(folder.name, i, day=f"2026-11-{20 + i // 2}"))
                for i in range(4)]

    def test_tamper_an_edited_field_is_caught(self, log, agent):
        records = self._four_runs(log, agent)
        self.edit_stored(log, agent, 2, _stored_text({**records[1], "cost_usd": 0.0}))
        bad = log.verify(agent)
        assert not bad.ok and bad.first_bad["seq"] == 2 and bad.first_bad["reason"].startswith("edited")

    def test_tamper_a_dropped_record_is_caught(self, log, agent):
        self._four_runs(log, agent)
        self.edit_stored(log, agent, 2, None)
        bad = log.verify(agent)
        assert not bad.ok and bad.first_bad["seq"] == 3 and bad.first_bad["reason"].startswith("missing")

    def test_tamper_a_cut_tail_is_caught(self, log, agent):
        self._four_runs(log, agent)
        self.edit_stored(log, agent, 4, None)
        bad = log.verify(agent)
        assert not bad.ok and bad.first_bad["reason"].startswith("truncated: HEAD says seq 4")

    def test_tamper_reordered_records_are_caught(self, log, agent):
        records = self._four_runs(log, agent)
        self.edit_stored(log, agent, 2, _stored_text(records[2]))
        self.edit_stored(log, agent, 3, _stored_text(records[1]))
        bad = log.verify(agent)
        assert not bad.ok and bad.first_bad["seq"] in (2, 3)

    def test_tamper_a_duplicate_key_is_caught(self, log, agent):
        # The forged copy first, the original last: a reader keeping the last copy hashes
        # the original and would find nothing wrong, one keeping the first sees the forgery.
        records = self._four_runs(log, agent)
        self.edit_stored(log, agent, 2, '{"cost_usd":0.0,' + _stored_text(records[1])[1:])
        bad = log.verify(agent)
        assert not bad.ok and "duplicate key 'cost_usd'" in bad.first_bad["reason"]
        assert bad.first_bad["reason"].startswith("tampered")

    def test_tamper_a_forged_derived_value_is_caught(self, log, agent):
        for n, (name, forge) in enumerate(self.derived_forgeries(log).items()):
            folder = make_agent(agent.root, f"forged{n}")
            self._four_runs(log, folder)
            assert log.verify(folder).ok
            forge(folder)
            bad = log.verify(folder)
            assert not bad.ok, f"{name} was forged and the log still verifies"
            assert bad.first_bad["reason"].startswith("tampered"), bad.first_bad


def _fence_part(head: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (head or {}).items() if k not in ("seq", "hash")}


# ---------------------------------------------------------------- lock

def _count_under_lock(i: int, lock: LockBackend, folder: AgentFolder, per: int, path: str) -> None:
    for _ in range(per):
        with lock.hold(folder, 60) as lease:
            value = int(Path(path).read_text() or 0)
            time.sleep(0.001)
            lease.check()
            Path(path).write_text(str(value + 1))


def _hold_and_report(folder: AgentFolder, lock: LockBackend, ready, release) -> None:
    with lock.hold(folder, 10):
        ready.set()
        release.wait(30)


def _hold_forever(folder: AgentFolder, lock: LockBackend, ready) -> None:
    with lock.hold(folder, 10):
        ready.set()
        time.sleep(300)


class LockBackendSuite(_Suite):
    """LockBackend: exclusion, timeouts, growing fencing tokens, stale-lock recovery."""

    stale_after: float = 0.0  # seconds after a holder's death until the lock is free

    @pytest.fixture
    def lock(self) -> LockBackend:
        raise NotImplementedError("provide a `lock` fixture returning the backend under test")

    def test_is_a_lock_backend(self, lock):
        assert isinstance(lock, LockBackend) and isinstance(lock.name, str)

    def test_tokens_grow_and_the_lock_is_released(self, lock, agent):
        tokens = []
        for _ in range(3):
            with lock.hold(agent, 5) as lease:
                lease.check()
                tokens.append(lease.token)
        assert tokens[0] < tokens[1] < tokens[2]

    def test_held_elsewhere_times_out(self, lock, agent):
        ready, release = _FORK.Event(), _FORK.Event()
        child = _FORK.Process(target=_hold_and_report, args=(agent, lock, ready, release))
        child.start()
        try:
            assert ready.wait(30)
            for timeout in (0, 0.3):
                with pytest.raises(LockTimeout):
                    with lock.hold(agent, timeout):
                        pass
                assert child.is_alive()  # given up on, the holder holds on: the lock is still its
            import threading  # only this test needs a thread: a waiter in this process

            waiting = threading.Event()
            got: list[Any] = []

            def wait_for_it() -> None:
                waiting.set()
                try:
                    with lock.hold(agent, 30) as lease:
                        got.append(lease.token)
                except BaseException as exc:  # reported below, not lost with the thread
                    got.append(exc)

            waiter = threading.Thread(target=wait_for_it)
            waiter.start()
            assert waiting.wait(30)
            release.set()  # a waiter within its timeout gets the lock once the holder lets go
            waiter.join(60)
            assert len(got) == 1 and isinstance(got[0], int), got
        finally:
            release.set()
            child.join(30)
        with lock.hold(agent, 10):
            pass

    def test_agents_have_separate_locks(self, lock, agent):
        other = make_agent(agent.root, "other")
        with lock.hold(agent, 1):
            with lock.hold(other, 0):
                pass

    def test_mutual_exclusion_across_processes(self, lock, agent, tmp_path):
        counter = tmp_path / "counter"
        counter.write_text("0")
        _run_children(_count_under_lock, 4, lock, agent, 10, str(counter))
        assert counter.read_text() == "40"

    def test_a_dead_holder_does_not_block_for_long(self, lock, agent):
        ready = _FORK.Event()
        child = _FORK.Process(target=_hold_forever, args=(agent, lock, ready))
        child.start()
        assert ready.wait(30)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        with lock.hold(agent, self.stale_after + 10) as lease:
            lease.check()


# ---------------------------------------------------------------- journal

def _write_sections(i: int, journal: JournalBackend, folder: AgentFolder, per: int) -> None:
    when = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    for n in range(per):
        journal.append(folder, when, f"\n## writer {i} entry {n}\n\ntext\n")


class JournalBackendSuite(_Suite):
    """JournalBackend: sections appended per day, recent days read back in order."""

    @pytest.fixture
    def journal(self) -> JournalBackend:
        raise NotImplementedError("provide a `journal` fixture returning the backend under test")

    def test_is_a_journal_backend(self, journal):
        assert isinstance(journal, JournalBackend) and isinstance(journal.name, str)

    def test_sections_accumulate_under_one_heading_per_day(self, journal, agent):
        assert journal.recent(agent, 2) == []
        base = datetime(2026, 11, 19, 23, 30, tzinfo=timezone.utc)
        for hours, text in [(0, "first ✓"), (0.25, "second 東京"), (1, "next day"), (25, "later")]:
            journal.append(agent, base + timedelta(hours=hours), f"\n## entry\n\n{text}\n")
        days = journal.recent(agent, 2)
        assert [source for source, _ in days] == ["journal/2026-11/2026-11-20.md",
                                                  "journal/2026-11/2026-11-21.md"]
        assert days[0][1].startswith("# 2026-11-20\n") and "next day" in days[0][1]
        everything = journal.recent(agent, 10)
        assert len(everything) == 3 and everything[0][1].count("# 2026-11-19") == 1
        assert everything[0][1].index("first ✓") < everything[0][1].index("second 東京")
        assert journal.recent(agent, 0) == []

    def test_concurrent_appends_keep_whole_sections(self, journal, agent):
        _run_children(_write_sections, 4, journal, agent, 10)
        (_, text), = journal.recent(agent, 1)
        assert text.count("\n## writer ") == 40 and text.count("# 2026-11-20\n") == 1
        for i in range(4):
            for n in range(10):
                assert f"## writer {i} entry {n}\n\ntext\n" in text


# ---------------------------------------------------------------- whole runs, many processes

def _calls(worker: int, root: str, name: str, calls: int, backends: dict[str, Any]) -> None:
    from ..agent import AtomicAgent  # here: the suites above need no runtime

    agent = AtomicAgent(name, root=root, trigger=f"w{worker}", model="offline",
                        lock_timeout=300, **backends)
    for i in range(calls):
        agent.call(f"Run {worker}-{i}\nremember: project: worker {worker} item {i}")


def many_writers(root: Path, name: str, *, workers: int = 8, calls: int = 50,
                 timeout: float = 600, **backends: Any) -> float:
    """Run ``workers`` processes x ``calls`` calls of one agent at once, each call capturing
    one note, then check that nothing was lost; returns the seconds the calls took.

    ``backends`` are the agent's ``memory``, ``log``, ``lock`` and ``journal`` choices (names,
    with URLs from ``ATOMIC_VAULT_<KIND>_URL``, or objects that survive a fork). The agent's
    log must start empty. Checked: exactly one record per call, ``seq`` 1..N without a gap,
    the chain verifies, every capture was written and is listed in INDEX.md (read through
    the memory backend), and the journal holds exactly one section per run.
    """
    started = time.perf_counter()
    children = [_FORK.Process(target=_calls, args=(w, str(root), name, calls, backends))
                for w in range(workers)]
    for child in children:
        child.start()
    deadline = started + timeout
    for child in children:
        child.join(max(deadline - time.perf_counter(), 0))
    hung = [child for child in children if child.is_alive()]
    for child in hung:
        child.kill()
        child.join()
    assert not hung, f"{len(hung)} writer processes still ran after {timeout} s"
    failed = [child.exitcode for child in children if child.exitcode != 0]
    assert not failed, f"writer processes failed (exit codes {failed})"
    seconds = time.perf_counter() - started
    check_many_writers(root, name, workers=workers, calls=calls, **backends)
    return seconds


def check_many_writers(root: Path, name: str, *, workers: int, calls: int, **backends: Any) -> None:
    """The checks of ``many_writers`` on an agent it has run; AssertionError names what
    was lost."""
    from .. import index
    from ..agent import AtomicAgent

    agent = AtomicAgent(name, root=str(root), **backends)
    folder, total = agent.folder, workers * calls
    records = list(agent.log.records(folder))
    assert len(records) == total, f"{len(records)} log records for {total} calls"
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, total + 1)), f"seq is not 1..{total} without a gap: {seqs[:20]}…"
    verified = agent.log.verify(folder)
    assert verified.ok, f"the chain does not verify: {verified.first_bad}"
    wanted = {f"project_worker_{w}_item_{i}.md" for w in range(workers) for i in range(calls)}
    written = {c.get("file") for r in records for c in r.get("captures", []) if c.get("status") == "written"}
    assert written == wanted, f"captures not written: {sorted(wanted - written)[:10]}"
    listed = index.listed(agent.memory.get_index(folder) or "")
    missing = sorted(f for f in wanted if listed.get(f) != index.SECTIONS["project"])
    assert not missing, f"{len(missing)} captures are not in INDEX.md, e.g. {missing[:5]}"
    journal = "".join(text for _, text in agent.journal.recent(folder, 10_000))
    sections = re.findall(r"^## .* · run (\S+)", journal, re.MULTILINE)
    runs = sorted(r["run_id"] for r in records)
    assert sorted(s for s in sections if s in set(runs)) == runs, \
        f"{len(sections)} journal sections for {total} runs (one each expected)"
