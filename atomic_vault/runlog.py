"""The run log: one hash-chained JSON record per run, in day files, with a HEAD file.

Each record carries ``seq`` (1, 2, … per agent, never derived from the clock), ``prev``
(the previous record's hash) and ``hash`` (sha256 of the record's canonical JSON without
``hash``). ``log/HEAD`` names the last seq and hash so that a cut-off tail is detected.
Records written before the chain existed (older vaults) are legacy history.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import HeadBehind, LockLost, LogError
from .fileio import append_jsonl, atomic_write, ends_torn, last_line, loads_strict, read_jsonl
from .vault import MONTH, AgentFolder


def canonical(record: dict[str, Any]) -> bytes:
    body = {key: value for key, value in record.items() if key != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


_DAY_FILE = re.compile(r"^.{4}-.{2}-.{2}\.jsonl$")


def _months(folder: AgentFolder) -> list[str]:
    try:
        entries = os.scandir(folder.log)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with entries:
        return sorted(e.name for e in entries if MONTH.match(e.name) and e.is_dir())


def _days(folder: AgentFolder, month: str) -> list[str]:
    return sorted(name for name in os.listdir(folder.log / month) if _DAY_FILE.match(name))


def day_files(folder: AgentFolder, since: str | None = None) -> list[Path]:
    """Every day file, oldest first (the chain's file order). With ``since`` (an ISO date),
    only the files of that day on, plus the newest file (after a clock change it may hold
    later records): folder listings of older months are not even read."""
    files: list[Path] = []
    months = _months(folder)
    for month in months:
        if since and month < since[:7] and month != months[-1]:
            continue
        base = folder.log / month
        files.extend(base / name for name in _days(folder, month) if not since or name >= since[:10])
    if since and months:
        newest = newest_day_files(folder)
        last = next(newest, None)
        if last is not None and (not files or files[-1] != last):
            files.append(last)
    return files


def newest_day_files(folder: AgentFolder) -> Iterator[Path]:
    """Day files newest first, listed lazily: the tail of the log costs the same at any size."""
    for month in reversed(_months(folder)):
        for name in reversed(_days(folder, month)):
            yield folder.log / month / name


def read_head(folder: AgentFolder) -> dict[str, Any] | None:
    try:
        head = json.loads(folder.head.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise LogError("is not valid JSON", path=folder.head,
                       fix="run `atomic-vault doctor AGENT --repair` to rebuild it from the log")
    if not isinstance(head, dict) or not isinstance(head.get("seq"), int):
        raise LogError("does not hold a seq and a hash", path=folder.head,
                       fix="run `atomic-vault doctor AGENT --repair` to rebuild it from the log")
    return head


def tail(folder: AgentFolder) -> tuple[int, str | None, Path | None]:
    """(seq, hash) of the last chained record and the newest day file, reading only tails."""
    files = newest_day_files(folder)
    newest = next(files, None)
    if newest is not None and ends_torn(newest):
        raise LogError("the last line is torn (a crash during a write?); nothing more can be "
                       "appended safely", path=newest,
                       fix="run `atomic-vault doctor AGENT --repair` to move it aside")
    for path in itertools.chain([newest] if newest else [], files):
        line = last_line(path)
        if line is None:
            continue
        try:
            record = loads_strict(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise LogError("the last whole line is not a JSON record", path=path,
                           fix="run `atomic-vault verify AGENT` to find the damage")
        if "hash" not in record and "seq" not in record:
            return 0, None, newest  # legacy history only: the chain starts now
        if type(record.get("seq")) is not int or not isinstance(record.get("hash"), str):
            raise LogError("the last record has no valid seq and hash", path=path,
                           fix="run `atomic-vault verify AGENT` to find the damage")
        return record["seq"], record["hash"], newest
    return 0, None, newest


def write_head(folder: AgentFolder, seq: int, digest: str | None, fence: list | None = None) -> None:
    head: dict[str, Any] = {"seq": seq, "hash": digest}
    if fence:
        head["fence"] = list(fence)
    atomic_write(folder.head, json.dumps(head) + "\n")


def ready(folder: AgentFolder) -> tuple[int, str | None, Path | None]:
    """The chain's tail, after checking that a record can be appended safely: no torn
    last line, and no records missing behind HEAD. Cheap: reads only tails."""
    seq, prev, newest = tail(folder)
    head = read_head(folder)
    if head is not None and head["seq"] > seq:
        raise LogError(f"HEAD says the log reaches seq {head['seq']} but it ends at {seq}: "
                       "records are missing", path=folder.head,
                       fix="run `atomic-vault verify AGENT`; restore the missing records from backup or git")
    return seq, prev, newest


def append(folder: AgentFolder, record: dict[str, Any],
           fence: tuple[str, int] | None = None) -> dict[str, Any]:
    """Chain and append one record to the day file of its ``ts``, then move HEAD. The
    caller serialises appends (FileLog holds the log lock). A ``fence`` lower than the one
    HEAD remembers for the same lock backend means a newer holder has written: refused."""
    if record.get("agent") != folder.name:
        raise LogError(f"the record names agent {record.get('agent')!r}, not {folder.name!r}",
                       path=folder.log, field="agent", fix="append an agent's records to its own log")
    seq, prev, newest = ready(folder)
    head = read_head(folder)
    kept = head.get("fence") if head else None
    kept = kept if isinstance(kept, list) and len(kept) == 2 else None
    if fence is not None:
        if kept is not None and kept[0] == fence[0] and isinstance(kept[1], int) and fence[1] < kept[1]:
            raise LockLost(f"lock token {fence[1]} is older than token {kept[1]} already written: "
                           "this run's lock expired and another run took it; nothing was logged",
                           path=folder.head, fix="raise the lock lease, or look for a hung run")
        kept = [fence[0], fence[1]]
    chained = {**record, "seq": seq + 1, "prev": prev}
    chained["hash"] = record_hash(chained)
    if head is None and seq == 0:
        # Before the first chained record, HEAD says seq 0: a crash between the append and
        # HEAD's rewrite then leaves HEAD behind (a warning), not missing (a broken chain).
        write_head(folder, 0, None, kept)
    path = folder.log_file(_day_of(record))
    if newest is not None and newest.name > path.name:
        path = newest  # the clock went back: never append before the chain's end
    append_jsonl(path, chained)
    try:
        write_head(folder, chained["seq"], chained["hash"], kept)
    except OSError as exc:  # the record is durable: the run is logged, HEAD lags (spec/02)
        raise HeadBehind(chained, exc) from exc
    return chained


def continues(record: dict[str, Any], seq: int, prev: str | None, agent: str) -> tuple[int, str]:
    """Check that an already-chained record (a migration) follows (seq, prev) of ``agent``;
    returns its own (seq, hash)."""
    if record.get("agent") != agent:
        raise LogError(f"record seq {record.get('seq')} belongs to agent {record.get('agent')!r}",
                       field="agent", fix="migrate each agent's log into its own agent")
    if record.get("seq") != seq + 1 or record.get("prev") != prev or record.get("hash") != record_hash(record):
        raise LogError(f"record seq {record.get('seq')} does not continue the chain at seq {seq}",
                       field="seq", fix="the source log must verify, and the target must be empty "
                                        "or hold exactly the source's first records")
    return record["seq"], record["hash"]


def _day_of(record: dict[str, Any]) -> date:
    try:
        return date.fromisoformat(str(record.get("ts", ""))[:10])
    except ValueError:
        return date.today()


def records(folder: AgentFolder) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Every whole record in chain order as (file, line number, record)."""
    for path in day_files(folder):
        found, _ = read_jsonl(path)
        for number, record in found:
            yield path, number, record


@dataclass
class Verification:
    ok: bool = True
    records: int = 0
    legacy: int = 0
    head: dict[str, Any] | None = None
    first_bad: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def fail(self, where: Any, line: int, seq: Any, reason: str) -> None:
        if self.first_bad is None:
            self.ok = False
            self.first_bad = {"file": str(where), "line": line, "seq": seq, "reason": reason}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "legacy": self.legacy,
                "head": self.head, "first_bad": self.first_bad, "warnings": self.warnings}


def check_chain(agent: str, entries: Iterable[tuple[Any, int, dict[str, Any] | None, str | None]],
                head: dict[str, Any] | None, head_where: Any, *, head_error: str | None = None,
                anchor: str | None = None) -> Verification:
    """The chain rules, shared by every LogBackend. ``entries`` yields (where, line, record,
    problem) in stored order: a record, or None and why the line cannot be read (a problem
    starting with "warning:" is reported but does not break the chain). A problem beside a
    record is damage around it (a derived column that disagrees with it), reported once
    the record itself passes. A problem starting with "tampered:" is reported as it is.
    ``head`` is what the store's HEAD said, read *before* the records (see ``verify``)."""
    result = Verification(head=head)
    want = _parse_anchor(anchor) if anchor is not None else None
    anchor_seen = False
    expected, prev, last_where, last_line_no = 1, None, None, 0
    for where, number, record, problem in entries:
        if record is None:
            if problem and problem.startswith("warning:"):
                result.warnings.append(f"{where}:{number}: {problem[8:].strip()}")
            else:
                result.fail(where, number, None, _reason(problem))
                return result
            continue
        last_where, last_line_no = where, number
        if "hash" not in record and "seq" not in record:
            if expected == 1:
                result.legacy += 1
                continue
            result.fail(where, number, None, "inserted: an unchained record after the chain began")
            return result
        result.records += 1
        seq = record.get("seq")
        if record.get("agent") != agent:
            result.fail(where, number, seq, f"belongs to another agent ({record.get('agent')!r})")
        elif record.get("hash") != record_hash(record):
            result.fail(where, number, seq, "edited: the content does not match its hash")
        elif type(seq) is not int or seq < expected:
            result.fail(where, number, seq, f"reordered or duplicated: seq {seq} where {expected} was due")
        elif seq > expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
            result.fail(where, number, seq, f"missing: seq {missing} absent before this record")
        elif record.get("prev") != prev:
            result.fail(where, number, seq, "inserted or replaced: prev does not match the record before")
        elif want is not None and seq == want[0]:
            anchor_seen = True
            if record["hash"] != want[1]:
                result.fail(where, number, seq, "differs from the anchor: the log was rewritten")
        if result.first_bad is None and problem:
            result.fail(where, number, seq, _reason(problem))
        if result.first_bad is not None:
            return result
        expected, prev = seq + 1, record["hash"]
    if head_error is not None:
        result.fail(head_where, 1, None, f"log/HEAD {head_error}")
        return result
    last_seq = expected - 1
    if head is None:
        if last_seq:
            result.fail(head_where, 1, None, "log/HEAD is missing (deleted, or a rewrite?)")
    elif head["seq"] > last_seq:
        result.fail(last_where or head_where, last_line_no, last_seq,
                    f"truncated: HEAD says seq {head['seq']} but the log ends at seq {last_seq}")
    elif head["seq"] == last_seq and head.get("hash") != prev:
        result.fail(head_where, 1, head["seq"], "HEAD's hash does not match the last record (rewritten?)")
    elif head["seq"] < last_seq:
        result.warnings.append(f"HEAD is behind the log (seq {head['seq']} < {last_seq}): a run was "
                               "cut off after its append; `doctor --repair` advances HEAD")
    if want is not None and result.ok and not anchor_seen:
        result.fail(head_where, 1, want[0], "the anchored record is not in the log")
    return result


def _reason(problem: str) -> str:
    return problem if problem.startswith("tampered:") else f"unreadable line: {problem}"


def _parse_anchor(anchor: str) -> tuple[int, str]:
    """An anchor 'SEQ:HASH' kept elsewhere proves the log was not wholly rewritten."""
    seq_text, _, digest = anchor.partition(":")
    try:
        return int(seq_text), digest
    except ValueError:
        raise LogError(f"anchor {anchor!r} is not SEQ:HASH", field="--anchor",
                       fix="pass the value printed by `atomic-vault verify AGENT --json` (head)") from None


def verify(folder: AgentFolder, anchor: str | None = None) -> Verification:
    """Walk the whole files log and report the first broken record and why."""
    if anchor is not None:
        _parse_anchor(anchor)
    # HEAD is read before the records: a run appending meanwhile can then only make HEAD
    # look behind (a warning), never ahead (which would be reported as truncation).
    try:
        head, head_error = read_head(folder), None
    except LogError as exc:
        head, head_error = None, exc.message
    return check_chain(folder.name, _file_entries(folder), head, folder.head,
                       head_error=head_error, anchor=anchor)


def _file_entries(folder: AgentFolder) -> Iterator[tuple[Path, int, dict[str, Any] | None, str | None]]:
    files = day_files(folder)
    for path in files:
        found, problems = read_jsonl(path)
        merged: list[tuple[int, dict[str, Any] | None, str | None]] = [(n, r, None) for n, r in found]
        for number, problem in problems:
            if problem.startswith("torn") and path == files[-1]:
                problem = f"warning: {problem}; `doctor --repair` moves it aside"
            merged.append((number, None, problem))
        for number, record, problem in sorted(merged, key=lambda item: item[0]):
            yield path, number, record, problem


def copied_from(first_bad: dict[str, Any] | None) -> str | None:
    """The agent whose log this is, when a chain's first record names another agent: the
    folder was copied with its log (the usual cause), rather than a record slipped in."""
    reason = (first_bad or {}).get("reason") or ""
    if first_bad and first_bad.get("seq") == 1 and reason.startswith("belongs to another agent ("):
        return reason[len("belongs to another agent ("):].rstrip(")").strip("'\"")
    return None


def copied_remedy(agent: str, source: str) -> str:
    return (f"this log was copied from agent {source!r}: its records name {source!r} and "
            f"continue that agent's chain. Move log/ aside (e.g. to log.from-{source}/) and the "
            f"next run of {agent!r} starts a chain of its own; to copy an agent, use "
            "`atomic-vault init NAME --from PATH`, which leaves the log behind")
