"""The effect ledger: each tool call's effect at most once.

Before a tool runs, ``begin`` is logged (a chained ``kind: effect`` record, under the
agent's lock and its fence: a lease that expired cannot begin an effect); after it,
``commit`` with the result. A key (run, step, the arguments' hash, or one the call
supplies) finds an earlier attempt: committed, its result is reused; begun but never
committed, the effect is ``unknown`` and waits for a person, unless the tool is
declared ``idempotent: true``.

A lookup reads no more of the log than it must: a derived index
(``.atomic_vault/effects.jsonl``) lists each effect record's key, phase and seq up to a
watermark, so a lookup reads the index and the log after its watermark. The index never
decides unchecked: its lines are chained by a digest its watermark holds, the watermark
names the log record (seq, hash) it reaches, and the record a hit points to is read and
compared; anything that does not match is dropped and rebuilt from the log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import clock, fileio, tools
from .errors import AtomicVaultError, LockLost
from .protocols import LogQuery

RESULT_CHARS = 100_000  # of a result kept in its commit record (what a retry reuses)


def key(run_key: str, step: int, args_sha: str, supplied: str | None = None) -> str:
    """The effect's idempotency key: the one the call supplies, else run, step and arguments."""
    if supplied:
        return str(supplied)[:200]
    return hashlib.sha256(f"{run_key}\n{step}\n{args_sha}".encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Found:
    state: str  # "committed" or "unknown"
    record: dict[str, Any]


def find(agent: Any, effect_key: str) -> Found | None:
    """The latest attempt of this effect in the log, or None (through the checked index)."""
    entries, mark = _read_index(agent, effect_key)
    found = None
    if entries:
        if not _matches(agent, mark):
            mark = None  # the log is not the one the index was built from
        else:
            found = _latest(agent, entries)
            if found is False:  # the index points at a record that is not there as indexed
                mark, found = None, None
        if found is not None and found.state == "committed":
            return found
    newer, mark = _newer(agent, mark)
    if newer:
        _note(agent, mark, [{"key": r["key"], "phase": r.get("phase"), "seq": r["seq"], "ts": r.get("ts")}
                            for r in newer if r.get("kind") == "effect" and isinstance(r.get("key"), str)],
              newer[-1])
    mine = [r for r in newer if r.get("kind") == "effect" and r.get("key") == effect_key]
    if mine:
        committed = next((r for r in reversed(mine) if r.get("phase") == "commit"), None)
        return Found("committed", committed) if committed else Found("unknown", mine[-1])
    return found


def _newer(agent: Any, mark: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The log's records after the watermark, in seq order, and the watermark (None when it
    does not name a record of this log: then every record). Read from the watermark's day
    on; a record's day is its run's start, so a long run can log into an earlier day: a gap
    in the seqs, or a HEAD beyond them, means some were missed, and the whole log is read."""
    while True:
        after = mark["seq"] if mark else 0
        since = (str(mark.get("ts") or "")[:10] or None) if mark else None
        records = agent.log.query(agent.folder, LogQuery(since=since))
        if mark is None:
            return sorted((r for r in records if isinstance(r.get("seq"), int)), key=lambda r: r["seq"]), None
        if not any(r.get("seq") == after and r.get("hash") == mark.get("hash") for r in records):
            mark = None  # the log is not the one the index was built from: start over
            continue
        newer = sorted((r for r in records if isinstance(r.get("seq"), int) and r["seq"] > after),
                       key=lambda r: r["seq"])
        head = (agent.log.head(agent.folder) or {}).get("seq")
        last = newer[-1]["seq"] if newer else after
        if all(r["seq"] == after + i for i, r in enumerate(newer, 1)) and not (
                isinstance(head, int) and head > last):
            return newer, mark
        mark = None


INDEX = "effects.jsonl"


def _index(agent: Any):
    return agent.folder.state / INDEX


def _read_index(agent: Any, effect_key: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """This key's entries, and the last watermark (None: start over). Each watermark holds
    the SHA-256 of every byte before it, so a lost, edited or reordered line is noticed;
    only the lines of this key are parsed (the index grows with the log)."""
    try:
        raw = _index(agent).read_bytes()
    except OSError:
        return [], None
    needle = json.dumps({"key": effect_key}, ensure_ascii=False)[:-1].encode("utf-8") + b","  # '{"key": "<key>",'
    digest, mark, entries, pending = hashlib.sha256(), None, [], []
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a torn last line: the watermark before it still holds
        if line.startswith(b'{"digest": '):
            try:
                found = json.loads(line)
            except ValueError:
                return [], None
            if found.get("digest") != digest.hexdigest() or not isinstance(found.get("seq"), int):
                return [], None  # edited, reordered or lines lost: derived, so start over
            entries += pending
            pending, mark = [], found
        elif line.startswith(needle):
            try:
                pending.append(json.loads(line))
            except ValueError:
                return [], None
        digest.update(line)
    return entries, mark


def _matches(agent: Any, mark: dict[str, Any]) -> bool:
    """The record the watermark names is in the log, with the same hash."""
    day = str(mark.get("ts") or "")[:10] or None
    return any(r.get("seq") == mark["seq"] and r.get("hash") == mark.get("hash")
               for r in agent.log.query(agent.folder, LogQuery(since=day, until=day)))


def _latest(agent: Any, entries: list[dict[str, Any]]) -> Found | None | bool:
    """The attempt the index entries name, each read back from the log (their days only);
    False when one is not there as indexed."""
    if not entries:
        return None
    days = sorted({str(e.get("ts") or "")[:10] for e in entries})
    by_seq = {r.get("seq"): r for r in agent.log.query(agent.folder, LogQuery(since=days[0], until=days[-1]))}
    began = None
    for entry in entries:
        record = by_seq.get(entry["seq"])
        if record is None or record.get("key") != entry["key"] or record.get("phase") != entry.get("phase"):
            return False
        if record.get("phase") == "commit":
            return Found("committed", record)
        began = record
    return Found("unknown", began) if began else None


def _note(agent: Any, mark: dict[str, Any] | None, lines: list[dict[str, Any]], newest: dict[str, Any]) -> None:
    """Append the new entries and a watermark at ``newest`` in one write (``mark`` None:
    the index is written anew from these lines)."""
    path = _index(agent)
    try:
        old = b"" if mark is None else path.read_bytes()
        if not old.endswith(b"\n") and old:
            path.unlink(missing_ok=True)  # torn: the next lookup rebuilds it
            return
        digest = hashlib.sha256(old)
        text = b""
        for line in lines:
            text += json.dumps({"key": line["key"], **{k: v for k, v in line.items() if k != "key"}},
                               ensure_ascii=False).encode("utf-8") + b"\n"
        digest.update(text)
        text += json.dumps({"digest": digest.hexdigest(), "hash": newest.get("hash"), "seq": newest["seq"],
                            "ts": newest.get("ts")}).encode("utf-8") + b"\n"
        agent.folder.ensure_state_dir()
        if mark is None:
            fileio.atomic_write(path, text, durable=False)
        else:
            fileio.append_text(path, text.decode("utf-8"))
    except (OSError, AtomicVaultError):
        path.unlink(missing_ok=True)  # derived: found again from the log


def perform(agent: Any, redact: Any, *, effect_key: str, tool: tools.Tool, arguments: dict[str, Any],
            about: dict[str, Any], agent_root: Any, verdict: dict[str, Any] | None = None,
            force: bool = False, look: bool = True) -> tuple[tools.Result, str]:
    """Run the effect at most once: (its result, how: ran, reused, unknown or refused).
    ``verdict`` (the gate's record) is logged just before ``begin``, in the same lock hold."""
    found = find(agent, effect_key) if look else None
    if found and found.state == "committed":
        record = found.record
        return tools.Result(record.get("status", "ok"), record.get("result", ""),
                            bool(record.get("truncated"))), "reused"
    if found and not force and not tool.idempotent:
        return tools.Result("unknown", ""), "unknown"
    base = {"kind": "effect", "agent": agent.name, **about, "key": effect_key, "tool": tool.name}
    try:
        with agent.lock.hold(agent.folder, agent.lock_timeout) as lease:
            lease.check()
            fence = (agent.lock.name, lease.token) if getattr(lease, "fenced", True) else None
            if verdict is not None:
                agent.log.append(agent.folder, redact.all(verdict), fence=fence)
            agent.log.append(agent.folder, redact.all({**base, "ts": _now(about), "phase": "begin"}), fence=fence)
    except LockLost as exc:
        return tools.Result("not_run", f"the agent's lease expired before the effect began, so nothing "
                                       f"was run ({exc})"), "refused"
    result = tools.run(tool, arguments, agent_root)
    text = result.text[:RESULT_CHARS]
    with agent.lock.hold(agent.folder, agent.lock_timeout) as lease:
        # No lease check here: the effect happened, and its commit must say so.
        fence = (agent.lock.name, lease.token) if getattr(lease, "fenced", True) else None
        agent.log.append(agent.folder, redact.all({
            **base, "ts": _now(about), "phase": "commit", "status": result.status, "result": text,
            "result_sha256": hashlib.sha256(result.text.encode("utf-8")).hexdigest(),
            **({"truncated": True} if result.truncated or len(result.text) > RESULT_CHARS else {})}),
            fence=fence)
    return result, "ran"


def _now(about: dict[str, Any]) -> str:
    # The records of one run stay in its day file: ts is the run's start when known.
    return about.get("ts") or clock.now(None).isoformat(timespec="milliseconds")
