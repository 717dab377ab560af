"""The cost of the sample fleet's helper day with helpers against the same day without.

On a copy of samples/fleet, the lead agent does the helper day's three inbox jobs twice,
on a fresh day each time (so the cost caps start from zero):

- with helpers: each run hands its job to the built-in ``helper`` tool, whose model
  (``--helper-model``, priced by ``--helper-price``) sees only the instruction and the text;
- without: each run is given the same job and text in its own work item, no tool.

Both use the offline model priced as the sample prices it ($3 / $15 per million input /
output tokens); only the price table decides the cost, so the figure shows what the
tool loop's extra model call and the helper call cost against doing the job in the run.

    python bench/bench_helpers.py [--helper-price 0.25,1.25] [--text-words 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOBS = ("summarise", "classify as news or feature", "suggest a headline")


def _set_model(path: Path, **changes) -> None:
    """Rewrite model.md's yaml block with ``changes`` (None removes a key)."""
    text = path.read_text(encoding="utf-8")
    start = text.index("```yaml\n") + len("```yaml\n")
    end = text.index("```", start)
    data = yaml.safe_load(text[start:end])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(text[:start] + yaml.safe_dump(data, sort_keys=False) + text[end:], encoding="utf-8")


def day(root: Path, when: datetime, with_helpers: bool, letter: str) -> dict:
    from atomic_vault import AtomicAgent, clock

    clock.now = lambda zone=None: when.astimezone(zone) if zone else when  # a fresh day for the caps
    total, steps = 0.0, 0
    for i, job in enumerate(JOBS, 1):
        text = f"Reader letter {i}: {letter}"
        if with_helpers:
            work = f"Tidy the inbox item {i}.\ntool: helper " + json.dumps({"instruction": job, "text": text})
        else:
            work = f"Tidy the inbox item {i}: {job}.\n\n{text}"
        result = AtomicAgent("lead", root=root).call(work)
        assert result.status == "ok", result
        total += result.cost_usd or 0.0
        record = AtomicAgent("lead", root=root).log.get(AtomicAgent("lead", root=root).folder, result.run_id)
        steps += len(record.get("steps") or [])
    return {"cost_usd": round(total, 6), "runs": len(JOBS), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helper-model", default="offline:small")
    parser.add_argument("--helper-price", default="0.25,1.25", help="input,output USD per million tokens")
    parser.add_argument("--text-words", type=int, default=40, help="words of each reader letter")
    args = parser.parse_args(argv)
    price_in, price_out = (float(x) for x in args.helper_price.split(","))
    letter = " ".join(f"word{i % 97}" for i in range(args.text_words))
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, helpers in (("with helpers", True), ("without", False)):
            root = Path(scratch) / label.replace(" ", "-")
            shutil.copytree(ROOT / "samples" / "fleet", root)
            model = root / "lead" / "model.md"
            prices = {"offline:*": {"input": 3.0, "output": 15.0},
                      args.helper_model: {"input": price_in, "output": price_out}}
            _set_model(model, helpers=args.helper_model if helpers else None, prices=prices)
            when = datetime(2026, 12, 2 if helpers else 3, 15, 0, tzinfo=timezone.utc)
            results[label] = day(root, when, helpers, letter)
    for label, row in results.items():
        print(f"{label:<13} ${row['cost_usd']:.6f}  ({row['runs']} runs, {row['steps']} tool-loop steps)")
    saved = results["without"]["cost_usd"] - results["with helpers"]["cost_usd"]
    print(f"helpers save ${saved:.6f} on the day ({args.text_words}-word letters, helper at "
          f"${price_in}/${price_out} per million tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
