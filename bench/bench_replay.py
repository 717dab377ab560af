"""Replay of a run with the offline model against the original run (files and SQLite logs).

    python bench/bench_replay.py [--notes 10 1000] [--repeat 15]

For each size, a vault from make_vault.py (bench/out/replay-<notes>/, made fresh) runs the
offline model once warm-up, then ``repeat`` times: a run (``AtomicAgent.call``: assemble,
call, write back, log) and a replay of that run (``replay.replay``: find the record, load
and re-hash its snapshots, rebuild and re-fit the prompt, call, log, compare the two).
The figure is the ratio of median times; the goal is at most 2 (spec: within 2x of the
original run). Results: bench/out/replay.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_vault import make_vault  # noqa: E402

from atomic_vault import AtomicAgent, replay  # noqa: E402

OUT = HERE / "out"


def bench(notes: int, backend: str, repeat: int) -> dict:
    root = OUT / f"replay-{notes}-{backend}"
    shutil.rmtree(root, ignore_errors=True)
    make_vault(root, "bench", notes)
    agent = AtomicAgent("bench", root=root, model="offline", log=backend)
    agent.call("Warm up the caches.")
    runs, replays = [], []
    for i in range(repeat):
        start = time.perf_counter()
        result = agent.call(f"Plan item {i}: the week ahead, the invoices, the talk.")
        runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        done = replay.replay(agent, result.run_id, replay.Changes())
        replays.append(time.perf_counter() - start)
        assert done.status == "ok" and done.compared["answer"]["same"]
    run_ms, replay_ms = statistics.median(runs) * 1000, statistics.median(replays) * 1000
    return {"notes": notes, "backend": backend, "repeat": repeat, "run_ms": round(run_ms, 2),
            "replay_ms": round(replay_ms, 2), "ratio": round(replay_ms / run_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    results = [bench(n, backend, args.repeat) for n in args.notes for backend in ("files", "sqlite")]
    for row in results:
        print(f"{row['notes']:>7} notes {row['backend']:<7} run {row['run_ms']:8.2f} ms  "
              f"replay {row['replay_ms']:8.2f} ms  ratio {row['ratio']:.2f}")
    (OUT / "replay.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
