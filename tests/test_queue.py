"""The worker over both queues: items run once as keyed runs, failures retry with
backoff and then die with their reason, and neither SIGTERM nor kill -9 loses an item
or runs one twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent
from atomic_vault.backends import known
from atomic_vault.cli import cli
from atomic_vault.config import RetryPolicy
from atomic_vault.errors import BackendError, LockLost, ModelError
from atomic_vault.protocols import LogQuery
from atomic_vault.testing import make_agent
from atomic_vault.workqueue import Worker, due_time, enqueue

from conftest import POSTGRES, ScriptedModel

CHILD = Path(__file__).with_name("queue_child.py")
QUICK = RetryPolicy(base_delay_s=0.01, max_delay_s=0.02)



@pytest.fixture(params=["files", "postgres"])
def backend(request, tmp_path, monkeypatch):
    """(vault root, queue backend name) with the queue chosen as an operator would."""
    root = tmp_path / "vault"
    make_agent(root, "bot")
    if request.param == "postgres":
        monkeypatch.setenv("ATOMIC_VAULT_QUEUE_BACKEND", "postgres")
        monkeypatch.setenv("ATOMIC_VAULT_QUEUE_URL", request.getfixturevalue("pg_url_factory")())
    return root, request.param


def runs(root, agent="bot"):
    agent = AtomicAgent(agent, root=str(root))
    return agent.log.query(agent.folder, LogQuery(kind="run"))


def drain(root, **options):
    lines = []
    worker = Worker(root, until_empty=True, poll=0.05, say=lines.append, **options)
    return worker.run(), lines, worker.queue


def test_each_item_runs_once_as_a_keyed_run_and_is_acknowledged(backend):
    root, name = backend
    items = [enqueue("bot", f"task {n}", root=root) for n in range(3)]
    tally, lines, queue = drain(root, concurrency=2)
    assert queue.name == name and tally.done == 3 and tally.dead == tally.lost == 0
    records = runs(root)
    assert sorted(r["idempotency"]["key"] for r in records) == sorted(i.key for i in items)
    assert {r["trigger"] for r in records} == {"queue"} and {r["status"] for r in records} == {"ok"}
    done = {i.id: i for i in queue.list(state="done")}
    assert {done[i.id].result["run_id"] for i in items} == {r["run_id"] for r in records}
    assert any("done: run" in line for line in lines) and "stopped: 3 done" in lines[-1]


def test_an_item_for_a_missing_agent_is_dead_lettered_with_the_reason(backend):
    root, _ = backend
    item = enqueue("ghost", "haunt", root=root)
    tally, _, queue = drain(root)
    assert tally.dead == 1
    (dead,) = queue.list(state="dead")
    assert dead.id == item.id and dead.work == "haunt" and "no agent 'ghost'" in dead.error


def test_a_failing_run_is_retried_with_backoff_then_dead_lettered(backend):
    root, _ = backend
    enqueue("bot", "doomed", root=root, max_attempts=3)
    tally, lines, queue = drain(root, model=ScriptedModel(error=ModelError("the provider is down")),
                                retry=QUICK)
    assert (tally.retried, tally.dead) == (2, 1)
    (dead,) = queue.list(state="dead")
    assert dead.attempts == 3 and "attempt 3 of 3 failed" in dead.error and "provider is down" in dead.error
    assert [r["status"] for r in runs(root)] == ["error"] * 3  # each try is on the record
    assert sum("tried again in" in line for line in lines) == 2


def test_an_item_delivered_again_after_its_run_was_logged_does_not_run_twice(backend):
    root, _ = backend
    item = enqueue("bot", "once only", root=root)
    queue = Worker(root).queue
    claim = queue.claim("crashed", 0.3)
    first = AtomicAgent("bot", root=str(root)).call(claim.item.work, idempotency_key=claim.item.key)
    time.sleep(0.5)  # the lease runs out: the worker "died" before acknowledging
    tally, _, _ = drain(root)
    assert tally.done == 1
    assert [r["run_id"] for r in runs(root)] == [first.run_id]
    (done,) = queue.list(state="done")
    assert done.id == item.id and done.result["run_id"] == first.run_id and done.token == 2
    with pytest.raises(LockLost):
        queue.complete(claim, {})  # the first claim is fenced off for good


def test_a_worker_killed_before_acknowledging_leaves_the_item_to_be_delivered_again(backend):
    root, name = backend
    item = enqueue("bot", "survive kill -9", root=root)
    child = subprocess.run([sys.executable, str(CHILD), str(root), "die-before-ack", name],
                           timeout=120, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(runs(root)) == 1  # the run was logged before the kill
    time.sleep(1.2)  # its lease (1 s) runs out
    tally, _, queue = drain(root)
    assert tally.done == 1
    records = runs(root)
    assert len(records) == 1 and records[0]["idempotency"]["key"] == item.key  # ran exactly once
    (done,) = queue.list(state="done")
    assert done.result["run_id"] == records[0]["run_id"]


def test_sigterm_finishes_the_item_in_hand_and_claims_no_more(backend):
    root, name = backend
    for n in range(3):
        enqueue("bot", f"slow {n}", root=root)
    child = subprocess.Popen([sys.executable, str(CHILD), str(root), "slow", name],
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if (root / "started-1").exists():
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert "stopping" in err and "stopped: 1 done" in err
    queue = Worker(root).queue
    assert queue.stats()["done"] == 1 and queue.stats()["ready"] == 2 and queue.stats()["claimed"] == 0
    assert len(runs(root)) == 1


def test_due_time_reads_delays_and_iso_times():
    assert due_time("+10m", now=1000.0) == 1600.0
    assert due_time("2026-12-01T09:00:00+00:00") == 1796115600.0
    assert due_time(None) is None
    with pytest.raises(Exception) as caught:
        due_time("tomorrow-ish")
    assert "+10m" in str(caught.value)


def test_the_cli_enqueues_shows_and_drains_the_queue(tmp_path):
    root = tmp_path / "vault"
    make_agent(root, "bot")
    runner = CliRunner()
    got = runner.invoke(cli, ["--root", str(root), "enqueue", "bot", "hello", "--key", "k-1", "--json"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["key"] == "k-1"
    assert runner.invoke(cli, ["--root", str(root), "enqueue", "bot", "later", "--at", "+1h"]).exit_code == 0
    assert runner.invoke(cli, ["--root", str(root), "enqueue", "nobody", "x"]).exit_code == 2
    assert runner.invoke(cli, ["--root", str(root), "enqueue", "bot", "x", "--at", "soon"]).exit_code == 2
    assert runner.invoke(cli, ["--root", str(root), "enqueue", "bot", "x", "--priority", "900"]).exit_code == 1
    shown = runner.invoke(cli, ["--root", str(root), "queue", "bot", "--json"])
    assert shown.exit_code == 0 and (json.loads(shown.stdout)["ready"], json.loads(shown.stdout)["scheduled"]) == (1, 1)
    # the scheduled item keeps --until-empty waiting: drain only what is due, with a filter
    make_agent(root, "other")
    assert runner.invoke(cli, ["--root", str(root), "enqueue", "other", "y"]).exit_code == 0
    drained = runner.invoke(cli, ["--root", str(root), "worker", "--agents", "other", "--until-empty",
                                  "--poll", "0.05"])
    assert drained.exit_code == 0, drained.output
    assert "item 3 for other: done" in drained.stderr
    text = runner.invoke(cli, ["--root", str(root), "queue"])
    assert text.exit_code == 0 and "1 ready, 1 scheduled, 0 in flight, 1 done, 0 dead" in text.stdout


def test_a_worker_that_loses_postgresql_midway_says_so_and_the_item_comes_back(pg_url_factory, tmp_path):
    url = pg_url_factory()
    name = f"av_lost_{os.getpid()}"
    sep = "&" if "?" in url else "?"
    queue = known("queue")["postgres"].load()(url=f"{url}{sep}application_name={name}", root=tmp_path)
    item = queue.enqueue("bot", "x")
    claim = queue.claim("w1", 0.5)
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name=%s", (name,))
    with pytest.raises(BackendError) as caught:
        queue.complete(claim, {"status": "ok"})
    assert "cannot be reached" in caught.value.message and caught.value.fix
    time.sleep(0.7)  # its lease runs out while the worker is cut off
    again = queue.claim("w2", 30)  # a new connection: the item is delivered again, nothing lost
    assert again.item.id == item.id and again.token == claim.token + 1
    with pytest.raises(LockLost):
        queue.complete(claim, {})
    queue.complete(again, {"status": "ok"})
    assert queue.stats()["done"] == 1
