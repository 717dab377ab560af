"""The effect ledger's lookup: how long a keyed or resumed run's effect lookup takes when
the log holds many effect records.

    python bench/bench_ledger.py [--days 60] [--per-day 200] [--lookups 20] [--old FILE]

Builds an agent whose log holds ``--days`` days of ``--per-day`` committed effects, then
times ``ledger.find`` for keys that miss (the common case: a key not yet used) and keys
that hit an old day. The first lookup builds the derived index and is timed apart.
``--old FILE`` also times a copy of an earlier ledger.py (whose ``find`` read every effect
record) on the same log, for a before/after. Results are printed and written to
bench/out/ledger.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atomic_vault import AtomicAgent, ledger  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"


def build(root: Path, days: int, per_day: int) -> AtomicAgent:
    shutil.copytree(ROOT / "samples", root)
    agent = AtomicAgent("atlas", root=root, model="offline")
    for day in range(days):
        when = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T10:00:00+00:00"
        for i in range(per_day):
            agent.log.append(agent.folder, {"kind": "effect", "agent": "atlas", "ts": when, "run": f"r{day}",
                                            "step": 1, "key": f"k{day}-{i}", "tool": "t", "phase": "commit",
                                            "status": "ok", "result": "done"})
    return agent


def timed(find, keys) -> float:
    times = []
    for key in keys:
        start = time.perf_counter()
        find(key)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--per-day", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--old", type=Path, help="an earlier ledger.py to time on the same log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        agent = build(Path(tmp) / "vault", args.days, args.per_day)
        misses = [f"miss-{i}" for i in range(args.lookups)]
        hits = [f"k{i % 3}-{i}" for i in range(args.lookups)]  # in the oldest days
        start = time.perf_counter()
        ledger.find(agent, "first")
        result = {"records": args.days * args.per_day, "build_ms": round((time.perf_counter() - start) * 1000, 1),
                  "miss_ms": round(timed(lambda k: ledger.find(agent, k), misses), 2),
                  "hit_ms": round(timed(lambda k: ledger.find(agent, k), hits), 2)}
        if args.old:
            spec = importlib.util.spec_from_file_location("atomic_vault._ledger_before", args.old)
            old = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = old  # dataclasses look their module up
            spec.loader.exec_module(old)
            result["before_miss_ms"] = round(timed(lambda k: old.find(agent, k, None), misses[:5]), 2)
            result["before_hit_ms"] = round(timed(lambda k: old.find(agent, k, None), hits[:5]), 2)
    OUT.mkdir(exist_ok=True)
    (OUT / "ledger.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
