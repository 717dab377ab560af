"""Whole runs at most once: an idempotency key finds the run that already answered it.

The run's record holds the key, its work item's hash and the full answer, so a second
call with the key returns the first run's result without calling the model. The lookup
goes through a derived index (``.atomic_vault/runkeys.jsonl``): each entry is checked
against the record it points to, and the index knows how far into the log it reaches
(its watermark), so a miss reads only the log's newer records, never the whole log.
Deleting the index is safe: the next lookup rebuilds it from the log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

from . import fileio
from .errors import AtomicVaultError, ConfigError, LockTimeout, LogError
from .locks import pid_alive
from .protocols import LogQuery

KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,200}\Z")
REPEATABLE = ("error", "skipped")  # a key whose run failed or was skipped may run again


def check(key: Any) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise ConfigError(f"idempotency key {str(key)[:80]!r} is not one line of 1 to 200 characters",
                          field="idempotency_key", fix="use e.g. daily-brief-$(date +%F)")
    return key


def work_sha256(work_item: str) -> str:
    return hashlib.sha256(work_item.encode("utf-8")).hexdigest()


def _index(agent: Any):
    return agent.folder.state / "runkeys.jsonl"


def _read(agent: Any) -> tuple[dict[str, str], int, str | None]:
    """The index: key -> run id, and its watermark (seq, ts) of the last record it covers."""
    path = _index(agent)
    if not path.exists():
        return {}, 0, None
    found, _ = fileio.read_jsonl(path)  # a torn last line is left out: the watermark is behind it
    keys, seq, ts = {}, 0, None
    for _, line in found:
        if "key" in line:
            keys[line["key"]] = line["run_id"]
        if isinstance(line.get("seq"), int) and line["seq"] >= seq:
            seq, ts = line["seq"], line.get("ts")
    return keys, seq, ts


def _note(agent: Any, *lines: dict[str, Any]) -> None:
    """Append index lines, all in one write."""
    if not lines:
        return
    try:
        agent.folder.ensure_state_dir()
        path = _index(agent)
        if fileio.ends_torn(path):
            raise LogError("torn", path=path)
        fileio.append_text(path, "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n"
                                         for line in lines))
    except AtomicVaultError:  # a torn index: derived, so it is dropped and rebuilt from the log
        _index(agent).unlink(missing_ok=True)
    except OSError:
        pass  # derived: a missing line is found again from the log


def find(agent: Any, key: str) -> dict[str, Any] | None:
    """The record of the last run with this key, checked against the log, or None."""
    keys, seq, ts = _read(agent)
    run_id = keys.get(key)
    if run_id is not None:
        record = agent.log.get(agent.folder, run_id)
        if record is not None and (record.get("idempotency") or {}).get("key") == key:
            return record
        keys, seq, ts = {}, 0, None  # the index is wrong about this key: read the whole log again
    found, lines = None, []
    newest_seq, newest_ts = seq, ts
    for record in agent.log.query(agent.folder, LogQuery(since=(ts or "")[:10] or None, kind="run")):
        if not isinstance(record.get("seq"), int) or record["seq"] <= seq:
            continue
        newest_seq, newest_ts = record["seq"], record.get("ts")
        got = (record.get("idempotency") or {}).get("key")
        if got is not None:
            lines.append({"key": got, "run_id": record.get("run_id"), "record_seq": record["seq"]})
            if got == key:
                found = record
    if newest_seq > seq:
        lines.append({"seq": newest_seq, "ts": newest_ts})
    _note(agent, *lines)
    return found


def remember(agent: Any, record: dict[str, Any]) -> None:
    """Index a keyed run's record once it is durable."""
    key = (record.get("idempotency") or {}).get("key")
    if key is not None:
        # No watermark here: runs logged before this one may not be indexed yet.
        _note(agent, {"key": key, "run_id": record.get("run_id"), "record_seq": record.get("seq")})


def earlier(agent: Any, key: str, work_item: str) -> dict[str, Any] | None:
    """The record whose result answers this call again, None to run; the same key with
    another work item is an error."""
    record = find(agent, key)
    if record is None:
        return None
    if record["idempotency"].get("work_sha256") != work_sha256(work_item):
        raise ConfigError(f"idempotency key {key!r} belongs to run {record.get('run_id')}, which had "
                          "another work item", field="idempotency_key",
                          fix="use a new key for new work (e.g. add the date), or repeat the same work item")
    while record.get("status") == "awaiting_approval":  # resumed since? the key answers with the resumer
        since = str(record.get("ts", ""))[:10] or None
        later = [r for r in agent.log.query(agent.folder, LogQuery(since=since, kind="run"))
                 if r.get("resumes") == record.get("run_id") and r.get("status") in ("ok", "awaiting_approval")]
        if not later:
            break
        record = later[0]
    return None if record.get("status") in REPEATABLE else record


def _claim_path(agent: Any, key: str):
    return agent.folder.state / "runkeys" / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.claim"


@contextmanager
def claimed(agent: Any, key: str, work_item: str, timeout: float | None) -> Iterator[dict[str, Any] | None]:
    """The earlier run that answers this key (then nothing is claimed), or None while this
    process holds the key until its run is logged. Looked up and claimed under the agent's
    lock, so two calls with one key started together cannot both miss and both run: the
    second is refused as busy while the first runs (a claim of a dead process is taken over)."""
    path = _claim_path(agent, key)
    with agent.lock.hold(agent.folder, timeout):
        record = earlier(agent, key, work_item)
        if record is not None:
            mine = False
        else:
            agent.folder.ensure_state_dir()
            mine = fileio.create_new(path, f"pid={os.getpid()}\n", durable=False)
            if not mine:
                holder = _claimant(path)
                if holder is not None and pid_alive(holder):
                    raise LockTimeout(f"a run with idempotency key {key!r} is in progress (pid {holder})",
                                      path=path, fix="wait for it to end, then call again: the key then "
                                                     "answers with its run")
                fileio.atomic_write(path, f"pid={os.getpid()}\n", durable=False)  # a dead claimant's
                mine = True
    try:
        yield record
    finally:
        if mine:
            path.unlink(missing_ok=True)


def _claimant(path) -> int | None:
    try:
        first = path.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return int(first[4:]) if first.startswith("pid=") and first[4:].isdigit() else None
