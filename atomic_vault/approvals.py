"""Approvals as files: an escalated call waits in ``approvals/<id>.md`` for a person.

The file's YAML block names the action (tool, arguments, their SHA-256), why it was
escalated, the run and step, and ``decision: pending``. The operator edits ``decision:
approve|deny`` and ``decided_by:`` in any editor (or ``atomic-vault approvals``). The
decision is *taken* when a ``kind: approval`` record is logged: from then on the log, not
the file, holds it, so a later edit is reported and never applied. A decision covers the
arguments whose hash the file names and the run, step and call it names; nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from . import clock, fileio
from .config import yaml_blocks
from .errors import ConfigError

EXPIRES_AFTER = timedelta(hours=72)  # model.md's approval_hours when it is silent
DECISIONS = ("pending", "approve", "deny")
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\Z")


def args_sha256(arguments: Any) -> str:
    """The arguments' hash: of their canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_of(agent_path: Path) -> Path:
    return agent_path / "approvals"


def path_of(agent_path: Path, approval_id: str) -> Path:
    if not isinstance(approval_id, str) or not ID.match(approval_id):
        raise ConfigError(f"{str(approval_id)[:80]!r} is not an approval id", field="ID",
                          fix="use an id that `atomic-vault approvals NAME list` shows")
    return folder_of(agent_path) / f"{approval_id}.md"


@dataclass(frozen=True)
class Approval:
    """One approval file as read (``fields`` is its YAML block)."""

    id: str
    path: Path
    fields: dict[str, Any]
    file_sha256: str

    @property
    def decision(self) -> str:
        return self.fields.get("decision") or "pending"

    def expired(self, now: datetime) -> bool:
        try:
            return now >= datetime.fromisoformat(str(self.fields.get("expires_at")))
        except (ValueError, TypeError):  # TypeError: a hand-written time without its zone
            return True  # an unreadable expiry grants nothing


def request(agent_path: Path, *, agent: str, run: str, step: int, index: int, call: str, tool: str,
            arguments: dict[str, Any], rule: str | None, reason: str, now: datetime,
            why: str = "escalate", expires_after: timedelta = EXPIRES_AFTER) -> str:
    """Write the approval file for one call (atomic); its id. It counts as denied
    ``expires_after`` (model.md's ``approval_hours``) after ``now``."""
    approval_id = f"{run}-{step}-{index}"
    fields = {
        "id": approval_id, "agent": agent, "run": run, "step": step, "call": call, "tool": tool,
        "arguments": arguments, "args_sha256": args_sha256(arguments), "rule": rule, "reason": reason,
        "why": why, "manifest": f"the manifest of run {run} in its log record (atomic-vault log {agent} --json)",
        "requested_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + expires_after).isoformat(timespec="seconds"),
        "decision": "pending", "decided_by": None, "note": None, "amended_args": None,
    }
    block = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=100)
    explain = ("the effect of this call began in an earlier attempt but was never recorded as done: "
               "it may or may not have happened. Approve to run it again, deny to tell the model it was not."
               if why == "unknown" else f"The authority gate escalated this call: {reason}.")
    text = (f"# Approval {approval_id}\n\n"
            f"Agent **{agent}** asks to call the tool **{tool}** (run {run}, step {step}).\n\n"
            f"```yaml\n{block}```\n\n"
            f"{explain}\n\n"
            "To decide, edit the block above: set `decision: approve` or `decision: deny` and "
            "`decided_by:` your name (optionally `note:`, and `amended_args:` to approve other "
            "arguments instead), or run `atomic-vault approvals "
            f"{agent} approve {approval_id} --by NAME`. Then `atomic-vault resume {agent} {run}` "
            "continues the run. The decision covers exactly these arguments, this run and this step; "
            f"after {fields['expires_at']} it counts as denied.\n")
    target = path_of(agent_path, approval_id)
    fileio.make_dirs(target.parent)
    fileio.atomic_write(target, text)
    return approval_id


class _ProposalDumper(yaml.SafeDumper):
    """Multi-line text as one double-quoted line: a note body's own fences or YAML then
    never show as lines of the approval file."""


_ProposalDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"' if "\n" in value or "`" in value else None))


def fenced_diff(diff: str) -> str:
    """A diff as a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(run_) for run_ in re.findall(r"`+", diff)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}diff\n{diff}{fence}"


def propose(agent_path: Path, approval_id: str, *, agent: str, kind: str, arguments: dict[str, Any],
            reason: str, now: datetime, title: str, explain: str, run: str | None = None,
            expires_after: timedelta = EXPIRES_AFTER) -> Path:
    """Write the approval file of a proposal that is no tool call (``kind``: ``promotion``,
    ``consolidation``), created new (an existing id is refused); its path. The block has the
    keys of a call's approval, ``kind`` added, the proposal as its ``arguments`` (so an edit
    of the proposal is refused like an edit of a call's arguments); ``explain`` (Markdown,
    e.g. the diff) follows it. Approving is `atomic-vault approvals NAME approve ID`, which
    takes the proposal at once."""
    fields = {
        "id": approval_id, "agent": agent, "kind": kind, "run": run, "step": None, "call": None,
        "tool": None, "arguments": arguments, "args_sha256": args_sha256(arguments), "rule": None,
        "reason": reason, "why": kind, "requested_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + expires_after).isoformat(timespec="seconds"),
        "decision": "pending", "decided_by": None, "note": None, "amended_args": None,
    }
    block = yaml.dump(fields, Dumper=_ProposalDumper, sort_keys=False, allow_unicode=True, width=1 << 30)
    text = (f"# Approval {approval_id}\n\n{title}\n\n```yaml\n{block}```\n\n{explain}\n\n"
            "To decide, run `atomic-vault approvals "
            f"{agent} approve {approval_id} --by NAME` (or `deny`), or edit the block above (`decision: "
            "approve` or `deny`, `decided_by:` your name) and take it with the command named in the "
            f"text above. After {fields['expires_at']} it counts as denied.\n")
    target = path_of(agent_path, approval_id)
    fileio.make_dirs(target.parent)
    if not fileio.create_new(target, text):
        raise ConfigError(f"approval {approval_id} exists already", path=target, field="ID",
                          fix="propose again: every proposal gets a new id")
    return target


def read(agent_path: Path, approval_id: str) -> Approval:
    """The approval file, checked: a clear error naming the file and field, else the approval."""
    path = path_of(agent_path, approval_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"there is no approval {approval_id!r}", path=path, field="ID",
                          fix="use an id that `atomic-vault approvals NAME list` shows") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        blocks = yaml_blocks(text, path)
    except ConfigError as exc:
        raise ConfigError(f"the approval's YAML block does not parse ({exc.args[0] if exc.args else exc})",
                          path=path, field="yaml block",
                          fix="fix the edit (e.g. `decision: approve` on its own line) so the block is YAML") from None
    if len(blocks) != 1 or not isinstance(blocks[0][1], dict):
        raise ConfigError("an approval file has exactly one ```yaml block", path=path, field="yaml block",
                          fix="restore the one block the runtime wrote")
    fields = blocks[0][1]
    decision = fields.get("decision") or "pending"
    if decision not in DECISIONS:
        raise ConfigError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}", path=path,
                          field="decision", fix="write decision: approve or decision: deny")
    if decision != "pending" and not str(fields.get("decided_by") or "").strip():
        raise ConfigError("a decision names who took it", path=path, field="decided_by",
                          fix="write decided_by: your name next to the decision")
    if fields.get("id") != approval_id:
        raise ConfigError(f"the block's id {fields.get('id')!r} is not the file's {approval_id!r}",
                          path=path, field="id", fix="restore the id the runtime wrote")
    if args_sha256(fields.get("arguments")) != fields.get("args_sha256"):
        raise ConfigError("the arguments were edited: a decision covers only the arguments the "
                          "runtime wrote (their args_sha256)", path=path, field="arguments",
                          fix="restore the arguments; to approve others, put them under amended_args:")
    amended = fields.get("amended_args")
    if amended is not None and not isinstance(amended, dict):
        raise ConfigError("amended_args is not a mapping of argument names to values", path=path,
                          field="amended_args", fix="write amended_args: {name: value, ...} or leave it empty")
    return Approval(approval_id, path, fields, hashlib.sha256(raw).hexdigest())


def covers(approval: Approval, *, run: str, step: int, call: str, args_sha: str) -> str | None:
    """Why the approval does not cover this call, or None."""
    fields = approval.fields
    for key, want in (("run", run), ("step", step), ("call", call), ("args_sha256", args_sha)):
        if fields.get(key) != want:
            return f"{key} is {fields.get(key)!r}, the call's is {want!r}"
    return None


def decide(agent_path: Path, approval_id: str, decision: str, by: str, note: str | None = None) -> Approval:
    """Write a decision into a pending approval file, as an editor would (atomic)."""
    approval = read(agent_path, approval_id)
    if approval.decision != "pending":
        raise ConfigError(f"approval {approval_id} is already decided ({approval.decision} by "
                          f"{approval.fields.get('decided_by')})", path=approval.path, field="decision",
                          fix="a decision is taken once; request the action again in a new run")
    if not by.strip():
        raise ConfigError("a decision names who took it", field="--by", fix="pass --by YOUR_NAME")
    text = approval.path.read_text(encoding="utf-8")
    lines = text.split("\n")
    values = {"decision": decision, "decided_by": by, "note": note,
              "decided_at": clock.now(None).isoformat(timespec="seconds")}
    seen: set[str] = set()
    for i, line in enumerate(lines):
        for key, value in values.items():
            if line.startswith(f"{key}:") and key not in seen:
                lines[i] = f"{key}: {json.dumps(value, ensure_ascii=False)}"
                seen.add(key)
    missing = [key for key in values if key not in seen]
    if missing:  # add them before the block closes
        close = next(i for i, line in enumerate(lines) if line.startswith("decision:"))
        lines[close + 1:close + 1] = [f"{key}: {json.dumps(values[key], ensure_ascii=False)}" for key in missing]
    fileio.atomic_write(approval.path, "\n".join(lines))
    return read(agent_path, approval_id)


def listing(agent_path: Path) -> list[str]:
    """The ids of the approval files, oldest first."""
    folder = folder_of(agent_path)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.md") if ID.match(p.stem))


def status(folder: Any, log: Any, approval_id: str | None = None) -> list[dict[str, Any]]:
    """Each approval (or one) as a row: its fields and its state — pending, expired,
    taken (the log holds the decision), edited after its decision was taken (the edit is
    not applied), decided (not yet taken: the next resume takes it), or invalid."""
    from .protocols import LogQuery

    taken = {r.get("approval"): r for r in log.query(folder, LogQuery(kind="approval"))}
    now = clock.now(None)
    rows = []
    for one in ([approval_id] if approval_id is not None else listing(folder.path)):
        try:
            approval = read(folder.path, one)
        except ConfigError as exc:
            if approval_id is not None and "there is no approval" in str(exc):
                raise
            rows.append({"id": one, "state": "invalid", "problem": str(exc)})
            continue
        row = {"id": one, **{k: v for k, v in approval.fields.items() if k != "id"}}
        record = taken.get(one)
        if record is not None:
            row["state"] = f"taken: {record.get('decision')}"
            row["taken_seq"] = record.get("seq")
            if record.get("file_sha256") != approval.file_sha256:
                row["state"] = "edited after taken"
                row["problem"] = (f"the file changed after its decision ({record.get('decision')}) was "
                                  "taken; the edit is not applied")
        elif approval.decision != "pending":
            row["state"] = f"decided: {approval.decision}"
        else:
            row["state"] = "expired" if approval.expired(now) else "pending"
        rows.append(row)
    return rows
