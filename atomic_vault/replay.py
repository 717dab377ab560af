"""Replay and diff: re-execute a recorded run from its snapshots with exactly the changes
asked for, and compare any two recorded runs (spec/10, spec/07).

A replay never reads today's files for its prompt: the layers and the work item are the
run's snapshots, each re-hashed (a text that does not match its hash is tampering and
refused). It is logged as a ``kind: replay`` record naming the run and the changes, with
snapshots of its own; it writes notes and the journal only with ``apply``.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import (captures, clock, evidence, guardrails, journal, retries, snapshots, telemetry, toolloop,
               writeback)
from .assembly import Layer, Prompt, _fit, _layer  # the same heading and trimming as assembly
from .config import load_model_config, load_tools_config
from .conversations import Turn
from .errors import AtomicVaultError, HeadBehind
from .history import changes_of, remember
from .policy import Gate
from .vault import readable_inside

MAX_FILE_CHARS = 1_000_000


class ReplayError(AtomicVaultError):
    """A replay that cannot be made as asked: nothing was called, nothing written."""


@dataclass(frozen=True)
class Changes:
    """What a replay changes; everything else is the recorded run's."""

    without: tuple[str, ...] = ()
    model: str | None = None
    max_input_tokens: int | None = None
    with_files: tuple[tuple[str, str], ...] = ()  # (source, path)
    policy: str | None = None  # a policy.md the recorded tool calls are judged by again

    def as_record(self) -> dict[str, Any]:
        return {"without": list(self.without), "model": self.model,
                "max_input_tokens": self.max_input_tokens,
                "with_files": [{"source": s, "path": p} for s, p in self.with_files],
                **({"policy": self.policy} if self.policy else {})}

    def describe(self) -> str:
        parts = [f"without {s}" for s in self.without]
        parts += [f"{s} from {p}" for s, p in self.with_files]
        if self.model:
            parts.append(f"model {self.model}")
        if self.max_input_tokens is not None:
            parts.append(f"max_input_tokens {self.max_input_tokens}")
        if self.policy:
            parts.append(f"policy {self.policy}")
        return "; ".join(parts) or "none (the same inputs again)"


@dataclass
class Replayed:
    """A replay's outcome: its record, the record it replays and their comparison."""

    record: dict[str, Any]
    original: dict[str, Any]
    compared: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.record["status"]


def find_record(log: Any, folder: Any, run_id: str) -> dict[str, Any]:
    """A run or replay record by its run id."""
    record = log.get(folder, run_id)
    if record is None or record.get("kind", "run") not in ("run", "replay"):
        raise evidence.UnknownRun(
            f"no run {run_id!r} in the log of {folder.name}", path=folder.log, field="RUN_ID",
            fix=f"`atomic-vault log {folder.name}` lists the runs; pass a run_id from it")
    return record


def _gone(record: dict[str, Any], loaded: snapshots.Loaded, folder: Any) -> None:
    """Refuse a run whose inputs cannot be read back exactly, naming each snapshot."""
    if loaded.tampered:
        raise ReplayError(
            f"run {record['run_id']}: snapshot {', '.join(loaded.tampered)} does not match its hash "
            "(tampering): it is not replayed", path=folder.log, field="snapshots",
            fix=f"`atomic-vault verify {folder.name}` names the record; restore the log from a backup")
    refs = record.get("snapshots") or {}
    inputs = [e.get("snapshot") for e in (record.get("manifest") or {}).get("files") or []]
    inputs.append(refs.get("work_item"))
    for turn in ((record.get("manifest") or {}).get("conversation") or {}).get("turns") or []:
        inputs.extend((turn.get("work_item"), turn.get("answer")))
    lost = [(sha, loaded.state(sha)) for sha in inputs if loaded.state(sha) != "ok"]
    if lost:
        what = ", ".join(f"{sha} ({state}" + (f" by record seq {loaded.pruned[sha]})" if state == "pruned"
                                              else ")") for sha, state in lost)
        raise ReplayError(f"run {record['run_id']} cannot be replayed: its snapshots {what} are gone",
                          path=folder.log, field="RUN_ID",
                          fix="replay a run inside the retention window (`atomic-vault log "
                              f"{folder.name}` lists them); pruned texts cannot be recovered")


def _match(source: str, layers: list[Layer]) -> Layer | None:
    """The layer ``source`` names: its source path, or (when only one layer has it) its
    file name, either with or without ``.md`` (``2026-11-30`` for a journal day)."""
    exact = [layer for layer in layers if source in (layer.source, layer.source.removesuffix(".md"))]
    if exact:
        return exact[0]
    named = [layer for layer in layers
             if source in (os.path.basename(layer.source), os.path.basename(layer.source).removesuffix(".md"))]
    return named[0] if len(named) == 1 else None


def _inside(folder: Any, path: str, option: str) -> Path:
    """A file an option names: a regular file inside the agent folder, never one behind a
    link out of it."""
    where = Path(path) if os.path.isabs(path) else Path.cwd() / path
    try:
        real = readable_inside(folder, where)
    except AtomicVaultError as exc:
        raise ReplayError(f"{option}: {exc.message}", path=where, field=option.split()[0],
                          fix="put the file inside the agent folder (e.g. a draft next to the "
                              "file it replaces)") from None
    if real is None:
        raise ReplayError(f"{option}: no such file", path=where, field=option.split()[0],
                          fix="give the path of an existing file inside the agent folder")
    return real


def replay_gate(folder: Any, path: str) -> Gate:
    """The gate a replay judges the recorded tool calls by: the policy file given, over the
    vault's floor as always. A policy that does not load is refused before any model call
    (a run would fail closed; a replay asked to judge by it is a mistake to say at once)."""
    gate = Gate(_inside(folder, path, f"--policy {path}"), folder.root / "policy.md")
    if gate.problems:
        raise ReplayError(f"--policy {path}: {gate.problems[0]}", path=Path(path), field="--policy",
                          fix="correct the policy's YAML block (spec/06), then replay again")
    return gate


def _file_text(folder: Any, source: str, path: str) -> str:
    """The replacement text of one layer: a UTF-8 regular file inside the agent folder."""
    where = Path(path) if os.path.isabs(path) else Path.cwd() / path
    real = _inside(folder, path, f"--with-file {source}={path}")
    try:
        text = real.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"--with-file {source}={path}: not valid UTF-8 (byte {exc.start})", path=where,
                          field="--with-file", fix="re-save the file as UTF-8") from None
    if "\x00" in text or len(text) > MAX_FILE_CHARS:
        raise ReplayError(f"--with-file {source}={path}: binary or longer than {MAX_FILE_CHARS} characters",
                          path=where, field="--with-file", fix="pass a Markdown file")
    return text


def prompt_of(folder: Any, record: dict[str, Any], loaded: snapshots.Loaded, changes: Changes) -> Prompt:
    """The recorded prompt rebuilt from snapshots, with the changes applied, then fitted to
    its budget by assembly's own trimming (a layer cut when the run was made stays cut)."""
    manifest = record.get("manifest") or {}
    if not record.get("snapshots"):
        raise ReplayError(f"run {record['run_id']} was recorded before snapshots existed: its texts "
                          "were never kept", path=folder.log, field="RUN_ID", fix="replay a newer run")
    _gone(record, loaded, folder)
    layers = []
    for entry in manifest.get("files") or []:
        layer = Layer(entry["layer"], entry["source"], loaded.text(entry["snapshot"]), entry["sha256"])
        layer.truncated = bool(entry.get("truncated"))
        layer.rank, layer.score = entry.get("rank"), entry.get("score")
        layers.append(layer)
    sources = ", ".join(layer.source for layer in layers)
    for source in changes.without:
        found = _match(source, layers)
        if found is None:
            raise ReplayError(f"--without {source}: run {record['run_id']} has no such layer",
                              path=folder.log, field="--without", fix=f"name one of its layers: {sources}")
        layers.remove(found)
    for source, path in changes.with_files:
        found = _match(source, layers)
        if found is None:
            raise ReplayError(f"--with-file {source}={path}: run {record['run_id']} has no such layer",
                              path=folder.log, field="--with-file", fix=f"name one of its layers: {sources}")
        new = _layer(found.source, _file_text(folder, source, path), found.layer)
        layers[layers.index(found)] = new
    budget = changes.max_input_tokens if changes.max_input_tokens is not None else manifest.get("budget")
    prompt = Prompt(layers, loaded.text(record["snapshots"]["work_item"]), int(budget),
                    share=manifest.get("relevant_share"))
    conversation = manifest.get("conversation")
    if conversation:  # the same earlier turns again, from their snapshots
        prompt.turns = [Turn(t["run_id"], t.get("seq"), loaded.text(t["work_item"]), loaded.text(t["answer"]),
                             t["work_item"], t["answer"]) for t in conversation.get("turns") or []]
        prompt.conversation = {"id": conversation.get("id") or record.get("conversation_id"),
                               "new": bool(conversation.get("new")),
                               "skipped": list(conversation.get("skipped") or []),
                               "dropped": list(conversation.get("dropped") or [])}
    _fit(prompt, folder)
    return prompt


def recorded_results(record: dict[str, Any], loaded: snapshots.Loaded) -> dict[tuple[str, str], list[str]]:
    """The recorded run's tool results by (tool, arguments' sha256), in call order: what a
    replay gives the model back instead of running a tool. The whole result from the
    snapshots where the record names one, else the step record's (shortened) copy."""
    whole = {(ref.get("step"), ref.get("call")): loaded.text(ref.get("result"))
             for ref in (record.get("snapshots") or {}).get("tools") or [] if isinstance(ref, dict)}
    out: dict[tuple[str, str], list[str]] = {}
    for step in record.get("steps") or []:
        for call in step.get("calls") or []:
            effect = call.get("effect") or {}
            if not call.get("args_sha256") or effect.get("result") is None:
                continue
            text = whole.get((step.get("step"), call.get("id")))
            out.setdefault((call.get("tool"), call["args_sha256"]), []).append(
                text if text is not None else effect["result"])
    return out


def replay(agent: Any, run_id: str, changes: Changes = Changes(), *, apply: bool = False) -> Replayed:
    """Replay run ``run_id`` of ``agent`` (an AtomicAgent) with ``changes``. Every bad input
    is refused before the model is called; the cost guardrails decide as for a run."""
    from .agent import _fence, _journal_after, _Run, _build, _count

    folder, log = agent.folder, agent.log
    original = find_record(log, folder, run_id)
    if original.get("kind", "run") != "run":
        raise ReplayError(f"{run_id} is a replay; replay the run it replays ({(original.get('replays') or {}).get('run_id')})",
                          path=folder.log, field="RUN_ID", fix="pass the run_id of a run")
    loaded = evidence.load_texts(log, folder, original)
    prompt = prompt_of(folder, original, loaded, changes)
    config = load_model_config(folder.model)
    started = clock.now(config.zone)
    warnings: list[str] = []
    if changes.model:
        model = _build(changes.model, config)
    elif agent.model is not None and not isinstance(agent.model, str):
        model = agent.model
    else:
        model = _build(agent.model or original.get("model") or config.model, config)
    agent._check_log()
    prompt.counted = _count(model, prompt, config, agent.name, warnings)
    gate = replay_gate(folder, changes.policy) if changes.policy else None
    run = _Run(agent, config, prompt, started, False, warnings)
    if gate is not None:
        run.gate, run.judge_replay = gate, True
    extra = {"kind": "replay", "replays": {"run_id": original["run_id"], "seq": original.get("seq"),
                                           "hash": original.get("hash")},
             "changes": changes.as_record(), "applied": apply}
    if run.guarded and not run.reserve(model):
        reason = "; ".join(run.budget.reasons)
        done = retries.Completion(None, None, model)
        with agent.lock.hold(folder, agent.lock_timeout) as lease:
            record = _append(agent, run, done, 0.0, [], lease, _fence, {
                **extra, "status": "skipped", "summary": run.redact(f"skipped: {journal.shorten(reason, 180)}")})
        run.warnings.append(f"skipped by the cost guardrails: {reason}")
        return _done(log, folder, record, original, run.warnings)
    try:
        recorded = recorded_results(original, loaded)
        children = _replay_children(agent, original, recorded, changes, run.warnings)
        if children:
            extra["children"] = children
        done = toolloop.complete(run, run.candidates(model), config.retries, config.max_steps,
                                 folder.path, recorded=recorded)
        response = done.response
        found, rejected = captures.extract(response.text, response.tool_captures) if response else ([], [])
        found = [captures.Capture(**run.redact.all(asdict(c))) for c in found]
        with agent.lock.hold(folder, agent.lock_timeout) as lease:
            log.ready(folder)
            if not apply:
                outcomes = [{"name": c.name, "type": c.type, "status": "not applied"} for c in found] + rejected
                record = _append(agent, run, done, run.settle(done), outcomes, lease, _fence, extra)
            else:
                record = _apply(agent, run, done, found, rejected, started, lease, _fence, extra)
                late = _journal_after(agent, started, record, run.redact(journal.section(
                    started, trigger=agent.trigger, run_id=run.id, work_item=prompt.work_item,
                    answer=response.text if response else done.error, outcomes=record["captures"],
                    status=record["status"])))
                run.warnings += late
    finally:
        run.release()
    telemetry.export(run.telemetry, record, run.request, response.text if response else None)  # it called a model
    return _done(log, folder, record, original, run.warnings)


def _replay_children(agent: Any, original: dict[str, Any], recorded: dict[tuple[str, str], list[str]],
                     changes: Changes, warnings: list[str]) -> list[dict[str, Any]]:
    """Replay each child run the recorded run delegated to, from the child's own snapshots,
    with the replay's model change (the other changes name the parent's layers), before
    the parent's replay: the child replay's answer becomes the ``delegate`` call's result
    in ``recorded``. A child's replay is a replay record in the child's log (its children
    replayed in turn), under the child's cost guardrails. Calls map to children in call
    order; a refused delegation made no child. A child that cannot be replayed keeps its
    recorded answer, with a warning saying why."""
    children = [c for c in original.get("children") or [] if isinstance(c, dict)]
    if not children:
        return []
    queue, out = list(children), []
    seen: dict[tuple[str, str], int] = {}  # results of each (tool, arguments) met so far
    for step in original.get("steps") or []:
        for call in step.get("calls") or []:
            key = (call.get("tool"), call.get("args_sha256"))
            if not key[1] or (call.get("effect") or {}).get("result") is None:
                continue  # not among the recorded results (recorded_results)
            index = seen[key] = seen.get(key, -1) + 1
            results = recorded.get(key) or []
            if key[0] != "delegate" or not queue or index >= len(results) \
                    or str(results[index]).startswith("delegation refused:"):
                continue
            child = queue.pop(0)
            entry = {"agent": child.get("agent"), "replays": child.get("run_id")}
            out.append(entry)
            if child.get("status") != "ok" or not child.get("run_id"):
                entry["status"] = "not replayed"
                continue
            try:
                other = type(agent)(child["agent"], root=agent.folder.root, trigger="replay",
                                    lock_timeout=agent.lock_timeout)
                replayed = replay(other, child["run_id"], Changes(model=changes.model))
            except AtomicVaultError as exc:
                entry["status"] = "not replayed"
                warnings.append(f"the child run {child['run_id']} of {child['agent']} could not be replayed "
                                f"({exc.message}); its recorded answer was given back instead")
                continue
            new = replayed.record
            entry.update(run_id=new.get("run_id"), status=new.get("status"), cost_usd=new.get("cost_usd"))
            sha = (new.get("snapshots") or {}).get("answer")
            answer = evidence.load_texts(other.log, other.folder, new).text(sha) if sha else None
            if new.get("status") == "ok" and answer is not None:
                results[index] = answer
            else:
                warnings.append(f"the replay of child run {child['run_id']} of {child['agent']} ended "
                                f"{new.get('status')}; its recorded answer was given back instead")
    return out


def _append(agent, run, done, cost, outcomes, lease, fence, extra, notes=None) -> dict[str, Any]:
    """Store the replay's snapshots, then its record (the commit point)."""
    lease.check()
    taken = run.snapshots(done, notes)
    try:
        return agent.log.append(agent.folder, {**run.record(done, cost, outcomes, taken), **run.redact.all(extra)},
                                fence=fence(agent.lock, lease))
    except HeadBehind as exc:
        run.warnings.append(str(exc))
        return exc.record


def _apply(agent, run, done, found, rejected, started, lease, fence, extra) -> dict[str, Any]:
    """Write the captures as a run does: checked destinations, the lease checked before
    each write, everything taken back when the record cannot be written."""
    folder = agent.folder
    writeback.preflight(folder, started.date(), agent.memory, agent.log, agent.journal)
    notes = writeback.Notes(agent.memory, lease)
    shared = [{"name": c.name, "type": c.type, "scope": "project", "status": "not applied",
               "reason": "a replay does not write to a project's memory"} for c in found if c.scope == "project"]
    try:
        outcomes = captures.write(folder, notes, load_tools_config(folder.tools),
                                  [c for c in found if c.scope == "agent"], started.date(), lease) + shared + rejected
        record = _append(agent, run, done, run.settle(done), outcomes, lease, fence, extra, notes)
    except BaseException as exc:
        left = notes.take_back(folder)
        if left:
            raise writeback.failed(exc, left, agent.name) from exc
        raise
    remember(folder, agent.log, changes_of(record))
    return record


def _done(log, folder, record, original, warnings) -> Replayed:
    return Replayed(record, original, compare(log, folder, original, record), run_warnings(record, warnings))


def run_warnings(record: dict[str, Any], warnings: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for warning in warnings:
        seen.setdefault(warning)
    return list(seen)


# -- the comparison of two records (replay's output, and `diff`) --------------------------

def _side(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key) for key in ("run_id", "seq", "kind", "model", "status", "input_tokens",
                                             "output_tokens", "cost_usd")}


def _lines(text: str | None) -> list[str]:
    return (text or "").splitlines()


def _text_diff(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> dict[str, Any]:
    if a["state"] != "ok" or b["state"] != "ok":
        return {"same": None, "a_state": a["state"], "b_state": b["state"], "diff": []}
    same = a["text"] == b["text"]
    diff = [] if same else [line.rstrip("\n") for line in difflib.unified_diff(
        _lines(a["text"]), _lines(b["text"]), name_a, name_b, lineterm="")]
    return {"same": same, "diff": diff}


def _captures(record: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for c in record.get("captures") or []:
        key = (str(c.get("type") or "?"), str(c.get("name") or c.get("excerpt") or "(unnamed)")[:80])
        out.setdefault(key, c)
    return out


def compare(log: Any, folder: Any, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from record ``a`` to record ``b``: layers in and out, the work item and
    the answer (text diffs), captures, tokens and cost. No model is called."""
    va = evidence.view(a, evidence.load_texts(log, folder, a))
    vb = evidence.view(b, evidence.load_texts(log, folder, b))
    name_a, name_b = f"{a.get('kind', 'run')} {a.get('run_id')}", f"{b.get('kind', 'run')} {b.get('run_id')}"
    layers_a = {layer["source"]: layer for layer in va["layers"]}
    layers_b = {layer["source"]: layer for layer in vb["layers"]}
    layers = []
    for source in [*layers_a, *(s for s in layers_b if s not in layers_a)]:
        la, lb = layers_a.get(source), layers_b.get(source)
        change = ("removed" if lb is None else "added" if la is None
                  else "same" if la["snapshot"] == lb["snapshot"] else "changed")
        layers.append({"source": source, "layer": (la or lb)["layer"], "change": change,
                       "tokens": [la and la["tokens"], lb and lb["tokens"]]})
    caps_a, caps_b = _captures(a), _captures(b)
    caps = []
    for key in [*caps_a, *(k for k in caps_b if k not in caps_a)]:
        ca, cb = caps_a.get(key), caps_b.get(key)
        caps.append({"type": key[0], "name": key[1],
                     "change": "removed" if cb is None else "added" if ca is None else "both",
                     "status": [ca and ca.get("status"), cb and cb.get("status")],
                     "file": [ca and ca.get("file"), cb and cb.get("file")]})
    raw_a = [x["snapshot"] for x in va["capture_json"]]
    raw_b = [x["snapshot"] for x in vb["capture_json"]]
    cost_a, cost_b = a.get("cost_usd"), b.get("cost_usd")
    known = isinstance(cost_a, (int, float)) and isinstance(cost_b, (int, float))
    return {
        "a": _side(a), "b": _side(b),
        "replays": b.get("replays"), "changes": b.get("changes"),
        "layers": layers,
        "work_item": _text_diff(va["work_item"], vb["work_item"], name_a, name_b),
        "answer": _text_diff(va["answer"], vb["answer"], name_a, name_b),
        "captures": caps,
        "capture_json_same": raw_a == raw_b,
        "tokens": {"input": [a.get("input_tokens"), b.get("input_tokens")],
                   "output": [a.get("output_tokens"), b.get("output_tokens")],
                   "prompt": [(a.get("manifest") or {}).get("tokens"), (b.get("manifest") or {}).get("tokens")]},
        "cost_usd": [cost_a, cost_b, round(cost_b - cost_a, 10) if known else None],
        "gone": [{"run_id": a.get("run_id"), **g} for g in va["gone"]] + [{"run_id": b.get("run_id"), **g} for g in vb["gone"]],
    }


def _money(value: Any) -> str:
    return "unknown" if not isinstance(value, (int, float)) else f"${value:.4f}"


def _delta(pair: list[Any]) -> str:
    a, b = pair
    if not isinstance(a, int) or not isinstance(b, int):
        return f"{a} → {b}"
    return f"{a} → {b} ({b - a:+d})"


def _text_part(title: str, part: dict[str, Any]) -> list[str]:
    if part["same"] is None:
        return [f"## {title}: cannot compare ({part['a_state']} / {part['b_state']})"]
    if part["same"]:
        return [f"## {title}: the same"]
    return [f"## {title}", *part["diff"]]


def render(compared: dict[str, Any]) -> str:
    """The text form of ``compare``: one section per kind of change, unchanged layers counted."""
    a, b = compared["a"], compared["b"]
    lines = [f"{a['kind'] or 'run'} {a['run_id']} (seq {a['seq']}, {a['model']}, {a['status']}) → "
             f"{b['kind'] or 'run'} {b['run_id']} (seq {b['seq']}, {b['model']}, {b['status']})"]
    if compared["changes"] is not None:
        changes = compared["changes"]
        lines.append("changes: " + Changes(tuple(changes.get("without") or ()), changes.get("model"),
                                           changes.get("max_input_tokens"),
                                           tuple((w["source"], w["path"]) for w in changes.get("with_files") or ())
                                           ).describe())
    same = [layer for layer in compared["layers"] if layer["change"] == "same"]
    lines += ["", f"## Layers ({len(same)} the same)"]
    marks = {"removed": "-", "added": "+", "changed": "~"}
    for layer in compared["layers"]:
        if layer["change"] != "same":
            ta, tb = layer["tokens"]
            tokens = f"{ta} → {tb} tokens" if layer["change"] == "changed" else f"{ta if tb is None else tb} tokens"
            lines.append(f"{marks[layer['change']]} {layer['layer']:<12} {layer['source']} · {tokens}")
    lines += ["", *_text_part("Work item", compared["work_item"]), "", *_text_part("Answer", compared["answer"])]
    lines += ["", "## Captures" + (" (the same)" if compared["capture_json_same"] else "")]
    if not compared["captures"]:
        lines.append("none")
    for c in compared["captures"]:
        sa, sb = c["status"]
        mark = {"removed": "-", "added": "+", "both": " "}[c["change"]]
        lines.append(f"{mark} {c['type']}: {c['name']} · {sa or '-'} → {sb or '-'}")
    cost = compared["cost_usd"]
    lines += ["", "## Tokens and cost",
              f"prompt {_delta(compared['tokens']['prompt'])} · input {_delta(compared['tokens']['input'])}"
              f" · output {_delta(compared['tokens']['output'])}",
              f"cost {_money(cost[0])} → {_money(cost[1])}" + (f" ({'-' if cost[2] < 0 else '+'}${abs(cost[2]):.4f})" if cost[2] is not None else "")]
    if compared["gone"]:
        lines += ["", "## Gone"] + [f"- {g['run_id']}: snapshot {g['snapshot']} {g['state']}" for g in compared["gone"]]
    return "\n".join(lines)


def as_json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
