"""What the commit doorbell costs a cold start: the entry-point lookup and the hooks.

    /path/to/venv/bin/python bench/bench_hooks.py [--runs 7]

Three figures, each the median of --runs fresh processes:
1. reading the entry points the way a run needs them (memory, log, lock, journal
   backends, model providers, hooks): one scan of the installed packages, then a pick per
   group from memory (backends.entry_points_of), against one scan per group;
2. ``hooks.installed()`` after the backends were found (the doorbell's own lookup);
3. a cold ``atomic-vault run`` of an offline agent with no hook, and with one hook
   installed (a dist-info on PYTHONPATH; the hook appends a line to a file).
Results go to bench/out/hooks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BIN = Path(sys.executable).parent
GROUPS = ["atomic_vault.backends.memory", "atomic_vault.backends.log", "atomic_vault.backends.lock",
          "atomic_vault.backends.journal", "atomic_vault.models", "atomic_vault.hooks"]

PER_GROUP = f"""
import time
from importlib.metadata import entry_points
t = time.perf_counter()
for g in {GROUPS!r}: entry_points(group=g)
print(time.perf_counter() - t)
"""
ONE_SCAN = f"""
import time
from importlib.metadata import entry_points
t = time.perf_counter()
found = entry_points()  # what backends.entry_points_of does, once per process
for g in {GROUPS!r}: found.select(group=g)
print(time.perf_counter() - t)
"""
DOORBELL = """
import time
from atomic_vault.backends import known
for kind in ("memory", "log", "lock", "journal"): known(kind)
from atomic_vault import hooks
t = time.perf_counter()
hooks.installed()
print(time.perf_counter() - t)
"""


def timed_python(code: str, runs: int, env: dict | None = None) -> float:
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True, env=env).stdout) for _ in range(runs))


def timed_runs(pairs: list[tuple[Path, dict]], runs: int) -> list[float]:
    """Median wall time of a cold run for each (root, environment), taken in turns so that
    a change of the machine's load falls on both alike."""
    out: list[list[float]] = [[] for _ in pairs]
    for n in range(runs):
        for i, (root, env) in enumerate(pairs):
            start = time.perf_counter()
            subprocess.run([str(BIN / "atomic-vault"), "--root", str(root), "run", "bot", f"hello {n}"],
                           capture_output=True, check=True, env=env)
            out[i].append(time.perf_counter() - start)
    return [statistics.median(times) for times in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from atomic_vault.testing import make_agent

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        site = tmp / "site"
        (site / "bell_bench-1.0.dist-info").mkdir(parents=True)
        (site / "bell_bench-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bell-bench\nVersion: 1.0\n")
        (site / "bell_bench-1.0.dist-info" / "entry_points.txt").write_text("[atomic_vault.hooks]\nbell = bell_bench:ring\n")
        (site / "bell_bench.py").write_text("def ring(folder, record):\n    with open(folder.root / 'rang.txt', 'a') as f:\n"
                                            "        f.write(str(record['seq']) + '\\n')\n")
        make_agent(tmp / "plain", "bot")
        make_agent(tmp / "hooked", "bot")
        env = dict(os.environ)
        hooked_env = {**env, "PYTHONPATH": str(site)}
        plain, hooked = timed_runs([(tmp / "plain", env), (tmp / "hooked", hooked_env)], args.runs)
        result = {
            "entry_points_one_scan_ms": round(timed_python(ONE_SCAN, args.runs) * 1000, 2),
            "entry_points_scan_per_group_ms": round(timed_python(PER_GROUP, args.runs) * 1000, 2),
            "hooks_installed_after_backends_ms": round(timed_python(DOORBELL, args.runs) * 1000, 3),
            "cold_run_no_hook_s": round(plain, 3),
            "cold_run_one_hook_s": round(hooked, 3),
        }
        rang = (tmp / "hooked" / "rang.txt").read_text().split()
        assert rang == [str(n) for n in range(1, args.runs + 1)], rang
    for key, value in result.items():
        print(f"{key:38} {value}")
    OUT.mkdir(exist_ok=True)
    (OUT / "hooks.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
