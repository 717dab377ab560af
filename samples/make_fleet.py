"""Generate samples/fleet: a small vault of three agents sharing one project, with four
weeks of history made by the real runtime (AtomicAgent.call, delegation, the helper
tool, an approval and its resume, the work queue and its worker).

Why a script and not hand-written logs: every record comes from the code that writes
records in production, so the hash chains verify and the sample shows what a fleet
really leaves on disk. The clock, the random bytes (run ids, queue keys) and the
machine's name are fixed here, so running it again gives the same bytes.

    python samples/make_fleet.py            # rewrites samples/fleet
    python samples/make_fleet.py OUT_DIR    # writes a fresh copy elsewhere (OUT_DIR must not exist)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import types
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "fleet"
FIRST_DAY = date(2026, 11, 2)  # a Monday; four weeks to Sunday 29 November
WEEKS = 4
SEED = 15
PROJECT = "harbor"
AGENTS = ("lead", "scout", "writer")
RETIRED = "archivist"  # an agent that no longer exists: its queue item is dead-lettered

# Per million tokens: a priced stand-in for a hosted model, so every run has a cost.
PRICES = {"offline:*": {"input": 3.0, "output": 15.0}}


class Clock:
    """The one clock every part of the run reads while the script runs: set to a moment of
    the simulated month and moved a little by each read, so records keep their order."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

    def set(self, day: date, hour: int, minute: int = 0) -> None:
        self.at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)

    def now(self, zone=None) -> datetime:
        self.at += timedelta(milliseconds=250)
        return self.at.astimezone(zone or timezone.utc)

    def time(self) -> float:
        return self.now().timestamp()


def fix_the_world(clock: Clock) -> None:
    """Replace every source of bytes that would differ between two generations."""
    from atomic_vault import clock as clock_module, retries, workqueue
    from atomic_vault.backends import files_queue

    # One seeded stream per place that asks (module and function): run ids, approval ids
    # and queue keys then never depend on how many temp names or cache generations were
    # drawn before them, which varies with timing (a cache saved or not).
    streams: dict[tuple[str, str], random.Random] = {}

    def urandom(n: int) -> bytes:
        code = sys._getframe(1).f_code
        where = (Path(code.co_filename).name, code.co_name)
        if where not in streams:
            streams[where] = random.Random(f"{SEED}:{where[0]}:{where[1]}")
        return streams[where].randbytes(n)

    os.urandom = urandom
    clock_module.now = clock.now
    shim = types.SimpleNamespace(time=clock.time, monotonic=lambda: 0.0, sleep=time.sleep,
                                 gmtime=lambda s=None: time.gmtime(clock.time() if s is None else s),
                                 strftime=time.strftime)
    files_queue.time = shim   # history times, enqueue times, leases
    workqueue.time = shim
    retries.time = shim       # attempt durations in the records (ms) read 0
    # The worker names the vault root in a dead item's reason: keep it as given (the
    # folder's name, relative to the current directory) rather than this machine's path.
    workqueue.resolve_root = lambda root: Path(root)


def block(data: dict) -> str:
    return "```yaml\n" + json.dumps(data, indent=2) + "\n```\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def model_md(name: str, what: str, extra: dict) -> str:
    data = {"model": "offline", "timezone": "UTC", "max_input_tokens": 12000, "max_output_tokens": 600,
            "recent_notes": 4, "journal_days": 1, "prices": PRICES,
            "cost_guardrails": {"enabled": True, "daily_cap_usd": 0.50, "monthly_cap_usd": 8.00,
                                "daily_cap_action": "skip", "monthly_cap_action": "alert",
                                "warning_thresholds": [0.5, 0.8]},
            "projects": [PROJECT], **extra}
    return f"# Model\n\n{name.capitalize()} {what} The offline model is priced like a hosted one " \
           f"(`prices`), so the dashboard has real figures.\n\n" + block(data)


def scaffold(root: Path) -> None:
    """The files people write: project, personas, models, tools, policies, evals."""
    write(root / "_projects" / PROJECT / "project.md",
          "# Project: harbor\n\nShip the Harbor newsletter every Friday: the lead plans the issue, the scout "
          "checks facts and sources, the writer drafts the pieces that come in through the queue.\n\n"
          + block({"members": list(AGENTS), "budget": 2000}))
    write(root / "_projects" / PROJECT / "memory" / "INDEX.md",
          "# Memory Index\n\n## Locked Decisions\n- [Friday deadline](decision_friday_deadline.md) — the issue goes out Fridays at 16:00\n")
    write(root / "_projects" / PROJECT / "memory" / "decision_friday_deadline.md",
          "---\nschema_version: 1\nname: Friday deadline\ndescription: the issue goes out Fridays at 16:00\n"
          "type: decision\ncaptured: 2026-10-26\nlast_seen: 2026-10-26\nsources:\n- project.md\n"
          "confidence: high\npinned: true\n---\nThe newsletter is sent every Friday at 16:00 UTC; pieces are due Thursday noon.\n")
    personas = {"lead": "You plan each week's Harbor issue and hand research to scout.",
                "scout": "You check facts and sources for the Harbor newsletter; you may ask writer for a draft.",
                "writer": "You draft short newsletter pieces from the briefs in the queue."}
    for name in AGENTS:
        folder = root / name
        write(folder / "persona" / "IDENTITY.md", f"# {name.capitalize()}\n\n{personas[name]}\n")
        write(folder / "persona" / "SOUL.md", f"# Soul\n\n{name.capitalize()} is brief, checks before it claims, "
                                              "and says when it does not know.\n")
        write(folder / "persona" / "USER.md", "# Operator: Mira\n\n- Edits the Harbor newsletter; approves "
                                              "every send.\n- Prefers short answers, facts first.\n")
        write(folder / "memory" / "INDEX.md", "# Memory Index\n")
    write(root / "lead" / "model.md", model_md("lead", "plans the issue and delegates research.",
                                               {"helpers": "offline", "tree_cap_usd": 0.20, "max_depth": 2}))
    write(root / "scout" / "model.md", model_md("scout", "checks facts.", {}))
    write(root / "writer" / "model.md", model_md("writer", "drafts pieces from the queue.", {}))
    delegate = {"name": "delegate", "kind": "builtin"}
    publish = {"name": "publish", "kind": "command", "argv": ["echo", "published: {title}"], "timeout_s": 5,
               "description": "Send the finished issue to the list (a person approves first).",
               "input_schema": {"type": "object", "properties": {"title": {"type": "string", "maxLength": 120}},
                                "required": ["title"], "additionalProperties": False}}
    access = {"read": ["persona/", "memory/", "journal/"], "write": ["memory/"]}
    write(root / "lead" / "tools.md", "# Tools\n\nLead may delegate and publish.\n\n"
          + block({**access, "tools": [delegate, publish]}))
    write(root / "scout" / "tools.md", "# Tools\n\nScout may delegate a draft to writer.\n\n"
          + block({**access, "tools": [delegate]}))
    write(root / "writer" / "tools.md", "# Tools\n\nWriter has no tools.\n\n" + block({**access, "tools": []}))
    write(root / "lead" / "policy.md", "# Policy\n\nDelegation is free; publishing waits for a person.\n\n"
          + block({"default": "escalate", "rules": [
              {"tool": "delegate", "args": {"agent": {"glob": "scout"}}, "verdict": "allow",
               "reason": "research is scout's job"},
              {"tool": "helper", "verdict": "allow", "reason": "a cheap one-shot transformation"},
              {"tool": "publish", "verdict": "escalate", "reason": "a person sends the issue"}]}))
    write(root / "scout" / "policy.md", "# Policy\n\n"
          + block({"default": "escalate", "rules": [
              {"tool": "delegate", "args": {"agent": {"glob": "writer"}}, "verdict": "allow",
               "reason": "drafts are writer's job"}]}))
    write(root / "writer" / "policy.md", "# Policy\n\n" + block({"default": "escalate", "rules": []}))
    evals = {
        "plan_mentions_the_issue.md": ("Eval: the weekly plan names the issue",
                                       {"work": "Plan issue 12 of the Harbor newsletter.",
                                        "expect": {"status": "ok", "contains": "issue 12", "max_cost_usd": 0.05}}),
        "deadline_is_remembered.md": ("Eval: a new deadline becomes a decision note",
                                      {"work": "remember: decision: issue 13 closes on Wednesday",
                                       "expect": {"captures": [{"type": "decision", "status": "written",
                                                                "name": "issue 13 closes on Wednesday"}]}}),
    }
    for file, (title, spec) in evals.items():
        write(root / "lead" / "evals" / file, f"# {title}\n\n" + block(spec))


def delegate(agent: str, task: str) -> str:
    return "tool: delegate " + json.dumps({"agent": agent, "task": task})


def helper(instruction: str, text: str) -> str:
    return "tool: helper " + json.dumps({"instruction": instruction, "text": text})


def history(root: Path, clock: Clock) -> None:
    """Four weeks of work, in the order it happened."""
    from atomic_vault import AtomicAgent, approvals
    from atomic_vault.workqueue import Worker, enqueue

    def run(name: str, work: str, **options):
        return AtomicAgent(name, root=root).call(work, **options)

    topics = ["harbour cranes", "ferry timetable", "fish market prices", "lighthouse repairs",
              "sailing club regatta", "port authority budget", "tide tables", "new marina berths"]
    for week in range(WEEKS):
        issue = 10 + week
        monday = FIRST_DAY + timedelta(weeks=week)
        for offset in range(5):  # weekdays
            day = monday + timedelta(days=offset)
            topic = topics[(week * 5 + offset) % len(topics)]
            clock.set(day, 8, 30)
            if offset == 0:
                run("lead", f"Plan issue {issue} of the Harbor newsletter.\n"
                            f"remember: project: issue {issue} leads with the {topic}")
            if offset == 2:
                clock.set(day, 9, 15)
                run("lead", f"Research for issue {issue}: the {topic}.\n"
                            + delegate("scout", f"Check the facts about the {topic} for issue {issue}."))
            if offset == 1:
                clock.set(day, 10, 40)
                run("lead", f"Get a first draft on the {topic}.\n"
                            + delegate("scout", f"Find two sources on the {topic}, then have it drafted.\n"
                                                + delegate("writer", f"Draft 150 words on the {topic}.")))
            if offset == 3:
                clock.set(day, 11, 5)
                run("scout", f"Source check: {topic}.\nremember: reference: {topic} source list checked {day}")
            if offset in (0, 2, 3):
                clock.set(day, 14, 0)
                enqueue("writer", f"Draft the {topic} piece for issue {issue}.", root=root,
                        key=f"issue-{issue}-{day.isoformat()}")
            if offset == 2 and week == 1:  # the helper day: lead hands small jobs to the cheap model
                for i, job in enumerate(("summarise", "classify as news or feature", "suggest a headline")):
                    clock.set(day, 15, 10 * i)
                    run("lead", f"Tidy the inbox item {i + 1} for issue {issue}.\n"
                                + helper(job, f"Reader letter {i + 1} about the {topic}."))
            if offset == 4 and week == 3:  # work for an agent retired meanwhile: dead-lettered
                clock.set(day, 12, 0)
                enqueue(RETIRED, f"File issue {issue} in the archive.", root=root, key=f"archive-{issue}")
            if offset == 4:  # the worker drains the week's queue on Friday afternoon
                clock.set(day, 14, 30)
                worker = Worker(root, until_empty=True, say=lambda line: None)
                worker.id = "fleet-host:1"
                worker.run()
        if week == 2:  # the approval: publishing issue 12 waits for Mira
            friday = monday + timedelta(days=4)
            clock.set(friday, 15, 30)
            asked = run("lead", f"Issue {issue} is ready.\ntool: publish " + json.dumps({"title": f"Harbor #{issue}"}))
            approval_id = approvals.listing(root / "lead")[0]
            clock.set(friday, 15, 50)
            approvals.decide(root / "lead", approval_id, "approve", "mira", "checked the proofs")
            clock.set(friday, 15, 55)
            AtomicAgent("lead", root=root).resume(asked.run_id)
        clock.set(monday + timedelta(days=5), 10, 0)
        run("lead", f"Weekly review of issue {issue}.\nremember: feedback: readers liked the {topics[week]} piece")
    sunday = FIRST_DAY + timedelta(weeks=WEEKS, days=-1)
    for i, topic in enumerate(topics[:2]):  # next week's work, waiting for Monday's worker
        clock.set(sunday, 18, 10 * i)
        enqueue("writer", f"Draft the {topic} follow-up for issue {10 + WEEKS}.", root=root,
                key=f"issue-{10 + WEEKS}-{topic.replace(' ', '-')}")


def generate(out: Path) -> None:
    """Write the fleet into ``out``, a folder that must not exist yet. It is made in a
    staging folder named "fleet" (the worker names the root in a dead item's reason, so
    the bytes do not depend on ``out``) and renamed into place when complete."""
    out = out.absolute()
    if out.exists():
        raise SystemExit(f"{out} exists: remove it first (the fleet is written into a fresh folder)")
    staging = out.parent / f".{out.name}.making"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run of this script
    staging.mkdir(parents=True)
    clock = Clock()
    fix_the_world(clock)
    here = Path.cwd()
    os.chdir(staging)
    try:
        scaffold(Path("fleet"))
        history(Path("fleet"), clock)
    finally:
        os.chdir(here)
    for derived in sorted((staging / "fleet").rglob(".atomic_vault")):  # locks and caches: rebuilt on use
        shutil.rmtree(derived)
    os.rename(staging / "fleet", out)
    staging.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        out = Path(argv[1])
        generate(out)
    else:  # the sample itself: made beside it, then put in its place
        out, new = DEFAULT_OUT, DEFAULT_OUT.with_name(".fleet.new")
        if new.exists():
            shutil.rmtree(new)
        generate(new)
        if out.exists():
            shutil.rmtree(out)
        os.rename(new, out)
    print(f"wrote {sum(1 for p in out.rglob('*') if p.is_file())} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
