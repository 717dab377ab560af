"""The effect ledger: each tool call's effect at most once.

Before a tool runs, ``begin`` is logged (a chained ``kind: effect`` record, under the
agent's lock and its fence: a lease that expired cannot begin an effect); after it,
``commit`` with the result. A key (run, step, the arguments' hash, or one the call
supplies) finds an earlier attempt: committed, its result is reused; begun but never
committed, the effect is ``unknown`` and waits for a person, unless the tool is
declared ``idempotent: true``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from . import clock, tools
from .errors import LockLost
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


def find(agent: Any, effect_key: str, since: str | None) -> Found | None:
    """The latest attempt of this effect in the log (from ``since``, an ISO date), or None."""
    began: dict[str, Any] | None = None
    for record in agent.log.query(agent.folder, LogQuery(kind="effect", since=since)):
        if record.get("key") != effect_key:
            continue
        if record.get("phase") == "commit":
            return Found("committed", record)
        began = record
    return Found("unknown", began) if began else None


def perform(agent: Any, redact: Any, *, effect_key: str, tool: tools.Tool, arguments: dict[str, Any],
            about: dict[str, Any], agent_root: Any, since: str | None, verdict: dict[str, Any] | None = None,
            force: bool = False, look: bool = True) -> tuple[tools.Result, str]:
    """Run the effect at most once: (its result, how: ran, reused, unknown or refused).
    ``verdict`` (the gate's record) is logged just before ``begin``, in the same lock hold."""
    found = find(agent, effect_key, since) if look else None
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
