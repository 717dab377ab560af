"""The tool loop: model, gate, tool, result back to the model, up to ``max_steps`` calls.

With no tools declared this is one model call, as it always was (the capture tool's calls
become captures either way). Each further call is checked against the cost caps before
it is made; every step and every verdict is kept for the run's write-back, where the
verdicts are logged (``kind: verdict``) before the run's record, under the same lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable, Protocol

from . import approvals, captures, clock, helpers, ledger, pricing, retries, tools
from .config import RetryPolicy
from .keys import redact
from .models import Model, ModelRequest, ModelResponse, ToolCall
from .policy import Gate

RECORD_CHARS = 2000  # of each argument text and result kept in the step record


class Loop(Protocol):
    """What the loop needs of the run (agent._Run)."""

    id: str
    started: Any
    agent: Any
    request: ModelRequest
    toolbox: tools.Toolbox
    gate: Gate | None
    warnings: list[str]

    def reserve_next(self, model: Model | None, request: ModelRequest, spent_usd: float) -> str | None: ...
    def price(self, model_name: str) -> Any: ...


def args_sha256(arguments: Any) -> str:
    """The arguments' hash: of their canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def complete(run: Loop, candidates: list[Callable[[], Model]], policy: RetryPolicy,
             max_steps: int, agent_root: Any, first_step: int = 1,
             recorded: dict[tuple[str, str], list[str]] | None = None) -> retries.Completion:
    """Call the model until it answers without asking for a tool (or the loop must stop,
    or a call awaits a person: then ``done.suspended`` holds what resuming needs).
    ``first_step`` > 1: a resumed run, whose request already holds the earlier steps.
    ``recorded`` (a replay's): tool results by (tool, arguments' sha256), given back in place
    of running anything — a replay never repeats an effect, nor asks the gate again."""
    request = run.request
    done = retries.complete(candidates, request, policy)
    here = helpers.active(run)  # where a Python tool's helper calls (agent.helper) are recorded
    if here is not None:
        here.done = done
    if not run.toolbox.tools and not helpers.offered(run):
        if done.response is not None:
            done.response = _split(done.response)
        return done
    answers: list[ModelResponse] = []
    attempts = list(done.attempts)
    step = first_step
    while True:
        if done.response is None:
            break
        response = _split(done.response)
        answers.append(response)
        name = response.model or getattr(done.model, "name", "custom")
        entry: dict[str, Any] = {"step": step, "model": name, "input_tokens": response.input_tokens,
                                 "output_tokens": response.output_tokens,
                                 "cost_usd": pricing.run_cost(run.price(name), response), "calls": []}
        done.steps.append(entry)
        if here is not None:
            here.entry = entry
        calls = [call for call in response.tool_calls if call.name != captures.TOOL_NAME]
        if not calls:
            break
        if step >= max_steps:
            entry["stopped"] = f"max_steps {max_steps} reached: the model's last tool calls were not run"
            run.warnings.append(f"the tool loop stopped at max_steps {max_steps} (model.md): "
                                f"{len(calls)} tool call(s) of the last step were not run")
            break
        results = [_call(run, step, call, entry, agent_root, done, index, recorded)
                   for index, call in enumerate(response.tool_calls, 1)]
        turn = {"role": "assistant", "content": response.text,
                "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls]}
        pending = [r for r in results if r.get("pending")]
        if pending:  # the run ends here, awaiting a decision; resuming starts from this state
            done.suspended = {"step": step, "system": request.system,
                              "messages": [*request.messages, turn], "results": results,
                              "work_item": getattr(run, "work_item", ""),
                              "run_key": getattr(run, "run_key", run.id)}
            entry["stopped"] = f"awaiting approval: {', '.join(r['pending'] for r in pending)}"
            break
        request = replace(request, messages=[*request.messages, turn, *results])
        refused = run.reserve_next(done.model, request, helpers.spent(done))
        if refused:
            entry["stopped"] = f"the cost guardrails refused step {step + 1}: {refused}"
            run.warnings.append(f"the tool loop stopped before step {step + 1}: {refused}")
            break
        model = done.model
        following = retries.complete([lambda: model], request, policy)
        attempts += following.attempts
        done.response, done.error, done.fix = following.response, following.error, following.fix
        step += 1
    done.attempts = attempts
    if answers:
        done.response = _combined(answers, done.response if done.error is None else None)
    return done


def _split(response: ModelResponse) -> ModelResponse:
    """The capture tool's calls moved to ``tool_captures`` (validated like fenced blocks)."""
    found = tuple(redact(call.arguments) for call in response.tool_calls if call.name == captures.TOOL_NAME)
    return replace(response, tool_captures=response.tool_captures + found) if found else response


def _combined(answers: list[ModelResponse], last: ModelResponse | None) -> ModelResponse:
    """One response for the run: every step's text and captures, the tokens summed (the
    run's cost is priced from them), the last step's model."""
    final = answers[-1]
    cost = [a.cost_usd for a in answers]
    return replace(final, text="\n\n".join(a.text for a in answers if a.text.strip()) + (
        "" if any(a.text.strip() for a in answers) else final.text),
        input_tokens=sum(a.input_tokens or 0 for a in answers),
        output_tokens=sum(a.output_tokens or 0 for a in answers),
        cache_read_tokens=sum(a.cache_read_tokens for a in answers),
        cache_write_tokens=sum(a.cache_write_tokens for a in answers),
        tool_captures=tuple(raw for a in answers for raw in a.tool_captures),
        tokens_estimated=any(a.tokens_estimated for a in answers),
        cost_usd=None if any(c is None for c in cost) else sum(cost))


def _short(text: str) -> str:
    return text if len(text) <= RECORD_CHARS else text[:RECORD_CHARS - 1] + "…"


def _call(run: Loop, step: int, call: ToolCall, entry: dict[str, Any], agent_root: Any,
          done: retries.Completion, index: int = 1,
          recorded: dict[tuple[str, str], list[str]] | None = None) -> dict[str, Any]:
    """Gate and run one call; the tool message that carries its result to the model."""
    record: dict[str, Any] = {"id": call.id, "tool": call.name, "args": _short(call.arguments)}
    entry["calls"].append(record)

    def told(status: str, text: str, verdict: str | None = None) -> dict[str, Any]:
        record["effect"] = {"status": status, "result": _short(text)}
        done.tool_texts.append((step, call.id, call.arguments, text))
        if verdict:
            record["verdict"] = verdict
        return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": text,
                "is_error": status != "ok"}

    if call.name == captures.TOOL_NAME:
        return told("ok", "noted: the capture is validated and saved when the run ends")
    if call.name == helpers.TOOL_NAME and helpers.offered(run):  # built in: no effect, so no gate
        arguments, problem = tools.parse_arguments(call.arguments)
        errors = [problem] if problem else tools.validate(helpers.SPEC["input_schema"], arguments)
        if errors:
            return told("invalid", "the arguments do not fit the tool's schema, nothing was run: " + "; ".join(errors))
        status, text = helpers.call(run, done, entry, arguments["instruction"], arguments.get("text", ""))
        record["helper"] = entry["helpers"][-1]
        return told(status, text)
    tool = run.toolbox.tools.get(call.name)
    if tool is None:
        return told("not_run", f"there is no tool {call.name!r}; the tools are: {', '.join(run.toolbox.tools)}")
    arguments, problem = tools.parse_arguments(call.arguments)
    errors = [problem] if problem else tools.validate(tool.input_schema, arguments) if tool.checked else []
    if errors:
        return told("invalid", "the arguments do not fit the tool's schema, nothing was run: " + "; ".join(errors))
    record["args_sha256"] = args_sha256(arguments)
    if recorded is not None:  # a replay: the recorded result, never the tool itself
        key = record["args_sha256"]
        if getattr(run, "judge_replay", False) and run.gate is not None:  # replay --policy
            verdict = run.gate.decide(call.name, arguments)
            record["rule"], record["verdict"] = verdict.rule, verdict.outcome
            if verdict.outcome in ("block", "escalate"):
                return told("blocked" if verdict.outcome == "block" else "escalated",
                            f"the replay's policy {verdict.outcome}s this call ({verdict.reason}); "
                            "nothing was run", verdict.outcome)
            if verdict.outcome == "revise":
                key = record["revised_sha256"] = args_sha256(verdict.arguments)
        results = recorded.get((call.name, key))
        if results:
            return told("replayed", results.pop(0))
        run.warnings.append(f"step {step}: {call.name} was asked for with arguments the recorded run "
                            "never used; a replay runs no tool, so the model was told so")
        return told("not_run", "this is a replay: no tool is run, and the recorded run made no "
                    "such call, so there is no result to give back")
    verdict = run.gate.decide(call.name, arguments) if run.gate else None
    if verdict is None:  # no gate at all cannot happen in a run; refuse rather than run unchecked
        return told("not_run", "no policy could be consulted, so nothing was run", "block")
    record["rule"] = verdict.rule
    # ts is the run's start, as in the run's record, so that both land in the same day file
    # (records go to the file of their ts) even when the loop runs past midnight.
    log = {"kind": "verdict", "ts": run.started.isoformat(timespec="milliseconds"),
           "decided": clock.now(run.started.tzinfo).isoformat(timespec="milliseconds"),
           "agent": run.agent.name, "trigger": run.agent.trigger, "run": run.id,
           "step": step, "call": call.id, "tool": call.name, "args_sha256": record["args_sha256"],
           "rule": verdict.rule, "policy_sha256": verdict.policy_sha256, "outcome": verdict.outcome,
           "reason": verdict.reason}
    if verdict.floor_sha256:
        log["floor_sha256"] = verdict.floor_sha256
    if verdict.outcome == "revise":
        log["revised_sha256"] = record["revised_sha256"] = args_sha256(verdict.arguments)
        record["revised_args"] = _short(json.dumps(verdict.arguments, ensure_ascii=False))
    if verdict.outcome in ("block", "escalate"):
        done.verdicts.append(log)  # logged at write-back; a call that runs logs its verdict first
    if verdict.outcome == "block":
        return told("blocked", f"the policy blocked this call, nothing was run: {verdict.reason}", "block")
    if verdict.outcome == "escalate":
        return _pending(run, step, index, call, arguments, verdict.rule, verdict.reason, record)
    run_key = getattr(run, "run_key", run.id)
    effect_key = ledger.key(run_key, step, args_sha256(verdict.arguments), _supplied(arguments))
    result, how = ledger.perform(
        run.agent, run.redact, effect_key=effect_key, tool=tool, arguments=verdict.arguments,
        about={"ts": log["ts"], "trigger": run.agent.trigger, "run": run.id, "step": step, "call": call.id,
               "args_sha256": args_sha256(verdict.arguments)},
        agent_root=agent_root, verdict=log, look=run_key != run.id or _supplied(arguments) is not None)  # a fresh run's keys are new
    if how == "unknown":  # began in an earlier attempt, never committed: a person decides
        done.verdicts.append(log)
        return _pending(run, step, index, call, verdict.arguments, verdict.rule,
                        "its effect began in an earlier attempt and was never recorded as done", record,
                        why="unknown")
    if how == "reused":  # this run's verdict is logged at write-back: the earlier attempt's was its own
        done.verdicts.append(log)
    record["effect"] = {"status": result.status, "result": _short(result.text), "key": effect_key,
                        **({"reused": True} if how == "reused" else {})}
    if result.truncated:
        record["effect"]["truncated"] = True
    record["verdict"] = verdict.outcome
    done.tool_texts.append((step, call.id, call.arguments, result.text))
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.text,
            "is_error": not result.ok}


def _pending(run: Loop, step: int, index: int, call: ToolCall, arguments: dict[str, Any],
             rule: str | None, reason: str, record: dict[str, Any], why: str = "escalate") -> dict[str, Any]:
    """Write the call's approval file; the placeholder its decision replaces on resume."""
    approval = approvals.request(run.agent.folder.path, agent=run.agent.name, run=run.id, step=step,
                                 index=index, call=call.id, tool=call.name, arguments=arguments,
                                 rule=rule, reason=reason, now=clock.now(run.started.tzinfo), why=why,
                                 expires_after=timedelta(hours=_approval_hours(run)))
    record["effect"] = {"status": "awaiting_approval", "approval": approval}
    record["verdict"] = "escalate"
    run.warnings.append(f"step {step}: {call.name} awaits a person's decision in approvals/{approval}.md "
                        f"({reason}); then: atomic-vault resume {run.agent.name} {run.id}")
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": "",
            "is_error": False, "pending": approval, "arguments": arguments}


def _approval_hours(run: Loop) -> int:
    """model.md's approval_hours (the default when the run carries no config)."""
    return getattr(getattr(run, "config", None), "approval_hours", 72)


def _supplied(arguments: dict[str, Any]) -> str | None:
    """An idempotency key the call supplies itself (an ``idempotency_key`` argument)."""
    value = arguments.get("idempotency_key")
    return value if isinstance(value, str) and value.strip() else None
