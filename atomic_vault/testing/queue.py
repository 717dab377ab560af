"""QueueBackendSuite: the promises of spec/09's QueueBackend, for any implementation.

Subclass it and provide a ``queue`` fixture returning a fresh, empty queue (and, for the
claim race, one that forked processes can use)."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from ..errors import ConfigError, LockLost
from ..protocols import QueueBackend

_FORK = multiprocessing.get_context("fork")


def _drain(i: int, queue: QueueBackend, out: Any) -> None:
    """Claim and complete until nothing is left; report each id claimed."""
    while True:
        claim = queue.claim(f"w{i}", 30.0)
        if claim is None:
            return
        queue.complete(claim, {"by": i})
        out.put(claim.item.id)


def _expire(seconds: float) -> None:
    time.sleep(seconds)  # waits for a lease to run out; nothing is measured


class QueueBackendSuite:
    """QueueBackend: exclusive claims, leases that expire, fencing, retries, dead letters."""

    @pytest.fixture
    def queue(self) -> QueueBackend:
        raise NotImplementedError("provide a `queue` fixture returning an empty queue backend")

    def test_an_enqueued_item_is_ready_and_listed_with_a_made_up_key(self, queue):
        item = queue.enqueue("bot", "summarise the inbox")
        assert item.id > 0 and item.key and item.state == "ready"
        assert queue.stats() == {"ready": 1, "scheduled": 0, "claimed": 0, "done": 0, "dead": 0}
        (listed,) = queue.list()
        assert (listed.id, listed.agent, listed.work, listed.key) == (item.id, "bot", "summarise the inbox", item.key)
        assert queue.enqueue("bot", "again").key != item.key

    def test_claims_take_the_highest_priority_then_the_oldest(self, queue):
        low = queue.enqueue("bot", "low")
        first = queue.enqueue("bot", "first", priority=5)
        second = queue.enqueue("bot", "second", priority=5)
        order = [queue.claim("w", 30).item.id for _ in range(3)]
        assert order == [first.id, second.id, low.id]
        assert queue.claim("w", 30) is None
        assert queue.stats()["claimed"] == 3

    def test_a_claim_carries_a_token_and_counts_an_attempt(self, queue):
        queue.enqueue("bot", "x", key="k-1")
        claim = queue.claim("w", 30)
        assert claim.token == 1 and claim.item.attempts == 1 and claim.item.key == "k-1"
        queue.complete(claim, {"run_id": "r1", "status": "ok"})
        (done,) = queue.list(state="done")
        assert done.result == {"run_id": "r1", "status": "ok"}
        assert queue.stats()["done"] == 1 and queue.claim("w", 30) is None

    def test_an_item_due_later_waits(self, queue):
        queue.enqueue("bot", "later", due=time.time() + 3600)
        assert queue.claim("w", 30) is None
        assert queue.stats()["scheduled"] == 1

    def test_claims_can_be_limited_to_agents(self, queue):
        queue.enqueue("one", "a")
        other = queue.enqueue("two", "b")
        assert queue.claim("w", 30, agents=["two"]).item.id == other.id
        assert queue.claim("w", 30, agents=["two"]) is None
        assert queue.stats("one")["ready"] == 1 and queue.stats("two")["claimed"] == 1
        assert [i.agent for i in queue.list(agent="one")] == ["one"]

    def test_an_expired_lease_is_delivered_again_and_the_old_claim_is_fenced(self, queue):
        queue.enqueue("bot", "x")
        old = queue.claim("w1", 0.3)
        _expire(0.5)
        new = queue.claim("w2", 30)
        assert new is not None and new.item.id == old.item.id and new.token == old.token + 1
        assert new.item.attempts == 2
        for change in (lambda: queue.renew(old, 30), lambda: queue.complete(old, {}),
                       lambda: queue.fail(old, "late", 0.0)):
            with pytest.raises(LockLost):
                change()
        queue.renew(new, 30)
        queue.complete(new, {"status": "ok"})
        assert queue.stats()["done"] == 1 and queue.stats()["claimed"] == 0

    def test_a_renewed_lease_is_kept(self, queue):
        queue.enqueue("bot", "x")
        claim = queue.claim("w1", 0.6)
        for _ in range(3):
            _expire(0.25)
            queue.renew(claim, 0.6)
        assert queue.claim("w2", 30) is None
        queue.complete(claim, {})

    def test_a_failed_item_is_retried_after_its_backoff_then_dead(self, queue):
        queue.enqueue("bot", "x", max_attempts=2)
        claim = queue.claim("w", 30)
        assert queue.fail(claim, "boom 1", 3600) == "ready"
        assert queue.claim("w", 30) is None and queue.stats()["scheduled"] == 1
        queue.enqueue("bot", "y")
        claim = queue.claim("w", 30)
        assert claim.item.work == "y"
        assert queue.fail(claim, "boom", 0.0) == "ready"
        again = queue.claim("w", 30)
        assert again.item.work == "y" and again.item.attempts == 2 and again.token == 2
        assert queue.fail(again, "boom 2", None) == "dead"
        (dead,) = queue.list(state="dead")
        assert dead.work == "y" and "boom 2" in dead.error
        assert queue.stats()["dead"] == 1

    def test_an_item_given_back_uncounted_keeps_its_attempts(self, queue):
        queue.enqueue("bot", "x", max_attempts=1)
        claim = queue.claim("w", 30)
        assert queue.fail(claim, "worker stopping", 0.0, counted=False) == "ready"
        again = queue.claim("w", 30)
        assert again.item.attempts == 1 and again.token == 2

    def test_a_lease_that_expires_on_the_last_attempt_dead_letters_the_item(self, queue):
        queue.enqueue("bot", "x", max_attempts=1)
        queue.claim("w", 0.3)
        _expire(0.5)
        assert queue.claim("w", 30) is None
        (dead,) = queue.list(state="dead")
        assert "lease" in dead.error and "expired" in dead.error

    def test_bad_items_are_refused_and_nothing_is_stored(self, queue):
        for bad in (dict(agent="../etc", work="x"), dict(agent="bot", work="  "),
                    dict(agent="bot", work="x", priority=1000), dict(agent="bot", work="x", key="a\nb"),
                    dict(agent="bot", work="x", max_attempts=0)):
            with pytest.raises(ConfigError):
                queue.enqueue(bad.pop("agent"), bad.pop("work"), **bad)
        assert queue.list() == [] and sum(queue.stats().values()) == 0

    def test_exactly_one_claimer_wins_each_item(self, queue):
        ids = {queue.enqueue("bot", f"item {n}").id for n in range(60)}
        out = _FORK.Queue()
        children = [_FORK.Process(target=_drain, args=(i, queue, out)) for i in range(4)]
        for child in children:
            child.start()
        got = []
        while len(got) < len(ids) and any(c.is_alive() for c in children):
            try:
                got.append(out.get(timeout=1))
            except Exception:
                continue
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        while not out.empty():
            got.append(out.get())
        assert sorted(got) == sorted(ids)  # each once: none lost, none twice
        assert queue.stats()["done"] == len(ids)
