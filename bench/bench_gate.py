"""The authority gate's cost per tool call at 100 rules.

    python bench/bench_gate.py [--rules 100] [--calls 20000]

Builds a policy.md of ``--rules`` rules mixing globs, regular expressions, exact values
and numeric bounds, where only the last rule matches (the worst case: every rule is
tried), loads it once as a run does, then times ``Gate.decide`` per call. The budget is
1 ms per call. Results go to bench/out/gate.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atomic_vault.policy import Gate  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def policy_text(rules: int) -> str:
    lines = ["# Policy", "", "```yaml", "default: escalate", "rules:"]
    for i in range(rules - 1):
        shape = i % 4
        if shape == 0:
            lines.append(f"  - {{tool: 'send_{i}_*', verdict: block, reason: r{i}}}")
        elif shape == 1:
            lines.append(f"  - {{tool: pay, args: {{to: {{regex: '^acct-{i}-[0-9]+$'}}}}, verdict: block}}")
        elif shape == 2:
            lines.append(f"  - {{tool: pay, args: {{currency: X{i}}}, verdict: escalate}}")
        else:
            lines.append(f"  - {{tool: pay, args: {{amount: {{min: {i * 1000}, max: {i * 1000 + 1}}}}}, verdict: block}}")
    lines.append("  - {tool: pay, args: {to: {glob: 'acct-*'}, amount: {max: 100}}, verdict: allow}")
    lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.md"
        path.write_text(policy_text(args.rules), encoding="utf-8")
        began = time.perf_counter()
        gate = Gate(path, Path(tmp) / "floor.md")
        load_ms = (time.perf_counter() - began) * 1000
        assert not gate.problems, gate.problems
        call = {"to": "acct-7", "amount": 42, "currency": "EUR", "memo": "x" * 200}
        assert gate.decide("pay", call).outcome == "allow"
        samples = []
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(args.calls):
                gate.decide("pay", call)
            samples.append((time.perf_counter() - began) / args.calls * 1e6)
    result = {"rules": args.rules, "calls": args.calls, "load_ms": round(load_ms, 2),
              "decide_us_median": round(statistics.median(samples), 2), "decide_us_max": round(max(samples), 2),
              "budget_us": 1000}
    OUT.mkdir(exist_ok=True)
    (OUT / "gate.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"| rules | load policy.md | decide, median | decide, worst of 5 | budget |\n"
          f"| --- | --- | --- | --- | --- |\n"
          f"| {args.rules} | {load_ms:.1f} ms | {result['decide_us_median']} µs | {result['decide_us_max']} µs | 1000 µs |")


if __name__ == "__main__":
    main()
