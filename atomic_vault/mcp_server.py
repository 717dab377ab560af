"""`atomic-vault mcp`: a vault's agents, notes, runs and approvals as MCP tools and resources.

Built on the official ``mcp`` SDK (the ``[mcp]`` extra), imported only by this command.
Every tool does what the matching CLI command does, through the same functions, and
fails with the same message and fix: names are checked as the CLI checks them, notes are
written as captures are (validated, atomic, compare-and-swap), and nothing but protocol
messages reaches stdout in stdio mode.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

from .errors import AtomicVaultError, ConfigError, NoteError
from .vault import AgentFolder, check_agent_name, list_agents, open_agent, resolve_root

WHEN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?\Z")
STATUSES = ("ok", "error", "skipped", "awaiting_approval")
KINDS = ("run", "verdict", "approval", "effect", "repair", "note_edit", "upgrade")


class Refused(AtomicVaultError):
    """A tool this server does not offer as started (--read-only) or an agent it hides."""


def _iso(value: Any) -> bool:
    """A --since/--until value as the CLI takes it: an ISO date, or a date and time with T."""
    from datetime import datetime

    if not isinstance(value, str) or not WHEN.match(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VaultTools:
    """The tools as plain methods over one vault: what the MCP server (and `serve`'s HTTP
    API, http_api.py) exposes, testable without a transport. Each raises an AtomicVaultError carrying the CLI's message and fix."""

    def __init__(self, root: str | Path | None = None, agents: list[str] | None = None,
                 read_only: bool = False, trigger: str = "mcp"):
        self.root = resolve_root(root)
        self.read_only = read_only
        self.trigger = trigger  # recorded as each run's trigger: mcp, or http for `serve`
        self.visible = None
        if agents is not None:
            for name in agents:
                open_agent(check_agent_name(name), self.root)  # a typo fails at start, not later
            self.visible = sorted(set(agents))

    # -- names, exactly as the CLI checks them --------------------------------------------

    def _folder(self, agent: str) -> AgentFolder:
        check_agent_name(agent)
        if self.visible is not None and agent not in self.visible:
            raise Refused(f"agent {agent!r} is not served here", field="agent",
                          fix=f"use one of: {', '.join(self.visible)} (the server's --agents)")
        return open_agent(agent, self.root)

    def _backend(self, kind: str, agent: str) -> Any:
        from .backends import open_backend

        return open_backend(kind, None, self.root, agent)

    def _writable(self, tool: str) -> None:
        if self.read_only:
            raise Refused(f"{tool} is not offered: this server was started with --read-only",
                          field=tool, fix="start `atomic-vault mcp` without --read-only to allow it")

    def _note_file(self, memory: Any, folder: AgentFolder, note: str) -> str:
        """A note named as `notes NAME show` takes it: a file name, with or without .md,
        or the name of exactly one note. Never a path: the backend refuses anything else."""
        from .notes import FILENAME, files_named

        if not isinstance(note, str) or not note.strip():
            raise NoteError("the note name is empty", field="note",
                            fix="name a note by its file name (project_x.md) or its name")
        matches = files_named(memory, folder, note)
        if len(matches) > 1:
            raise NoteError(f"{note!r} names {len(matches)} notes: {', '.join(matches)}", field="note",
                            fix="name one by its file name")
        if not matches:
            shaped = next((f for f in (note, note + ".md") if FILENAME.match(f)), None)
            raise NoteError((f"no note {shaped!r}" if shaped else f"{note!r} is not a note file name, "
                             "nor the name of a note"), path=folder.memory, field="note",
                            fix=f"search_notes or `atomic-vault notes {folder.name} list` names them")
        return matches[0]

    # -- agents and runs ------------------------------------------------------------------

    def list_agents(self) -> list[str]:
        names = list_agents(self.root)
        return [n for n in names if self.visible is None or n in self.visible]

    def run_agent(self, agent: str, work_item: str, model: str | None = None,
                  idempotency_key: str | None = None, conversation_id: str | None = None) -> dict[str, Any]:
        """Run the agent on the work item; ``conversation_id`` continues that conversation
        (its earlier turns go in first; an unknown id starts it, ``new`` starts one with a
        fresh id, ``latest`` continues the newest), without one the run is a one-shot."""
        from . import approvals
        from .agent import AtomicAgent
        from .config import MODEL_NAME

        self._writable("run_agent")
        folder = self._folder(agent)
        if not isinstance(work_item, str) or not work_item.strip():
            raise ConfigError("the work item is empty", field="work_item", fix="pass the text to work on")
        if model is not None and not MODEL_NAME.match(model):
            raise ConfigError(f"{model!r} is not a model name", field="model",
                              fix="write provider:model, e.g. offline")
        if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 200
                                            or any(c < " " for c in idempotency_key)):
            raise ConfigError("the idempotency key must be one line of 1-200 characters",
                              field="idempotency_key", fix="pass a short one-line key, or none")
        if conversation_id is not None:
            from .conversations import check_id

            check_id(conversation_id)
        result = AtomicAgent(agent, root=self.root, trigger=self.trigger, model=model).call(
            work_item, idempotency_key=idempotency_key, conversation_id=conversation_id)
        out = {"text": result.text, "run_id": result.run_id, "status": result.status,
               "conversation_id": result.conversation_id,
               "cost_usd": result.cost_usd, "seq": result.seq, "model": result.model,
               "captures": result.captures, "warnings": result.warnings}
        if result.status == "awaiting_approval":
            rows = approvals.status(folder, self._backend("log", agent))
            out["approvals"] = [r["id"] for r in rows if r.get("run") == result.run_id
                                and r.get("state") == "pending"]
        return out

    def show_run(self, agent: str, run_id: str | None = None) -> dict[str, Any]:
        from . import evidence

        folder = self._folder(agent)
        store = self._backend("log", agent)
        record = evidence.find_run(store, folder, run_id or None)
        shown = evidence.view(record, evidence.load_texts(store, folder, record))
        return {**json.loads(evidence.as_json(shown)), "tampered": evidence.tampered(shown)}

    def query_log(self, agent: str, since: str | None = None, until: str | None = None,
                  status: str | None = None, trigger: str | None = None, kind: str | None = None,
                  limit: int = 20) -> list[dict[str, Any]]:
        from .protocols import LogQuery

        for field, value in (("since", since), ("until", until)):
            if value is not None and not _iso(value):
                raise ConfigError(f"{value!r} is not a date", field=field,
                                  fix="write YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], e.g. 2026-11-01")
        for field, value, allowed in (("status", status, STATUSES), ("kind", kind, KINDS)):
            if value is not None and value not in allowed:
                raise ConfigError(f"{value!r} is not a {field}", field=field, fix=f"use one of: {', '.join(allowed)}")
        folder = self._folder(agent)
        return self._backend("log", agent).query(folder, LogQuery(
            since=since, until=until, status=status, trigger=trigger, kind=kind, limit=max(int(limit), 0)))

    def cost_summary(self, agent: str, by: str = "day", since: str | None = None,
                     until: str | None = None) -> list[dict[str, Any]]:
        if by not in ("day", "month"):
            raise ConfigError(f"{by!r} is not a period", field="by", fix="use day or month")
        self.query_log(agent, since=since, until=until, limit=0)  # the same checks of the dates
        rows = self._backend("log", agent).cost(self._folder(agent), by, since=since, until=until)
        return [row.as_dict() for row in rows]

    def verify(self, agent: str, anchor: str | None = None) -> dict[str, Any]:
        from .runlog import copied_from, copied_remedy
        from .snapshots import verify_snapshots

        folder, store = self._folder(agent), self._backend("log", agent)
        result = store.verify(folder, anchor)
        if result.ok:
            verify_snapshots(store, folder, result)
        source = copied_from(result.first_bad)
        return {**result.as_dict(), **({"fix": copied_remedy(agent, source)} if source else {})}

    # -- notes ----------------------------------------------------------------------------

    def search_notes(self, agent: str, query: str, limit: int = 10) -> list[dict[str, Any]]:
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the query is empty", field="query", fix="pass plain words, e.g. verdemar launch")
        folder = self._folder(agent)
        return [hit.as_dict() for hit in self._backend("memory", agent).search(folder, query, limit=max(int(limit), 0))]

    def read_note(self, agent: str, note: str) -> dict[str, Any]:
        folder = self._folder(agent)
        memory = self._backend("memory", agent)
        file = self._note_file(memory, folder, note)
        text = memory.get(folder, file)
        if text is None:
            raise NoteError(f"no note {file!r}", path=folder.memory / file, fix="it was removed meanwhile")
        return {"file": file, "text": text, "sha256": _sha(text)}

    def write_note(self, agent: str, type: str, name: str, description: str, body: str,
                   confidence: str = "medium", sources: list[str] | None = None,
                   tags: list[str] | None = None, supersedes: str | None = None,
                   merge_into: str | None = None, pinned: bool = False,
                   expires_at: str | None = None, expected_sha256: str | None = None) -> dict[str, Any]:
        """A note written as a capture is (captures.py), through the edit commands' one
        change (noteedit.write): validated by the same parser, applied under the agent's
        lock with compare-and-swap writes, and recorded as a chained ``kind: note_edit``
        record (``op: write``, ``trigger: mcp``), the commit point: a change whose record
        cannot be appended is taken back. ``expected_sha256`` (from read_note) makes the
        client's own read part of the swap: a note edited by hand since is kept and the
        write refused."""
        from types import SimpleNamespace

        from . import noteedit

        self._writable("write_note")
        folder = self._folder(agent)
        raw = {"type": type, "name": name, "description": description, "body": body,
               "confidence": confidence, "sources": sources or [], "tags": tags or [],
               "pinned": pinned}
        raw.update({k: v for k, v in (("supersedes", supersedes), ("merge_into", merge_into),
                                      ("expires_at", expires_at)) if v is not None})
        writer = SimpleNamespace(folder=folder, name=agent, lock_timeout=60.0,
                                 **{kind: self._backend(kind, agent) for kind in ("memory", "log", "lock")})
        return noteedit.write(writer, json.dumps(raw, ensure_ascii=False), trigger=self.trigger,
                              expected_sha256=expected_sha256, field="write_note").outcome

    def recent_activity(self, agent: str, limit: int = 10) -> dict[str, Any]:
        from .protocols import LogQuery

        folder = self._folder(agent)
        limit = max(int(limit), 0)
        runs = self._backend("log", agent).query(folder, LogQuery(kind="run", limit=limit))
        notes = self._backend("memory", agent).list(folder, recent=limit)
        return {"runs": [{k: r.get(k) for k in ("seq", "ts", "run_id", "status", "trigger", "model",
                                                 "cost_usd", "summary")} for r in runs],
                "notes": json.loads(json.dumps(notes, default=str))}

    # -- approvals ------------------------------------------------------------------------

    def list_approvals(self, agent: str) -> list[dict[str, Any]]:
        from . import approvals

        return approvals.status(self._folder(agent), self._backend("log", agent))

    def show_approval(self, agent: str, approval_id: str) -> dict[str, Any]:
        from . import approvals

        folder = self._folder(agent)
        approvals.path_of(folder.path, approval_id)  # a name that is no id is refused, not listed as invalid
        return approvals.status(folder, self._backend("log", agent), approval_id)[0]

    def decide_approval(self, agent: str, approval_id: str, decision: str, by: str,
                        note: str | None = None) -> dict[str, Any]:
        from . import approvals

        self._writable("decide_approval")
        folder = self._folder(agent)
        if decision not in ("approve", "deny"):
            raise ConfigError(f"{decision!r} is not a decision", field="decision", fix="use approve or deny")
        if not isinstance(by, str) or not by.strip() or "\n" in by or len(by) > 200:
            raise ConfigError("a decision names who took it", field="by", fix="pass by: your name (one line)")
        from . import consolidate

        log = self._backend("log", agent)
        taken = consolidate.decide(folder, lambda kind: self._backend(kind, agent), log, approval_id, decision,
                                   by, note)  # a consolidation proposal is applied at once
        row = approvals.status(folder, log, approval_id)[0]
        return row if taken is None else {**row, "applied": taken.get("applied", [])}


TOOLS = ("list_agents", "run_agent", "search_notes", "read_note", "write_note", "recent_activity",
         "show_run", "query_log", "cost_summary", "list_approvals", "decide_approval", "verify")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def build(tools: VaultTools) -> Any:
    """The MCP server: each VaultTools method as a tool, notes and runs as resources.
    An AtomicVaultError becomes the SDK's tool (or resource) error with the same text."""
    try:
        from mcp.server.mcpserver import MCPServer as Server
        from mcp.server.mcpserver.exceptions import ResourceError, ToolError
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp import FastMCP as Server
        from mcp.server.fastmcp.exceptions import ResourceError, ToolError
    import functools

    server = Server("atomic-vault", instructions="Agents of an atomic_vault vault: their notes, "
                    "runs, log, costs and approvals. Files are the truth.")

    def guarded(method: Callable[..., Any], error: type[Exception]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return _jsonable(method(*args, **kwargs))
            except AtomicVaultError as exc:
                raise error(" ".join(str(exc).split())) from None
            except OSError as exc:
                raise error(f"{exc.filename or 'a file of the vault'}: {exc.strerror or exc} "
                            "(fix: check the disk and the file)") from None
        return call

    for name in TOOLS:  # the writing ones stay listed under --read-only: calling says why not
        server.tool(name=name)(guarded(getattr(tools, name), ToolError))

    def note_resource(agent: str, name: str) -> str:
        return tools.read_note(agent, name)["text"]

    def run_resource(agent: str, run_id: str) -> str:
        return json.dumps(tools.show_run(agent, run_id), ensure_ascii=False, default=str)

    server.resource("note://{agent}/{name}", mime_type="text/markdown")(
        functools.wraps(note_resource)(guarded(note_resource, ResourceError)))
    server.resource("run://{agent}/{run_id}", mime_type="application/json")(
        functools.wraps(run_resource)(guarded(run_resource, ResourceError)))
    return server


def serve(root: str | None, agents: list[str] | None, read_only: bool, http: str | None) -> None:
    """Run the server until the client leaves (stdio) or the process is stopped (HTTP)."""
    server = build(VaultTools(root, agents, read_only))
    if http is None:
        server.run("stdio")
        return
    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    try:
        server.run("streamable-http", host=host, port=int(port))
    except TypeError:  # mcp 1.x takes them from its settings
        server.settings.host, server.settings.port = host, int(port)
        server.run("streamable-http")
