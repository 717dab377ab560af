"""Helpers: one-shot transformations (summarise, extract, classify) by a cheaper model.

model.md's ``helpers:`` names the model. During a run, the model can call the built-in
``helper`` tool, and a Python tool can call ``AtomicAgent.helper`` (or ``ask``): the
helper model sees only the instruction and the text — no persona, no memory, no tools —
and answers once. Each call is checked against the run's cost reservation before it is
made (guardrails), and recorded in the run's step with its own model, tokens and cost;
the run's ``cost_usd`` includes it. A helper changes nothing outside the run, so it is
not judged by policy.md and keeps no effect ledger entry.
"""

from __future__ import annotations

import threading
from typing import Any

from . import pricing, retries
from .errors import ConfigError
from .models import ModelRequest, load_model

TOOL_NAME = "helper"
SYSTEM = ("You transform the text you are given as the instruction says: summarise, extract, "
          "classify or rewrite it. Answer with the result only.")
SPEC = {"name": TOOL_NAME,
        "description": ("Hand a mechanical one-shot job (summarise, extract, classify, rewrite) to a cheaper "
                        "model. It sees only the instruction and the text: no persona, no memory, no tools."),
        "input_schema": {"type": "object", "properties": {
            "instruction": {"type": "string", "description": "what to do with the text, e.g. 'list the dates'"},
            "text": {"type": "string", "description": "the text to work on"}},
            "required": ["instruction"], "additionalProperties": False}}
_CURRENT = threading.local()  # the run in progress in this thread, for Python tools


def offered(run: Any) -> bool:
    """Whether this run offers the built-in tool: model.md names a helper model and no
    tool of tools.md takes the name."""
    config = getattr(run, "config", None)
    return bool(getattr(config, "helper", None)) and TOOL_NAME not in run.toolbox.tools


class Current:
    """Makes ``run`` (with its Completion and current step, set by the tool loop) the one
    that ``ask`` records into while it runs in this thread."""

    def __init__(self, run: Any):
        self.run = run
        self.done: retries.Completion | None = None
        self.entry: dict[str, Any] | None = None

    def __enter__(self) -> "Current":
        self.outer = getattr(_CURRENT, "value", None)
        _CURRENT.value = self
        return self

    def __exit__(self, *_: Any) -> None:
        _CURRENT.value = self.outer
        self.run = self.done = self.entry = self.outer = None  # no cycle keeps the run alive


def active(run: Any) -> "Current | None":
    """The Current of ``run`` when it is the run in progress in this thread."""
    found = getattr(_CURRENT, "value", None)
    return found if found is not None and found.run is run else None


def current(agent: Any = None) -> "Current":
    """The run in progress in this thread (of ``agent`` when given), or a ConfigError."""
    found = getattr(_CURRENT, "value", None)
    if found is None or found.done is None or (agent is not None and found.run.agent is not agent):
        raise ConfigError("a helper call belongs to a run, and none of this agent is in progress in this "
                          "thread", field="helper",
                          fix="call agent.helper from a python tool while the agent runs, or use agent.call")
    return found


def spent(done: retries.Completion) -> float:
    """What the run's steps and helper calls cost so far (unknown costs count 0)."""
    return (sum(s.get("cost_usd") or 0.0 for s in done.steps)
            + sum(h.get("cost_usd") or 0.0 for h in done.helper_calls))


def ask(instruction: str, text: str = "", *, agent: Any = None) -> str:
    """Run one helper call inside the run in progress; its answer. Errors (no helper
    model, the reservation refused, the model failed) are a ConfigError or ModelError."""
    here = current(agent)
    status, answer = call(here.run, here.done, here.entry, instruction, text)
    if status != "ok":
        from .errors import ModelError
        raise ModelError(f"the helper call failed: {answer}", field="helpers",
                         fix="check model.md's helpers: model, or the cost caps")
    return answer


def call(run: Any, done: retries.Completion, entry: dict[str, Any] | None, instruction: str,
         text: str) -> tuple[str, str]:
    """(status, text) of one helper call: reserved, made, priced and recorded in
    ``done.helper_calls`` and in the step ``entry``'s ``helpers``."""
    config = run.config
    if not config.helper:
        return "error", "model.md names no helper model (helpers: provider:model)"
    record: dict[str, Any] = {"model": config.helper, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}

    def told(status: str, result: str) -> tuple[str, str]:
        record["status"] = status
        if status != "ok":
            record["error"] = result[:500]
        done.helper_calls.append(record)
        if entry is not None:
            entry.setdefault("helpers", []).append(record)
        return status, result

    try:
        model = load_model(config.helper, config.options_for(config.helper))
    except Exception as exc:  # a missing SDK or key: the model reads why
        return told("error", f"the helper model {config.helper} cannot be built: {getattr(exc, 'message', exc)}")
    request = ModelRequest(model=config.helper, system=[{"text": SYSTEM, "layer": "helper", "source": "helper",
                                                         "cache_breakpoint": False}],
                           messages=[{"role": "user", "content": f"{instruction}\n\n{text}".strip()}],
                           max_output_tokens=config.helper_max_output_tokens, agent=run.agent.name)
    refused = run.reserve_next(model, request, spent(done))
    if refused:
        return told("refused", f"the cost guardrails refused the helper call: {refused}")
    answer = retries.complete([lambda: model], request, config.retries)
    response = answer.response
    if response is None:
        return told("error", answer.error or "the helper model gave no answer")
    name = response.model or getattr(model, "name", config.helper)
    record.update(model=name, input_tokens=response.input_tokens or 0, output_tokens=response.output_tokens or 0,
                  cost_usd=pricing.run_cost(run.price(name), response))
    return told("ok", response.text)
