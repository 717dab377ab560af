"""Cost guardrails: daily, monthly and per-run caps that concurrent runs cannot overshoot.

Before the model call, under the agent's lock, a run reserves the most its call can cost
(pricing.Price.ceiling: an upper bound of the input tokens the provider can bill, at the
dearest input rate, plus every allowed output token). Spend so far is the settled cost in the log for today and this
month, in the operator's time zone, plus the reservations of runs still in flight. A run
that would pass a cap gets that cap's action: ``skip``, ``fallback`` (the cheaper model
from model.md, if it fits) or ``alert`` (proceed with a warning). ``critical`` runs pass
and say so. After the call, under the lock again, the actual cost goes into the log and
the reservation is dropped. A warning threshold fires on the one run whose settled cost
crosses it, so each fires once per period with no extra state to keep.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .config import ModelConfig
from .fileio import create_new
from .locks import pid_alive
from .pricing import Price
from .protocols import LogBackend
from .vault import AgentFolder

RESERVATIONS = "reservations"  # a folder in .atomic_vault/, one file per run in flight
STALE_AFTER_S = 2 * 3600  # a reservation this old belongs to a run that is surely gone
_ORDER = ("skip", "fallback", "alert")  # when two caps disagree, the strictest action wins


@dataclass
class Budget:
    """The guardrail's verdict for one run, recorded in its log record as ``guardrail``."""

    action: str = "pass"  # pass | skip | fallback | alert | bypassed
    reasons: list[str] = field(default_factory=list)
    estimate_usd: float | None = None
    spent_day_usd: float = 0.0
    spent_month_usd: float = 0.0
    in_flight_usd: float = 0.0
    daily_cap_usd: float | None = None
    monthly_cap_usd: float | None = None
    reservation: str | None = None
    input_tokens: int = 0  # the input bound the estimate was priced at

    def as_record(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": self.reasons, "estimate_usd": self.estimate_usd,
                "input_tokens_bound": self.input_tokens,
                "spent_day_usd": round(self.spent_day_usd, 6),
                "spent_month_usd": round(self.spent_month_usd, 6),
                "in_flight_usd": round(self.in_flight_usd, 6),
                "daily_cap_usd": self.daily_cap_usd, "monthly_cap_usd": self.monthly_cap_usd}


def enabled(config: ModelConfig) -> bool:
    rails = config.cost_guardrails
    return bool(rails.get("enabled", bool(rails))) and any(
        rails.get(key) is not None for key in ("daily_cap_usd", "monthly_cap_usd", "max_run_usd"))


def spent(log: LogBackend, folder: AgentFolder, when: datetime) -> tuple[float, float]:
    """Settled spend of the day and the month of ``when`` (runs of unknown cost add 0):
    one query of day rows, which every backend answers from an index or a rollup."""
    day = when.date().isoformat()
    rows = log.cost(folder, "day", since=day[:7] + "-01", until=day)
    return (sum(row.cost_usd for row in rows if row.period == day), sum(row.cost_usd for row in rows))


def reserve(folder: AgentFolder, log: LogBackend, config: ModelConfig, when: datetime, *,
            model: str, price: Price | None, input_tokens: int, critical: bool,
            fallback: str | None = None, fallback_price: Price | None = None,
            fallback_input_tokens: int | None = None, already_usd: float = 0.0,
            replaces: str | None = None) -> Budget:
    """Decide whether this run may call ``model`` and hold its estimate. ``input_tokens``
    must bound what the provider bills (agent._Run.input_bound), or the caps do not hold.
    A further call of a tool loop adds what the run's earlier calls cost (``already_usd``)
    and ``replaces`` the run's reservation: kept when the call is refused, dropped when
    the new one is held. The caller holds the agent's lock, so no other run reserves or
    settles meanwhile."""
    rails = config.cost_guardrails
    day_spent, month_spent = spent(log, folder, when)
    in_flight_usd = sum(usd for key, usd in in_flight(folder).items() if key != replaces)
    budget = Budget(spent_day_usd=day_spent, spent_month_usd=month_spent, in_flight_usd=in_flight_usd,
                    daily_cap_usd=rails.get("daily_cap_usd"), monthly_cap_usd=rails.get("monthly_cap_usd"),
                    input_tokens=input_tokens)
    estimate = price.ceiling(input_tokens, config.max_output_tokens) + already_usd if price else None
    budget.estimate_usd = estimate
    breaches = _breaches(rails, day_spent + in_flight_usd, month_spent + in_flight_usd, estimate, model)
    if price is None:
        budget.reasons.append(f"no price is known for {model}, so the guardrail cannot bound this "
                              "run's cost (add it under prices: in model.md)")
    if breaches and critical:
        budget.action = "bypassed"
        budget.reasons += [reason for _, reason in breaches] + ["critical run: the caps were not applied"]
    elif breaches:
        budget.action = min((action for action, _ in breaches), key=_ORDER.index)
        budget.reasons += [reason for _, reason in breaches]
        if budget.action == "fallback":
            _try_fallback(budget, rails, day_spent + in_flight_usd, month_spent + in_flight_usd, config,
                          fallback, fallback_price,
                          input_tokens if fallback_input_tokens is None else fallback_input_tokens)
    if budget.action != "skip":
        budget.reservation = _hold(folder, budget.estimate_usd or already_usd)
        release(folder, replaces)
    return budget


def _breaches(rails: dict[str, Any], day: float, month: float, estimate: float | None,
              model: str) -> list[tuple[str, str]]:
    """(action, reason) for every cap this run would pass."""
    add = estimate or 0.0
    out = []
    run_cap = rails.get("max_run_usd")
    if run_cap is not None and estimate is not None and estimate > run_cap:
        out.append((rails.get("daily_cap_action", "skip"),
                    f"this run may cost up to ${estimate:.4f} on {model}, over max_run_usd ${run_cap:.2f}"))
    for period, spent_so_far, cap_key, action_key, default in (
            ("daily", day, "daily_cap_usd", "daily_cap_action", "skip"),
            ("monthly", month, "monthly_cap_usd", "monthly_cap_action", "skip")):
        cap = rails.get(cap_key)
        if cap is None:
            continue
        if spent_so_far + add > cap or (estimate is None and spent_so_far >= cap):
            out.append((rails.get(action_key, default),
                        f"{period} cap ${cap:.2f}: ${spent_so_far:.4f} spent or reserved "
                        f"+ up to ${add:.4f} for this run on {model}"))
    return out


def _try_fallback(budget: Budget, rails: dict[str, Any], day: float, month: float,
                  config: ModelConfig, fallback: str | None, price: Price | None,
                  input_tokens: int) -> None:
    if not fallback:
        budget.action = "skip"
        budget.reasons.append("the cap's action is fallback but model.md names no fallback model")
        return
    if price is None:
        budget.action = "skip"
        budget.reasons.append(f"no price is known for the fallback {fallback}, so it cannot be "
                              "shown to fit the cap")
        return
    estimate = price.ceiling(input_tokens, config.max_output_tokens)
    still = _breaches(rails, day, month, estimate, fallback)
    if still:
        budget.action = "skip"
        budget.reasons.append(f"the fallback {fallback} would pass the cap too")
        return
    budget.estimate_usd, budget.input_tokens = estimate, input_tokens
    budget.reasons.append(f"switched to the fallback {fallback} (up to ${estimate:.4f})")


def settle(folder: AgentFolder, log: LogBackend, config: ModelConfig, budget: Budget,
           when: datetime, cost: float | None) -> list[str]:
    """Drop this run's reservation and return the warnings its cost crosses. The caller
    holds the lock and appends the run's record right after."""
    release(folder, budget.reservation)
    rails = config.cost_guardrails
    if not cost:
        return []
    day_before, month_before = spent(log, folder, when)
    warnings = []
    for period, before, cap in (("daily", day_before, rails.get("daily_cap_usd")),
                                ("monthly", month_before, rails.get("monthly_cap_usd"))):
        if not cap:
            continue
        after = before + cost
        for threshold in sorted(set(rails.get("warning_thresholds", [])) | {1}):
            if before < threshold * cap <= after:
                reached = "the cap" if threshold == 1 else f"{threshold:.0%} of the cap"
                warnings.append(f"{period} spend reached {reached} ${cap:.2f} (${after:.4f} so far)")
    return warnings


def _host() -> str:
    """This machine's name (as socket.gethostname() gives it, without importing socket)."""
    return os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")


def release(folder: AgentFolder, reservation: str | None) -> None:
    """Forget a reservation (a run that ended, in any way). Call under the agent's lock."""
    if reservation is not None:
        (folder.state / RESERVATIONS / reservation).unlink(missing_ok=True)


def _hold(folder: AgentFolder, usd: float) -> str:
    """One small file per reservation: creating and unlinking it is cheaper than rewriting
    a shared file, and a run killed mid-write leaves at most one unreadable (ignored) file."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", _host())
    key = f"{host}_{os.getpid()}_{os.urandom(4).hex()}.json"
    # through fileio: whole before its name appears, and a full disk names the file
    create_new(folder.ensure_state_dir() / RESERVATIONS / key,
               json.dumps({"usd": usd, "host": _host(), "pid": os.getpid(), "at": time.time()}),
               durable=False)
    return key


def in_flight(folder: AgentFolder, prune: bool = True) -> dict[str, float]:
    """USD held by runs still in flight, by reservation. Those of dead processes on this
    host, or older than STALE_AFTER_S, do not count, and are removed when ``prune`` (the
    runtime prunes under the agent's lock; read-only commands do not)."""
    try:
        names = os.listdir(folder.state / RESERVATIONS)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    host, now, out = _host(), time.time(), {}
    for name in names:
        if name.startswith("."):  # a temp file of a reservation being made (fileio)
            continue
        path = folder.state / RESERVATIONS / name
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            usd, pid, at = float(entry["usd"]), int(entry["pid"]), float(entry["at"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            usd, pid, at = 0.0, 0, 0.0  # torn by a killed writer: that run is gone
            entry = {"host": host}
        if now - at > STALE_AFTER_S or (entry.get("host") == host and not pid_alive(pid)):
            if prune:
                path.unlink(missing_ok=True)
            continue
        out[name] = usd
    return out
