"""Dashboard benchmark: render the vault and agent pages of a year of logs.

    python bench/bench_dashboard.py [--agents 10] [--days 365] [--runs 4] [--repeat 3]

A vault of ``--agents`` scaffolded agents is generated under bench/out/dashboard-<agents>x
<days>x<runs>/ (reused when complete): each agent gets 1 to ``2*runs - 1`` runs a day
(``--runs`` on average) over ``--days`` days ending 2026-11-30, shaped like the runtime's
records (tokens with cache reads and writes, a cost or, rarely, none, guardrail skips and
fallbacks, a 6-file prompt manifest). They are chained here and stored with the files
backend's ``import_records``, one batch per day file, instead of one durable ``append``
per record (tens of thousands of fsyncs).

Timed: ``dashboard.render`` of the whole vault into bench/out/dashboard-pages/, first in
this process (jinja2 import and template compilation included, the log's day files
possibly in the page cache from generation) and then the best of ``--repeat`` more.
The vault totals are printed so they can be compared with ``atomic-vault log NAME cost``.
Results go to bench/out/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from atomic_vault import dashboard
from atomic_vault.backends.files import FileLog
from atomic_vault.runlog import record_hash
from atomic_vault.scaffold import create_agent
from atomic_vault.vault import open_agent

OUT = Path(__file__).resolve().parent / "out"
LAST_DAY = date(2026, 11, 30)
MODELS = ("anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5", "openai:gpt-4.1-mini")


def make_record(rng: random.Random, agent: str, day: date, i: int) -> dict:
    """A run record as the runtime writes it, with the dashboard's fields varied."""
    ts = f"{day.isoformat()}T{7 + i % 14:02d}:{(i * 13) % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}+01:00"
    skipped = rng.random() < 0.03
    fallback = not skipped and rng.random() < 0.04
    input_tokens = 0 if skipped else rng.randint(800, 9000)
    cache_read = 0 if skipped else rng.choice((0, rng.randint(1000, 8000)))
    record = {
        "kind": "run", "ts": ts, "finished": ts, "run_id": f"{day:%Y%m%d}T0800-{i:08x}", "agent": agent,
        "trigger": rng.choice(("cron", "cron", "manual", "script")),
        "model": MODELS[1] if fallback else rng.choice(MODELS[::2]),
        "status": "skipped" if skipped else ("ok" if rng.random() > 0.03 else "error"),
        "input_tokens": input_tokens, "output_tokens": 0 if skipped else rng.randint(80, 1500),
        "cache_read_tokens": cache_read, "cache_write_tokens": 0 if skipped else rng.choice((0, 0, 1200)),
        "cost_usd": 0.0 if skipped else (None if rng.random() < 0.01 else round(rng.uniform(0.002, 0.09), 6)),
        "critical": False, "fallback_from": MODELS[0] if fallback else None,
        "summary": "Reviewed the inbox, moved two meetings and noted the supplier renewal.",
        "captures": [], "warnings": [], "error": None,
        "manifest": {"budget": 12000, "tokens": rng.randint(2000, 9000),
                     "files": [{"source": src, "sha256": f"{rng.getrandbits(256):064x}",
                                "tokens": rng.randint(20, 900)}
                               for src in ("persona/IDENTITY.md", "persona/SOUL.md", "persona/USER.md",
                                           "tools.md", "memory/INDEX.md", "memory/project_a.md")]},
    }
    if skipped or fallback:
        record["guardrail"] = {"action": "skip" if skipped else "fallback",
                               "reasons": ["daily cap $1.00 reached" if skipped else "monthly cap 80% reached"]}
    return record


def generate(root: Path, agents: int, days: int, runs: int) -> int:
    """The vault with every agent's chained log (reused when complete); returns the record count."""
    done = root / "complete.json"
    if done.exists():
        return json.loads(done.read_text())["records"]
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(11)
    log, total = FileLog(), 0
    for a in range(agents):
        folder = create_agent(root, f"agent{a:02d}", model=MODELS[0])
        records, prev = [], None
        for d in range(days):
            day = LAST_DAY - timedelta(days=days - 1 - d)
            for _ in range(rng.randint(1, 2 * runs - 1)):
                record = {**make_record(rng, folder.name, day, len(records)), "seq": len(records) + 1,
                          "prev": prev}
                record["hash"] = prev = record_hash(record)
                records.append(record)
        total += log.import_records(folder, records)
    done.write_text(json.dumps({"records": total}))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=4, help="average runs per agent per day")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    root = OUT / f"dashboard-{args.agents}x{args.days}x{args.runs}"
    pages = OUT / "dashboard-pages"
    started = time.perf_counter()
    records = generate(root, args.agents, args.days, args.runs)
    generated = time.perf_counter() - started
    log = FileLog()
    started = time.perf_counter()
    written = dashboard.render(root, None, pages, log_backend=log)
    first = time.perf_counter() - started
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        dashboard.render(root, None, pages, log_backend=log)
        times.append(time.perf_counter() - started)
    figures = [dashboard.gather(open_agent(p.stem, root), log, LAST_DAY) for p in written[1:]]
    period = dashboard.Tally()
    month = dashboard.Tally()
    for f in figures:
        period.include(f.period)
        month.include(f.month)
    results = {
        "agents": args.agents, "days": args.days, "records": records,
        "generate_s": round(generated, 2), "render_first_s": round(first, 3),
        "render_best_s": round(min(times), 3) if times else None, "pages": len(written),
        "page_kb": {p.name: round(p.stat().st_size / 1024, 1) for p in written[:2]},
        "period_runs": period.runs, "period_spend": dashboard.spend(period),
        "month_runs": month.runs, "month_spend": dashboard.spend(month),
        "skips": sum(f.skips for f in figures), "fallbacks": sum(f.fallbacks for f in figures),
        "cache_hit_rate": dashboard.percent(period.cache_hit_rate),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dashboard.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{records:,} records in {args.agents} agents over {args.days} days "
          f"(generated or reused in {results['generate_s']} s)")
    print(f"render {len(written)} pages: first {results['render_first_s']} s, "
          f"best of {args.repeat} {results['render_best_s']} s  →  {pages}")
    print(f"12 months: {period.runs:,} runs, {results['period_spend']}, "
          f"{results['skips']} skips, {results['fallbacks']} fallbacks, cache hit rate {results['cache_hit_rate']}")
    print(f"{LAST_DAY:%Y-%m} to date: {month.runs:,} runs, {results['month_spend']}")
    print(f"page sizes (KB): {results['page_kb']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
