"""A cron run on the files backend: what the relevant layer costs a new process.

    python bench/bench_search_cold.py [--sizes 10000,100000] [--runs 3]

For each size, a generated vault (bench/make_vault.py, kept under bench/out/cold/<n>) is
run as cron would: ``atomic-vault --root <vault> run bench "<work item>" --model offline``,
one call per process, the relevant layer on (``relevant: {count: 3, share: 0.2}``, the
default) and then off (``relevant: {count: 0}``). Before each timed series one untimed run
builds the derived state (the catalog cache and, where it is kept, the word index), and
every timed run edits one note first (a new line in its body), so each run sees one
changed note, as a cron job on a living vault does.

Printed per size: the median wall time and the largest peak RSS (``os.wait4``, per child)
with the layer on and off, and their difference, the layer's cost in a new process; then
a run after ``.atomic_vault/`` is deleted (everything derived rebuilt). A probe process
(one note changed before it) times its catalog scan and its first ranked search apart and
counts the notes that search read (``WordIndex.reads``; absent before the index was kept). Results are also
written to bench/out/search_cold.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
sys.path.insert(0, str(ROOT))

from make_vault import make_vault, read_manifest, reset_vault  # noqa: E402

AGENT = "bench"
WORK_ITEM = "Prepare the renewal of the supplier contract and check the invoice schedule"
CONFIG = re.compile(r"^relevant:.*\n", re.MULTILINE)


def _cli() -> str:
    beside = Path(sys.executable).parent / "atomic-vault"
    found = str(beside) if beside.exists() else shutil.which("atomic-vault")
    if not found:
        raise SystemExit("atomic-vault is not installed next to this Python; run with the venv's python")
    return found


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child; exits on failure."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"run failed: {' '.join(cmd)}\n{err.read().decode('utf-8', 'replace')}")
    return wall, usage.ru_maxrss / 1024


def _vault(n: int) -> Path:
    root = OUT / "cold" / str(n)
    if read_manifest(root) is None:
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        make_vault(root, AGENT, n)
        print(f"generated {n:,} notes in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    else:
        reset_vault(root)
    return root


def _set_relevant(agent: Path, count: int) -> None:
    path = agent / "model.md"
    text = CONFIG.sub("", path.read_text(encoding="utf-8"))
    line = f"relevant: {{count: {count}, share: 0.2}}\n"
    text = text.replace("```yaml\n", "```yaml\n" + line, 1)
    path.write_text(text, encoding="utf-8")


def _touch_one(agent: Path, i: int) -> None:
    """Append a line to one note's body: the one change a living vault sees between runs."""
    notes = sorted((agent / "memory").glob("project_*.md"))
    path = notes[i % len(notes)]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"\nFollow-up {i}: the supplier renewal moved.\n")


def _series(root: Path, runs: int) -> dict:
    agent = root / AGENT
    cmd = [_cli(), "--root", str(root), "run", AGENT, WORK_ITEM, "--model", "offline"]
    _timed(cmd)  # untimed: builds the derived state
    walls, peaks = [], []
    for i in range(runs):
        _touch_one(agent, i)
        wall, peak = _timed(cmd)
        walls.append(wall)
        peaks.append(peak)
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "peak_rss_mb": round(max(peaks), 1)}


PROBE = """
import json, sys, time
from pathlib import Path
from atomic_vault import catalog
from atomic_vault.backends.files import FileMemory
from atomic_vault.vault import AgentFolder
folder = AgentFolder(Path(sys.argv[1]).resolve(), sys.argv[2])
memory = FileMemory()
started = time.perf_counter()
memory.scan(folder)
scanned = time.perf_counter()
memory.search(folder, sys.argv[3], limit=12, match="any")
done = time.perf_counter()
index = memory._words.get(folder.memory)
print(json.dumps({"scan_ms": round((scanned - started) * 1000, 1),
                  "search_ms": round((done - scanned) * 1000, 1),
                  "notes_read": getattr(index, "reads", None)}))
"""


def _probe(root: Path) -> dict:
    """In a new process: the catalog scan, then the first ranked search, timed apart."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(root), AGENT, WORK_ITEM],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, runs: int) -> dict:
    root = _vault(n)
    agent = root / AGENT
    out: dict = {"notes": n}
    _set_relevant(agent, 3)
    out["on"] = _series(root, runs)
    _touch_one(agent, runs)
    out["probe"] = _probe(root)
    _set_relevant(agent, 0)
    out["off"] = _series(root, runs)
    _set_relevant(agent, 3)
    shutil.rmtree(agent / ".atomic_vault", ignore_errors=True)
    wall, peak = _timed([_cli(), "--root", str(root), "run", AGENT, WORK_ITEM, "--model", "offline"])
    out["rebuild"] = {"wall_s": round(wall, 3), "peak_rss_mb": round(peak, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    results = [measure(int(n), args.runs) for n in args.sizes.split(",")]
    print("| notes | run, relevant on | off | layer's cost | peak RSS on / off | after deleting .atomic_vault/ |")
    print("|---|---|---|---|---|---|")
    for r in results:
        on, off = r["on"], r["off"]
        print(f"| {r['notes']:,} | {on['median_s'] * 1000:.0f} ms | {off['median_s'] * 1000:.0f} ms | "
              f"{(on['median_s'] - off['median_s']) * 1000:+.0f} ms | {on['peak_rss_mb']} / "
              f"{off['peak_rss_mb']} MB | {r['rebuild']['wall_s']:.2f} s, {r['rebuild']['peak_rss_mb']} MB |")
    print()
    print("| notes | new process: catalog scan | first ranked search | notes read by it |")
    print("|---|---|---|---|")
    for r in results:
        p = r["probe"]
        print(f"| {r['notes']:,} | {p['scan_ms']} ms | {p['search_ms']} ms | {p['notes_read']} |")
    (OUT / "search_cold.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
