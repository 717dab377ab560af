"""Bytes of snapshots stored per run for runs whose inputs did not change (files, SQLite).

    python bench/bench_snapshots.py [--runs 30]

A copy of samples/atlas under bench/out/snapshots-vault/ makes ``--runs`` calls in one
day, each a new AtomicAgent with a model answering the same 400-character text, work
items of about 60 characters; only today's journal grows (a section per run). Printed per
store: the bytes the run added to the snapshot store (files: the day pack; SQLite: the
snapshots table's text), the texts the run stored whole (what one file per text cost
before packs), and the size of its answer plus work item, for the first runs, the last
runs and the median. The in-process cache of bases is cleared before each run, as a new
process (a cron run) starts without it. Results: bench/out/snapshots.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SAMPLES = HERE.parent / "samples"

from atomic_vault import AtomicAgent, snapshots  # noqa: E402
from atomic_vault.backends import packs  # noqa: E402
from atomic_vault.models import ModelResponse  # noqa: E402

ANSWER = ("Nothing new since this morning: the Verdemar migration is on track for Thursday, the "
          "invoice for milestone two went out, and the meetup talk still needs its last slide. "
          "No deadline falls inside the next seven days that is not already in the plan; I will "
          "look again at four and flag anything that moved. ") * 1


class Same:
    name = "offline:same"

    def complete(self, request):
        return ModelResponse(text=ANSWER, input_tokens=1, output_tokens=1, cost_usd=0.0, model=self.name)


def stored_bytes(agent) -> int:
    if agent.log.name == "files":
        where = packs.folder_of(agent.folder)
        return sum((where / p).stat().st_size for p in packs.packs(agent.folder))
    path = agent.log.path(agent.folder)
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT coalesce(sum(length(CAST(text AS BLOB))), 0) FROM snapshots").fetchone()[0]


def measure(backend: str, runs: int) -> dict:
    root = OUT / f"snapshots-vault-{backend}"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(SAMPLES, root)
    rows = []
    for i in range(runs):
        packs._TEXTS.clear()  # a new process has no base in memory: it reads it from the pack
        agent = AtomicAgent("atlas", root=root, model=Same(), log=backend)
        before = stored_bytes(agent)
        known = set(agent.log.snapshot_hashes(agent.folder))
        work = f"Check the inbox and the calendar, round {i}."
        result = agent.call(work)
        record = agent.log.get(agent.folder, result.run_id)
        new = [sha for sha in snapshots.named(record) if sha not in known]
        whole = sum(len(agent.log.get_snapshot(agent.folder, sha).encode("utf-8")) for sha in new)
        rows.append({"run": i + 1, "stored": stored_bytes(agent) - before, "new_texts_whole": whole,
                     "answer_and_work_item": len((ANSWER + work).encode("utf-8"))})
    later = rows[runs // 2:]
    return {"rows": rows, "median_stored_later_half": statistics.median(r["stored"] for r in later),
            "median_whole_later_half": statistics.median(r["new_texts_whole"] for r in later)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    results = {backend: measure(backend, args.runs) for backend in ("files", "sqlite")}
    (OUT / "snapshots.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| store | run | bytes stored | its new texts, whole | answer + work item |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for backend, r in results.items():
        for row in r["rows"][:2] + r["rows"][-2:]:
            print(f"| {backend} | {row['run']} | {row['stored']:,} | {row['new_texts_whole']:,} "
                  f"| {row['answer_and_work_item']:,} |")
        print(f"| {backend} | median, runs {args.runs // 2 + 1}-{args.runs} | {r['median_stored_later_half']:,} "
              f"| {r['median_whole_later_half']:,} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
