"""Log benchmarks: append throughput per backend, and the monthly cost rollup at scale.

    python bench/bench_log.py [--records 1000000] [--appends 300] [--postgres URL | --no-postgres]

1. Append: ``--appends`` chained appends of a realistic run record, each made durable
   before the next (files: fsync of the line, HEAD and its folder; SQLite: a synchronous
   WAL commit; PostgreSQL: a commit), against the fsync floor of this disk (one 200-byte
   write + fsync).
2. Rollup: ``--records`` realistic records over 12 months are written as JSONL day files,
   then copied with ``import_records`` into SQLite and PostgreSQL (a migration at scale);
   the timed step is ``cost(by="month")`` on each, and, as the baseline for the files
   backend, ``jq -s 'map(.cost_usd) | add'`` over the same files.

The generated log lives in bench/out/log-<records>/ and is reused. Results go to
bench/out/log.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from atomic_vault.backends.files import FileLog
from atomic_vault.backends.sqlite import SQLiteLog
from atomic_vault.runlog import record_hash
from atomic_vault.vault import AgentFolder

OUT = Path(__file__).resolve().parent / "out"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def make_record(rng: random.Random, agent: str, day: date, i: int) -> dict:
    """A run record shaped like the runtime's: tokens, cost, captures, a 6-file manifest."""
    ts = f"{day.isoformat()}T{8 + i % 12:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}+01:00"
    return {
        "kind": "run", "ts": ts, "finished": ts, "run_id": f"{day:%Y%m%d}T0800-{i:08x}",
        "agent": agent, "trigger": rng.choice(("cron", "cron", "manual", "script")),
        "model": "anthropic:claude-sonnet-4-5", "input_tokens": rng.randint(1500, 9000),
        "output_tokens": rng.randint(100, 1200), "cost_usd": round(rng.uniform(0.002, 0.06), 6),
        "status": "ok" if rng.random() > 0.03 else "error", "critical": False,
        "summary": "Reviewed the inbox, moved two meetings and noted the supplier renewal.",
        "captures": [{"name": "Supplier renewal", "type": "project", "status": "written",
                      "file": "project_supplier_renewal.md"}] if rng.random() < 0.3 else [],
        "manifest": {"budget": 12000, "tokens": rng.randint(2000, 9000),
                     "files": [{"source": src, "layer": layer, "sha256": f"{rng.getrandbits(256):064x}",
                                "tokens": rng.randint(20, 900)} for src, layer in (
                         ("persona/IDENTITY.md", "identity"), ("persona/SOUL.md", "soul"),
                         ("persona/USER.md", "user"), ("tools.md", "tools"),
                         ("memory/INDEX.md", "memory index"), ("memory/project_a.md", "recent note"))],
                     "work_item": {"sha256": f"{rng.getrandbits(256):064x}", "tokens": 40},
                     "cuts": [], "cache_breakpoints": ["persona/USER.md", "tools.md"]},
        "warnings": [], "error": None,
    }


def generate(root: Path, n: int) -> AgentFolder:
    """JSONL day files holding ``n`` chained records (reused when complete)."""
    folder = AgentFolder(root, "ledger")
    done = root / "complete.json"
    if done.exists() and json.loads(done.read_text())["records"] == n:
        return folder
    if root.exists():
        shutil.rmtree(root)
    (folder.path / "persona").mkdir(parents=True)
    (folder.path / "persona" / "IDENTITY.md").write_text("# ledger\n")
    rng = random.Random(7)
    days = 365
    per_day = -(-n // days)
    prev, seq = None, 0
    start = date(2025, 11, 1)
    for d in range(days):
        day = start + timedelta(days=d)
        lines = []
        for _ in range(min(per_day, n - seq)):
            seq += 1
            record = {**make_record(rng, folder.name, day, seq), "seq": seq, "prev": prev}
            record["hash"] = prev = record_hash(record)
            lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
        if lines:
            path = folder.log_file(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder.head.write_text(json.dumps({"seq": seq, "hash": prev}) + "\n")
    done.write_text(json.dumps({"records": n}))
    return folder


def fsync_floor(directory: Path, count: int = 300) -> float:
    path = directory / "fsync-floor.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(count):
            os.write(fd, b"x" * 199 + b"\n")
            os.fsync(fd)
        return (time.perf_counter() - started) / count * 1000
    finally:
        os.close(fd)
        path.unlink()


def time_appends(log, folder: AgentFolder, count: int) -> dict:
    rng = random.Random(1)
    log.append(folder, make_record(rng, folder.name, date(2026, 11, 20), 0))  # opens files/connections
    times = []
    for i in range(count):
        record = make_record(rng, folder.name, date(2026, 11, 20), i + 1)
        started = time.perf_counter()
        log.append(folder, record)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 3),
            "per_s": round(1000 / statistics.mean(times))}


def time_rollup(log, folder: AgentFolder, repeat: int = 3) -> dict:
    times, total = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        rows = log.cost(folder, "month")
        times.append(time.perf_counter() - started)
        total = round(sum(r.cost_usd for r in rows), 4)
    return {"first_s": round(times[0], 3), "best_s": round(min(times), 3), "total_usd": total}


def jq_baseline(folder: AgentFolder) -> dict:
    files = sorted(str(p) for p in folder.log.glob("*/*.jsonl"))
    started = time.perf_counter()
    done = subprocess.run(["jq", "-s", "map(.cost_usd) | add", *files], capture_output=True, text=True)
    took = time.perf_counter() - started
    return {"s": round(took, 3), "total_usd": round(float(done.stdout), 4) if done.returncode == 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"fsync_floor_ms": round(fsync_floor(OUT), 3), "append": {}, "rollup": {}}
    schema = f"av_bench_{uuid.uuid4().hex[:8]}"
    backends = {"files": FileLog(), "sqlite": SQLiteLog()}
    if not args.no_postgres:
        from atomic_vault.backends.postgres import PostgresLog
        backends["postgres"] = PostgresLog(f"{args.postgres}?schema={schema}")
    try:
        with tempfile.TemporaryDirectory(dir=OUT) as scratch:
            for name, log in backends.items():
                folder = AgentFolder(Path(scratch) / name, "appender")
                (folder.path / "persona").mkdir(parents=True)
                results["append"][name] = time_appends(log, folder, args.appends)
                print(name, "append", results["append"][name], flush=True)
        source = generate(OUT / f"log-{args.records}", args.records)
        results["rollup"]["files"] = time_rollup(backends["files"], source)
        print("files rollup", results["rollup"]["files"], flush=True)
        results["rollup"]["jq"] = jq_baseline(source)
        print("jq", results["rollup"]["jq"], flush=True)
        for name in [n for n in backends if n != "files"]:
            log = backends[name]
            target = source if name == "postgres" else AgentFolder(OUT / f"log-{args.records}-sqlite", "ledger")
            if name == "sqlite":
                db = SQLiteLog().path(target)
                if db.exists():
                    for suffix in ("", "-wal", "-shm"):
                        Path(str(db) + suffix).unlink(missing_ok=True)
                (target.path / "persona").mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            log.import_records(target, backends["files"].records(source))
            imported = time.perf_counter() - started
            results["rollup"][name] = {**time_rollup(log, target), "import_s": round(imported, 1)}
            print(name, "rollup", results["rollup"][name], flush=True)
    finally:
        if "postgres" in backends:
            import psycopg
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    results["records"] = args.records
    (OUT / "log.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nfsync floor: {results['fsync_floor_ms']} ms per 200-byte append")
    print("\n| backend | append median ms | appends/s | monthly rollup first / best s |")
    print("|---|---:|---:|---:|")
    for name, a in results["append"].items():
        r = results["rollup"].get(name, {})
        print(f"| {name} | {a['median_ms']} | {a['per_s']} | {r.get('first_s')} / {r.get('best_s')} |")
    print(f"| jq -s (baseline) | | | {results['rollup']['jq']['s']} |")
    print(f"\n{args.records:,} records; written to {OUT / 'log.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
