"""Promotion: a note proposed for a persona file (USER, SOUL or IDENTITY), written there
only once a person approves it.

``propose`` writes an approval file (approvals.py, ``kind: promotion``) holding the
section to add and the diff; nothing else changes. ``take`` takes the decision, as
``resume`` takes a call's, under the agent's lock: the chained ``kind: approval`` record
is the commit point. An approved promotion is applied only while the persona file still
holds the text the proposal was made from (a compare-and-swap); otherwise it is refused,
and the record says so.
"""

from __future__ import annotations

import difflib
import os
from datetime import timedelta
from typing import Any

from . import approvals, clock, snapshots
from .config import load_model_config
from .errors import ConfigError, HeadBehind, NoteError
from .notes import check_note_text

KIND = "promotion"
PERSONA = ("USER.md", "SOUL.md", "IDENTITY.md")


def target_of(value: str) -> str:
    """``persona/USER.md`` for USER, USER.md or persona/USER.md (any case); only the
    three persona files may be promoted to."""
    name = value.strip().replace("\\", "/").removeprefix("persona/")
    name = name if name.lower().endswith(".md") else name + ".md"
    for allowed in PERSONA:
        if name.lower() == allowed.lower():
            return f"persona/{allowed}"
    raise ConfigError(f"{value[:80]!r} is not a persona file", field="--to",
                      fix=f"promote to one of {', '.join('persona/' + p for p in PERSONA)}")


def _persona(folder: Any, target: str) -> str | None:
    path = folder.path / target
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError("is a link or not a file; nothing is promoted into it", path=path,
                          fix="make it a plain Markdown file in persona/")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not valid UTF-8 (byte {exc.start})", path=path, fix="re-save it as UTF-8") from None


def _with(current: str | None, addition: str) -> str:
    return (current.rstrip("\n") + "\n\n" if current and current.strip() else "") + addition


def _sha(text: str | None) -> str | None:
    return None if text is None else snapshots.digest(text)


def propose(agent: Any, word: str, to: str) -> dict[str, Any]:
    """Write the approval file proposing note ``word`` as a new section of persona file
    ``to``; returns its id, path and the diff."""
    from .noteedit import note_file

    folder = agent.folder
    target = target_of(to)
    file = note_file(agent.memory, folder, word)
    text = agent.memory.get(folder, file)
    if text is None:
        raise NoteError("is not there", path=folder.memory / file, field="NOTE", fix="see notes list")
    meta, body = check_note_text(text, folder.memory / file)
    current = _persona(folder, target)
    addition = f"## {' '.join(str(meta['name']).split())}\n\n{body.strip()}\n"
    proposed = _with(current, addition)
    diff = "".join(difflib.unified_diff((current or "").splitlines(keepends=True),
                                        proposed.splitlines(keepends=True), f"a/{target}", f"b/{target}"))
    config = load_model_config(folder.model)
    now = clock.now(config.zone)
    approval_id = f"promote-{now:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}"
    arguments = {"note": file, "note_sha256": _sha(text), "target": target,
                 "target_sha256": _sha(current), "proposed_sha256": _sha(proposed), "addition": addition}
    path = approvals.propose(
        folder.path, approval_id, agent=agent.name, kind=KIND, arguments=arguments,
        reason=f"promote memory/{file} into {target}", now=now,
        expires_after=timedelta(hours=config.approval_hours),
        title=f"Promote the note **{file}** of agent **{agent.name}** into **{target}**.",
        explain=(f"Approving adds the section below to {target}, only if the file still holds what it "
                 f"held when this was proposed (its SHA-256 is target_sha256 above).\n\n"
                 + approvals.fenced_diff(diff)))
    return {"id": approval_id, "path": str(path), "target": target, "note": file, "diff": diff}


def take(agent: Any, approval_id: str) -> dict[str, Any]:
    """Take a promotion's decision and, approved, apply it; returns the approval record
    (``applied``; ``refused`` when the persona file changed since the proposal)."""
    from .agent import _fence
    from .backends.files import replace_if
    from .protocols import LogQuery, NoteChanged

    folder = agent.folder
    with agent.lock.hold(folder, agent.lock_timeout) as lease:
        agent.log.ready(folder)
        approval = approvals.read(folder.path, approval_id)
        fields = approval.fields
        if fields.get("kind") != KIND:
            raise ConfigError("is the approval of a tool call, not a promotion", path=approval.path,
                              field="kind", fix=f"`atomic-vault resume {agent.name} {fields.get('run')}` takes it")
        for record in agent.log.query(folder, LogQuery(kind="approval")):
            if record.get("approval") == approval_id:
                raise ConfigError(f"was already taken ({record.get('decision')}, seq {record.get('seq')})",
                                  path=approval.path, field="decision",
                                  fix="propose the promotion again (`atomic-vault promote`) for a new decision")
        now = clock.now(load_model_config(folder.model).zone)
        decision = approval.decision
        if decision == "pending" and not approval.expired(now):
            raise ConfigError("is still pending", path=approval.path, field="decision",
                              fix=f"decide it: `atomic-vault approvals {agent.name} approve|deny {approval_id} --by NAME`")
        if approval.expired(now):
            decision = "expired"  # an expired approval is denied
        if fields.get("amended_args"):
            raise ConfigError("amended_args does not apply to a promotion", path=approval.path,
                              field="amended_args", fix="clear it; to promote other text, edit the note and propose again")
        arguments = fields["arguments"]
        target = target_of(str(arguments.get("target")))
        record: dict[str, Any] = {
            "kind": "approval", "ts": now.isoformat(timespec="milliseconds"), "agent": agent.name,
            "trigger": "promote", "status": "ok", "approval": approval_id, "proposal": KIND, "run": None,
            "decision": decision, "decided_by": fields.get("decided_by"), "note": fields.get("note"),
            "file_sha256": approval.file_sha256, "target": target, "note_file": arguments.get("note"),
            "applied": False}
        path = folder.path / target
        current, proposed = None, None
        if decision == "approve":
            current = _persona(folder, target)
            proposed = _with(current, str(arguments.get("addition")))
            if _sha(current) != arguments.get("target_sha256") or _sha(proposed) != arguments.get("proposed_sha256"):
                record["refused"] = (f"{target} changed since the promotion was proposed (it no longer holds "
                                     "the text the diff was made from); nothing was written")
                proposed = None
        if proposed is not None:
            agent.log.put_snapshots(folder, {s: t for s, t in ((_sha(current), current), (_sha(proposed), proposed))
                                             if t is not None})
            record.update(applied=True, changes=[{"file": target, "before": _sha(current), "after": _sha(proposed)}],
                          summary=f"promoted memory/{arguments.get('note')} into {target}")
            try:
                replace_if(folder, path, proposed, current)
            except NoteChanged:
                raise ConfigError(f"{target} changed while the promotion was being applied; nothing was written",
                                  path=path, field="target_sha256", fix="propose the promotion again") from None
        else:
            record["summary"] = record.get("refused") or f"promotion {decision}: nothing was written"
        lease.check()
        try:
            record = agent.log.append(folder, record, fence=_fence(agent.lock, lease))
        except HeadBehind as exc:
            record = exc.record
        except BaseException:
            if proposed is not None:  # before the commit point: give the file back
                try:
                    if current is None:
                        path.unlink(missing_ok=True)
                    else:
                        replace_if(folder, path, current, proposed)
                except (NoteChanged, OSError):
                    pass
            raise
    return record
