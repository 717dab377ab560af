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


def view(record: dict[str, Any], loaded: snapshots.Loaded) -> dict[str, Any]:
    """The run's view: the same keys for ``--json`` and for the text rendering."""
    manifest = record.get("manifest") or {}
    refs = record.get("snapshots") or {}
    cuts = manifest.get("cuts") or []
    layers = []
    for entry in manifest.get("files") or []:
        layer = {key: entry.get(key) for key in ("layer", "source", "sha256", "tokens")}
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
        "dropped": [c for c in cuts if c.get("action") == "dropped"],
        "skipped": manifest.get("skipped") or [],
        "answer": _text(loaded, refs.get("answer")),
        "captures": record.get("captures") or [],
        "capture_json": raws,
        "attempts": attempts,
        "gone": [{"snapshot": sha, "state": loaded.state(sha), **(
            {"pruned_by_seq": loaded.pruned[sha]} if sha in loaded.pruned else {})}
            for sha in [*loaded.tampered, *loaded.pruned, *loaded.missing]],
    })
    return out


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
        lines.append(f"{i:>3}. {layer['layer']:<12} {layer['source']} · {layer['tokens']} tokens"
                     + (f" · {cut}" if cut else "") + state)
        if full:
            lines += ["", _body(layer), ""]
    for c in shown["dropped"]:
        lines.append(f"     dropped      {c['source']} · {c['tokens']} tokens (did not fit)")
    for s in shown["skipped"]:
        lines.append(f"     left out     {s['source']} · broken: {s['reason']}")
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


def as_json(shown: dict[str, Any]) -> str:
    return json.dumps(shown, ensure_ascii=False, indent=2)
