"""Search benchmarks: index build rate and query latency at 10,000 and 100,000 notes.

    python bench/bench_search.py [--sizes 10000,100000] [--postgres URL | --no-postgres]

For each size, on a generated vault (bench/make_vault.py, realistic 300-1,200 character
notes, reused from bench/out/vaults/ when already there):

- SQLite: ``SQLiteMemory.reindex`` from the files (notes per second), then p50/p95 of
  ``search`` over a fixed set of queries (warm: the index is built and the process has
  searched once).
- PostgreSQL: the notes are loaded with ``put`` into a schema of their own (dropped at the
  end), then the same queries.
- Baseline: ``grep -ril WORD memory/`` with the first word of each query.

Results go to bench/out/search.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_call import AGENT, OUT, prepare_vault  # noqa: E402

from atomic_vault.backends.sqlite import SQLiteMemory  # noqa: E402
from atomic_vault.vault import AgentFolder  # noqa: E402

QUERIES = [
    "budget", "invoice", "roadmap quarter", "deadline client", "launch plan review",
    "security incident report", "Mira", "Omar payment", "supplier contract renewal",
    "weekly standup notes", "deploy-prod", '"release" AND (rollout*)', "東京", "zebra",
    "tax", "hiring pipeline", "careful migration", "dashboard metric", "travel expense receipt",
    "Clara Hugo",
]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_queries(search, rounds: int = 3) -> dict:
    search(QUERIES[0])  # warm
    times, hits = [], 0
    for _ in range(rounds):
        for query in QUERIES:
            started = time.perf_counter()
            found = search(query)
            times.append((time.perf_counter() - started) * 1000)
            hits += len(found)
    return {"p50_ms": round(percentile(times, 0.5), 3), "p95_ms": round(percentile(times, 0.95), 3),
            "queries": len(times), "mean_hits": round(hits / len(times), 1)}


def grep_baseline(memory: Path) -> dict:
    times = []
    for query in QUERIES:
        word = query.split()[0].strip('"')
        started = time.perf_counter()
        subprocess.run(["grep", "-ril", "--", word, str(memory)], stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(times, 0.5), 1), "p95_ms": round(percentile(times, 0.95), 1)}


def bench_postgres(url: str, folder: AgentFolder) -> dict:
    import psycopg

    from atomic_vault.backends.files import FileMemory
    from atomic_vault.backends.postgres import PostgresMemory

    schema = f"av_bench_{uuid.uuid4().hex[:8]}"
    memory = PostgresMemory(f"{url}?schema={schema}")
    files = FileMemory()
    notes, _ = files.scan(folder)
    try:
        started = time.perf_counter()
        for file in notes:
            memory.put(folder, file, files.get(folder, file))
        load_s = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'VACUUM ANALYZE "{schema}".notes')
        result = time_queries(lambda q: memory.search(folder, q))
        result["load_notes_per_s"] = round(len(notes) / load_s)
        return result
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for the PostgreSQL column")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    for n in [int(x) for x in args.sizes.split(",")]:
        root, _, _ = prepare_vault(n)
        folder = AgentFolder(root, AGENT)
        memory = SQLiteMemory()
        started = time.perf_counter()
        indexed = memory.reindex(folder)
        build_s = time.perf_counter() - started
        entry = {"notes": indexed, "sqlite_build_s": round(build_s, 2),
                 "sqlite_build_notes_per_s": round(indexed / build_s),
                 "sqlite_index_mb": round(memory.path(folder).stat().st_size / 1e6, 1),
                 "sqlite": time_queries(lambda q: memory.search(folder, q)),
                 "grep": grep_baseline(folder.memory)}
        if not args.no_postgres:
            entry["postgres"] = bench_postgres(args.postgres, folder)
        results[str(n)] = entry
        print(json.dumps({n: entry}), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "search.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n| notes | SQLite build (notes/s) | SQLite p50 / p95 ms | PostgreSQL p50 / p95 ms | grep -ril p50 / p95 ms |")
    print("|---:|---:|---:|---:|---:|")
    for n, e in results.items():
        pg = e.get("postgres")
        pg_text = f"{pg['p50_ms']} / {pg['p95_ms']}" if pg else "-"
        print(f"| {int(n):,} | {e['sqlite_build_notes_per_s']:,} | {e['sqlite']['p50_ms']} / "
              f"{e['sqlite']['p95_ms']} | {pg_text} | {e['grep']['p50_ms']} / {e['grep']['p95_ms']} |")
    print(f"\nwritten to {OUT / 'search.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
