"""Many writers on one agent: W processes x C calls at once, each call capturing one note.

    /path/to/venv/bin/python bench/bench_many_writers.py                     # 8 x 50, every backend
    /path/to/venv/bin/python bench/bench_many_writers.py --workers 16 --calls 100
    /path/to/venv/bin/python bench/bench_many_writers.py --backends files,sqlite

The same run and check as tests/test_many_writers.py (``atomic_vault.testing.many_writers``):
exactly one log record per call, seq 1..N without a gap, the chain verifies, every capture
is listed in INDEX.md, one journal section per run. Backends: ``files``; ``sqlite`` (memory
and log); ``postgres`` (memory and log in PostgreSQL, the Redis lock), each in a schema and
key prefix of its own, removed afterwards. The vault is a copy of samples/ under
bench/out/many-writers/; results go to bench/out/many_writers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from atomic_vault.testing import many_writers

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SAMPLES = HERE.parent / "samples"
RESULTS = OUT / "many_writers.json"


def run_one(backend: str, workers: int, calls: int, args: argparse.Namespace) -> float:
    root = OUT / "many-writers" / backend
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(SAMPLES, root)
    if backend == "files":
        return many_writers(root, "atlas", workers=workers, calls=calls)
    if backend == "sqlite":
        return many_writers(root, "atlas", workers=workers, calls=calls, memory="sqlite", log="sqlite")
    import psycopg
    import redis

    tag = uuid.uuid4().hex[:8]
    schema, prefix = f"av_bench_{tag}", f"avbench:{tag}:"
    os.environ["ATOMIC_VAULT_MEMORY_URL"] = os.environ["ATOMIC_VAULT_LOG_URL"] = f"{args.postgres}?schema={schema}"
    os.environ["ATOMIC_VAULT_LOCK_URL"] = f"{args.redis}?prefix={prefix}"
    try:
        return many_writers(root, "atlas", workers=workers, calls=calls, memory="postgres",
                            log="postgres", lock="redis")
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50, help="calls per worker process")
    parser.add_argument("--backends", default="files,sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("ATOMIC_VAULT_TEST_POSTGRES",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("ATOMIC_VAULT_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        seconds = run_one(backend, args.workers, args.calls, args)
        total = args.workers * args.calls
        rows.append({"backend": backend, "workers": args.workers, "calls": args.calls,
                     "seconds": round(seconds, 2), "calls_per_s": round(total / seconds, 1),
                     "ms_per_call": round(seconds / total * 1000, 1)})
    print("| backend | processes x calls | seconds | calls/s | ms per call |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backend']} | {row['workers']} x {row['calls']} | {row['seconds']} | "
              f"{row['calls_per_s']} | {row['ms_per_call']} |")
    OUT.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
                                   "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
