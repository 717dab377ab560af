"""One run as a person reads it (``show``): the record with the texts its snapshots hold,
each re-hashed, and exactly what is gone (pruned, missing) or altered (tampered)."""

from __future__ import annotations

import json
from typing import Any

from . import snapshots
from .errors import AtomicVaultError
from .protocols import LogQuery


class UnknownRun(AtomicVaultError):
    """No record of that run id in the agent's log."""


def find_run(log: Any, folder: Any, run_id: str | None) -> dict[str, Any]:
    """The record of ``run_id``, or of the newest run when None (``--last``)."""
    if run_id is None:
        found = log.query(folder, LogQuery(kind="run", limit=1))
        if not found:
            raise UnknownRun(f"{folder.name} has no runs yet", path=folder.log, field="--last",
                             fix=f"run the agent first: atomic-vault run {folder.name} \"...\"")
        return found[0]
    record = log.get(folder, run_id)
    if record is None or record.get("kind", "run") not in ("run", "replay"):  # a replay is shown as a run
        raise UnknownRun(f"no run {run_id!r} in the log of {folder.name}", path=folder.log, field="RUN_ID",
                         fix=f"`atomic-vault log {folder.name}` lists the runs; pass a run_id from it, or --last")
    return record


def load_texts(log: Any, folder: Any, record: dict[str, Any]) -> snapshots.Loaded:
    """Every snapshot the record names, re-hashed; prune records are read only when one
    is absent (the common case, all present, reads no other record)."""
    loaded = snapshots.load(log, folder, snapshots.named(record))
    if loaded.missing:
        prunes = snapshots.prune_records(log, folder)
        for sha in list(loaded.missing):
            if sha in prunes:
                loaded.missing.remove(sha)
                loaded.pruned[sha] = prunes[sha]
    return loaded


def _text(loaded: snapshots.Loaded, sha: str | None) -> dict[str, Any]:
    state = loaded.state(sha)
    out: dict[str, Any] = {"snapshot": sha, "state": state, "text": loaded.text(sha)}
    if state == "pruned":
        out["pruned_by_seq"] = loaded.pruned[sha]
    return out


def related(log: Any, folder: Any, record: dict[str, Any]) -> dict[str, Any]:
    """What the log says about this run after (or beside) its record: its verdicts with
    their reasons, the decisions taken on its approvals, and the run that resumed it. Read
    from the run's day on, never the whole log."""
    run_id = record.get("run_id")
    out: dict[str, Any] = {"verdicts": {}, "approvals": {}, "resumed_by": None}
    since = str(record.get("ts") or "")[:10] or None
    for other in log.query(folder, LogQuery(since=since)):
        kind = other.get("kind", "run")
        if kind == "verdict" and other.get("run") == run_id:
            out["verdicts"][(other.get("step"), other.get("call"))] = other
        elif kind == "approval":
            out["approvals"][other.get("approval")] = other
        elif kind == "run" and other.get("resumes") == run_id and run_id is not None:
            out["resumed_by"] = other.get("run_id")
    return out


def _steps(record: dict[str, Any], loaded: snapshots.Loaded, about: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model call of the tool loop with its tool calls: arguments (whole, from the
    run's snapshots, when they hold them; else the record's shortened copy, said so), the
    gate's verdict and rule, the effect, and the approval with its decision."""
    whole = {(ref.get("step"), ref.get("call")): ref
             for ref in (record.get("snapshots") or {}).get("tools") or [] if isinstance(ref, dict)}
    steps = []
    for entry in record.get("steps") or []:
        if not isinstance(entry, dict):
            continue
        calls = []
        for call in entry.get("calls") or []:
            if not isinstance(call, dict):
                continue
            ref = whole.get((entry.get("step"), call.get("id"))) or {}
            shown: dict[str, Any] = {key: call.get(key) for key in (
                "id", "tool", "args_sha256", "verdict", "rule", "revised_args")}
            if ref.get("args") and loaded.state(ref["args"]) == "ok":
                shown["arguments"], shown["arguments_from"] = loaded.text(ref["args"]), "snapshot"
            else:  # a call that never ran (pending, refused) has no snapshot; a gone one is named
                shown["arguments"], shown["arguments_from"] = call.get("args"), "record"
                if ref.get("args"):
                    shown["arguments_snapshot"] = loaded.state(ref["args"])
            verdict = about["verdicts"].get((entry.get("step"), call.get("id"))) or {}
            shown["reason"], shown["policy_sha256"] = verdict.get("reason"), verdict.get("policy_sha256")
            effect = dict(call.get("effect") or {})
            approval_id = effect.pop("approval", None)
            if effect.get("key"):
                effect.setdefault("reused", False)
                if ref.get("result") and loaded.state(ref["result"]) == "ok":
                    effect["result"], effect["result_from"] = loaded.text(ref["result"]), "snapshot"
                elif "result" in effect:
                    effect["result_from"] = "record"
            shown["effect"] = effect or None
            shown["approval"] = None
            if approval_id:
                taken = about["approvals"].get(approval_id) or {}
                shown["approval"] = {"id": approval_id, "decision": taken.get("decision") or "pending",
                                     "decided_by": taken.get("decided_by"), "note": taken.get("note"),
                                     "taken_seq": taken.get("seq")}
            calls.append(shown)
        steps.append({**{key: entry.get(key) for key in (
            "step", "model", "input_tokens", "output_tokens", "cost_usd", "stopped")}, "calls": calls})
    return steps


def view(record: dict[str, Any], loaded: snapshots.Loaded, about: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's view: the same keys for ``--json`` and for the text rendering. ``about``
    is what ``related`` found in the log (verdict reasons, decisions, the resuming run)."""
    about = about or {"verdicts": {}, "approvals": {}, "resumed_by": None}
    manifest = record.get("manifest") or {}
    refs = record.get("snapshots") or {}
    cuts = manifest.get("cuts") or []
    layers = []
    for entry in manifest.get("files") or []:
        layer = {key: entry.get(key) for key in ("layer", "source", "sha256", "tokens")}
        if entry.get("rank") is not None:
            layer.update(rank=entry["rank"], score=entry.get("score"))
        layer["cuts"] = [c for c in cuts if c.get("source") == entry.get("source")]
        layers.append({**layer, **_text(loaded, entry.get("snapshot"))})
    raws = [_text(loaded, sha) for sha in refs.get("captures") or []]
    errors = iter(refs.get("errors") or [])
    attempts = []
    for attempt in record.get("attempts") or []:
        attempts.append({**attempt, **({"error_text": _text(loaded, next(errors, None))}
                                       if attempt.get("error") else {})})
    out = {key: record.get(key) for key in (
        "run_id", "seq", "hash", "ts", "finished", "agent", "trigger", "status", "model", "fallback_from",
        "critical", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "cost_usd", "error", "warnings", "guardrail")}
    out.update({
        "snapshots": bool(refs),
        "work_item": _text(loaded, refs.get("work_item")),
        "budget": manifest.get("budget"), "tokens": manifest.get("tokens"),
        "layers": layers,
        "dropped": [c for c in cuts if c.get("action") in ("dropped", "over relevant share")],
        "skipped": manifest.get("skipped") or [],
        "answer": _text(loaded, refs.get("answer")),
        "captures": record.get("captures") or [],
        "capture_json": raws,
        "attempts": attempts,
        "steps": _steps(record, loaded, about),
        "resumes": record.get("resumes"),
        "decisions": record.get("decisions") or [],
        "tree": _tree_fields(record),
        "conversation": _conversation(manifest.get("conversation"), loaded),
        "awaiting": _awaiting(record, about),
        "gone": [{"snapshot": sha, "state": loaded.state(sha), **(
            {"pruned_by_seq": loaded.pruned[sha]} if sha in loaded.pruned else {})}
            for sha in [*loaded.tampered, *loaded.pruned, *loaded.missing]],
    })
    return out


def _conversation(part: Any, loaded: snapshots.Loaded) -> dict[str, Any] | None:
    """The conversation's earlier turns this run sent (texts from the snapshots), and the
    turns left out (budget, pruned, no answer)."""
    if not isinstance(part, dict):
        return None
    turns = [{"run_id": t.get("run_id"), "seq": t.get("seq"), "tokens": t.get("tokens"),
              "work_item": _text(loaded, t.get("work_item")), "answer": _text(loaded, t.get("answer"))}
             for t in part.get("turns") or [] if isinstance(t, dict)]
    return {"id": part.get("id"), "new": part.get("new"), "turns": turns,
            "dropped": part.get("dropped") or [], "skipped": part.get("skipped") or []}


def _awaiting(record: dict[str, Any], about: dict[str, Any]) -> dict[str, Any] | None:
    """For a suspended run: the approvals it waits for and the command that continues it
    (or the run that already did)."""
    if record.get("status") != "awaiting_approval":
        return None
    waits = [call["effect"]["approval"] for step in record.get("steps") or [] if isinstance(step, dict)
             for call in step.get("calls") or [] if isinstance(call, dict)
             and isinstance(call.get("effect"), dict) and call["effect"].get("approval")]
    return {"approvals": waits, "files": [f"approvals/{one}.md" for one in waits],
            "resumed_by": about.get("resumed_by"),
            "command": f"atomic-vault resume {record.get('agent')} {record.get('run_id')}"}


def tampered(shown: dict[str, Any]) -> bool:
    return any(item["state"] in ("tampered", "missing") for item in shown["gone"])


def _body(item: dict[str, Any]) -> str:
    if item["state"] == "ok":
        return item["text"]
    if item["state"] == "pruned":
        return f"[pruned by record seq {item['pruned_by_seq']}: snapshot {item['snapshot']} is gone]"
    if item["state"] == "tampered":
        return f"[TAMPERED: snapshot {item['snapshot']} does not match its hash; not shown]"
    if item["state"] == "missing":
        return f"[MISSING: snapshot {item['snapshot']} is gone and no prune record removed it]"
    return "[none]"


CLIP_CHARS = 500  # of a tool call's arguments or result in the text form without --full


def _clip(text: Any, full: bool) -> str:
    text = str(text if text is not None else "").strip()
    if full or len(text) <= CLIP_CHARS:
        return text.replace("\n", "\n      ")
    return (text[:CLIP_CHARS].replace("\n", "\n      ")
            + f"… ({len(text)} characters; --full or --json shows them all)")


def render(shown: dict[str, Any], full: bool = False) -> str:
    """The text form: header, work item, layers (text with ``full``), answer, captures,
    attempts, cost and the guardrail's decision."""
    cost = shown["cost_usd"]
    lines = [f"run {shown['run_id']} · seq {shown['seq']} · {shown['status']} · {shown['model']}"
             + (f" (fallback from {shown['fallback_from']})" if shown["fallback_from"] else ""),
             f"{shown['ts']} → {shown['finished']} · trigger {shown['trigger']}"
             + (" · critical" if shown["critical"] else ""),
             f"tokens {shown['input_tokens']} in, {shown['output_tokens']} out"
             + (f" (cache read {shown['cache_read_tokens']}, written {shown['cache_write_tokens']})"
                if shown["cache_read_tokens"] or shown["cache_write_tokens"] else "")
             + " · cost " + ("unknown" if cost is None else f"${cost:.4f}")]
    if not shown["snapshots"]:
        lines.append("this run was recorded before snapshots existed: only its hashes and summary are kept")
    lines += ["", "## Work item", _body(shown["work_item"]), "",
              f"## Prompt ({shown['tokens']} of {shown['budget']} tokens)"]
    for i, layer in enumerate(shown["layers"], 1):
        cut = "; ".join(f"{c['action']} {c['tokens']} tokens" for c in layer["cuts"])
        state = "" if layer["state"] == "ok" else f" [{layer['state']}]"
        rank = f" · rank {layer['rank']} (score {layer['score']})" if "rank" in layer else ""
        lines.append(f"{i:>3}. {layer['layer']:<12} {layer['source']} · {layer['tokens']} tokens"
                     + rank + (f" · {cut}" if cut else "") + state)
        if full:
            lines += ["", _body(layer), ""]
    for c in shown["dropped"]:
        why = "over the relevant notes' share" if c["action"] == "over relevant share" else "did not fit"
        lines.append(f"     dropped      {c['source']} · {c['tokens']} tokens ({why})")
    for s in shown["skipped"]:
        lines.append(f"     left out     {s['source']} · broken: {s['reason']}")
    talk = shown["conversation"]
    if talk:
        lines += ["", f"## Conversation {talk['id']}" + (" (started by this run)" if talk["new"] else "")]
        for turn in talk["turns"]:
            lines.append(f"- turn of run {turn['run_id']} (seq {turn['seq']}) · {turn['tokens']} tokens")
            if full:
                lines += ["", _body(turn["work_item"]), "", _body(turn["answer"]), ""]
        for left in [*talk["dropped"], *talk["skipped"]]:
            lines.append(f"  left out: run {left.get('run_id')} (seq {left.get('seq')}): {left.get('reason')}")
    if shown["resumes"]:
        lines += ["", f"## Resumes run {shown['resumes']}"]
        for d in shown["decisions"]:
            lines.append(f"- approval {d.get('approval')}: {d.get('decision')}"
                         + (f" by {d['decided_by']}" if d.get("decided_by") else "")
                         + (f" · effect {d['effect']}" if d.get("effect") else ""))
        if not shown["decisions"]:
            lines.append("no decision was taken")
    tree = shown.get("tree")
    if tree:
        lines += ["", "## Delegation tree"]
        if tree.get("parent_run_id"):
            lines.append(f"child at depth {tree['depth']} of run {tree['parent_run_id']} "
                         f"(root run {tree['root_run_id']})")
        elif tree.get("tree_cap_usd") is not None:
            lines.append(f"root run · tree cap ${tree['tree_cap_usd']:.4f}")
        for child in tree.get("children") or []:
            lines.append(f"- {child.get('agent')} run {child.get('run_id')} · {child.get('status')} · cost "
                         + _money(child.get("cost_usd")))
        if tree.get("children"):
            lines.append(f"the whole tree: atomic-vault log {shown['agent']} --tree {shown['run_id']}")
    if shown["steps"]:
        lines += ["", "## Tool steps"]
    for step in shown["steps"]:
        cost = step["cost_usd"]
        lines.append(f"step {step['step']} · {step['model']} · tokens {step['input_tokens']} in, "
                     f"{step['output_tokens']} out · cost " + ("unknown" if cost is None else f"${cost:.4f}")
                     + (f" · stopped: {step['stopped']}" if step.get("stopped") else ""))
        for call in step["calls"]:
            lines.append(f"  - {call['tool']} ({call['id']}) {_clip(call['arguments'], full)}"
                         + ("" if call["arguments_from"] == "snapshot" else " [the record's copy]"))
            if call["verdict"] or call["rule"]:
                lines.append(f"    verdict: {call['verdict'] or '-'} · rule: {call['rule'] or '-'}"
                             + (f" · {call['reason']}" if call.get("reason") else ""))
            if call.get("revised_args"):
                lines.append(f"    revised to: {call['revised_args']}")
            effect = call["effect"]
            if effect:
                lines.append(f"    effect: {effect.get('status')}"
                             + (f" · key {effect['key']}" if effect.get("key") else "")
                             + (" · reused (it ran in an earlier attempt)" if effect.get("reused") else "")
                             + (f" · result: {_clip(effect['result'], full)}" if effect.get("result") else ""))
            approval = call["approval"]
            if approval:
                lines.append(f"    approval {approval['id']}: {approval['decision']}"
                             + (f" by {approval['decided_by']}" if approval.get("decided_by") else "")
                             + (f" (record seq {approval['taken_seq']})" if approval.get("taken_seq") else ""))
    waiting = shown["awaiting"]
    if waiting:
        lines += ["", "## Suspended: awaiting approval"]
        lines += [f"- {path}" for path in waiting["files"]]
        lines.append(f"resumed by run {waiting['resumed_by']}" if waiting["resumed_by"] else
                     f"decide in the file (or `atomic-vault approvals {shown['agent']} approve ID --by NAME`), "
                     f"then: {waiting['command']}")
    lines += ["", "## Answer", _body(shown["answer"]), "", "## Captures"]
    if not shown["captures"]:
        lines.append("none")
    for c in shown["captures"]:
        lines.append(f"- {c.get('status')}: {c.get('file') or c.get('name') or ''}"
                     + (f" ({c['reason']})" if c.get("reason") else ""))
    lines += ["", "## Attempts"]
    for a in shown["attempts"]:
        lines.append(f"- {a.get('model')} #{a.get('attempt')}: {a.get('outcome')}"
                     + (f" after {a['ms']} ms" if a.get("ms") is not None else "")
                     + (f": {_body(a['error_text'])}" if a.get("error_text") else ""))
    if not shown["attempts"]:
        lines.append("none (no model was called)")
    guard = shown["guardrail"]
    lines += ["", "## Guardrail", "not enforced" if not guard else
              f"{guard.get('action')}" + (f": {'; '.join(guard.get('reasons') or [])}" if guard.get("reasons") else "")
              + (f" (reserved ${guard['estimate_usd']:.4f})" if isinstance(guard.get("estimate_usd"), (int, float)) else "")]
    if shown["error"]:
        lines += ["", f"error: {shown['error']}"]
    for warning in shown["warnings"] or []:
        lines.append(f"warning: {warning}")
    if shown["gone"]:
        lines += ["", "## Gone"]
        for g in shown["gone"]:
            lines.append(f"- {g['snapshot']}: {g['state']}"
                         + (f" (prune record seq {g['pruned_by_seq']})" if g.get("pruned_by_seq") else ""))
    return "\n".join(lines)


def _money(value: Any) -> str:
    return "unknown" if not isinstance(value, (int, float)) else f"${value:.4f}"


def _tree_fields(record: dict[str, Any]) -> dict[str, Any] | None:
    fields = {key: record[key] for key in ("root_run_id", "parent_run_id", "depth", "tree_cap_usd", "children")
              if key in record}
    return fields or None


MAX_TREE_DEPTH = 32  # records name their children; a hand-edited loop of names stops here


def tree(root: Any, agent: str, run_id: str) -> dict[str, Any]:
    """The delegation tree below run ``run_id`` of ``agent``, read from the logs: each node's
    agent, run id, status, cost and children (a child whose record is not found is
    ``missing``), and ``tree_cost_usd``, the known costs summed."""
    from .backends import open_backend
    from .vault import open_agent

    def node(name: str, run: str | None, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": name, "run_id": run, "depth": depth, "status": "missing",
                               "cost_usd": None, "summary": "", "children": []}
        try:
            folder = open_agent(name, root)
            record = open_backend("log", None, folder.root, folder.name).get(folder, run) if run else None
        except AtomicVaultError:
            record = None
        if record is None:
            return out
        out.update(status=record.get("status"), cost_usd=record.get("cost_usd"), model=record.get("model"),
                   summary=record.get("summary") or "")
        if depth < MAX_TREE_DEPTH:
            out["children"] = [node(str(c.get("agent")), c.get("run_id"), depth + 1)
                               for c in record.get("children") or [] if isinstance(c, dict)]
        return out

    top = node(agent, run_id, 0)
    if top["status"] == "missing":
        raise UnknownRun(f"no run {run_id!r} in the log of {agent}", field="--tree",
                         fix=f"`atomic-vault log {agent}` lists the runs; pass a run_id from it")
    top["tree_cost_usd"] = round(sum(n["cost_usd"] for n in walk(top)
                                     if isinstance(n["cost_usd"], (int, float))), 10)
    return top


def walk(node: dict[str, Any]):
    """The tree's nodes, each before its children."""
    yield node
    for child in node["children"]:
        yield from walk(child)


def render_tree(top: dict[str, Any]) -> str:
    lines = [f"{'  ' * n['depth']}{n['agent']} {n['run_id']} · {n['status']} · {_money(n['cost_usd'])}"
             + (f" · {n['summary'][:60]}" if n.get("summary") else "") for n in walk(top)]
    lines.append(f"tree cost {_money(top['tree_cost_usd'])} over {sum(1 for _ in walk(top))} runs")
    return "\n".join(lines)


def as_json(shown: dict[str, Any]) -> str:
    return json.dumps(shown, ensure_ascii=False, indent=2)
