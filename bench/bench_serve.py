"""`atomic-vault serve` under load: C concurrent clients x R runs each on one agent over loopback.

    /path/to/venv/bin/python bench/bench_serve.py                  # 32 clients x 20 runs
    /path/to/venv/bin/python bench/bench_serve.py --clients 8 --runs 50

The server is the real command (a subprocess on a free loopback port, the offline model);
each client is a thread with its own keep-alive connection, posting runs one after the
other, each with an idempotency key of its own. Then the check: every run the server
acknowledged is in the log exactly once (and nothing else is), the seqs have no gap, and
`verify` finds the chain whole. It prints the latency of a run as the client sees it
(p50, p95, max) and the throughput. The vault is a copy of samples/ under bench/out/serve/;
results go to bench/out/serve.json. tests/test_http_api.py runs a small version (4 x 5).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SAMPLES = HERE.parent / "samples"
WAIT = 60  # seconds: every wait is bounded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """`atomic-vault --root ROOT serve` on a free loopback port, once it accepts connections."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "atomic_vault", "--root", str(root), "serve",
                                "--port", str(port), *args], env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the server did not start: " + process.stderr.read().decode()[-2000:])
            time.sleep(0.05)


def hammer(port: int, agent: str, clients: int, runs: int, token: str | None = None) -> list[dict]:
    """Each client posts ``runs`` runs in turn; returns one row per acknowledged run."""
    rows: list[dict] = []
    failures: list[str] = []
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        start.wait()
        for r in range(runs):
            key = f"bench-{c}-{r}"
            body = json.dumps({"work_item": f"client {c} run {r}: summarise the day", "idempotency_key": key})
            began = time.perf_counter()
            connection.request("POST", f"/agents/{agent}/runs", body, headers)
            response = connection.getresponse()
            reply = json.loads(response.read())
            took = time.perf_counter() - began
            if response.status != 200 or reply.get("status") != "ok":
                failures.append(f"{key}: {response.status} {reply}")
                continue
            rows.append({"key": key, "run_id": reply["run_id"], "seq": reply["seq"], "latency_s": took})
        connection.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * runs)
    if failures:
        raise AssertionError(f"{len(failures)} runs failed, e.g. {failures[:3]}")
    return rows


def check(root: Path, agent: str, rows: list[dict], expected: int, before: int = 0) -> None:
    """Every acknowledged run logged exactly once, nothing else logged, the chain whole."""
    from atomic_vault.backends import open_backend
    from atomic_vault.protocols import LogQuery
    from atomic_vault.vault import open_agent

    folder = open_agent(agent, root)
    log = open_backend("log", None, folder.root, agent)
    records = [r for r in log.query(folder, LogQuery(kind="run")) if r.get("seq", 0) > before]
    assert len(rows) == expected, f"{len(rows)} runs acknowledged, {expected} posted"
    logged = [r["run_id"] for r in records]
    assert sorted(logged) == sorted(row["run_id"] for row in rows), \
        "the log's runs are not exactly the acknowledged ones"
    assert len(set(logged)) == len(logged), "a run is logged twice"
    keys = [r.get("idempotency", {}).get("key") for r in records]
    assert sorted(keys) == sorted(row["key"] for row in rows), "a key is logged twice or not at all"
    seqs = [r["seq"] for r in log.query(folder, LogQuery()) if r["seq"] > before]
    assert seqs == list(range(before + 1, before + 1 + len(seqs))), "the seqs have a gap"
    verified = log.verify(folder)
    assert verified.ok, f"verify: {verified.as_dict()}"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    root = OUT / "serve" / "vault"
    shutil.rmtree(root.parent, ignore_errors=True)
    shutil.copytree(SAMPLES, root)
    process, port = start_server(root, "--agents", "atlas")
    try:
        began = time.perf_counter()
        rows = hammer(port, "atlas", args.clients, args.runs)
        wall = time.perf_counter() - began
    finally:
        process.terminate()
        code = process.wait(WAIT)
    check(root, "atlas", rows, args.clients * args.runs)
    latencies = [row["latency_s"] for row in rows]
    result = {"clients": args.clients, "runs_each": args.runs, "runs": len(rows), "wall_s": round(wall, 3),
              "runs_per_s": round(len(rows) / wall, 1),
              "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
              "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1),
              "max_ms": round(max(latencies) * 1000, 1), "exit_on_sigterm": code,
              "python": platform.python_version(), "cpus": os.cpu_count(),
              "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    OUT.mkdir(exist_ok=True)
    (OUT / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['runs']} runs ({args.clients} clients x {args.runs}) in {result['wall_s']} s: "
          f"{result['runs_per_s']} runs/s; latency p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
          f"max {result['max_ms']} ms")
    print("every acknowledged run logged exactly once, seqs without a gap, chain verified; "
          f"server exit on SIGTERM: {code}")


if __name__ == "__main__":
    main()
