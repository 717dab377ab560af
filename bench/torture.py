"""Kill an agent at any instant, over and over, and check that nothing is lost or corrupted.

    python bench/torture.py --kills 1000 [--backend files|sqlite|both] [--seed 1] [--keep]

A forked child loops ``AtomicAgent("atlas").call(...)`` on a copy of the sample vault, each
work item asking the offline model to remember one unique note, and reports every call
that *returned* to a side file (one JSON line, fsynced). The parent kills it with SIGKILL:

- ``time`` kills land at a random moment (anywhere: Python code, a SQLite transaction,
  a write system call);
- ``step`` kills land exactly at the N-th durable-write step of ``atomic_vault.fileio``
  (its ``fault_hook`` seam: before a temp file, before a rename, before an append's write
  or fsync...);
- ``torn`` kills land at the N-th append after writing a prefix of a line, as a kill
  inside a long ``write`` leaves one (cut anywhere, even inside a character).

Now and then the parent also kills a ``doctor --repair`` midway (``repair step`` and
``repair time``) before repairing again itself.

After every kill it checks the promises of spec/02: every note parses, every Markdown
file is UTF-8 (a journal up to a torn tail), every JSONL line is whole but a torn last
line that ``doctor`` reports; then ``doctor.repair``, after which ``doctor.check`` finds no
error, INDEX lists exactly the notes, the chain verifies and HEAD names its last record,
no temp file or stale cost reservation is left; and every run whose call returned is in
the log with its captures, its journal section and its notes. Each work item calls one
allowed and one escalated tool: a suspended run is approved and resumed (an effect whose
outcome is unknown is denied), and after every round no effect has run twice (each
appends a unique word to count.txt) and no decision was taken twice. The next child first
resumes what was left suspended, then retries the work item that was cut off with the
same idempotency key, as a cron job would; at the end, resume finishes every suspended run.

Prints a summary (kills, calls that returned, repairs needed by kind, problems) and exits
1 if any problem was found. tests/test_crash.py runs a short version of the same harness.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from atomic_vault import AtomicAgent, approvals, doctor, fileio, guardrails
from atomic_vault.backends import open_backend
from atomic_vault.errors import AtomicVaultError
from atomic_vault.notes import FILENAME, parse_note_text
from atomic_vault.protocols import LogQuery
from atomic_vault.vault import AgentFolder, open_agent

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
AGENT = "atlas"
BACKENDS = {"files": {}, "sqlite": {"memory": "sqlite", "log": "sqlite"}}
_FORK = multiprocessing.get_context("fork")

# Repair actions, by kind (the summary counts them).
_KINDS = [("temp file", "removed leftover temp file"), ("torn log line", "moved a torn line"),
          ("torn journal tail", "moved a torn journal tail"), ("INDEX", "updated memory/INDEX.md"),
          ("HEAD", "set log/HEAD"), ("stale reservation", "removed a stale cost reservation")]
# A torn prefix left by a kill inside an append: any cut of a line like these (the journal
# one holds multi-byte characters, so a cut may split one).
_TORN = {".jsonl": '{"agent":"atlas","attempts":[{"attempt":1,"model":"offline","ms":0,"outcome":"ok"}],'
                   '"summary":"Offline answer – torn é","ts":"2026-11-22T22:27:41.000+01:00"}',
         ".md": "\n## 22:27:41 · manual · run 20261122T222741-2d744b52\n\n**Work item:** Torture “torn” …\n"}


def _work_item(tag: str) -> str:
    # Two tool calls: one the policy allows (an effect through the ledger in the run), one it
    # escalates (the run suspends, is approved and resumed), so kills land around verdicts,
    # effects, approval files, decisions and resumes too. Each call appends its word to
    # count.txt: an effect executed twice shows there.
    return (f'Torture run {tag}.\nremember: project: torture {tag}\n'
            f'tool: count {{"word": "{tag}-a"}}\ntool: count {{"word": "{tag}-e"}}')


_COUNT = "import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\nprint('counted', sys.argv[2])\n"


def _prepare(root: Path) -> None:
    """The sample vault, with a countable tool and a policy that allows ``*-a`` words."""
    agent = Path(root) / AGENT
    (agent / "count.py").write_text(_COUNT)
    declared = {"read": ["persona/", "memory/", "wiki/", "journal/"], "write": ["memory/"], "tools": [
        {"name": "count", "kind": "command", "description": "append a word to count.txt",
         "argv": [sys.executable, str(agent / "count.py"), str(agent / "count.txt"), "{word}"],
         "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}]}
    (agent / "tools.md").write_text(f"# Tools\n\n```yaml\n{json.dumps(declared)}\n```\n")
    (agent / "policy.md").write_text("# Policy\n\n```yaml\ndefault: escalate\nrules:\n"
                                     "  - {tool: count, args: {word: {glob: '*-a'}}, verdict: allow}\n```\n")


def _decide(agent: AtomicAgent, record: dict[str, Any]) -> None:
    """As an operator would: approve each escalated call of a suspended run, deny each
    effect whose outcome is unknown (it may have happened: running it again could double it)."""
    for result in record["suspended"]["results"]:
        if not result.get("pending"):
            continue
        try:
            found = approvals.read(agent.folder.path, result["pending"])
        except AtomicVaultError:
            continue
        if found.decision == "pending":
            unknown = found.fields.get("why") == "unknown"
            approvals.decide(agent.folder.path, found.id, "deny" if unknown else "approve", "torture")


def _unresumed(agent: AtomicAgent) -> list[dict[str, Any]]:
    """Suspended runs that no ok (or again suspended) run continues."""
    found = agent.log.query(agent.folder, LogQuery(kind="run"))
    done = {r.get("resumes") for r in found if r.get("status") in ("ok", "awaiting_approval")}
    return [r for r in found if r.get("status") == "awaiting_approval" and r.get("run_id") not in done]


def _one(agent: AtomicAgent, tag: str):
    """One cron-like call with its idempotency key; a suspended run is decided and resumed."""
    result = agent.call(_work_item(tag), idempotency_key=tag)
    suspended = None
    while result.status == "awaiting_approval":
        suspended = suspended or result.run_id
        _decide(agent, agent.log.get(agent.folder, result.run_id))
        result = agent.resume(result.run_id)
    return result, suspended


def finish_suspended(agent: AtomicAgent) -> int:
    """Resume every suspended run that was left unfinished (after deciding it); how many."""
    count = 0
    for record in _unresumed(agent):
        _decide(agent, record)
        result = agent.resume(record["run_id"])
        while result.status == "awaiting_approval":
            _decide(agent, agent.log.get(agent.folder, result.run_id))
            result = agent.resume(result.run_id)
        count += 1
    return count


def _killer(at: int, torn_cut: float | None):
    """A fault hook that SIGKILLs this process at its ``at``-th write step or, with
    ``torn_cut``, at its ``at``-th append after writing that share of a line first (what
    a kill inside a long ``write`` leaves)."""
    count = 0

    def hook(point: str, path: Path) -> None:
        nonlocal count
        if torn_cut is not None and point != "append:before_write":
            return
        count += 1
        if count < at:
            return
        if torn_cut is not None:
            line = _TORN.get(path.suffix, "").encode("utf-8")
            with open(path, "ab") as handle:
                handle.write(line[:max(1, int(len(line) * torn_cut))])
        os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _child(root: str, backend: str, acks: str, tags: list[str], step: int | None,
           torn_cut: float | None) -> None:
    """Loop calls until killed; report each call that returned, as one fsynced line."""
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if step is not None:
            fileio.fault_hook = _killer(step, torn_cut)
        agent = AtomicAgent(AGENT, root=root, **BACKENDS[backend])
        finish_suspended(agent)  # first, what the last kill left suspended
        n = 0
        while True:
            tag = tags[n] if n < len(tags) else f"{tags[-1]}x{n}"
            result, suspended = _one(agent, tag)
            files = [c["file"] for c in result.captures
                     if c.get("status") in ("written", "refreshed", "merged")]
            line = {"tag": tag, "run_id": result.run_id, "seq": result.seq, "files": files,
                    "suspended": suspended,
                    "replayed": any("not called again" in w for w in result.warnings)}
            os.write(fd, (json.dumps(line) + "\n").encode("utf-8"))
            os.fsync(fd)
            n += 1
    except BaseException:
        os.write(fd, (json.dumps({"error": traceback.format_exc()}) + "\n").encode("utf-8"))
        os.fsync(fd)
        os._exit(3)


def _repair_child(root: str, backend: str, step: int | None) -> None:
    if step is not None:
        fileio.fault_hook = _killer(step, None)
    folder = open_agent(AGENT, root)
    doctor.repair(folder, timeout=10, backends={
        kind: open_backend(kind, BACKENDS[backend].get(kind, "files"), Path(root))
        for kind in ("memory", "log", "lock", "journal")})
    os._exit(0)


class Torture:
    """One vault, one backend, killed again and again; ``problems`` lists broken promises."""

    def __init__(self, workdir: Path, backend: str, seed: int, max_delay: float = 0.15,
                 step_share: float = 0.5, steps_per_call: int = 20):
        self.workdir = Path(workdir)
        self.backend = backend
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.step_share = step_share
        self.steps_per_call = steps_per_call
        self.root = self.workdir / "vault"
        shutil.copytree(SAMPLES, self.root)
        _prepare(self.root)
        self.acks = self.workdir / "acks.jsonl"
        self.acks.touch()
        self.folder: AgentFolder = open_agent(AGENT, self.root)
        self.backends = {kind: open_backend(kind, BACKENDS[backend].get(kind, "files"), self.root)
                         for kind in ("memory", "log", "lock", "journal")}
        self.kills = Counter()
        self.repairs = Counter()
        self.problems: list[str] = []
        self.acked: dict[str, dict[str, Any]] = {}
        self._read_acks = 0
        self._pending: str | None = None  # the tag cut off by the last kill, retried first
        self._round = 0

    # -- one round ------------------------------------------------------------------------
    def pick_kill(self) -> tuple:
        """A random kill: ("time", seconds), ("step", n) or ("torn", n, share)."""
        mode = self.rng.random()
        if mode < self.step_share / 2:
            return "step", self.rng.randint(1, 2 * self.steps_per_call)  # in the first two calls
        if mode < self.step_share:
            return "torn", self.rng.randint(1, 4), self.rng.random()
        return "time", self.rng.uniform(0, self.max_delay)

    def round(self, kill: tuple | None = None, kill_repair: tuple | None = None) -> list[str]:
        """Start a child, kill it (``kill``, else a random kill), check what it left,
        repair (first killing one repair with ``kill_repair``, a ("step", n) or ("time", s)),
        check again; returns this round's problems."""
        self._round += 1
        kill = kill or self.pick_kill()
        self.kills[kill[0]] += 1
        tags = [f"{self.backend[0]}{self._round}c{n}" for n in range(8)]
        tags = ([self._pending] if self._pending else []) + tags  # a cut-off call is retried first
        step = kill[1] if kill[0] in ("step", "torn") else None
        torn_cut = kill[2] if kill[0] == "torn" else None
        child = _FORK.Process(target=_child, args=(str(self.root), self.backend, str(self.acks), tags,
                                                    step, torn_cut))
        child.start()
        if kill[0] == "time":
            time.sleep(kill[1])
            os.kill(child.pid, signal.SIGKILL)
        child.join(60)
        if child.is_alive():  # a step that was never reached
            self._problem(f"the child did not reach write step {step} within 60 s")
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        before = len(self.problems)
        new = self._new_acks()
        returned = {ack["tag"] for ack in new}
        self._pending = next((t for t in tags if t not in returned), None)
        self._check_after_kill()
        if kill_repair is not None:
            self._killed_repair(kill_repair)
        self._repair_and_check()
        self._check_acked(new)
        self._check_at_most_once()
        return self.problems[before:]

    def _killed_repair(self, kill: tuple) -> None:
        """A ``doctor --repair`` killed midway must leave a state the next repair completes."""
        self.kills["repair " + kill[0]] += 1
        child = _FORK.Process(target=_repair_child, args=(str(self.root), self.backend,
                                                           kill[1] if kill[0] == "step" else None))
        child.start()
        if kill[0] == "time":
            time.sleep(kill[1])
            os.kill(child.pid, signal.SIGKILL)
        child.join(60)
        if child.exitcode not in (0, -signal.SIGKILL):
            self._problem(f"a repair failed with exit code {child.exitcode}")

    def _problem(self, text: str) -> None:
        self.problems.append(f"round {self._round} ({self.backend}): {text}")

    def _new_acks(self) -> list[dict[str, Any]]:
        raw = self.acks.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]
        lines = whole[self._read_acks:].decode("utf-8").splitlines()
        self._read_acks = len(whole)
        new = []
        for line in lines:
            ack = json.loads(line)
            if "error" in ack:
                self._problem(f"a call failed instead of being killed:\n{ack['error']}")
                continue
            self.acked[ack["run_id"]] = ack
            new.append(ack)
        return new

    # -- checks ---------------------------------------------------------------------------
    def _check_after_kill(self) -> None:
        """What a crash may leave: whole files, at most a torn last line that doctor sees."""
        folder = self.folder
        findings = doctor.check(folder, self.backends)
        reported = {(f.check, f.path) for f in findings if f.level != "ok"}
        for path in sorted(folder.path.rglob("*.md")):
            if ".atomic_vault" in path.parts:
                continue
            raw = path.read_bytes()
            relative = folder.relative(path)
            if path.parent == folder.memory and FILENAME.match(path.name):
                try:
                    parse_note_text(raw.decode("utf-8"), path)
                except (UnicodeDecodeError, AtomicVaultError) as exc:
                    self._problem(f"{relative} does not parse: {exc}")
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                torn_tail = path.parent.parent == folder.journal and exc.start >= raw.rfind(b"\n") + 1
                if not torn_tail:
                    self._problem(f"{relative} is not UTF-8: {exc}")
                elif ("journal", str(path)) not in reported:
                    self._problem(f"{relative} ends with a torn section cut inside a character, "
                                  "and doctor does not report it")
        if self.backend == "files":
            files = sorted(folder.log.glob("????-??/????-??-??.jsonl"))
            for path in files:
                found, problems = fileio.read_jsonl(path)
                for number, problem in problems:
                    torn_tail = problem.startswith("torn") and path == files[-1]
                    if not torn_tail:
                        self._problem(f"{folder.relative(path)}:{number}: {problem}")
                    elif ("log", str(path)) not in reported:
                        self._problem(f"{folder.relative(path)} ends torn and doctor does not report it")

    def _repair_and_check(self) -> None:
        folder, log = self.folder, self.backends["log"]
        try:
            actions = doctor.repair(folder, timeout=10, backends=self.backends)
        except Exception as exc:  # a repair that fails is itself a finding
            self._problem(f"doctor.repair failed: {type(exc).__name__}: {exc}")
            return
        for action in actions:
            kind = next((k for k, start in _KINDS if action.startswith(start)), " ".join(action.split()[:4]))
            self.repairs[kind] += 1
        for finding in doctor.check(folder, self.backends):
            if finding.level == "error" or (finding.level == "warn" and finding.check in
                                            ("log", "chain", "index", "notes", "temp files", "journal", "lock")):
                self._problem(f"after repair, doctor: {finding.level} {finding.check}: {finding.message}")
        result = log.verify(folder)
        if not result.ok or result.warnings:
            self._problem(f"after repair, verify: {result.first_bad} {result.warnings}")
        last = log.query(folder, LogQuery(limit=1))
        head = log.head(folder)
        if last and (head is None or (head["seq"], head["hash"]) != (last[-1]["seq"], last[-1]["hash"])):
            self._problem(f"after repair, HEAD {head} does not name the last record (seq {last[-1]['seq']})")
        stale = set(_reservations(folder)) - set(guardrails.in_flight(folder, prune=False))
        if stale:
            self._problem(f"after repair, stale cost reservations remain: {sorted(stale)}")

    def _check_acked(self, acks: list[dict[str, Any]]) -> None:
        """Every call that returned: its record (with captures), journal section and notes."""
        folder, log, memory = self.folder, self.backends["log"], self.backends["memory"]
        for ack in acks:
            record = log.get(folder, ack["run_id"])
            if record is None:
                self._problem(f"run {ack['run_id']} returned but is not in the log")
                continue
            if record.get("seq") != ack["seq"]:
                self._problem(f"run {ack['run_id']} returned seq {ack['seq']} but is logged as "
                              f"{record.get('seq')}")
            logged = [c.get("file") for c in record.get("captures", [])]
            if not ack["files"] or logged != ack["files"]:
                self._problem(f"run {ack['run_id']} captured {ack['files']} but its record says {logged}")
            for file in ack["files"]:
                text = memory.get(folder, file)
                if text is None:
                    self._problem(f"run {ack['run_id']} captured {file}, which does not exist")
            suspended = ack.get("suspended") or record.get("resumes")  # (a replay may return a resumed run)
            first = log.get(folder, suspended) if suspended else record
            verdicts = [r for r in log.query(folder, LogQuery(kind="verdict")) if r.get("run") == first["run_id"]]
            if sorted(v.get("outcome") for v in verdicts) != ["allow", "escalate"] or \
                    max(v["seq"] for v in verdicts) >= first["seq"]:
                self._problem(f"run {first['run_id']} has verdicts {verdicts} instead of an allow and an "
                              "escalate before it")
            if suspended and record.get("resumes") != suspended:
                self._problem(f"run {ack['run_id']} returned for {ack['suspended']} but does not resume it")
            day = folder.journal_file(_day(record["ts"]))
            if ack.get("replayed"):  # a kill between its record and its journal section was replayed
                continue
            if f"run {ack['run_id']}" not in day.read_text(encoding="utf-8", errors="replace"):
                self._problem(f"run {ack['run_id']} returned but has no journal section in {day.name}")

    def _check_at_most_once(self) -> None:
        """No effect executed twice, no decision taken twice."""
        count = self.folder.path / "count.txt"
        words = Counter(count.read_text().split()) if count.exists() else Counter()
        twice = sorted(w for w, n in words.items() if n > 1)
        if twice:
            self._problem(f"effects executed twice: {twice[:5]}")
        taken = Counter(r.get("approval") for r in self.backends["log"].query(self.folder, LogQuery(kind="approval")))
        again = sorted(a for a, n in taken.items() if n > 1)
        if again:
            self._problem(f"approvals applied twice: {again[:5]}")

    def final_check(self) -> None:
        """Nothing acknowledged was lost over all the rounds and repairs; resume finishes
        every suspended run; no effect ran twice and no decision was taken twice."""
        agent = AtomicAgent(AGENT, root=self.root, **BACKENDS[self.backend])
        try:
            finish_suspended(agent)
        except AtomicVaultError as exc:
            self._problem(f"resuming the suspended runs failed: {exc}")
        left = _unresumed(agent)
        if left:
            self._problem(f"{len(left)} suspended run(s) not finished by resume (e.g. {left[0]['run_id']})")
        self._check_at_most_once()
        logged = {r.get("run_id") for r in self.backends["log"].records(self.folder)}
        lost = sorted(set(self.acked) - logged)
        if lost:
            self._problem(f"{len(lost)} acknowledged run(s) are no longer in the log (e.g. {lost[0]})")
        notes, broken = self.backends["memory"].scan(self.folder)
        missing = sorted({f for ack in self.acked.values() for f in ack["files"]} - set(notes))
        if missing or broken:
            self._problem(f"notes missing {missing[:3]} or broken {sorted(broken)[:3]} at the end")


def steps_of_a_call(workdir: Path, backend: str) -> int:
    """How many seam steps the first call in a fresh copy of the sample takes (the range
    a step kill is drawn from)."""
    root = Path(workdir) / f"count-{backend}"
    shutil.copytree(SAMPLES, root)
    _prepare(root)
    seen: list[str] = []
    fileio.fault_hook = lambda point, path: seen.append(point)
    try:
        _one(AtomicAgent(AGENT, root=root, **BACKENDS[backend]), "count")
    finally:
        fileio.fault_hook = None
        shutil.rmtree(root, ignore_errors=True)
    return len(seen)


def _reservations(folder: AgentFolder) -> list[str]:
    try:
        return os.listdir(folder.state / guardrails.RESERVATIONS)
    except FileNotFoundError:
        return []


def _day(ts: str):
    from datetime import date
    return date.fromisoformat(ts[:10])


def run(kills: int, backends: list[str], seed: int, workdir: Path, max_delay: float,
        progress: bool = True) -> dict[str, Any]:
    """``kills`` rounds split over ``backends``; returns the summary as a dict."""
    summary: dict[str, Any] = {"kills": 0, "calls_returned": 0, "kinds": Counter(), "repairs": Counter(),
                               "problems": [], "seconds": 0.0, "by_backend": {}}
    started = time.perf_counter()
    for number, backend in enumerate(backends):
        share = kills // len(backends) + (1 if number < kills % len(backends) else 0)
        torture = Torture(workdir / backend, backend, seed + number, max_delay=max_delay,
                          steps_per_call=steps_of_a_call(workdir, backend))
        t0 = time.perf_counter()
        for n in range(share):
            repair_kill = None
            if torture.rng.random() < 0.1:  # now and then, kill the repair too
                repair_kill = (("step", torture.rng.randint(1, 8)) if torture.rng.random() < 0.5
                               else ("time", torture.rng.uniform(0, 0.05)))
            torture.round(kill_repair=repair_kill)
            if progress and (n + 1) % 50 == 0:
                print(f"  {backend}: {n + 1}/{share} kills, {len(torture.acked)} calls returned, "
                      f"{len(torture.problems)} problems, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr, flush=True)
        torture.final_check()
        summary["by_backend"][backend] = {
            "kills": share, "calls_returned": len(torture.acked), "kill_kinds": dict(torture.kills),
            "repairs": dict(torture.repairs), "problems": len(torture.problems),
            "seconds": round(time.perf_counter() - t0, 1)}
        summary["kills"] += share
        summary["calls_returned"] += len(torture.acked)
        summary["kinds"].update(torture.kills)
        summary["repairs"].update(torture.repairs)
        summary["problems"] += torture.problems
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kills in total (split over the backends)")
    parser.add_argument("--backend", choices=("files", "sqlite", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=0.15,
                        help="time kills land uniformly within this many seconds of the child's start")
    parser.add_argument("--workdir", type=Path, help="where the vaults go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the vaults afterwards")
    args = parser.parse_args()
    backends = ["files", "sqlite"] if args.backend == "both" else [args.backend]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="av-torture-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        summary = run(args.kills, backends, args.seed, workdir, args.max_delay)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    runs = {k: v for k, v in summary["kinds"].items() if not k.startswith("repair")}
    repairs = {k: v for k, v in summary["kinds"].items() if k.startswith("repair")}
    print(f"kills: {summary['kills']} ({', '.join(f'{k} {v}' for k, v in sorted(runs.items()))}), "
          f"plus {sum(repairs.values())} repairs killed "
          f"({', '.join(f'{k} {v}' for k, v in sorted(repairs.items()))})"
          f"; {summary['seconds']} s")
    print(f"calls that returned: {summary['calls_returned']}")
    for backend, part in summary["by_backend"].items():
        print(f"  {backend}: {part['kills']} kills, {part['calls_returned']} calls returned, "
              f"{part['problems']} problems, {part['seconds']} s; repairs: "
              + (", ".join(f"{k} {v}" for k, v in sorted(part["repairs"].items())) or "none"))
    print("repairs needed, by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(summary["repairs"].items()))
                                         or "none"))
    print(f"problems found: {len(summary['problems'])}")
    for problem in summary["problems"][:20]:
        print(f"  - {problem}")
    sys.exit(1 if summary["problems"] else 0)


if __name__ == "__main__":
    main()
