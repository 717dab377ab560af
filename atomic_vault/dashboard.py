"""``dashboard``: static HTML pages of what each agent spent and did, from its run log.

Figures are gathered from each agent's log in one pass through the LogBackend Protocol,
so every backend works the same. Pages are rendered from the jinja2 templates in
templates/dashboard/: inline CSS, charts as inline SVG, no JavaScript and no network.
Every figure a chart shows is also written as text (an SVG ``<title>`` or a table cell),
for people without the chart and for tests. Pages are derived output: deleting them
loses nothing, and rendering the same log again writes the same bytes (the queue's
counts excepted: they are the queue's state when the pages are rendered).

Delegation trees (spec/18) are drawn from the same logs: ``trees.html`` lists the root
runs that delegated, each tree with every node's status and cost, and a run page of a
run that delegated lists the tree below it.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from . import clock, guardrails
from .config import load_model_config
from .errors import AtomicVaultError, ConfigError
from .fileio import atomic_write
from .protocols import LogBackend, LogQuery
from .vault import AgentFolder, list_agents, open_agent, resolve_root

DAYS = 60  # the daily charts' window, ending "today"
MONTHS = 12  # the monthly chart's window; also the period every total covers
TOP_RUNS = 10
RECENT_EVENTS = 10
VAULT_PAGE = "index.html"
TREES_PAGE = "trees.html"
TREES = 50  # the newest delegation trees the trees page draws
TEMPLATE_PACKAGE = "atomic_vault.templates"
PALETTE = 10  # CSS classes s0..s9 colour the agents in the vault chart
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Tally:
    """Runs, spend and tokens of a day, a month or the whole period. A run whose cost was
    not known counts in ``unknown`` and adds nothing to ``cost_usd``: never shown as 0."""

    runs: int = 0
    cost_usd: float = 0.0
    unknown: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, cost: float | None, tokens: tuple[int, int, int, int]) -> None:
        self.runs += 1
        if cost is None:
            self.unknown += 1
        else:
            self.cost_usd += cost
        self.input_tokens += tokens[0]
        self.output_tokens += tokens[1]
        self.cache_read_tokens += tokens[2]
        self.cache_write_tokens += tokens[3]

    def include(self, other: Tally) -> None:
        for key, value in vars(other).items():
            setattr(self, key, getattr(self, key) + value)

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of prompt tokens read from the provider's cache; None with no prompt tokens."""
        prompt = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / prompt if prompt else None


@dataclass
class AgentFigures:
    """Everything one agent's page shows, for the windows ending on ``today``."""

    name: str
    model: str
    caps: dict[str, Any]
    days: dict[str, Tally]
    months: dict[str, Tally]
    period: Tally = field(default_factory=Tally)
    statuses: Counter = field(default_factory=Counter)
    skips: int = 0
    fallbacks: int = 0
    awaiting: int = 0  # approval files waiting for a person's decision
    events: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    latest: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    expensive: list[dict[str, Any]] = field(default_factory=list)
    first_day: str | None = None  # the days of the first and last run counted: the pages
    last_day: str | None = None   # name the period the runs cover, not only the window
    roots: list[tuple[str, str]] = field(default_factory=list)  # (ts, run id) of runs that began a tree

    @property
    def today(self) -> Tally:
        return self.days[next(reversed(self.days))]

    @property
    def month(self) -> Tally:
        return self.months[next(reversed(self.months))]


def render(root: str | os.PathLike | None, names: Iterable[str] | None, out_dir: str | os.PathLike, *,
           log_backend: LogBackend | None = None, today: date | str | None = None) -> list[Path]:
    """Write ``out_dir/index.html`` (the agents in ``names``, or every agent of the vault)
    and one page per agent; returns the paths. ``today`` ends the windows: by default the
    day of the newest record, so a log renders the same whatever the clock says."""
    from .backends import open_backend

    base = resolve_root(root)
    log = open_backend("log", log_backend, base)
    folders = [open_agent(name, base) for name in (list_agents(base) if names is None else names)]
    last_day = _today(today, folders, log)
    figures = [gather(folder, log, last_day) for folder in folders]
    env = _environment()
    out = Path(out_dir)
    written = []
    context = {"today": last_day.isoformat(), "since": _months(last_day)[0] + "-01",
               "backend": getattr(log, "name", type(log).__name__)}
    trees = delegation_trees(base, log, figures)
    pages = [(VAULT_PAGE, "vault.html.j2", {**context, **vault_view(figures), "queue": queue_depth(base),
                                           "trees": len(trees), "trees_page": TREES_PAGE})]
    pages += [(page_name(f.name), "agent.html.j2", {**context, **agent_view(f)}) for f in figures]
    pages.append((TREES_PAGE, "trees.html.j2", {**context, "trees": trees, "back": VAULT_PAGE}))
    nodes = {(n["agent"], n["run_id"]): n for tree in trees for n in _walk(tree)}
    for (agent, _), n in nodes.items():
        if agent not in {f.name for f in figures}:
            n["page"] = None  # an agent not rendered has no run pages to link to
    for f in figures:
        pages += _run_pages(folders[[g.name for g in figures].index(f.name)], log, f, context, nodes)
    for file, template, values in pages:
        path = out / file
        atomic_write(path, env.get_template(template).render(values))
        written.append(path)
    return written


SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}\Z")


def run_page(agent: str, run_id: str) -> str | None:
    """The file of one run's page, relative to the dashboard folder (None for a run id
    that could not be a file name: a hand-edited record gets no page, never a path)."""
    return f"runs/{agent}/{run_id}.html" if SAFE_RUN_ID.match(run_id) else None


def _run_pages(folder: AgentFolder, log: LogBackend, figures: AgentFigures, context: dict[str, Any],
               nodes: dict[tuple[str, str], dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """A page for each run the agent page lists, and for each of the agent's runs in a
    drawn tree: the run as `show` reads it, and the tree below it when it delegated."""
    from . import evidence

    pages = []
    for row in [*figures.latest, *figures.events, *figures.expensive]:
        row["page"] = run_page(folder.name, row["run_id"])
    wanted = [row["run_id"] for row in [*figures.latest, *figures.events, *figures.expensive]]
    wanted += sorted(run_id for agent, run_id in nodes if agent == folder.name and run_id)
    seen: set[str] = set()
    for run_id in wanted:
        page = run_page(folder.name, run_id)
        if not page or page in seen:
            continue
        seen.add(page)
        record = log.get(folder, run_id)
        if record is None:
            continue
        shown = evidence.view(record, evidence.load_texts(log, folder, record))
        node = nodes.get((folder.name, run_id))
        pages.append((page, "run.html.j2", {**context, "name": folder.name, "run": shown,
                                            "back": "../../" + page_name(folder.name), "up": "../../",
                                            "tree": node if node and node["children"] else None,
                                            "text": evidence.render(shown, full=True)}))
    return pages


def delegation_trees(root: Path, log: LogBackend, figures: list[AgentFigures]) -> list[dict[str, Any]]:
    """The newest ``TREES`` trees begun by the runs counted, newest first, each read from
    the logs through ``log``: every node's agent, run id, depth, status, cost, its page,
    and its children; the root also ``tree_cost_usd`` (known costs summed) and ``runs``."""
    from .evidence import MAX_TREE_DEPTH

    def node(agent: str, run_id: Any, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": agent, "run_id": str(run_id or ""), "depth": depth,
                               "status": "missing", "cost_usd": None, "summary": "", "children": [],
                               "page": run_page(agent, str(run_id)) if run_id else None}
        try:
            record = log.get(open_agent(agent, root), str(run_id)) if run_id else None
        except AtomicVaultError:  # a child named in a record whose folder is gone
            record = None
        if record is None:
            out["page"] = None
            return out
        out.update(status=str(record.get("status") or ""), cost_usd=_cost(record.get("cost_usd")),
                   summary=str(record.get("summary") or ""))
        if depth < MAX_TREE_DEPTH:
            out["children"] = [node(str(c.get("agent")), c.get("run_id"), depth + 1)
                               for c in record.get("children") or [] if isinstance(c, dict)]
        return out

    begun = sorted(((ts, f.name, run_id) for f in figures for ts, run_id in f.roots), reverse=True)
    trees = []
    for ts, agent, run_id in begun[:TREES]:
        top = node(agent, run_id, 0)
        costs = [n["cost_usd"] for n in _walk(top)]
        top.update(when=_when({"ts": ts}), runs=len(costs),
                   tree_cost_usd=sum(c for c in costs if c is not None),
                   unknown=sum(c is None for c in costs))
        trees.append(top)
    return trees


def _walk(node: dict[str, Any]):
    yield node
    for child in node["children"]:
        yield from _walk(child)


def queue_depth(root: Path) -> dict[str, Any]:
    """The vault queue's counts (QueueBackend.stats): ``ready`` (due now), ``scheduled``,
    ``in_flight`` (claimed), ``done`` and ``dead``, and the backend's name; or ``error``
    when the queue cannot be read (the pages are still written)."""
    from .workqueue import open_queue

    try:
        queue = open_queue(root)
        stats = queue.stats()
    except AtomicVaultError as exc:
        return {"error": str(exc)}
    return {"ready": stats.get("ready", 0), "scheduled": stats.get("scheduled", 0),
            "in_flight": stats.get("claimed", 0), "done": stats.get("done", 0), "dead": stats.get("dead", 0),
            "backend": getattr(queue, "name", type(queue).__name__)}


def page_name(agent: str) -> str:
    """The agent page's file name. An agent called "index" would overwrite the vault page,
    so it gets "_index.html" (a leading "_" is never a valid agent name, so no clash)."""
    return f"_{agent}.html" if agent.casefold() == "index" else f"{agent}.html"


def gather(folder: AgentFolder, log: LogBackend, today: date) -> AgentFigures:
    """One pass over the agent's run records of the last ``MONTHS`` months up to ``today``."""
    config = load_model_config(folder.model)
    rails = config.cost_guardrails
    days = [(today - timedelta(days=n)).isoformat() for n in range(DAYS - 1, -1, -1)]
    months = _months(today)
    figures = AgentFigures(
        name=folder.name, model=config.model,
        caps={"daily": rails.get("daily_cap_usd"), "monthly": rails.get("monthly_cap_usd"),
              "enforced": guardrails.enabled(config)},
        days={day: Tally() for day in days}, months={month: Tally() for month in months})
    heaviest: list[tuple[float, int, dict[str, Any]]] = []
    records = log.query(folder, LogQuery(since=months[0] + "-01", until=today.isoformat()))
    taken = set()
    for order, record in enumerate(records):
        if record.get("kind") == "approval":
            taken.add(record.get("approval"))
        if record.get("kind", "run") not in ("run", "replay"):  # repair records and the like cost nothing
            continue
        ts = str(record.get("ts", ""))
        month = figures.months.get(ts[:7])
        if month is None or ts[:10] > days[-1]:  # no date, or outside the windows
            continue
        cost = _cost(record.get("cost_usd"))
        tokens = (_int(record.get("input_tokens")), _int(record.get("output_tokens")),
                  _int(record.get("cache_read_tokens")), _int(record.get("cache_write_tokens")))
        month.add(cost, tokens)
        figures.period.add(cost, tokens)
        figures.first_day = min(figures.first_day or ts[:10], ts[:10])
        figures.last_day = max(figures.last_day or ts[:10], ts[:10])
        if ts[:10] in figures.days:
            figures.days[ts[:10]].add(cost, tokens)
        figures.statuses[str(record.get("status") or "unknown")] += 1
        event = _event(record)
        if event == "skip":
            figures.skips += 1
        elif event == "fallback":
            figures.fallbacks += 1
        if event:
            figures.events.append(_event_row(record, event))
        figures.latest.append(_run_row(record, cost))
        if record.get("children") and not record.get("parent_run_id"):
            figures.roots.append((ts, str(record.get("run_id", ""))))
        if cost:  # keep the TOP_RUNS most expensive that cost anything; of equal costs, the later
            push = heapq.heappush if len(heaviest) < TOP_RUNS else heapq.heappushpop
            push(heaviest, (cost, order, record))
    figures.expensive = [_run_row(record, cost) for cost, _, record in sorted(heaviest, reverse=True)]
    figures.awaiting = _awaiting(folder, taken)
    return figures


def _awaiting(folder: AgentFolder, taken: set) -> int:
    """Approval files still pending: not decided, not expired, not taken by a resume."""
    from . import approvals

    now, waiting = clock.now(None), 0
    for approval_id in approvals.listing(folder.path):
        if approval_id in taken:
            continue
        try:
            approval = approvals.read(folder.path, approval_id)
        except AtomicVaultError:
            waiting += 1  # an invalid file waits for a person too
            continue
        waiting += approval.decision == "pending" and not approval.expired(now)
    return waiting


def _today(value: date | str | None, folders: list[AgentFolder], log: LogBackend) -> date:
    if isinstance(value, date):
        return value if type(value) is date else date(value.year, value.month, value.day)
    if value is not None:
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{value!r} is not a date", field="--today",
                              fix="write the day as YYYY-MM-DD, e.g. 2026-11-30") from None
    newest = [found[-1].get("ts") for folder in folders if (found := log.query(folder, LogQuery(limit=1)))]
    days = [str(ts)[:10] for ts in newest if DAY.match(str(ts)[:10])]
    return date.fromisoformat(max(days)) if days else date.today()


def _months(today: date) -> list[str]:
    year, month = today.year, today.month
    out = []
    for _ in range(MONTHS):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def _cost(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strings(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _event(record: dict[str, Any]) -> str | None:
    """"skip" (the run did not call a model), "fallback" (another model answered), or None."""
    guardrail = record.get("guardrail") if isinstance(record.get("guardrail"), dict) else {}
    if record.get("status") == "skipped" or guardrail.get("action") == "skip":
        return "skip"
    if record.get("fallback_from") or guardrail.get("action") == "fallback":
        return "fallback"
    return None


def _when(record: dict[str, Any]) -> str:
    return str(record.get("ts", ""))[:16].replace("T", " ")


def _event_row(record: dict[str, Any], event: str) -> dict[str, Any]:
    guardrail = record.get("guardrail") if isinstance(record.get("guardrail"), dict) else {}
    reasons = _strings(guardrail.get("reasons")) or _strings(record.get("warnings"))
    if record.get("fallback_from"):
        reasons = [f"fell back from {record['fallback_from']}"] + reasons
    return {"when": _when(record), "run_id": str(record.get("run_id", "")), "event": event,
            "model": str(record.get("model") or ""), "reasons": reasons}


def _run_row(record: dict[str, Any], cost: float) -> dict[str, Any]:
    return {"when": _when(record), "run_id": str(record.get("run_id", "")),
            "model": str(record.get("model") or ""), "status": str(record.get("status") or ""),
            "input": _int(record.get("input_tokens")), "output": _int(record.get("output_tokens")),
            "cache_read": _int(record.get("cache_read_tokens")),
            "cache_write": _int(record.get("cache_write_tokens")),
            "cost": cost, "summary": str(record.get("summary") or "")}


# ---- what the templates get ----------------------------------------------------------------

def usd(value: float | None, digits: int = 4) -> str:
    return "unknown" if value is None else f"${value:,.{digits}f}"


def spend(tally: Tally) -> str:
    """Known spend, and how many runs of unknown cost it leaves out."""
    if tally.unknown and tally.unknown == tally.runs:
        return "unknown" if tally.runs == 1 else f"unknown ({tally.runs} runs)"
    return usd(tally.cost_usd) + (f" + {tally.unknown} unknown" if tally.unknown else "")


def known_spend(tally: Tally) -> str:
    """The known part of the spend alone (cards show the unknown runs on a line of their own)."""
    return "unknown" if tally.unknown and tally.unknown == tally.runs else usd(tally.cost_usd)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def count(value: int) -> str:
    return f"{value:,}"


def plural(value: int, word: str, words: str | None = None) -> str:
    """`1 run`, `2 runs`: a count with its noun agreeing."""
    return f"{value:,} {word if value == 1 else words or word + 's'}"


def span(first: str | None, last: str | None) -> str:
    """The days the runs counted fall on, in words ("" when there are none)."""
    if not first or not last:
        return ""
    return f"on {first}" if first == last else f"from {first} to {last}"


def _short_count(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _money_axis(step: float) -> Callable[[float], str]:
    """Axis labels with cents, and more decimals only when the grid step needs them."""
    digits = min(max(2, -math.floor(math.log10(step))), 6)
    return lambda value: f"${value:,.{digits}f}"


def _spend_title(day: str, tally: Tally) -> str:
    runs = f"{tally.runs} run" + ("" if tally.runs == 1 else "s")
    return f"{day}: {spend(tally)} · {runs}"


def bar_chart(columns: list[tuple[str, str, list[tuple[float, str, str]]]], *, money: bool = True,
              cap: float | None = None, cap_label: str = "", label_every: int = 1,
              width: int = 960) -> dict[str, Any]:
    """The geometry of an SVG bar chart. ``columns`` are (x label, column title, segments),
    each segment (value, CSS class, title) stacked from the bottom. A cap far above the
    bars is named in a note instead of squashing them to slivers."""
    height, left, right, top, bottom = 230, 70, 14, 16, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(value for value, _, _ in segments) for _, _, segments in columns]
    highest = max(totals, default=0.0)
    cap_on_scale = bool(cap) and (highest == 0 or cap <= 3 * highest)
    ceiling = max(highest, cap if cap_on_scale else 0.0)
    step = _nice_step(ceiling)
    ceiling = step * max(1, math.ceil(ceiling / step - 1e-9))
    scale = plot_h / ceiling
    axis = _money_axis(step) if money else _short_count
    slot = plot_w / max(len(columns), 1)
    bar_w = max(slot * 0.7, 1.0)
    baseline = top + plot_h
    bars = []
    for i, ((label, title, segments), total) in enumerate(zip(columns, totals)):
        y = baseline
        rects = []
        for value, css, segment_title in segments:
            if value <= 0:
                continue
            h = value * scale
            y -= h
            rects.append({"x": _r(left + i * slot + (slot - bar_w) / 2), "y": _r(y), "w": _r(bar_w),
                          "h": _r(max(h, 0.5)), "css": css, "title": segment_title})
        shown = (len(columns) - 1 - i) % label_every == 0
        bars.append({"x": _r(left + i * slot), "w": _r(slot), "mid": _r(left + (i + 0.5) * slot),
                     "title": title, "rects": rects, "label": label if shown else ""})
    ticks = [{"y": _r(baseline - k * step * scale), "label": axis(k * step)}
             for k in range(int(round(ceiling / step)) + 1)]
    chart = {"width": width, "height": height, "left": left, "right": width - right, "top": top,
             "baseline": baseline, "bars": bars, "ticks": ticks, "cap": None, "cap_note": ""}
    if cap_on_scale:
        chart["cap"] = {"y": _r(baseline - cap * scale), "label": f"{cap_label} {usd(cap, 2)}"}
    elif cap:
        chart["cap_note"] = f"{cap_label} {usd(cap, 2)} is far above these bars"
    return chart


def _nice_step(highest: float, lines: int = 4) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) giving about ``lines`` lines."""
    if highest <= 0:
        return 1.0
    raw = highest / lines
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _r(value: float) -> float:
    return round(value, 1)


def agent_view(figures: AgentFigures) -> dict[str, Any]:
    caps = figures.caps
    daily = _spend_columns({day[5:]: (day, t) for day, t in figures.days.items()}, caps["daily"])
    monthly = _spend_columns({month: (month, t) for month, t in figures.months.items()}, caps["monthly"])
    tokens = []
    for day, t in figures.days.items():
        parts = [(t.input_tokens, "input", "input"), (t.output_tokens, "output", "output"),
                 (t.cache_read_tokens, "cache-read", "cache read"),
                 (t.cache_write_tokens, "cache-write", "cache write")]
        title = f"{day}: " + ", ".join(f"{name} {count(value)}" for value, _, name in parts)
        tokens.append((day[5:], title, [(value, css, f"{day} {name}: {count(value)}")
                                        for value, css, name in parts]))
    statuses = Counter({"ok": 0, "error": 0, "skipped": 0})
    statuses.update(figures.statuses)
    return {"agent": figures, "statuses": sorted(statuses.items(), key=_status_order),
            "latest": list(reversed(figures.latest)),
            "period_words": span(figures.first_day, figures.last_day),
            "events": list(reversed(figures.events)),
            "daily_chart": bar_chart(daily, cap=caps["daily"], cap_label="daily cap", label_every=7),
            "monthly_chart": bar_chart(monthly, cap=caps["monthly"], cap_label="monthly cap",
                                       label_every=2, width=470),
            "token_chart": bar_chart(tokens, money=False, label_every=7)}


def vault_view(figures: list[AgentFigures]) -> dict[str, Any]:
    days = list(figures[0].days) if figures else []
    columns, totals = [], []
    for day in days:
        total = Tally()
        segments = []
        for i, f in enumerate(figures):
            t = f.days[day]
            total.include(t)
            segments.append((t.cost_usd, f"s{i % PALETTE}", f"{day} {f.name}: {spend(t)}"))
        totals.append((day, total))
        columns.append((day[5:], _spend_title(day, total), segments))
    rows = [{"agent": f, "page": page_name(f.name), "color": f"s{i % PALETTE}",
             "share": (f.month.cost_usd / f.caps["monthly"]) if f.caps["monthly"] else None}
            for i, f in enumerate(figures)]
    period, month = Tally(), Tally()
    for f in figures:
        period.include(f.period)
        month.include(f.month)
    firsts = [f.first_day for f in figures if f.first_day]
    lasts = [f.last_day for f in figures if f.last_day]
    return {"rows": rows, "daily_totals": totals, "period": period, "month": month,
            "period_words": span(min(firsts, default=None), max(lasts, default=None)),
            "first_day": min(firsts, default=None),
            "month_name": next(reversed(figures[0].months)) if figures else "",
            "errors": sum(f.statuses["error"] for f in figures),
            "awaiting": sum(f.awaiting for f in figures),
            "daily_chart": bar_chart(columns, label_every=7)}


def _spend_columns(periods: dict[str, tuple[str, Tally]], cap: float | None) -> list:
    """One bar per period (x label: (period, tally)), red when over the cap."""
    columns = []
    for label, (period, t) in periods.items():
        css = "spend over" if cap is not None and t.cost_usd > cap else "spend"
        columns.append((label, _spend_title(period, t), [(t.cost_usd, css, _spend_title(period, t))]))
    return columns


def _status_order(item: tuple[str, int]) -> tuple[int, str]:
    known = ("ok", "error", "skipped")
    return (known.index(item[0]) if item[0] in known else len(known), item[0])


@functools.cache  # compiling the templates costs more than rendering them
def _environment():
    import jinja2  # imported here: only this command needs it, and it is slow to import

    env = jinja2.Environment(loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, "dashboard"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(usd=usd, spend=spend, known_spend=known_spend, percent=percent, count=count,
                       plural=plural, tree_nodes=_walk,
                       tree_cost=lambda top: sum(n["cost_usd"] or 0.0 for n in _walk(top)))
    return env
