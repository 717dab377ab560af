"""Locking and concurrency (spec/08): many processes, one agent, nothing lost."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from atomic_vault import AtomicAgent, index, runlog
from atomic_vault.errors import LockTimeout
from atomic_vault.locks import FileLock
from atomic_vault.vault import open_agent


def _worker(root, worker, calls):
    agent = AtomicAgent("atlas", root=root, trigger=f"w{worker}")
    for i in range(calls):
        agent.call(f"Run {worker}-{i}\nremember: project: worker {worker} item {i}")


def test_many_processes_lose_no_record_capture_or_index_line(vault):
    workers, calls = 4, 8
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(vault), w, calls)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    folder = open_agent("atlas", vault)
    records = [r for _, _, r in runlog.records(folder)]
    assert [r["seq"] for r in records] == list(range(1, workers * calls + 1))
    assert runlog.verify(folder).ok
    listed = index.listed(folder.index.read_text())
    for w in range(workers):
        for i in range(calls):
            assert listed[f"project_worker_{w}_item_{i}.md"] == "Active Projects"
    journal = next(folder.journal.glob("*/" + records[-1]["ts"][:10] + ".md")).read_text()
    assert journal.count("\n## ") == workers * calls


def test_the_lock_is_not_held_while_the_model_thinks(vault):
    import threading

    from conftest import ScriptedModel

    thinking, answer = threading.Event(), threading.Event()

    class Thinking(ScriptedModel):
        def complete(self, request):  # answers only once the test has taken the lock
            thinking.set()
            assert answer.wait(30)
            return super().complete(request)

    folder = open_agent("atlas", vault)
    agent = AtomicAgent("atlas", root=vault, model=Thinking())
    outcome = {}

    def run():
        try:
            outcome["result"] = agent.call("slow")
        except BaseException as exc:  # reported by the test, not lost with the thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert thinking.wait(30)
        with FileLock().hold(folder, timeout=0):  # free while the model is busy
            pass
    finally:
        answer.set()
        thread.join(60)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].status == "ok" and outcome["result"].text == "ok"


def test_a_busy_agent_times_out_with_a_clear_error(vault):
    folder = open_agent("atlas", vault)
    with FileLock().hold(folder, timeout=0):
        with pytest.raises(LockTimeout, match="is busy"):
            AtomicAgent("atlas", root=vault, lock_timeout=0).call("Go")


def test_a_killed_holder_never_leaves_a_stale_lock(vault):
    code = ("import sys,time; from atomic_vault.locks import FileLock; from atomic_vault.vault import open_agent\n"
            "with FileLock().hold(open_agent('atlas', sys.argv[1]), None):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(vault)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    folder = open_agent("atlas", vault)
    with pytest.raises(LockTimeout):
        with FileLock().hold(folder, timeout=0.05):
            pass
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with FileLock().hold(folder, timeout=1) as lease:
        assert lease.token >= 2  # fencing tokens grow with every acquisition


def test_an_append_in_flight_is_not_mistaken_for_a_torn_log(vault):
    """Regression: the unlocked pre-check once failed runs that read another run's
    half-written log line; a torn tail is now confirmed under the lock."""
    import threading

    agent = AtomicAgent("atlas", root=vault)
    agent.call("first")
    folder = agent.folder
    log_file = runlog.day_files(folder)[-1]
    results = []
    with FileLock().hold(folder, timeout=0):
        with open(log_file, "ab") as handle:
            handle.write(b'{"half":')  # another writer, mid-append
        thread = threading.Thread(target=lambda: results.append(agent.call("second")))
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive()  # waiting for the lock, not failed
        data = log_file.read_bytes()
        log_file.write_bytes(data[: data.rfind(b"\n") + 1])  # the writer finishes (here: backs out)
    thread.join(10)
    assert results and results[0].seq == 2 and runlog.verify(folder).ok
