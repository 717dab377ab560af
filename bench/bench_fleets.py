"""What projects and delegation add to a run, with the offline model (no network).

    /path/to/venv/bin/python bench/bench_fleets.py            # 20 calls per case
    /path/to/venv/bin/python bench/bench_fleets.py --calls 50

Cases, each in a fresh copy of samples/ under a temporary folder (nothing else written):

  a. atlas alone: one call, no project
  b. atlas in one project holding N shared notes (N = 10, 100, 1000; 5 of them pinned)
  c. a root run delegating to one child (two runs), under a tree cap

Prints the median and p95 wall time of one call (ms) per case, as Markdown.
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
SAMPLES = HERE.parent / "samples"
sys.path.insert(0, str(HERE.parent))

from atomic_vault import AtomicAgent  # noqa: E402


def note(i: int, pinned: bool) -> str:
    return ("---\nschema_version: 1\n"
            f"name: Shared fact {i}\ndescription: shared fact {i} in one line\ntype: project\n"
            "captured: 2026-11-01\nlast_seen: 2026-11-20\nsources:\n- bench\nconfidence: high\n"
            + ("pinned: true\n" if pinned else "") + f"---\nShared fact number {i}.\n")


def vault(base: Path, shared_notes: int | None, delegate: bool) -> Path:
    root = base / f"v{shared_notes}-{delegate}"
    shutil.copytree(SAMPLES, root)
    model = {"model": "offline", "journal_days": 1, "recent_notes": 5}
    if shared_notes is not None:
        folder = root / "_projects" / "launch" / "memory"
        folder.mkdir(parents=True)
        (folder.parent / "project.md").write_text("# Launch\n\nShip it.\n\n```yaml\nmembers: [atlas]\n```\n")
        lines = ["# Memory Index", "", "## Active Projects"]
        for i in range(shared_notes):
            (folder / f"project_shared_fact_{i}.md").write_text(note(i, i < 5))
            lines.append(f"- [Shared fact {i}](project_shared_fact_{i}.md) — shared fact {i}")
        (folder / "INDEX.md").write_text("\n".join(lines) + "\n")
        model["projects"] = ["launch"]
    if delegate:
        shutil.copytree(root / "atlas", root / "scout", ignore=shutil.ignore_patterns("log", "journal"))
        tools = {"read": ["persona/", "memory/"], "write": ["memory/"],
                 "tools": [{"name": "delegate", "kind": "builtin"}]}
        (root / "atlas" / "tools.md").write_text("# T\n\n```yaml\n" + json.dumps(tools) + "\n```\n")
        (root / "atlas" / "policy.md").write_text("# P\n\n```yaml\nrules:\n  - {tool: delegate, verdict: allow}\n```\n")
    (root / "atlas" / "model.md").write_text("# M\n\n```yaml\n" + json.dumps(model) + "\n```\n")
    return root


def timed(root: Path, work: str, calls: int, **options) -> tuple[float, float]:
    AtomicAgent("atlas", root=root).call(work, **options)  # warm-up: caches, catalog
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        AtomicAgent("atlas", root=root).call(work, **options)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        rows.append(("atlas alone", *timed(vault(base, None, False), "Plan the week.", args.calls)))
        for n in (10, 100, 1000):
            rows.append((f"atlas + project of {n} notes", *timed(vault(base, n, False), "Plan the week.", args.calls)))
        work = 'Plan.\ntool: delegate {"agent": "scout", "task": "Find a venue."}'
        rows.append(("root + 1 delegated child (2 runs)",
                     *timed(vault(base, None, True), work, args.calls, tree_cap_usd=1.0)))
    print(f"| case ({args.calls} calls, offline model) | median ms | p95 ms |")
    print("| --- | ---: | ---: |")
    for name, median, p95 in rows:
        print(f"| {name} | {median:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
