"""Calling the model robustly: transient failures (rate limits, timeouts, 5xx) are retried
with exponential backoff and jitter, or after the provider's retry-after; other failures
are not. When the model still fails, the fallback model gets the same treatment. Every
attempt is recorded for the run's log record, with any key redacted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timezone
from typing import Any, Callable

from . import clock
from .config import RetryPolicy
from .errors import ModelError
from .keys import redact
from .models import Model, ModelRequest, ModelResponse, with_usage

ERROR_CHARS = 500


@dataclass
class Completion:
    """The answer (or the last error), which model gave it, and every attempt made."""

    response: ModelResponse | None
    error: str | None
    model: Model | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallback_from: str | None = None
    fix: str | None = None  # what the provider advised about the last failure
    steps: list[dict[str, Any]] = field(default_factory=list)  # a tool loop's steps (toolloop.py)
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # the gate's, to be logged
    # each tool call's full arguments and result, for the run's snapshots (the step records
    # keep shortened copies): (step, call id, arguments, result)
    tool_texts: list[tuple[int, str, str, str]] = field(default_factory=list)
    suspended: dict[str, Any] | None = None  # a tool loop awaiting a decision (toolloop.py)
    helper_calls: list[dict[str, Any]] = field(default_factory=list)  # helpers.py: model, tokens, cost


def backoff(policy: RetryPolicy, attempt: int, retry_after: float | None,
            jitter: Callable[[], float] | None = None) -> float:
    """Seconds to wait before try ``attempt + 1``: the provider's retry-after when given,
    else base * 2^(attempt-1) scaled by a random factor in [0.5, 1); never over the cap."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, policy.max_delay_s)
    if jitter is None:
        import random  # only a retry needs it
        jitter = random.random
    return min(policy.base_delay_s * 2 ** (attempt - 1), policy.max_delay_s) * (0.5 + jitter() / 2)


def complete(candidates: list[Callable[[], Model]], request: ModelRequest, policy: RetryPolicy,
             sleep: Callable[[float], None] = time.sleep) -> Completion:
    """Try each candidate model in turn (the chosen one, then the fallback), each with
    up to ``policy.attempts`` tries. A candidate is built only when it is needed."""
    done = Completion(None, None, None)
    first_name: str | None = None
    for build in candidates:
        try:
            model = build()
        except ModelError as exc:
            done.attempts.append({"model": "fallback", "attempt": 0, "outcome": "error",
                                  "error": _short(exc.message), "retryable": False})
            done.error = done.error or _short(exc.message)
            continue
        name = getattr(model, "name", "custom")
        first_name = first_name or name
        done.model = model
        if _try(model, replace(request, model=name), policy, sleep, done):
            done.fallback_from = first_name if name != first_name else None
            return done
    return done


def _try(model: Model, request: ModelRequest, policy: RetryPolicy,
         sleep: Callable[[float], None], done: Completion) -> bool:
    name = getattr(model, "name", "custom")
    for attempt in range(1, policy.attempts + 1):
        began = time.monotonic()
        # The wall-clock start, so that a trace of the run shows each attempt where it happened.
        entry: dict[str, Any] = {"model": name, "attempt": attempt,
                                 "ts": clock.now(timezone.utc).isoformat(timespec="milliseconds")}
        done.attempts.append(entry)
        try:
            response = model.complete(request)
            if not isinstance(getattr(response, "text", None), str):
                raise TypeError(f"the model returned {type(response).__name__}, not a ModelResponse")
            response = with_usage(response, request)  # a custom model may leave the counts out
        except Exception as exc:  # any provider failure is recorded; only ModelErrors may retry
            retryable = isinstance(exc, ModelError) and exc.retryable
            message = exc.message if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            done.error = _short(message)
            done.fix = redact(exc.fix) if isinstance(exc, ModelError) and exc.fix else None
            entry.update(outcome="error", error=done.error, retryable=retryable,
                         ms=round((time.monotonic() - began) * 1000))
            if isinstance(exc, ModelError) and exc.status is not None:
                entry["status"] = exc.status
            if not retryable or attempt == policy.attempts:
                return False
            wait = backoff(policy, attempt, getattr(exc, "retry_after", None))
            entry["wait_s"] = round(wait, 3)
            sleep(wait)
            continue
        entry.update(outcome="ok", ms=round((time.monotonic() - began) * 1000))
        # What the model says is written to notes, the journal and the log: no key may
        # reach them, even one the model repeats from the work item.
        done.response = replace(response, text=redact(response.text),
                                tool_captures=tuple(redact(str(raw)) for raw in response.tool_captures))
        done.error = None
        return True
    return False


def _short(message: str) -> str:
    text = redact(str(message))
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"
