"""What the database log stores share: a record's JSON as hashed, its indexed columns,
the WHERE clauses of LogBackend.query and .cost (spec/11), in any placeholder style, and
the checks ``verify`` makes that the columns and the spend table still say what the
hashed JSON says (derived data must never change an answer unnoticed)."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import LogError
from ..fileio import DuplicateKey, loads_strict
from ..protocols import LogQuery

COLUMNS = ("agent", "seq", "prev", "hash", "kind", "ts", "day", "month", "status", "trigger",
           "run_id", "cost_usd", "input_tokens", "output_tokens")


def dumps(record: dict[str, Any]) -> str:
    """The record's JSON exactly as the chain hashes it (sorted keys, compact)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str, where: str) -> dict[str, Any]:
    """A stored record's JSON, parsed strictly (a key named twice is refused)."""
    try:
        record = loads_strict(text)
    except ValueError as exc:
        raise LogError(f"a stored record cannot be read ({exc})", path=where,
                       fix="run `atomic-vault verify AGENT` to find the damage") from None
    if not isinstance(record, dict):
        raise LogError("a stored record is not a JSON object", path=where,
                       fix="run `atomic-vault verify AGENT` to find the damage")
    return record


def chain_text(found: list[tuple[int, str]], record: dict[str, Any], where: str) -> str | None:
    """(seq, stored JSON) rows from ``record`` on as chain.jsonl text, or None when the
    first row is not ``record`` or a seq is skipped."""
    if not found or loads(found[0][1], where) != record or found[-1][0] - found[0][0] != len(found) - 1:
        return None  # seqs are unique per agent: first and last tell whether one is skipped
    return "\n".join([text for _, text in found]) + "\n"


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


def parsed(agent: str, text: str, stored: list | None) -> tuple[Any, str | None]:
    """(record, problem) of one stored row for ``runlog.check_chain``: its JSON parsed
    strictly and, when ``stored`` (the row's COLUMNS) is given, checked against them."""
    try:
        record = loads_strict(text)
    except DuplicateKey as exc:
        return None, f"tampered: {exc}"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    return record, (column_problem(agent, record, tuple(stored)) if stored is not None else None)


def column_problem(agent: str, record: dict[str, Any], stored: tuple) -> str | None:
    """Why the stored COLUMNS of a row disagree with its record's JSON, or None. Queries
    and the spend table read the columns, so a column edited alone would change answers."""
    for name, have, want in zip(COLUMNS, stored, columns(agent, record)):
        if not _same(have, want):
            return (f"tampered: its {name} column holds {have!r} but the record says {want!r}: "
                    "the row was edited outside atomic-vault")
    return None


def _same(have: Any, want: Any) -> bool:
    if have == want:
        return True
    # SQLite keeps a number given to a TEXT column (a legacy record's numeric status) as text.
    if isinstance(have, str) and isinstance(want, (int, float)):
        try:
            return float(have) == float(want)
        except ValueError:
            return False
    return False


def spend_problem(stored: list[tuple], derived: list[tuple]) -> str | None:
    """Why the per-day spend table (day, runs, input, output, cost, unknown-cost runs)
    disagrees with the same sums taken over the records' columns, or None. The guardrail
    check reads the table: a forged row would move a cap decision."""
    have = {row[0]: row[1:] for row in stored if any(row[1:])}
    want = {row[0]: row[1:] for row in derived}
    for day in sorted(set(have) | set(want)):
        a, b = have.get(day, (0, 0, 0, 0.0, 0)), want.get(day, (0, 0, 0, 0.0, 0))
        counts_a, counts_b = [int(a[i]) for i in (0, 1, 2, 4)], [int(b[i]) for i in (0, 1, 2, 4)]
        # Sums of floats taken in another order differ in their last bits, never by 1e-9.
        if counts_a != counts_b or not math.isclose(float(a[3]), float(b[3]), rel_tol=1e-9, abs_tol=1e-9):
            return (f"tampered: the spend table says {day} had {int(a[0])} run(s) costing "
                    f"${float(a[3]):.6f}, the records say {int(b[0])} costing ${float(b[3]):.6f} "
                    "(edited outside atomic-vault; guardrail checks read this table)")
    return None


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
