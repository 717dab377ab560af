"""Evals: golden cases in ``evals/*.md``, each run on a scratch copy of the agent.

A case is one Markdown file holding one ```yaml block: the work item and what its run must
show (spec/14-evals.md). Every case gets its own fresh copy of the agent folder, made as
``init --from`` makes one, so a case cannot depend on the one before it and the real notes,
journal and log are never written. Each case is a real model call: the cost guardrails of
model.md apply, counting the agent's own settled spend and the eval's earlier cases.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from .config import _settings, yaml_blocks
from .errors import AtomicVaultError, ConfigError
from .notes import StrictLoader
from .protocols import LogBackend, LogQuery
from .vault import AgentFolder

EVALS_DIR = "evals"
MAX_CASE_BYTES = 256 * 1024
MAX_PATTERN = 200  # a regular expression longer than this is refused: keep `matches` readable
STATUSES = ("ok", "error", "skipped")
CAPTURE_STATUSES = ("written", "refreshed", "merged", "rejected")
CASE_KEYS = {"work", "expect"}
EXPECT_KEYS = {"status", "contains", "not_contains", "matches", "captures", "max_cost_usd",
               "max_input_tokens", "max_output_tokens"}
CAPTURE_KEYS = {"type", "name", "status"}
_FIX = "spec/14-evals.md lists every key"


@dataclass(frozen=True)
class Case:
    """One golden case: its work item and its expectations, already checked."""

    name: str
    path: Path
    work: str
    status: str = "ok"
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    matches: tuple[re.Pattern, ...] = ()
    captures: tuple[dict[str, str], ...] = ()
    max_cost_usd: float | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass
class Outcome:
    """What one case's run did and which expectations it missed. ``verdict`` is ``pass``,
    ``fail``, or ``skipped`` (the guardrails stopped a run the case expected to happen:
    nothing was judged)."""

    case: str
    file: str
    verdict: str
    status: str
    failures: list[str] = field(default_factory=list)
    run_id: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    captures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


# -- reading the cases ------------------------------------------------------------------

def case_files(folder: AgentFolder) -> list[Path]:
    """The agent's eval files, by name."""
    directory = folder.path / EVALS_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(".md"))


def load_cases(folder: AgentFolder, wanted: tuple[str, ...] = ()) -> tuple[list[Case], list[ConfigError]]:
    """The cases named in ``wanted`` (file names, with or without .md; all when empty) and
    the error of every eval file that is invalid. Every file is checked, so one run of the
    command reports every broken case at once."""
    files = case_files(folder)
    by_name = {p.name.removesuffix(".md"): p for p in files}
    chosen = [name.removesuffix(".md") for name in wanted] or list(by_name)
    unknown = [name for name in chosen if name not in by_name]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"the cases are {', '.join(by_name)}" if by_name else "there are none yet")
        raise ConfigError(f"no eval case {unknown[0]!r}; {hint}", path=folder.path / EVALS_DIR,
                          field="CASE", fix="name a file of evals/ (with or without .md)")
    cases, errors = [], []
    for name in dict.fromkeys(chosen):
        try:
            cases.append(parse_case(by_name[name]))
        except ConfigError as exc:
            errors.append(exc)
    return cases, errors


def parse_case(path: Path) -> Case:
    """One eval file, checked as strictly as model.md: a misspelt key is an error with the
    key it resembles, and an unknown one is an error too (an expectation that is not read
    would let a case pass that should fail)."""
    text = _read(path)
    data = _settings(text, path, CASE_KEYS | EXPECT_KEYS, older=False)
    lines = _key_lines(text, path)

    def fail(key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=path, field=f"line {lines.get(key, lines.get('', 1))}: {key}", fix=fix)

    _only(data, CASE_KEYS, "", fail)
    work = data.get("work")
    if not isinstance(work, str) or not work.strip():
        raise fail("work", "is missing or not text" if work is None or not isinstance(work, str)
                   else "is empty", "write the work item, e.g.  work: summarise today's inbox")
    from .agent import MAX_WORK_ITEM

    if "\x00" in work or len(work) > MAX_WORK_ITEM:
        raise fail("work", f"holds a NUL character or is longer than {MAX_WORK_ITEM} characters",
                   "write plain text; put large material in wiki/")
    expect = data.get("expect") or {}
    if not isinstance(expect, dict):
        raise fail("expect", "must be a mapping of expectations", "indent status/contains/... under expect:")
    _only(expect, EXPECT_KEYS, "expect.", fail)
    status = expect.get("status", "ok")
    if status not in STATUSES:
        raise fail("expect.status", f"{status!r} is not a run status", f"use one of {', '.join(STATUSES)}")
    texts = {key: _strings(expect.get(key), f"expect.{key}", fail) for key in ("contains", "not_contains", "matches")}
    patterns = []
    for i, pattern in enumerate(texts["matches"]):
        key = f"expect.matches[{i}]" if f"expect.matches[{i}]" in lines else "expect.matches"
        if len(pattern) > MAX_PATTERN:
            raise fail(key, f"the pattern is {len(pattern)} characters, over {MAX_PATTERN}",
                       "match a shorter, distinctive part of the answer")
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise fail(key, f"{pattern!r} is not a regular expression ({exc})",
                       "correct the pattern (Python re syntax); quote it in single quotes") from None
    return Case(name=path.name.removesuffix(".md"), path=path, work=work, status=status,
                contains=tuple(texts["contains"]), not_contains=tuple(texts["not_contains"]),
                matches=tuple(patterns), captures=_captures(expect.get("captures"), fail),
                max_cost_usd=_amount(expect, "max_cost_usd", fail),
                max_input_tokens=_count(expect, "max_input_tokens", fail),
                max_output_tokens=_count(expect, "max_output_tokens", fail))


def _read(path: Path) -> str:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("is not a regular file (a link or a folder)", path=path,
                          fix="make each eval a plain Markdown file in evals/")
    if st.st_size > MAX_CASE_BYTES:
        raise ConfigError(f"is {st.st_size} bytes, over {MAX_CASE_BYTES}", path=path,
                          fix="keep one case per file; put large material in wiki/")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                          fix="re-save the file as UTF-8") from None


def _key_lines(text: str, path: Path) -> dict[str, int]:
    """The file's line of every key of its yaml block ('' is the block's first line), so
    each error points at the line to fix."""
    start = yaml_blocks(text, path)[0][0]
    lines = text.split("\n")
    fence = lines[start - 2].strip()[:3]
    end = next(j for j in range(start - 1, len(lines))
               if lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0]))
    out = {"": start}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}{key.value}"
                out[name] = start + key.start_mark.line
                walk(value, name + ".")
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                name = f"{prefix.rstrip('.')}[{i}]"
                out[name] = start + item.start_mark.line
                walk(item, name + ".")

    walk(yaml.compose("\n".join(lines[start - 1:end]), Loader=StrictLoader), "")
    return out


def _only(data: dict[str, Any], known: set[str], within: str, fail) -> None:
    for key in map(str, data):
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
        if close:
            raise fail(within + key, f"unknown key {key!r}: did you mean {close[0]!r}?", f"write {close[0]}: ({_FIX})")
        raise fail(within + key, f"unknown key {key!r}", f"use one of {', '.join(sorted(known))} ({_FIX})")


def _strings(value: Any, key: str, fail) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise fail(key, "must be text or a list of texts", f"write e.g.  {key.split('.')[-1]}: [Verdemar, Friday]")
    return items


def _captures(value: Any, fail) -> tuple[dict[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail("expect.captures", "must be a list of captures",
                   "write e.g.  captures: [{type: project, status: written}]")
    out = []
    for i, item in enumerate(value):
        key = f"expect.captures[{i}]"
        if not isinstance(item, dict) or not item:
            raise fail(key, "must be a mapping of type, name and/or status", "write e.g.  - type: project")
        _only(item, CAPTURE_KEYS, key + ".", fail)
        for name, wanted in item.items():
            if not isinstance(wanted, str) or not wanted.strip():
                raise fail(f"{key}.{name}", f"{wanted!r} is not text", f"write e.g.  {name}: project")
        if "status" in item and item["status"] not in CAPTURE_STATUSES:
            raise fail(f"{key}.status", f"{item['status']!r} is not a capture outcome",
                       f"use one of {', '.join(CAPTURE_STATUSES)} (spec/05)")
        out.append(dict(item))
    return tuple(out)


def _amount(data: dict[str, Any], key: str, fail) -> float | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise fail(f"expect.{key}", f"{value!r} is not a non-negative amount", f"write e.g.  {key}: 0.05")
    return value


def _count(data: dict[str, Any], key: str, fail) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise fail(f"expect.{key}", f"{value!r} is not a whole number of tokens", f"write e.g.  {key}: 2000")
    return value


# -- running them -----------------------------------------------------------------------

class _SpendSoFar:
    """A scratch copy's log whose spend also holds the agent's own settled spend and that
    of the eval's earlier cases: each case has a fresh log, yet model.md's caps must hold
    across the whole eval as they do for runs. Everything else is the scratch log."""

    def __init__(self, scratch: LogBackend, agent_log: LogBackend, agent: AgentFolder,
                 earlier: list[AgentFolder]):
        self._scratch, self._agent_log, self._agent, self._earlier = scratch, agent_log, agent, earlier

    def cost(self, folder: AgentFolder, by: str = "day", *, since: str | None = None,
             until: str | None = None) -> list:
        rows = list(self._agent_log.cost(self._agent, by, since=since, until=until))
        for each in [*self._earlier, folder]:
            rows += self._scratch.cost(each, by, since=since, until=until)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scratch, name)


def run_cases(folder: AgentFolder, cases: list[Case], agent_log: LogBackend, agent_memory: Any, *,
              model: str | None = None) -> Iterator[Outcome]:
    """Run each case on its own scratch copy of ``folder`` (removed afterwards); yield its
    outcome as soon as it is known. ``agent_log`` is only read, for the agent's spend.
    An agent whose notes are not files cannot be copied as files: refused at once."""
    from .backends.files import FileMemory

    if not isinstance(agent_memory, FileMemory):
        raise ConfigError(f"the agent's notes are kept in the {getattr(agent_memory, 'name', 'custom')} "
                          "memory backend, but an eval runs on a copy of the agent folder's files, "
                          "which would hold none of them", path=folder.path, field="memory backend",
                          fix="run evals on an agent whose notes are Markdown files (files or sqlite "
                              "memory backend)")
    return _run_cases(folder, cases, agent_log, model)


def _run_cases(folder: AgentFolder, cases: list[Case], agent_log: LogBackend,
               model: str | None) -> Iterator[Outcome]:
    from .agent import AtomicAgent
    from .backends import open_backend
    from .scaffold import copy_agent

    with tempfile.TemporaryDirectory(prefix="atomic-vault-eval-") as tmp:
        earlier: list[AgentFolder] = []
        for i, case in enumerate(cases):
            root = Path(tmp) / str(i)
            scratch = copy_agent(root, folder.name, folder.path)
            # Files backends, whatever the vault or the environment names: an eval must never
            # write into a shared database under the real agent's name.
            log = _SpendSoFar(open_backend("log", "files", root), agent_log, folder, list(earlier))
            outcome = _run_one(case, AtomicAgent(folder.name, root=str(root), trigger="eval", model=model,
                                                 memory="files", log=log, lock="files", journal="files"),
                               scratch, log)
            earlier.append(scratch)
            yield outcome


def _run_one(case: Case, agent: Any, scratch: AgentFolder, log: Any) -> Outcome:
    text, error, warnings = "", None, []
    try:
        result = agent.call(case.work)
        text, warnings = result.text, result.warnings
    except AtomicVaultError as exc:
        error = str(exc)
    records = log.query(scratch, LogQuery(limit=1))
    record = records[-1] if records else {}
    outcome = Outcome(case=case.name, file=f"{EVALS_DIR}/{case.path.name}", verdict="pass",
                      status=record.get("status", "error"), run_id=record.get("run_id"),
                      model=record.get("model"), cost_usd=record.get("cost_usd") if record else None,
                      input_tokens=record.get("input_tokens", 0), output_tokens=record.get("output_tokens", 0),
                      captures=record.get("captures", []), error=record.get("error") or error,
                      warnings=warnings)
    if outcome.status == "skipped" and case.status != "skipped":
        outcome.verdict = "skipped"
        outcome.failures = [str(record.get("summary") or "skipped by the cost guardrails")]
        return outcome
    outcome.failures = judge(case, outcome, text)
    outcome.verdict = "fail" if outcome.failures else "pass"
    return outcome


def judge(case: Case, run: Outcome, answer: str) -> list[str]:
    """Every expectation of ``case`` that ``run`` missed, in words."""
    failed = []
    if run.status != case.status:
        why = f": {run.error}" if run.error else ""
        failed.append(f"status {run.status}, expected {case.status}{why}")
    failed += [f"answer does not contain {t!r}" for t in case.contains if t not in answer]
    failed += [f"answer contains {t!r}" for t in case.not_contains if t in answer]
    failed += [f"answer does not match {p.pattern!r}" for p in case.matches if not p.search(answer)]
    for wanted in case.captures:
        if not any(_capture_matches(wanted, got) for got in run.captures):
            seen = ", ".join(f"{c.get('type')}/{c.get('status')} {c.get('name')!r}" for c in run.captures) or "none"
            failed.append(f"no capture with {_spelled(wanted)} (captures: {seen})")
    if case.max_cost_usd is not None:
        if run.cost_usd is None:
            why = f"no price for {run.model}" if run.run_id else "the run left no record"
            failed.append(f"cost unknown ({why}), so not shown to be at most ${case.max_cost_usd:.4f}")
        elif run.cost_usd > case.max_cost_usd:
            failed.append(f"cost ${run.cost_usd:.4f}, over ${case.max_cost_usd:.4f}")
    for key, used in (("max_input_tokens", run.input_tokens), ("max_output_tokens", run.output_tokens)):
        limit = getattr(case, key)
        if limit is not None and used > limit:
            failed.append(f"{used} {key.split('_')[1]} tokens, over {limit}")
    return failed


def _capture_matches(wanted: dict[str, str], got: dict[str, Any]) -> bool:
    return all(" ".join(str(got.get(key) or "").split()).casefold() == " ".join(value.split()).casefold()
               for key, value in wanted.items())


def _spelled(wanted: dict[str, str]) -> str:
    return ", ".join(f"{key} {value!r}" for key, value in wanted.items())


@dataclass
class ReplayOutcome:
    """One recorded run replayed with another model (``eval --replay``): how its answer,
    captures and cost differ. ``status`` is the replay's, or ``unreplayable`` with why."""

    run_id: str
    replay_id: str | None
    status: str
    model: str | None
    replay_model: str | None
    answer_same: bool | None = None
    answer_changed_lines: int = 0
    captures_same: bool | None = None
    captures_added: list[str] = field(default_factory=list)
    captures_removed: list[str] = field(default_factory=list)
    cost_usd: float | None = None
    replay_cost_usd: float | None = None
    cost_delta_usd: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def replay_runs(agent: Any, last_n: int, model: str) -> Iterator[ReplayOutcome]:
    """Replay the newest ``last_n`` runs of ``agent`` (newest first) with ``model``: each
    replay is logged as a ``replay`` record and writes no note (spec/14-evals.md)."""
    from .replay import Changes, ReplayError, replay

    for record in reversed(agent.log.query(agent.folder, LogQuery(kind="run", limit=last_n))):
        try:
            done = replay(agent, record["run_id"], Changes(model=model))
        except ReplayError as exc:
            yield ReplayOutcome(record["run_id"], None, "unreplayable", record.get("model"), None,
                                cost_usd=record.get("cost_usd"), error=str(exc))
            continue
        compared, new = done.compared, done.record
        caps = compared["captures"]
        yield ReplayOutcome(
            record["run_id"], new["run_id"], new["status"], record.get("model"), new.get("model"),
            answer_same=compared["answer"]["same"],
            answer_changed_lines=sum(1 for line in compared["answer"]["diff"]
                                     if line[:1] in "+-" and line[:3] not in ("+++", "---")),
            captures_same=compared["capture_json_same"],
            captures_added=[f"{c['type']}: {c['name']}" for c in caps if c["change"] == "added"],
            captures_removed=[f"{c['type']}: {c['name']}" for c in caps if c["change"] == "removed"],
            cost_usd=compared["cost_usd"][0], replay_cost_usd=compared["cost_usd"][1],
            cost_delta_usd=compared["cost_usd"][2], error=new.get("error"), warnings=done.warnings)
