"""What the database log stores share: a record's JSON as hashed, its indexed columns,
and the WHERE clauses of LogBackend.query and .cost (spec/11), in any placeholder style."""

from __future__ import annotations

import json
from typing import Any

from ..errors import LogError
from ..protocols import LogQuery

COLUMNS = ("agent", "seq", "prev", "hash", "kind", "ts", "day", "month", "status", "trigger",
           "run_id", "cost_usd", "input_tokens", "output_tokens")


def dumps(record: dict[str, Any]) -> str:
    """The record's JSON exactly as the chain hashes it (sorted keys, compact)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def columns(agent: str, record: dict[str, Any]) -> tuple:
    """The values of COLUMNS, then the JSON text."""
    ts = str(record.get("ts", ""))
    return (agent, record.get("seq"), record.get("prev"), record.get("hash"), record.get("kind", "run"),
            ts, ts[:10], ts[:7], record.get("status"), record.get("trigger"), record.get("run_id"),
            _number(record.get("cost_usd")), _int(record.get("input_tokens")),
            _int(record.get("output_tokens")), dumps(record))


def query_filter(agent: str, query: LogQuery, mark: str) -> tuple[str, list[Any]]:
    """WHERE clause and arguments for a LogQuery (``mark`` is the driver's placeholder)."""
    where, args = [f"agent={mark}"], [agent]
    if query.since:
        where.append(f"substr(ts, 1, {mark}) >= {mark}")
        args += [len(query.since), query.since]
    if query.until:
        where.append(f"substr(ts, 1, {mark}) <= {mark}")
        args += [len(query.until), query.until]
    for column, value in (("status", query.status), ("trigger", query.trigger), ("kind", query.kind)):
        if value is not None:
            where.append(f"{column}={mark}")
            args.append(value)
    return " AND ".join(where), args


def cost_filter(agent: str, by: str, since: str | None, until: str | None,
                mark: str) -> tuple[str, str, list[Any]]:
    """(grouping column, WHERE clause, arguments) for a cost rollup over the per-day
    spend table that each database log keeps beside its records."""
    if by not in ("day", "month"):
        raise LogError(f"cannot group cost by {by!r}", field="--by", fix="use --by day or --by month")
    where, args = [f"agent={mark}"], [agent]
    if since:
        where.append(f"day >= {mark}")
        args.append(since[:10])
    if until:
        where.append(f"day <= {mark}")
        args.append(until[:10])
    # Months are grouped from the day column: one table serves both groupings.
    return ("day" if by == "day" else "substr(day, 1, 7)"), " AND ".join(where), args


def fence_refusal(fence: tuple[str, int] | None, kept_name: str | None, kept_token: int | None) -> str | None:
    """Why ``fence`` may not write after (kept_name, kept_token), or None."""
    if fence is not None and kept_name == fence[0] and kept_token is not None and fence[1] < kept_token:
        return (f"lock token {fence[1]} is older than token {kept_token} already written: this run's "
                "lock expired and another run took it; nothing was logged")
    return None
