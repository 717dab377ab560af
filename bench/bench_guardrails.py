"""The per-call cost of the cost-guardrail check on a large log.

    python bench/bench_guardrails.py [--records 1000000] [--checks 50]

Before each model call the guardrail reads the settled spend of today and of this month
(two ``LogBackend.cost`` queries) and the in-flight reservations, and holds its own
reservation; after the call it reads the spend again and drops the reservation. This
bench times exactly that (``guardrails.reserve`` + ``guardrails.settle``, under the
agent's lock, as the runtime does) on the 1,000,000-record log of bench_log.py (365 day
files, about 2,740 records a day), for the files backend and for SQLite:

- cold: the first check with no derived state at all (files: every day file of the month
  is read);
- new process: after a run appended its record (which keeps the month's rollups on disk),
  the check in a new process (the cron case);
- same process: after a run appended its record, the check in the same process (a
  script calling ``agent.call()`` in a loop).

Results go to bench/out/guardrails.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_log import OUT, generate  # noqa: E402

import atomic_vault.backends.files as files_backend  # noqa: E402
from atomic_vault import guardrails  # noqa: E402
from atomic_vault.backends.files import FileLog  # noqa: E402
from atomic_vault.backends.sqlite import SQLiteLog  # noqa: E402
from atomic_vault.config import ModelConfig  # noqa: E402
from atomic_vault.locks import FileLock  # noqa: E402
from atomic_vault.pricing import Price  # noqa: E402
from atomic_vault.runlog import day_files  # noqa: E402
from atomic_vault.vault import AgentFolder  # noqa: E402

CONFIG = ModelConfig(max_output_tokens=2000, cost_guardrails={
    "enabled": True, "daily_cap_usd": 1e9, "monthly_cap_usd": 1e9, "warning_thresholds": [0.5, 0.8]})
PRICE = Price(3.0, 15.0, 0.3, 3.75)


def check(log, folder: AgentFolder, when: datetime) -> float:
    """One guardrail round trip as a run makes it; returns its seconds."""
    started = time.perf_counter()
    with FileLock().hold(folder, 10):
        budget = guardrails.reserve(folder, log, CONFIG, when, model="anthropic:claude-sonnet-4-5",
                                    price=PRICE, input_tokens=6000, critical=False)
    with FileLock().hold(folder, 10):
        guardrails.settle(folder, log, CONFIG, budget, when, 0.02)
    return time.perf_counter() - started


def run_record(when: datetime, i: int) -> dict:
    return {"kind": "run", "agent": "ledger", "ts": when.isoformat(timespec="milliseconds"),
            "run_id": f"bench-{i}", "model": "anthropic:claude-sonnet-4-5", "input_tokens": 6000,
            "output_tokens": 500, "cost_usd": 0.0255, "status": "ok", "summary": "bench"}


def measure(log, folder: AgentFolder, when: datetime, checks: int) -> dict:
    rollup_cache = folder.state / files_backend.ROLLUP_CACHE
    rollup_cache.unlink(missing_ok=True)
    files_backend._ROLLUPS.clear()
    cold = check(log, folder, when)
    cron, warm = [], []
    for i in range(checks):
        log.append(folder, run_record(when, i))  # the previous run's record
        files_backend._ROLLUPS.clear()  # a new process: only what is on disk remains
        cron.append(check(log, folder, when))
        log.append(folder, run_record(when, i))
        warm.append(check(log, folder, when))  # the same process again (a script's loop)

    def ms(values: list[float], q: float) -> float:
        return round(sorted(values)[max(int(len(values) * q) - 1, 0)] * 1000, 3)
    return {"cold_ms": round(cold * 1000, 2),
            "new_process_median_ms": round(statistics.median(cron) * 1000, 3),
            "new_process_p95_ms": ms(cron, 0.95),
            "same_process_median_ms": round(statistics.median(warm) * 1000, 3),
            "same_process_p95_ms": ms(warm, 0.95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=50)
    args = parser.parse_args(argv)
    source = generate(OUT / f"log-{args.records}", args.records)
    last_day = day_files(source)[-1].name[:10]
    when = datetime.fromisoformat(last_day + "T20:00:00").replace(tzinfo=timezone(timedelta(hours=1)))
    results = {"records": args.records, "day": last_day}
    # Work on copies so the shared generated log stays as bench_log.py expects it.
    import shutil
    scratch = OUT / f"guardrails-{args.records}"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(source.root, scratch, ignore=shutil.ignore_patterns(".atomic_vault"))
    files_folder = AgentFolder(scratch, "ledger")
    results["files"] = measure(FileLog(), files_folder, when, args.checks)
    print("files", results["files"], flush=True)
    sqlite_folder = AgentFolder(OUT / f"guardrails-{args.records}-sqlite", "ledger")
    sqlite = SQLiteLog()
    if not sqlite.path(sqlite_folder).exists():
        (sqlite_folder.path / "persona").mkdir(parents=True, exist_ok=True)
        sqlite.import_records(sqlite_folder, FileLog().records(source))
    results["sqlite"] = measure(sqlite, sqlite_folder, when, args.checks)
    print("sqlite", results["sqlite"], flush=True)
    (OUT / "guardrails.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\n{args.records:,} records, check on {last_day} (reserve + settle, each under the lock)")
    print("| backend | cold (no derived state) ms | new process median / p95 ms | same process median / p95 ms |")
    print("|---|---:|---:|---:|")
    for name in ("files", "sqlite"):
        r = results[name]
        print(f"| {name} | {r['cold_ms']} | {r['new_process_median_ms']} / {r['new_process_p95_ms']} | "
              f"{r['same_process_median_ms']} / {r['same_process_p95_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
