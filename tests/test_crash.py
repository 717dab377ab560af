"""Kill at any instant (spec/02): what a crash leaves, and what `doctor --repair` restores.

The harness is bench/torture.py (its long run: ``python bench/torture.py --kills 1000``);
here a short, seeded version: a kill at every write step of a run, torn appends, and
kills at random moments, for the files and the SQLite backends. Then each repair of
``doctor --repair`` on its own: done, listed in its output and in a ``repair`` record,
never editing a note or rewriting the chain.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, doctor, fileio, guardrails, runlog
from atomic_vault.cli import cli
from atomic_vault.errors import LockTimeout
from atomic_vault.locks import FileLock

_spec = importlib.util.spec_from_file_location(
    "torture", Path(__file__).resolve().parent.parent / "bench" / "torture.py")
torture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torture)


# ---- the harness, short ----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["files", "sqlite"])
def test_kills_at_every_write_step_and_at_random_moments_lose_and_corrupt_nothing(tmp_path, backend):
    steps = torture.steps_of_a_call(tmp_path, backend)
    run = torture.Torture(tmp_path / backend, backend, seed=7, steps_per_call=steps)
    kills = [("step", n) for n in range(1, steps + 1)]  # every step of one call, in turn
    # torn appends: the key index, the ledger's and the run's log lines, the journal
    kills += [("torn", n, cut) for n, cut in ((1, 0.3), (2, 0.6), (1, 0.95), (3, 0.5), (4, 0.7), (6, 0.4))]
    kills += [("time", t) for t in (0.0, 0.01, 0.02, 0.04, 0.06, 0.09, 0.12)]
    for kill in kills:
        run.round(kill)
    run.round(("step", 3), kill_repair=("step", 2))  # and a repair killed midway
    run.final_check()
    assert run.problems == []
    assert len(run.acked) >= 5  # calls did return between the kills
    if backend == "files":  # the step kills did land mid-write (SQLite logs in transactions)
        assert {"temp file", "torn log line", "HEAD"} <= set(run.repairs)


# ---- doctor --repair, one repair at a time ---------------------------------------------

def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def reserve(folder, pid: int, usd: float = 0.25) -> str:
    directory = folder.ensure_state_dir() / guardrails.RESERVATIONS
    directory.mkdir(exist_ok=True)
    name = f"{socket.gethostname()}_{pid}_0000abcd.json"
    (directory / name).write_text(json.dumps({"usd": usd, "host": socket.gethostname(), "pid": pid,
                                              "at": time.time()}))
    return name


def notes_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.memory.glob("*.md")}


def log_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in runlog.day_files(folder))


def last_record(folder) -> dict:
    return [r for _, _, r in runlog.records(folder)][-1]


@pytest.fixture
def agent(vault):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one\nremember: project: before the crash")
    agent.call("two")
    return agent


def test_repair_moves_a_torn_last_line_aside_and_keeps_its_bytes(agent):
    folder = agent.folder
    day = runlog.day_files(folder)[-1]
    whole = day.read_bytes()
    day.write_bytes(whole + b'{"agent":"atlas","cost_usd":0.0')
    actions = doctor.repair(folder)
    assert actions[0].startswith("moved a torn line (31 bytes)")
    assert day.read_bytes().startswith(whole) and not fileio.ends_torn(day)
    assert (day.parent / (day.name + ".torn")).read_bytes() == b'{"agent":"atlas","cost_usd":0.0\n'
    assert last_record(folder)["actions"] == actions and runlog.verify(folder).ok


def test_repair_rebuilds_index_from_the_notes_and_never_edits_a_note(agent):
    folder = agent.folder
    folder.index.write_text(folder.index.read_text().replace("project_before_the_crash.md", "gone.md"))
    notes = {k: v for k, v in notes_bytes(folder).items() if k != "INDEX.md"}
    actions = doctor.repair(folder)
    assert actions == ["updated memory/INDEX.md (2 line(s) added, moved or removed)"]
    assert "project_before_the_crash.md" in folder.index.read_text()
    assert {k: v for k, v in notes_bytes(folder).items() if k != "INDEX.md"} == notes
    assert not [f for f in doctor.check(folder) if f.level == "error"]


def test_repair_advances_head_and_never_rewrites_the_chain(agent):
    folder = agent.folder
    first = [r for _, _, r in runlog.records(folder)][0]
    runlog.write_head(folder, first["seq"], first["hash"])  # a run cut off before HEAD moved
    before = log_bytes(folder)
    actions = doctor.repair(folder)
    assert actions == ["set log/HEAD to the verified tail (seq 2)"]
    assert log_bytes(folder).startswith(before)  # only the repair record was added
    assert runlog.read_head(folder)["seq"] == 3 == last_record(folder)["seq"]
    assert runlog.verify(folder).warnings == []


def test_a_first_run_cut_off_after_its_append_leaves_head_behind_not_missing(vault, monkeypatch):
    calls = []

    def stop_at_second_head(point, path):
        if point == "temp:complete" and path.name == "HEAD":
            calls.append(path)
            if len(calls) == 2:
                raise KeyboardInterrupt  # as a kill would, after the append

    monkeypatch.setattr(fileio, "fault_hook", stop_at_second_head)
    agent = AtomicAgent("atlas", root=vault)
    with pytest.raises(KeyboardInterrupt):
        agent.call("first ever")
    monkeypatch.setattr(fileio, "fault_hook", None)
    result = runlog.verify(agent.folder)
    assert result.ok and result.records == 1 and "HEAD is behind" in result.warnings[0]
    assert doctor.repair(agent.folder)[0] == "set log/HEAD to the verified tail (seq 1)"
    assert runlog.verify(agent.folder).warnings == []


def test_repair_removes_leftover_temp_files(agent):
    folder = agent.folder
    (folder.memory / ".INDEX.md.4242.9f1c03aa.avtmp").write_text("half")
    (folder.log / ".HEAD.4242.9f1c03ab.avtmp").write_text("{")
    actions = doctor.repair(folder)
    assert actions[:2] == ["removed leftover temp file log/.HEAD.4242.9f1c03ab.avtmp",
                           "removed leftover temp file memory/.INDEX.md.4242.9f1c03aa.avtmp"]
    assert list(folder.path.rglob("*.avtmp")) == []


def test_repair_releases_the_cost_reservations_of_dead_runs_only(agent):
    folder = agent.folder
    stale = reserve(folder, dead_pid())
    live = reserve(folder, os.getpid())
    found = [f for f in doctor.check(folder) if f.check == "lock" and f.level == "warn"]
    assert found and "1 cost reservation(s) left by runs that are no longer running" in found[0].message
    actions = doctor.repair(folder)
    assert actions == [f"removed a stale cost reservation .atomic_vault/reservations/{stale} "
                       "(its run is no longer running)"]
    assert os.listdir(folder.state / guardrails.RESERVATIONS) == [live]
    assert last_record(folder)["actions"] == actions


def test_repair_reports_a_lock_held_by_a_process_not_running_here(agent):
    folder = agent.folder
    with FileLock().hold(folder, 0):  # held, but its file names a pid that is gone
        lock = folder.state / "lock"
        lock.write_text(lock.read_text().replace(f"pid={os.getpid():<10}", f"pid={dead_pid():<10}"))
        with pytest.raises(LockTimeout, match="is not running on this host") as caught:
            doctor.repair(folder, timeout=0.05)
        assert "nothing was repaired" in caught.value.message and "delete the lock file" in caught.value.fix
    with FileLock().hold(folder, 0):  # held by a live process: the plain busy error
        with pytest.raises(LockTimeout) as caught:
            doctor.repair(folder, timeout=0.05)
        assert "not running" not in str(caught.value)


def test_repair_moves_a_journal_tail_torn_inside_a_character_and_keeps_a_whole_one(agent):
    folder = agent.folder
    day = sorted(folder.journal.glob("*/*.md"))[-1]
    whole = day.read_bytes()
    day.write_bytes(whole + "\n## 22:27:41 ·".encode("utf-8")[:-1])  # cut inside "·"
    errors = [f for f in doctor.check(folder) if f.check == "journal"]
    assert errors and errors[0].level == "error" and "torn inside a character" in errors[0].message
    with pytest.raises(Exception, match="not valid UTF-8"):
        agent.call("a run reads today's journal")  # why it matters
    actions = doctor.repair(folder)
    assert actions[0].startswith("moved a torn journal tail (13 bytes)")
    assert day.read_bytes() == whole + b"\n"  # the tail's newline-ended part stays
    assert agent.call("three").status == "ok"
    day.write_bytes(day.read_bytes() + b"**Answer:** cut here")  # valid text: harmless
    assert not [f for f in doctor.check(folder) if f.check == "journal"]
    assert not any("journal" in a for a in doctor.repair(folder))


def test_repair_leaves_a_chain_that_fails_verification_alone(agent):
    folder = agent.folder
    day = runlog.day_files(folder)[-1]
    day.write_text(day.read_text().replace('"trigger":"manual"', '"trigger":"edited"', 1))
    (folder.memory / ".x.1.00000000.avtmp").write_text("")
    before, head = log_bytes(folder), runlog.read_head(folder)
    assert doctor.repair(folder) == ["removed leftover temp file memory/.x.1.00000000.avtmp"]
    assert log_bytes(folder) == before and runlog.read_head(folder) == head  # no record, no HEAD move


def test_every_repair_is_listed_in_the_output_and_in_the_repair_record(agent):
    folder = agent.folder
    day = runlog.day_files(folder)[-1]
    first = [r for _, _, r in runlog.records(folder)][0]
    runlog.write_head(folder, first["seq"], first["hash"])
    day.write_bytes(day.read_bytes() + b'{"to')
    (folder.memory / ".INDEX.md.1.00000000.avtmp").write_text("")
    folder.index.write_text(folder.index.read_text().replace("project_before_the_crash.md", "gone.md"))
    reserve(folder, dead_pid())
    journal = sorted(folder.journal.glob("*/*.md"))[-1]
    journal.write_bytes(journal.read_bytes() + "…".encode("utf-8")[:2])
    result = CliRunner().invoke(cli, ["--root", str(folder.root), "doctor", "atlas", "--repair"])
    assert result.exit_code == 0, result.output
    printed = [line.split("repaired: ", 1)[1] for line in result.output.splitlines() if "repaired: " in line]
    kinds = ["removed leftover temp file", "removed a stale cost reservation", "updated memory/INDEX.md",
             "moved a torn line", "set log/HEAD", "moved a torn journal tail"]
    assert [next(k for k in kinds if a.startswith(k)) for a in printed] == kinds
    assert last_record(folder)["actions"] == printed and last_record(folder)["kind"] == "repair"
    assert "ERROR" not in result.output and "WARN  atlas: temp" not in result.output


def test_a_repair_killed_at_any_step_is_completed_by_the_next(tmp_path):
    """doctor --repair is itself crash-safe: kill it at each of its write steps in turn."""
    def leftovers(root: Path):
        shutil.copytree(torture.SAMPLES, root)
        agent = AtomicAgent("atlas", root=root)
        agent.call("one\nremember: project: repair me")
        agent.call("two")
        folder = agent.folder
        first = [r for _, _, r in runlog.records(folder)][0]
        runlog.write_head(folder, first["seq"], first["hash"])
        day = runlog.day_files(folder)[-1]
        day.write_bytes(day.read_bytes() + b'{"torn')
        folder.index.write_text(folder.index.read_text().replace("project_repair_me.md", "gone.md"))
        (folder.memory / ".INDEX.md.1.00000000.avtmp").write_text("")
        return folder

    steps = 0
    while True:
        steps += 1
        folder = leftovers(tmp_path / f"k{steps}")
        child = torture._FORK.Process(target=torture._repair_child, args=(str(folder.root), "files", steps))
        child.start()
        child.join(60)
        doctor.repair(folder)
        assert not [f for f in doctor.check(folder) if f.level == "error" or (
            f.level == "warn" and f.check in ("log", "chain", "temp files"))], f"killed at step {steps}"
        assert (runlog.day_files(folder)[-1].parent / (runlog.day_files(folder)[-1].name + ".torn")
                ).read_bytes() == b'{"torn\n'  # kept once, whatever the moment
        assert runlog.verify(folder).ok
        if child.exitcode == 0:  # the repair finished before reaching this step: all covered
            break
    assert steps > 5


def test_a_state_folder_left_without_its_gitignore_gets_one(tmp_path):
    from atomic_vault.testing import make_agent
    folder = make_agent(tmp_path / "vault")
    folder.state.mkdir()  # as a run killed between creating the folder and its .gitignore leaves it
    folder.ensure_state_dir()
    assert (folder.state / ".gitignore").read_text() == "*\n"
