"""The default QueueBackend: a queue folder ``<root>/_queue/`` on one host.

An item is one JSON file, written once at enqueue and never rewritten; its state is the
folder it is in (``ready/``, ``claimed/``, ``done/``, ``dead/``) and its changing numbers
are in its file name, so every change of state is one rename. A claim renames the file
from ``ready/`` into ``claimed/`` under a name holding the new fencing token: of any
number of claimers exactly one rename succeeds. The lease is the claimed file's
modification time, set to the moment it expires (renewing moves it on); an expired claim
is renamed back to ``ready/`` (or to ``dead/``), after which the old holder's renames
find no file and it learns it lost the item. What happened to an item (claims, errors,
its result) is appended to ``history/<id>.jsonl``, one line per event.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from .. import fileio
from ..errors import ConfigError, LockLost
from ..protocols import Claim, QueueItem
from ..vault import check_agent_name

FOLDER = "_queue"
STATES = ("ready", "claimed", "done", "dead")
PRIORITY = range(-499, 500)
# An unclaimed item's file carries this modification time, so that the moment it is
# renamed into claimed/ (before its claimer sets the real expiry) it never looks expired.
UNSET = 4102444800.0  # 2100-01-01
STUCK = 300.0  # a claim whose claimer died before setting its lease is taken back after this


def check_item(agent: str, work: str, key: str | None, priority: int, max_attempts: int) -> None:
    """The checks every queue backend makes before storing an item (nothing is stored otherwise)."""
    check_agent_name(agent)
    if not isinstance(work, str) or not work.strip():
        raise ConfigError("the work item is empty", field="work", fix="pass the text to work on")
    if key is not None:
        from ..runkeys import check
        check(key)
    if not isinstance(priority, int) or priority not in PRIORITY:
        raise ConfigError(f"priority {priority!r} is not a whole number from -499 to 499", field="priority",
                          fix="use e.g. --priority 10 (higher runs first; default 0)")
    if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
        raise ConfigError(f"max_attempts {max_attempts!r} is not a whole number from 1 to 1000",
                          field="max_attempts", fix="use e.g. 5")


def new_key() -> str:
    return f"queue-{os.urandom(8).hex()}"


def _ready_name(priority: int, id: int, due: float, token: int, attempts: int, agent: str) -> str:
    # Sorting the names sorts by priority (highest first), then by id (oldest first).
    return f"{499 - priority:03d}-{id:012d}-{int(due * 1000):014d}-{token}-{attempts}-{agent}.json"


def _parse_ready(name: str) -> tuple[int, float, int, int, str] | None:
    """(id, due, token, attempts, agent) from a ready file's name, or None for a stranger."""
    parts = name[:-5].split("-", 5) if name.endswith(".json") else []
    if len(parts) != 6 or not all(p.isdigit() for p in parts[:5]):
        return None
    return int(parts[1]), int(parts[2]) / 1000, int(parts[3]), int(parts[4]), parts[5]


def _parse_claimed(name: str) -> tuple[int, int, int, str] | None:
    """(id, token, attempts, agent) from a claimed file's name."""
    parts = name[:-5].split("-", 3) if name.endswith(".json") else []
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2]), parts[3]


def _parse_final(name: str) -> tuple[int, str] | None:
    """(id, agent) from a done or dead file's name."""
    parts = name[:-5].split("-", 1) if name.endswith(".json") else []
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


class FileQueue:
    """The work queue as files in ``<root>/_queue/``; for the processes of one host (a
    rename is atomic on one file system; a network file system may not keep that promise)."""

    name = "files"

    def __init__(self, url: str | None = None, root: Path | None = None):
        if root is None and not url:
            raise ConfigError("the files queue needs the vault root", field="queue",
                              fix="pass root= (the vault folder)")
        self.path = Path(url) if url else Path(root) / FOLDER

    def _dir(self, state: str) -> Path:
        return self.path / state

    def _history(self, id: int) -> Path:
        return self.path / "history" / f"{id:012d}.jsonl"

    def _event(self, id: int, **event: Any) -> None:
        fileio.append_jsonl(self._history(id), {"ts": round(time.time(), 3), **event})

    def _next_id(self) -> int:
        """The next item id, from the ``SEQ`` file under a lock (ids order the queue)."""
        from ..locks import os_locks

        portalocker = os_locks()
        fileio.make_dirs(self.path)
        with open(self.path / ".seq.lock", "a+b") as handle:
            portalocker.lock(handle, portalocker.LOCK_EX)
            try:
                try:
                    last = int((self.path / "SEQ").read_text(encoding="ascii").strip() or 0)
                except FileNotFoundError:
                    last = 0
                except ValueError:
                    raise ConfigError("does not hold a number", path=self.path / "SEQ",
                                      fix="write into it the highest item id in the queue's folders") from None
                fileio.atomic_write(self.path / "SEQ", f"{last + 1}\n")
                return last + 1
            finally:
                portalocker.unlock(handle)

    def enqueue(self, agent: str, work: str, *, key: str | None = None, priority: int = 0,
                due: float | None = None, max_attempts: int = 5) -> QueueItem:
        check_item(agent, work, key, priority, max_attempts)
        id = self._next_id()
        item = QueueItem(id=id, agent=agent, work=work, key=key or new_key(), priority=priority,
                         max_attempts=max_attempts, enqueued=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         due=time.time() if due is None else float(due))
        body = {k: v for k, v in item.as_dict().items() if k not in ("state", "token", "attempts", "error",
                                                                   "result", "due")}
        path = self._dir("ready") / _ready_name(priority, id, item.due, 0, 0, agent)
        if not fileio.create_new(path, json.dumps(body, ensure_ascii=False, sort_keys=True) + "\n", mtime=UNSET):
            raise ConfigError("already exists", path=path, fix="the SEQ file is behind: raise it past the highest id")
        self._event(id, event="enqueued")
        return item

    def _read(self, path: Path) -> dict[str, Any]:
        return json.loads(path.read_text(encoding="utf-8"))

    def _item(self, path: Path, state: str, *, due: float = 0.0, token: int = 0, attempts: int = 0,
              history: bool = True) -> QueueItem:
        body = self._read(path)
        error = result = None
        if history:
            found, _ = fileio.read_jsonl(self._history(body["id"])) if self._history(body["id"]).exists() else ([], [])
            for _, event in found:
                if state in ("done", "dead") and event.get("event") == "claimed":
                    token, attempts = event.get("token", token), event.get("attempts", attempts)
                if event.get("error") is not None:
                    error = event["error"]
                if event.get("result") is not None:
                    result = event["result"]
        return QueueItem(**body, state=state, due=due, token=token, attempts=attempts, error=error, result=result)

    def _take_back_expired(self, now: float) -> None:
        """Claims whose lease ran out go back to ready (or, out of attempts, to dead)."""
        try:
            names = os.listdir(self._dir("claimed"))
        except FileNotFoundError:
            return
        for name in names:
            parsed = _parse_claimed(name)
            path = self._dir("claimed") / name
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            # A lease never set (its claimer died right after the rename): counted from the rename.
            expired = parsed is not None and (st.st_mtime < now if st.st_mtime < UNSET
                                              else st.st_ctime < now - STUCK)
            if not expired:
                continue
            id, token, attempts, agent = parsed
            try:
                body = self._read(path)
            except (FileNotFoundError, ValueError):
                continue
            if attempts >= body.get("max_attempts", 5):
                target, state = self._dir("dead") / f"{id:012d}-{agent}.json", "dead"
            else:
                target = self._dir("ready") / _ready_name(body.get("priority", 0), id, now, token, attempts, agent)
                state = "ready"
            try:
                os.utime(path, (UNSET, UNSET))
                fileio.move(path, target)
            except FileNotFoundError:
                continue  # finished, or taken back by another process first
            self._event(id, event="lease_expired", token=token, state=state,
                        error=f"the lease of claim {token} expired (its worker died, hung or lost the queue)")

    def claim(self, worker: str, lease: float, agents: Iterable[str] | None = None) -> Claim | None:
        now = time.time()
        self._take_back_expired(now)
        wanted = set(agents) if agents is not None else None
        try:
            names = sorted(os.listdir(self._dir("ready")))
        except FileNotFoundError:
            return None
        for name in names:
            parsed = _parse_ready(name)
            if parsed is None:
                continue
            id, due, token, attempts, agent = parsed
            if due > now or (wanted is not None and agent not in wanted):
                continue
            target = self._dir("claimed") / f"{id:012d}-{token + 1}-{attempts + 1}-{agent}.json"
            try:
                fileio.move(self._dir("ready") / name, target)
            except FileNotFoundError:
                continue  # another claimer won this one
            try:
                expires = time.time() + lease
                os.utime(target, (expires, expires))
                item = self._item(target, "claimed", due=due, token=token + 1, attempts=attempts + 1,
                                  history=False)
            except FileNotFoundError:
                continue  # taken back in the moment before its lease was set: no longer ours
            self._event(id, event="claimed", token=token + 1, attempts=attempts + 1, worker=worker)
            return Claim(item=item, token=token + 1, worker=worker, handle=target)
        return None

    def _held(self, claim: Claim) -> Path:
        path = claim.handle
        if not isinstance(path, Path) or not path.exists():
            raise self._lost(claim)
        return path

    def _lost(self, claim: Claim) -> LockLost:
        return LockLost(f"the claim (token {claim.token}) of queue item {claim.item.id} is no longer held: "
                        "its lease expired and it was taken back", path=claim.handle,
                        fix="renew the lease more often than it lasts (worker --lease); the item is "
                            "delivered again and its idempotency key keeps it from running twice")

    def renew(self, claim: Claim, lease: float) -> None:
        expires = time.time() + lease
        try:
            os.utime(self._held(claim), (expires, expires))
        except FileNotFoundError:
            raise self._lost(claim) from None

    def complete(self, claim: Claim, result: dict[str, Any]) -> None:
        item = claim.item
        try:
            fileio.move(self._held(claim), self._dir("done") / f"{item.id:012d}-{item.agent}.json")
        except FileNotFoundError:
            raise self._lost(claim) from None
        self._event(item.id, event="done", token=claim.token, result=result)

    def fail(self, claim: Claim, error: str, retry_in: float | None, *, counted: bool = True) -> str:
        item = claim.item
        attempts = claim.item.attempts if counted else claim.item.attempts - 1
        if retry_in is None:
            target, state = self._dir("dead") / f"{item.id:012d}-{item.agent}.json", "dead"
        else:
            target = self._dir("ready") / _ready_name(item.priority, item.id, time.time() + retry_in,
                                                      claim.token, attempts, item.agent)
            state = "ready"
        try:
            path = self._held(claim)
            os.utime(path, (UNSET, UNSET))
            fileio.move(path, target)
        except FileNotFoundError:
            raise self._lost(claim) from None
        self._event(item.id, event="failed" if counted else "released", token=claim.token, state=state,
                    error=error)
        return state

    def _entries(self, state: str) -> list[tuple[int, str, str, Path]]:
        """(id, agent, file name, path) of one state's files."""
        try:
            names = os.listdir(self._dir(state))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            parsed = (_parse_ready(name) if state == "ready" else _parse_claimed(name) if state == "claimed"
                      else _parse_final(name))
            if parsed is not None:
                out.append((parsed[0], parsed[-1], name, self._dir(state) / name))
        return sorted(out)

    def stats(self, agent: str | None = None) -> dict[str, int]:
        now = time.time()
        out = {"ready": 0, "scheduled": 0, "claimed": 0, "done": 0, "dead": 0}
        for state in STATES:
            for _, owner, name, _ in self._entries(state):
                if agent is not None and owner != agent:
                    continue
                if state == "ready" and _parse_ready(name)[1] > now:
                    out["scheduled"] += 1
                else:
                    out[state] += 1
        return out

    def list(self, state: str | None = None, agent: str | None = None,
             limit: int | None = None) -> list[QueueItem]:
        if state is not None and state not in STATES:
            raise ConfigError(f"unknown queue state {state!r}", field="state", fix=f"use one of: {', '.join(STATES)}")
        found = []
        for each in (state,) if state else STATES:
            for id, owner, name, path in self._entries(each):
                if agent is not None and owner != agent:
                    continue
                numbers: dict[str, Any] = {}
                if each == "ready":
                    _, due, token, attempts, _ = _parse_ready(name)
                    numbers = {"due": due, "token": token, "attempts": attempts}
                elif each == "claimed":
                    _, token, attempts, _ = _parse_claimed(name)
                    numbers = {"token": token, "attempts": attempts}
                try:
                    found.append(self._item(path, each, **numbers))
                except FileNotFoundError:
                    continue  # moved on while listed
        found.sort(key=lambda item: item.id)
        return found[:limit] if limit is not None else found
