"""show and export of one run in a log of 100,000 records (files and SQLite).

    python bench/bench_evidence.py [--records 100000] [--repeat 20]

The log is bench_log.py's (bench/out/log-<records>/, reused), copied to
bench/out/evidence-<records>/, plus 10 runs at its end whose records name snapshots of
realistic size (6 layers of about 2 KB, a 500-byte work item, a 3 KB answer). Timed, in
one process: ``show`` (find the record, load and re-hash its snapshots, build the view,
render the text) and ``export`` (the same, plus the chain to HEAD, the manifest and the
tar.gz written) of the newest run; once, ``export`` of a run from the first day of the
log, whose chain to HEAD is the whole log (built, then written as tar.gz and as .tar),
and its ``show``. Results: bench/out/evidence.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_log import generate  # noqa: E402

from atomic_vault import bundle, evidence, snapshots  # noqa: E402
from atomic_vault.backends.files import FileLog  # noqa: E402
from atomic_vault.backends.sqlite import SQLiteLog  # noqa: E402

OUT = HERE / "out"


def _runs(log, folder, count: int = 10) -> list[str]:
    ids = []
    for i in range(count):
        system = [{"layer": "recent note", "source": f"memory/n{j}.md", "text": f"## n{j}\n\n" + "note text " * 200}
                  for j in range(6)]
        taken = snapshots.take(str, system, f"work item {i} " + "w" * 500, f"answer {i} " + "a" * 3000, [], [])
        log.put_snapshots(folder, taken.texts)
        run_id = f"20261101T0900-{i:08x}"
        log.append(folder, {"kind": "run", "ts": f"2026-11-01T09:{i:02d}:00.000+01:00", "run_id": run_id,
                            "agent": folder.name, "trigger": "cron", "model": "offline", "status": "ok",
                            "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "captures": [],
                            "manifest": {"files": [{"source": b["source"], "layer": b["layer"], "tokens": 500,
                                                    "sha256": "0" * 64, "snapshot": sha}
                                                   for b, sha in zip(system, taken.layers)], "cuts": []},
                            "snapshots": taken.refs, "attempts": [], "warnings": [], "error": None})
        ids.append(run_id)
    return ids


def _median_ms(step, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 2)


def measure(log, folder, run_id: str, old_id: str, repeat: int, scratch: Path) -> dict:
    def show(rid=run_id):
        record = evidence.find_run(log, folder, rid)
        evidence.render(evidence.view(record, evidence.load_texts(log, folder, record)))

    counter = iter(range(10**6))

    def export(rid=run_id):
        record = evidence.find_run(log, folder, rid)
        files, _ = bundle.build(log, folder, record)
        bundle.write(files, scratch / f"{log.name}-{next(counter)}.tar.gz")

    show(), export()  # warm: connections, page cache
    began = time.perf_counter()
    record = evidence.find_run(log, folder, old_id)
    files, _ = bundle.build(log, folder, record)
    built = time.perf_counter()
    bundle.write(files, scratch / f"{log.name}-old.tar.gz")
    done = time.perf_counter()
    evidence.render(evidence.view(record, evidence.load_texts(log, folder, record)))
    shown = time.perf_counter()
    bundle.write(files, scratch / f"{log.name}-old.tar")
    plain_ms = round((time.perf_counter() - shown) * 1000, 1)
    return {"show_ms": _median_ms(show, repeat), "export_ms": _median_ms(export, repeat),
            "old_show_ms": round((shown - done) * 1000, 1), "old_export_ms": round((done - began) * 1000, 1),
            "old_build_ms": round((built - began) * 1000, 1), "old_write_ms": round((done - built) * 1000, 1),
            "old_tar_write_ms": plain_ms,
            "old_chain_records": files["chain.jsonl"].count(b"\n"),
            "old_chain_mb": round(len(files["chain.jsonl"]) / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    source = generate(OUT / f"log-{args.records}", args.records)
    root = OUT / f"evidence-{args.records}"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source.root, root)
    folder = type(source)(root, source.name)
    results = {"records": args.records}
    with tempfile.TemporaryDirectory(dir=OUT) as scratch:
        files = FileLog()
        ids = _runs(files, folder)
        old = next(iter(files.records(folder)))["run_id"]
        results["files"] = measure(files, folder, ids[-1], old, args.repeat, Path(scratch))
        sqlite = SQLiteLog()
        sqlite.import_records(folder, files.records(folder))
        from atomic_vault.migrate import copy_snapshots
        copy_snapshots(folder, files, sqlite)
        results["sqlite"] = measure(sqlite, folder, ids[-1], old, args.repeat, Path(scratch))
    (OUT / "evidence.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"| log ({args.records:,} records) | show, newest run | export, newest run | show, first run "
          "| export, first run (chain) | of which: bundle built / tar.gz written | .tar written instead |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("files", "sqlite"):
        r = results[name]
        print(f"| {name} | {r['show_ms']} ms | {r['export_ms']} ms | {r['old_show_ms']} ms | {r['old_export_ms']} ms "
              f"({r['old_chain_records']:,} records, {r['old_chain_mb']} MB) | {r['old_build_ms']} / "
              f"{r['old_write_ms']} ms | {r['old_tar_write_ms']} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
