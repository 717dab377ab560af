"""What note history costs a run, and what an edit command costs, at two vault sizes.

    python bench/bench_history.py [--sizes 100,10000] [--repeat 30]

For each size a vault is generated in a temporary folder (bench/make_vault.py) and its
catalog built. Then, median ms of:

  a. ``history.outside``, the check a run makes under its lock for notes changed outside
     atomic_vault, when nothing changed (the common case), and when one note was edited
     by hand since the last scan (the scan, untimed, queues it; the check reads the note
     and its recorded hash)
  b. the same check's first use, which builds .atomic_vault/note-hashes/ from the log
  c. ``notes archive`` then ``unarchive`` of one note (noteedit.set_flag, API, one process)

The check should not grow with the number of notes; the figures show whether it does.
Results are printed and written to bench/out/history.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from atomic_vault import AtomicAgent, history, noteedit  # noqa: E402
from make_vault import make_vault  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def measure(size: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "vault"
        folder_path = make_vault(root, "bench", size)
        agent = AtomicAgent("bench", root=root, model="offline")
        folder = agent.folder
        agent.memory.scan(folder)  # the catalog's first build (it queues nothing)
        file = sorted(p.name for p in (folder_path / "memory").glob("project_*.md"))[0]

        start = time.perf_counter()
        history.outside(folder, agent.memory, agent.log)
        first = round((time.perf_counter() - start) * 1000, 3)

        agent.memory.scan(folder)
        quiet = median_ms(lambda: history.outside(folder, agent.memory, agent.log), repeat)
        edited = []
        for i in range(repeat):  # one hand edit, seen by a scan (untimed), then the check (timed)
            path = folder_path / "memory" / file
            path.write_text(path.read_text() + f"x{i}\n")
            agent.memory.scan(folder)
            start = time.perf_counter()
            found, _ = history.outside(folder, agent.memory, agent.log)
            edited.append((time.perf_counter() - start) * 1000)
            assert [e["file"] for e in found] == [file], found
            history.remember(folder, agent.log, found)  # as the run's record would
            agent.memory.settle_changed_notes(folder)
        row = {"notes": size, "first_use_ms": first, "check_quiet_ms": quiet,
               "check_one_hand_edit_ms": round(statistics.median(edited), 3)}

        def archive_and_back():
            noteedit.set_flag(agent, "archive", file)
            noteedit.set_flag(agent, "unarchive", file)

        row["archive_and_unarchive_ms"] = median_ms(archive_and_back, max(3, repeat // 3))
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rows = [measure(int(size), args.repeat) for size in args.sizes.split(",")]
    print("| notes | first use (builds note-hashes) | check, nothing changed | check, one hand edit "
          "| archive + unarchive |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['notes']} | {r['first_use_ms']} ms | {r['check_quiet_ms']} ms "
              f"| {r['check_one_hand_edit_ms']} ms | {r['archive_and_unarchive_ms']} ms |")
    OUT.mkdir(exist_ok=True)
    (OUT / "history.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
