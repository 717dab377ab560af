"""Worker processes draining the work queue, on the files queue and on PostgreSQL.

    /path/to/venv/bin/python bench/bench_queue.py                           # 4 workers, 2,000 items, both queues
    /path/to/venv/bin/python bench/bench_queue.py --items 500 --queues files
    /path/to/venv/bin/python bench/bench_queue.py --postgres postgresql://user@host/db

The items go to 8 agents (offline model, files for the agents' own state) so that the
agents' write locks do not decide the figure. Each worker process runs
``atomic_vault.workqueue.Worker(until_empty=True)`` and times every ``claim`` call. Then
the check: every item is done, none dead, each agent's log verifies and holds exactly one
run per item key (none lost, none run twice). Printed: items per second and the claim
latency (p50, p95). Results go to bench/out/queue.json; the vault is under bench/out/queue/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
AGENTS = [f"agent{n}" for n in range(8)]


def _work(i: int, root: str, queue: str, latencies: str) -> None:
    from atomic_vault.workqueue import Worker

    worker = Worker(root, queue, lease=30.0, poll=0.05, until_empty=True, say=lambda line: None)
    claim, seen = worker.queue.claim, []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return claim(*args, **kwargs)
        finally:
            seen.append(time.perf_counter() - start)
    worker.queue.claim = timed
    tally = worker.run()
    Path(latencies).write_text(json.dumps({"claims": seen, "done": tally.done, "errors": tally.errors}))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run_one(queue: str, items: int, workers: int, postgres: str) -> dict:
    from atomic_vault import AtomicAgent
    from atomic_vault.protocols import LogQuery
    from atomic_vault.testing import make_agent
    from atomic_vault.workqueue import open_queue

    root = OUT / "queue" / queue
    if root.exists():
        shutil.rmtree(root)
    for agent in AGENTS:
        make_agent(root, agent)
    schema = None
    if queue == "postgres":
        schema = f"av_bench_{uuid.uuid4().hex[:8]}"
        os.environ["ATOMIC_VAULT_QUEUE_URL"] = f"{postgres}?schema={schema}"
    try:
        backend = open_queue(root, queue)
        keys = [backend.enqueue(AGENTS[n % len(AGENTS)], f"item {n}").key for n in range(items)]
        ctx = multiprocessing.get_context("spawn")
        files = [str(root / f"latency-{i}.json") for i in range(workers)]
        started = time.perf_counter()
        children = [ctx.Process(target=_work, args=(i, str(root), queue, files[i])) for i in range(workers)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        seconds = time.perf_counter() - started
        assert all(c.exitcode == 0 for c in children), [c.exitcode for c in children]
        reports = [json.loads(Path(f).read_text()) for f in files]
        stats = backend.stats()
        ran = []
        for agent in AGENTS:
            handle = AtomicAgent(agent, root=str(root))
            assert handle.log.verify(handle.folder).ok, f"{agent}'s log does not verify"
            ran += [r["idempotency"]["key"] for r in handle.log.query(handle.folder, LogQuery(kind="run"))]
        once = sorted(ran) == sorted(keys)
        claims = [c for r in reports for c in r["claims"]]
        return {"queue": queue, "items": items, "workers": workers, "seconds": round(seconds, 2),
                "items_per_s": round(items / seconds, 1), "done": stats["done"], "dead": stats["dead"],
                "runs_logged": len(ran), "each_item_ran_once": once,
                "claim_p50_ms": round(_percentile(claims, 50) * 1000, 2),
                "claim_p95_ms": round(_percentile(claims, 95) * 1000, 2), "claims": len(claims),
                "errors": sum(len(r["errors"]) for r in reports)}
    finally:
        if schema:
            import psycopg

            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            os.environ.pop("ATOMIC_VAULT_QUEUE_URL", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--queues", default="files,postgres")
    parser.add_argument("--postgres", default=os.environ.get("ATOMIC_VAULT_TEST_POSTGRES",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    results = [run_one(q.strip(), args.items, args.workers, args.postgres) for q in args.queues.split(",")]
    print(f"| queue | items | workers | seconds | items/s | claim p50 ms | claim p95 ms | done | dead | "
          "runs logged | each ran once |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['queue']} | {r['items']} | {r['workers']} | {r['seconds']} | {r['items_per_s']} | "
              f"{r['claim_p50_ms']} | {r['claim_p95_ms']} | {r['done']} | {r['dead']} | {r['runs_logged']} | "
              f"{r['each_item_ran_once']} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "queue.json").write_text(json.dumps(results, indent=2) + "\n")
    if not all(r["each_item_ran_once"] and r["done"] == r["items"] and not r["dead"] for r in results):
        raise SystemExit("FAILED: an item was lost, dead or run twice")


if __name__ == "__main__":
    main()
