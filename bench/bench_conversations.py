"""The cost of reading a conversation's earlier turns from the log before a run.

    python bench/bench_conversations.py [--days 30] [--per-day 100] [--turns 20] [--repeat 5]

Builds an agent whose log holds ``--days`` days of ``--per-day`` run records; the last
``--turns`` runs of the last day take part in two conversations (a generated id, whose
start day bounds the read, and a named id, which reads the runs of the whole log). Times
``conversations.prior`` for each, and for ``latest``, median of ``--repeat``. Results are
printed and written to bench/out/conversations.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atomic_vault import AtomicAgent, conversations, snapshots  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
GENERATED = "conv-20260130T090000-0badcafe"


def build(root: Path, days: int, per_day: int, turns: int) -> AtomicAgent:
    shutil.copytree(ROOT / "samples", root)
    agent = AtomicAgent("atlas", root=root, model="offline")
    for day in range(days):
        when = f"2026-01-{1 + day % 30:02d}T10:00:00+00:00" if day < 30 else f"2026-02-{1 + (day - 30) % 28:02d}T10:00:00+00:00"
        for i in range(per_day):
            last = day == days - 1 and i >= per_day - turns
            work, answer = f"work {day}-{i} " * 20, f"answer {day}-{i} " * 40
            texts = {snapshots.digest(work): work, snapshots.digest(answer): answer} if last else {}
            if texts:
                agent.log.put_snapshots(agent.folder, texts)
            agent.log.append(agent.folder, {
                "kind": "run", "ts": when, "run_id": f"r{day}-{i}", "agent": "atlas", "status": "ok",
                "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0,
                **({"conversation_id": GENERATED if i % 2 else "named-talk",
                    "snapshots": {"work_item": snapshots.digest(work), "answer": snapshots.digest(answer)}}
                   if last else {})})
    return agent


def timed(agent: AtomicAgent, cid: str, repeat: int) -> tuple[float, int]:
    times, turns = [], 0
    started = datetime(2026, 2, 1, tzinfo=timezone.utc)
    for _ in range(repeat):
        start = time.perf_counter()
        history = conversations.prior(agent.log, agent.folder, cid, started, 12_000)
        times.append((time.perf_counter() - start) * 1000)
        turns = len(history.turns)
    return statistics.median(times), turns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        agent = build(Path(tmp) / "vault", args.days, args.per_day, args.turns)
        figures = {"records": args.days * args.per_day, "turns": args.turns}
        for label, cid in (("generated id (reads from its start day)", GENERATED),
                           ("named id (reads the whole log)", "named-talk"), ("latest", "latest")):
            ms, turns = timed(agent, cid, args.repeat)
            figures[label] = {"ms": round(ms, 2), "turns_sent": turns}
            print(f"{label:<42} {ms:8.2f} ms  ({turns} turns, log of {figures['records']} records)")
    OUT.mkdir(exist_ok=True)
    (OUT / "conversations.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
