"""The work queue's worker: claim an item, run it as a keyed run, acknowledge it.

An item runs with its idempotency key (runkeys.py), so an item delivered twice (its
worker died after the run was logged but before the acknowledgement) answers the second
time with the first run's result: the model is called once. While a run lasts, a thread
renews the claim's lease; a claim that was lost anyway (the lease expired and another
worker claimed the item) cannot be acknowledged, because every acknowledgement names
the claim's fencing token. A failed run is tried again after an exponential backoff; an
item out of attempts, or for an agent that is not there, is dead-lettered with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from .backends import open_backend
from .config import RetryPolicy
from .errors import AtomicVaultError, ConfigError, LockLost
from .protocols import Claim, QueueBackend
from .retries import backoff
from .vault import AgentFolder, check_agent_name, resolve_root

DEFAULT_LEASE = 60.0
DEFAULT_BACKOFF = RetryPolicy(attempts=5, base_delay_s=5.0, max_delay_s=300.0)
_RELATIVE = re.compile(r"^\+([0-9]+)([smhd])\Z")


def open_queue(root: str | os.PathLike | None = None, queue: str | QueueBackend | None = None) -> QueueBackend:
    """The vault's queue backend: ``queue`` (a name or an object), else
    ``ATOMIC_VAULT_QUEUE_BACKEND``, else ``backends: queue:`` of atomic_vault.yaml, else files."""
    return open_backend("queue", queue, resolve_root(root))


def due_time(at: str | None, now: float | None = None) -> float | None:
    """Unix seconds of ``--at``: ``+30s`` / ``+10m`` / ``+2h`` / ``+1d`` from now, or an ISO
    date and time (local time unless it names its zone)."""
    if at is None:
        return None
    now = time.time() if now is None else now
    relative = _RELATIVE.match(at.strip())
    if relative:
        return now + int(relative[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[relative[2]]
    try:
        when = datetime.fromisoformat(at.strip())
    except ValueError:
        raise ConfigError(f"{at!r} is not a time", field="at",
                          fix="write an ISO date and time (2026-12-01T09:00, with +01:00 for a zone) "
                              "or a delay such as +10m") from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


def enqueue(agent: str, work: str, *, root: str | os.PathLike | None = None,
            queue: str | QueueBackend | None = None, key: str | None = None, priority: int = 0,
            at: str | float | None = None, max_attempts: int = 5):
    """Put a work item for ``agent`` on the vault's queue; returns the stored QueueItem."""
    backend = open_queue(root, queue)
    due = due_time(at) if isinstance(at, str) else at
    return backend.enqueue(check_agent_name(agent), work, key=key, priority=priority, due=due,
                           max_attempts=max_attempts)


@dataclass
class Tally:
    """What a worker did, for its last log line."""

    done: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0
    released: int = 0
    errors: list[str] = field(default_factory=list)


class _Renewer(threading.Thread):
    """Renews a claim's lease every third of its length until stopped; notes a lost claim."""

    def __init__(self, queue: QueueBackend, claim: Claim, lease: float, say: Callable[[str], None]):
        super().__init__(daemon=True, name=f"renew-{claim.item.id}")
        self.queue, self.claim, self.lease, self.say = queue, claim, lease, say
        self.stop = threading.Event()
        self.lost: LockLost | None = None

    def run(self) -> None:
        while not self.stop.wait(self.lease / 3):
            try:
                self.queue.renew(self.claim, self.lease)
            except LockLost as exc:
                self.lost = exc
                return
            except AtomicVaultError as exc:  # the queue is unreachable: the lease may run out
                self.say(f"item {self.claim.item.id}: the lease could not be renewed: {exc}")


class Worker:
    """Drains the queue with ``concurrency`` threads, each running one item at a time.
    ``stop()`` (SIGTERM, SIGINT) lets each thread finish its current item and claim no more."""

    def __init__(self, root: str | os.PathLike | None = None, queue: str | QueueBackend | None = None, *,
                 agents: Iterable[str] | None = None, concurrency: int = 1, lease: float = DEFAULT_LEASE,
                 retry: RetryPolicy = DEFAULT_BACKOFF, poll: float = 1.0, until_empty: bool = False,
                 say: Callable[[str], None] | None = None, model: Any = None):
        self.root = resolve_root(root)
        self.queue = open_queue(self.root, queue)
        self.agents = sorted({check_agent_name(a) for a in agents}) if agents else None
        if concurrency < 1 or lease <= 0:
            raise ConfigError("concurrency must be 1 or more and the lease over 0 seconds",
                              field="concurrency" if concurrency < 1 else "lease", fix="e.g. --concurrency 4 --lease 60")
        self.concurrency, self.lease, self.retry, self.poll = concurrency, lease, retry, poll
        self.until_empty, self.model = until_empty, model
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.tally = Tally()
        self._said = threading.Lock()
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    def say(self, line: str) -> None:
        with self._said:
            self._say(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%S}Z worker {self.id}: {line}")

    def stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            self.say("stopping: finishing the items in hand, claiming no more")
        self.stopping.set()

    def run(self) -> Tally:
        """Work until stopped (or, with ``until_empty``, until nothing is ready, claimed or
        scheduled); returns the tally. Signal handlers are set when called in the main thread."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.stop)
        self.say(f"started on {self.queue.name} queue with {self.concurrency} thread(s), lease {self.lease:g}s"
                 + (f", agents {', '.join(self.agents)}" if self.agents else ""))
        threads = [threading.Thread(target=self._loop, args=(n,), name=f"worker-{n}", daemon=True)
                   for n in range(1, self.concurrency + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins: the main thread stays free to take signals
        t = self.tally
        self.say(f"stopped: {t.done} done, {t.retried} to retry, {t.dead} dead-lettered, {t.lost} lost "
                 f"leases, {t.released} given back")
        return t

    def _loop(self, n: int) -> None:
        name = f"{self.id}:{n}"
        while not self.stopping.is_set():
            try:
                claim = self.queue.claim(name, self.lease, self.agents)
            except (AtomicVaultError, OSError) as exc:  # the store is down or the disk failed: say so, go on
                self.tally.errors.append(str(exc))
                self.say(f"error: cannot claim from the queue: {exc}; trying again in {self.poll:g}s")
                self.stopping.wait(max(self.poll, 1.0))
                continue
            if claim is None:
                if self.until_empty and self._empty():
                    return
                wait = getattr(self.queue, "wait", None)
                if callable(wait):
                    wait(self.poll)
                else:
                    self.stopping.wait(self.poll)
                continue
            self._process(claim)

    def _empty(self) -> bool:
        try:
            counts = [self.queue.stats(a) for a in self.agents] if self.agents else [self.queue.stats()]
        except (AtomicVaultError, OSError):
            return False
        return not any(c["ready"] or c["claimed"] or c["scheduled"] for c in counts)

    def _process(self, claim: Claim) -> None:
        item = claim.item
        label = f"item {item.id} for {item.agent}"
        self.say(f"claimed {label} (attempt {item.attempts} of {item.max_attempts}, token {claim.token})")
        if self.stopping.is_set():
            self._settle(claim, label, lambda: self.queue.fail(claim, "given back: the worker was stopping",
                                                               0.0, counted=False), "released")
            return
        try:
            check_agent_name(item.agent)  # a row written by hand must not lead out of the vault
        except ConfigError as exc:
            self._settle(claim, label, lambda: self.queue.fail(claim, str(exc), None), "dead", str(exc))
            return
        if not AgentFolder(self.root, item.agent).path.is_dir():
            reason = (f"no agent {item.agent!r} in {self.root} (removed or renamed since the item was "
                      "enqueued); create it, then enqueue the work again")
            self._settle(claim, label, lambda: self.queue.fail(claim, reason, None), "dead", reason)
            return
        renewer = _Renewer(self.queue, claim, self.lease, self.say)
        renewer.start()
        try:
            result, failure = self._run(item), None
        except AtomicVaultError as exc:
            result, failure = None, str(exc)
        except Exception as exc:  # a bug must not lose the item: it is tried again, then dead-lettered
            result, failure = None, f"{type(exc).__name__}: {exc}"
        finally:
            renewer.stop.set()
            renewer.join()
        if renewer.lost is not None:
            self._count("lost")
            self.say(f"{label}: the lease was lost while it ran ({renewer.lost.message}); "
                     "its new claimer answers it from this run's record")
            return
        if result is not None:
            outcome = {"run_id": result.run_id, "status": result.status, "seq": result.seq,
                       "cost_usd": result.cost_usd}
            self._settle(claim, label, lambda: self.queue.complete(claim, outcome), "done",
                         f"run {result.run_id} (seq {result.seq}) {result.status}")
        elif item.attempts >= item.max_attempts:
            reason = f"attempt {item.attempts} of {item.max_attempts} failed: {failure}"
            self._settle(claim, label, lambda: self.queue.fail(claim, reason, None), "dead", reason)
        else:
            wait = backoff(self.retry, item.attempts, None)
            self._settle(claim, label, lambda: self.queue.fail(claim, failure, wait), "retried",
                         f"{failure}; tried again in {wait:.1f}s")

    def _run(self, item: Any) -> Any:
        from .agent import AtomicAgent

        # A failed model call is logged as a run with status error and raises ModelError:
        # such a key may run again, so the retry calls the model again.
        agent = AtomicAgent(item.agent, root=self.root, trigger="queue", model=self.model)
        return agent.call(item.work, idempotency_key=item.key)

    def _count(self, outcome: str) -> None:
        with self._said:
            setattr(self.tally, outcome, getattr(self.tally, outcome) + 1)

    def _settle(self, claim: Claim, label: str, change: Callable[[], Any], outcome: str,
                detail: str = "") -> None:
        try:
            change()
        except LockLost as exc:
            self._count("lost")
            self.say(f"{label}: not acknowledged, the claim is no longer held ({exc.message})")
            return
        except (AtomicVaultError, OSError) as exc:
            self.tally.errors.append(str(exc))
            self.say(f"error: {label} could not be marked {outcome}: {exc}; it is delivered again when "
                     "its lease ends (its idempotency key keeps a finished run from running twice)")
            return
        self._count(outcome)
        self.say(f"{label}: {outcome}" + (f": {detail}" if detail else ""))
