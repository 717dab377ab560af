"""Resuming a run that ended awaiting approval: its decisions taken once, then the loop.

The suspended run's record holds the loop's state (the request so far and the results of
its last step, the pending calls as placeholders). Each pending call's decision is read
from its approval file, checked to cover exactly that call, and taken once: logged as a
``kind: approval`` record, after which the log (not the file) holds it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import approvals, keys, ledger, tools
from .config import load_tools_config
from .errors import AwaitingApproval, ConfigError
from .models import estimate_tokens
from .protocols import LogQuery


class Resumed:
    """The prompt of a resumed run: the suspended run's request and the decided results."""

    def __init__(self, state: dict[str, Any], results: list[dict[str, Any]], suspended: dict[str, Any],
                 decisions: list[dict[str, Any]]):
        self.system = state["system"]
        self.messages = [*state["messages"], *results]
        self.work_item = state.get("work_item") or "(resumed)"
        self.manifest = suspended.get("manifest") or {}
        self.counted = None
        self.decisions = decisions
        self.conversation_id = suspended.get("conversation_id")  # the resumed run is that turn

    @property
    def tokens(self) -> int:
        return estimate_tokens(" ".join(str(b.get("text", "")) for b in self.system)
                               + " ".join(str(m.get("content", "")) for m in self.messages))


def _bad(run_id: str, message: str, fix: str) -> ConfigError:
    return ConfigError(message, field="RUN_ID", fix=fix)


def prepare(agent: Any, run_id: str, started: datetime
            ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The suspended record, its state, the decided tool results and the decisions taken.
    Nothing is logged or run until every pending call has a valid decision."""
    suspended = agent.log.get(agent.folder, run_id)
    if suspended is None:
        raise _bad(run_id, f"{agent.name} has no run {run_id!r}",
                   f"atomic-vault log {agent.name} shows the runs (status awaiting_approval)")
    state = suspended.get("suspended")
    if suspended.get("status") != "awaiting_approval" or not isinstance(state, dict):
        raise _bad(run_id, f"run {run_id} is {suspended.get('status')}, not awaiting approval: nothing to resume",
                   "resume only a run that ended with status awaiting_approval (exit code 5)")
    since = str(suspended.get("ts", ""))[:10] or None
    later = agent.log.query(agent.folder, LogQuery(since=since, kind="run"))
    done = [r for r in later if r.get("resumes") == run_id and r.get("status") in ("ok", "awaiting_approval")]
    if done:
        raise _bad(run_id, f"run {run_id} was resumed already, as run {done[0].get('run_id')}",
                   f"a run is resumed once; atomic-vault log {agent.name} shows the run that continued it")
    taken = {r.get("approval"): r for r in agent.log.query(agent.folder, LogQuery(since=since, kind="approval"))
             if r.get("run") == run_id}
    toolbox = tools.load(load_tools_config(agent.folder.tools), agent.folder.tools)
    toolbox = tools.discover(toolbox, agent.folder.path, [])
    now = started
    step = int(state["step"])
    plan: list[tuple[dict[str, Any], approvals.Approval, dict[str, Any] | None]] = []
    waiting: list[str] = []
    for result in state["results"]:
        if not result.get("pending"):
            continue
        approval = approvals.read(agent.folder.path, result["pending"])
        problem = approvals.covers(approval, run=run_id, step=step, call=result["tool_call_id"],
                                   args_sha=approvals.args_sha256(result.get("arguments")))
        if problem:
            raise ConfigError(f"the approval does not cover the call it answers: {problem}", path=approval.path,
                              field="run/step/call/args_sha256",
                              fix="restore the values the runtime wrote; a decision covers only its own call")
        prior = taken.get(approval.id)
        if prior is None and approval.decision == "pending" and not approval.expired(now):
            waiting.append(approval.id)
        amended = approval.fields.get("amended_args")
        tool = toolbox.tools.get(result["name"])
        if prior is None and approval.decision == "approve" and amended is not None and tool is not None:
            errors = tools.validate(tool.input_schema, amended) if tool.checked else []
            if errors:
                raise ConfigError("amended_args do not fit the tool's schema: " + "; ".join(errors),
                                  path=approval.path, field="amended_args", fix="fix or remove amended_args")
        plan.append((result, approval, prior))
    if waiting:
        raise AwaitingApproval(f"run {run_id} still awaits a decision: {', '.join(waiting)}",
                               path=approvals.path_of(agent.folder.path, waiting[0]), field="decision",
                               fix=f"write decision: approve or deny (and decided_by:) in the file, or "
                                   f"atomic-vault approvals {agent.name} approve ID --by NAME; then resume again")
    redact = keys.Redactor()
    decided: dict[str, dict[str, Any]] = {}
    decisions: list[dict[str, Any]] = []
    for result, approval, prior in plan:
        record = prior or _take(agent, redact, approval, run_id, step, result, now)
        if prior is not None and prior.get("file_sha256") != approval.file_sha256:
            decisions.append({"approval": approval.id, "note": "the file was edited after its decision was "
                              "taken; the edit is not applied"})
        decided[result["pending"]] = record
    results = []
    for result in state["results"]:
        if not result.get("pending"):
            results.append(result)
            continue
        record = decided[result["pending"]]
        content, status = _outcome(agent, redact, record, result, toolbox, state, step, now)
        decisions.append({"approval": record.get("approval"), "decision": record.get("decision"),
                          "decided_by": record.get("decided_by"), "effect": status})
        results.append({"role": "tool", "tool_call_id": result["tool_call_id"], "name": result["name"],
                        "content": content, "is_error": status != "ok"})
    return suspended, {**state, "run_key": state.get("run_key") or run_id}, results, decisions


def _take(agent: Any, redact: Any, approval: approvals.Approval, run_id: str, step: int,
          result: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Log the decision (``kind: approval``): from now on the log holds it, not the file."""
    fields = approval.fields
    decision = fields.get("decision") if fields.get("decision") != "pending" else "expired"
    if decision != "expired" and approval.expired(now):
        decision = "expired"  # decided too late: an expired approval is denied
    amended = fields.get("amended_args") if decision == "approve" else None
    record = {"kind": "approval", "ts": now.isoformat(timespec="milliseconds"), "agent": agent.name,
              "trigger": agent.trigger,
              "approval": approval.id, "run": run_id, "step": step, "call": result["tool_call_id"],
              "tool": result["name"], "args_sha256": fields.get("args_sha256"), "decision": decision,
              "decided_by": fields.get("decided_by"), "note": fields.get("note"),
              "why": fields.get("why", "escalate"), "file_sha256": approval.file_sha256,
              **({"amended_args": amended, "amended_sha256": approvals.args_sha256(amended)} if amended else {})}
    with agent.lock.hold(agent.folder, agent.lock_timeout) as lease:
        lease.check()
        fence = (agent.lock.name, lease.token) if getattr(lease, "fenced", True) else None
        again = [r for r in agent.log.query(agent.folder, LogQuery(since=str(now.date()), kind="approval"))
                 if r.get("approval") == approval.id]
        if again:  # another resume took it first, under this lock: its decision stands
            return again[0]
        return agent.log.append(agent.folder, redact.all(record), fence=fence)


def _outcome(agent: Any, redact: Any, record: dict[str, Any], result: dict[str, Any], toolbox: tools.Toolbox,
             state: dict[str, Any], step: int, now: datetime) -> tuple[str, str]:
    """The tool result the model reads for a decided call, and the effect's status."""
    if record.get("decision") == "deny":
        note = f": {record['note']}" if record.get("note") else ""
        return (f"a person ({record.get('decided_by')}) denied this call, nothing was run{note}", "denied")
    if record.get("decision") != "approve":
        return ("nobody decided on this call before its approval expired, so it counts as denied; "
                "nothing was run", "expired")
    tool = toolbox.tools.get(result["name"])
    if tool is None:
        return (f"the call was approved, but tools.md no longer declares {result['name']!r}; nothing was run",
                "not_run")
    arguments = record.get("amended_args") or result.get("arguments") or {}
    args_sha = approvals.args_sha256(arguments)
    run_key = state.get("run_key") or record["run"]
    supplied = arguments.get("idempotency_key") if isinstance(arguments.get("idempotency_key"), str) else None
    done, how = ledger.perform(agent, redact, effect_key=ledger.key(run_key, step, args_sha, supplied),
                               tool=tool, arguments=arguments,
                               about={"ts": now.isoformat(timespec="milliseconds"), "trigger": agent.trigger,
                                      "run": record["run"], "step": step, "call": result["tool_call_id"],
                                      "args_sha256": args_sha, "approval": record.get("approval")},
                               agent_root=agent.folder.path,
                               force=record.get("why") == "unknown")
    if how == "unknown":  # only when a resume crashed mid-effect: never run twice unasked
        return ("the approved call's effect began in an earlier resume and was never recorded as done; "
                "nothing was run again", "unknown")
    return done.text, done.status
