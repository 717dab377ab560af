"""`atomic-vault serve`: the vault as a small JSON HTTP API (the ``[serve]`` extra).

Every route is a method of mcp_server.VaultTools, the layer the MCP server stands on, so a
run, a log query or a decision is the very call the CLI and MCP make, and an error carries
the same message and fix. Starlette and uvicorn are imported only when the app is built.
Runs block, so each runs in a worker thread; it is not cancelled by a client that leaves,
and uvicorn's graceful shutdown (SIGTERM) waits for it.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Callable

from .errors import (AgentNotFound, AtomicVaultError, AwaitingApproval, BudgetError, CaptureError,
                     ConfigError, LockTimeout, ModelError, NoteError)
from .mcp_server import KINDS, STATUSES, Refused, VaultTools

DEFAULT_MAX_BODY = 1024 * 1024
TOKEN_ENV = "ATOMIC_VAULT_TOKEN"


class RequestError(AtomicVaultError):
    """A request this API cannot take as sent: its body, a query parameter, a field."""

    def __init__(self, message: str, status: int = 400, **where: Any):
        self.status = status
        super().__init__(message, **where)


def status_of(exc: Exception) -> int:
    """The HTTP status of an error: the caller's fault (4xx) or the server's (5xx)."""
    from .evidence import UnknownRun

    if isinstance(exc, RequestError):
        return exc.status
    for kinds, code in (((AgentNotFound, UnknownRun), 404), ((Refused,), 403),
                        ((LockTimeout, AwaitingApproval), 409), ((ModelError,), 502),
                        ((ConfigError, NoteError, CaptureError, BudgetError), 400)):
        if isinstance(exc, kinds):
            return code
    return 500


def error_body(exc: Exception) -> dict[str, Any]:
    """{"error", "fix"}: the CLI's error line split in two (plus the field at fault)."""
    if isinstance(exc, AtomicVaultError):
        where = exc.path or ""
        if exc.field:
            where = f"{where}: {exc.field}" if where else exc.field
        message = " ".join((f"{where}: {exc.message}" if where else exc.message).split())
        return {"error": message, "fix": exc.fix, "field": exc.field}
    if isinstance(exc, OSError):
        return {"error": f"{exc.filename or 'a file of the vault'}: {exc.strerror or exc}",
                "fix": "check the disk and the file; `atomic-vault doctor AGENT` then checks the agent",
                "field": None}
    return {"error": f"{type(exc).__name__}: {exc}", "fix": "see the server's log", "field": None}


# -- request parsing ------------------------------------------------------------------------

def _fields(body: Any, allowed: dict[str, bool]) -> dict[str, Any]:
    """A JSON object holding only ``allowed`` fields (name -> required), each a string."""
    if not isinstance(body, dict):
        raise RequestError("the body is not a JSON object", field="body",
                           fix=f"send an object with {', '.join(allowed)}")
    for name in body:
        if name not in allowed:
            raise RequestError(f"unknown field {name!r}", field=name,
                               fix=f"use only: {', '.join(allowed)}")
    for name, required in allowed.items():
        if required and name not in body:
            raise RequestError(f"the field {name!r} is missing", field=name, fix=f"send {name} as a string")
        if name in body and body[name] is not None and not isinstance(body[name], str):
            raise RequestError(f"{name} is not a string", field=name, fix=f"send {name} as a string")
    return {k: v for k, v in body.items() if v is not None}


def _query(params: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in params:
        if name not in allowed:
            raise RequestError(f"unknown query parameter {name!r}", field=name,
                               fix=f"use only: {', '.join(allowed) or 'none'}")
        values = params.getlist(name)
        if len(values) != 1:
            raise RequestError(f"query parameter {name!r} is given {len(values)} times", field=name,
                               fix="give it once")
        out[name] = values[0]
    return out


def _limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise RequestError(f"{value!r} is not a number", field="limit", fix="pass a whole number, e.g. 20")
    return int(value)


# -- the routes: one table feeds both the app and the OpenAPI description -------------------

def _param(name: str, where: str = "query", description: str = "", enum: tuple[str, ...] = (),
           kind: str = "string") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if enum:
        schema["enum"] = list(enum)
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema}


AGENT = _param("agent", "path", "the agent's folder name, checked as the CLI checks it")
RUN_BODY = {"type": "object", "required": ["work_item"], "additionalProperties": False, "properties": {
    "work_item": {"type": "string"}, "model": {"type": "string", "description": "provider:model"},
    "idempotency_key": {"type": "string", "description": "a repeated key answers with the first run"},
    "conversation_id": {"type": "string", "description": "a turn of this conversation: new, latest or an id"}}}
DECIDE_BODY = {"type": "object", "required": ["decision", "by"], "additionalProperties": False, "properties": {
    "decision": {"type": "string", "enum": ["approve", "deny"]}, "by": {"type": "string"},
    "note": {"type": "string"}}}

# (method, path, handler name, summary, parameters, request body schema)
ROUTES: tuple[tuple[str, str, str, str, list, dict | None], ...] = (
    ("GET", "/healthz", "healthz", "Liveness; needs no token", [], None),
    ("GET", "/openapi.json", "openapi", "This description", [], None),
    ("GET", "/agents", "agents", "The agents served", [], None),
    ("POST", "/agents/{agent}/runs", "run", "Run the agent on a work item (as `atomic-vault run`)",
     [AGENT], RUN_BODY),
    ("GET", "/agents/{agent}/runs", "log", "Log records, newest last (as `atomic-vault log --json`)",
     [AGENT, _param("since", description="YYYY-MM-DD[THH:MM[:SS]]"), _param("until"),
      _param("status", enum=STATUSES), _param("trigger"), _param("kind", enum=KINDS),
      _param("limit", kind="integer", description="default 20")], None),
    ("GET", "/agents/{agent}/runs/{run_id}", "show", "One run as `atomic-vault show --json` shows it",
     [AGENT, _param("run_id", "path")], None),
    ("GET", "/agents/{agent}/notes", "search", "Search the notes (as `atomic-vault notes search`)",
     [AGENT, _param("q", description="plain words"), _param("limit", kind="integer", description="default 10")],
     None),
    ("GET", "/agents/{agent}/notes/{note}", "note", "One note: its file name, text and sha256",
     [AGENT, _param("note", "path", "a file name, with or without .md, or a note's name")], None),
    ("GET", "/agents/{agent}/approvals", "approvals", "The approvals and their states", [AGENT], None),
    ("GET", "/agents/{agent}/approvals/{approval_id}", "approval", "One approval",
     [AGENT, _param("approval_id", "path")], None),
    ("POST", "/agents/{agent}/approvals/{approval_id}", "decide", "Approve or deny (as `approvals approve|deny`)",
     [AGENT, _param("approval_id", "path")], DECIDE_BODY),
)

ERROR = {"type": "object", "required": ["error", "fix"], "properties": {
    "error": {"type": "string"}, "fix": {"type": ["string", "null"]}, "field": {"type": ["string", "null"]}}}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of ROUTES."""
    paths: dict[str, Any] = {}
    for method, path, name, summary, params, body in ROUTES:
        op: dict[str, Any] = {"operationId": name, "summary": summary, "parameters": params,
                              "responses": {"200": {"description": "JSON", "content": {
                                  "application/json": {"schema": {}}}},
                                  "4XX": {"description": "the request's fault", "content": {
                                      "application/json": {"schema": ERROR}}},
                                  "5XX": {"description": "the server's fault", "content": {
                                      "application/json": {"schema": ERROR}}}}}
        if path != "/healthz":
            op["security"] = [{"bearer": []}]
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "atomic-vault", "version": _version(),
                     "description": "An atomic_vault vault's agents over HTTP (spec/16-http-api.md)."},
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": f"the value of {TOKEN_ENV}; not needed on loopback when it is unset"}}}}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atomic-vault")
    except PackageNotFoundError:
        return "0"


class Handlers:
    """What each route does, as plain (blocking) functions of the request's parts."""

    def __init__(self, tools: VaultTools):
        self.tools = tools

    def healthz(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return {"status": "ok"}

    def openapi(self, path: dict, query: dict, body: Any) -> Any:
        return openapi()

    def agents(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return {"agents": self.tools.list_agents()}

    def run(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        fields = _fields(body, {"work_item": True, "model": False, "idempotency_key": False,
                                "conversation_id": False})
        return self.tools.run_agent(path["agent"], **fields)

    def log(self, path: dict, query: dict, body: Any) -> Any:
        got = _query(query, ("since", "until", "status", "trigger", "kind", "limit"))
        limit = _limit(got.pop("limit", None), 20)
        return {"records": self.tools.query_log(path["agent"], limit=limit, **got)}

    def show(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return self.tools.show_run(path["agent"], path["run_id"])

    def search(self, path: dict, query: dict, body: Any) -> Any:
        got = _query(query, ("q", "limit"))
        return {"results": self.tools.search_notes(path["agent"], got.get("q", ""),
                                                   limit=_limit(got.get("limit"), 10))}

    def note(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return self.tools.read_note(path["agent"], path["note"])

    def approvals(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return {"approvals": self.tools.list_approvals(path["agent"])}

    def approval(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        return self.tools.show_approval(path["agent"], path["approval_id"])

    def decide(self, path: dict, query: dict, body: Any) -> Any:
        _query(query, ())
        fields = _fields(body, {"decision": True, "by": True, "note": False})
        return self.tools.decide_approval(path["agent"], path["approval_id"], fields["decision"],
                                          fields["by"], fields.get("note"))


def _json(value: Any, status: int = 200, headers: dict | None = None) -> Any:
    from starlette.responses import Response

    text = json.dumps(value, ensure_ascii=False, default=str)
    return Response(text + "\n", status_code=status, media_type="application/json", headers=headers)


def _fail(exc: Exception) -> Any:
    code = status_of(exc)
    return _json(error_body(exc), code, {"Retry-After": "1"} if code == 409 else None)


async def _read_body(request: Any, limit: int) -> Any:
    """The body as JSON, refused (413) as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"the body is not JSON ({exc})", field="body",
                           fix="send a JSON object in UTF-8 with Content-Type: application/json") from None


def _too_large(limit: int) -> RequestError:
    return RequestError(f"the body is over {limit} bytes", status=413, field="body",
                        fix="send a smaller body (the server's --max-body sets the limit)")


def _endpoint(handlers: Handlers, name: str, has_body: bool, limit: int) -> Callable[..., Any]:
    from starlette.concurrency import run_in_threadpool

    method = getattr(handlers, name)

    async def endpoint(request: Any) -> Any:
        try:
            body = await _read_body(request, limit) if has_body else None
            # In a worker thread: a run blocks. A client that leaves does not cancel it:
            # the thread finishes, the run is logged once, only the reply is lost.
            result = await run_in_threadpool(method, dict(request.path_params), request.query_params, body)
        except (AtomicVaultError, OSError) as exc:
            return _fail(exc)
        except Exception as exc:  # a bug: JSON like every other answer, the traceback in the log
            logging.getLogger("atomic_vault.http_api").exception("%s %s failed", request.method, request.url.path)
            return _fail(exc)
        return _json(result)
    return endpoint


class Guard:
    """ASGI middleware: the bearer token (except for /healthz) and the size of the body,
    checked before any route sees the request."""

    def __init__(self, app: Any, token: str | None, limit: int):
        self.app, self.token, self.limit = app, token, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = None
        if self.token is not None and scope.get("path") != "/healthz":
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                refusal = RequestError("missing or wrong bearer token", status=401, field="Authorization",
                                       fix=f"send Authorization: Bearer <the server's {TOKEN_ENV}>")
        length = headers.get("content-length")
        if refusal is None and length is not None and length.isdigit() and int(length) > self.limit:
            refusal = _too_large(self.limit)
        if refusal is None:
            return await self.app(scope, receive, send)
        extra = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
        await _json(error_body(refusal), refusal.status, extra)(scope, receive, send)


def build_app(tools: VaultTools, token: str | None = None, max_body: int = DEFAULT_MAX_BODY) -> Any:
    """The ASGI app: ROUTES over ``tools``, behind the token and the body limit."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    handlers = Handlers(tools)
    routes = [Route(path, _endpoint(handlers, name, body is not None, max_body), methods=[method],
                    name=f"{method} {path}")
              for method, path, name, _, _, body in ROUTES]

    async def http_error(request: Any, exc: Any) -> Any:  # 404 and 405 as JSON, with a fix
        fix = ("see GET /openapi.json for the routes" if exc.status_code in (404, 405)
               else "see GET /openapi.json")
        return _json({"error": f"{request.method} {request.url.path}: {exc.detail}", "fix": fix,
                      "field": None}, exc.status_code)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Guard(app, token or None, max_body)


def serve(root: str | None, agents: list[str] | None, host: str, port: int,
          token: str | None, max_body: int) -> None:
    """Serve until SIGTERM or Ctrl-C; in-flight requests (runs) finish first."""
    import signal

    import uvicorn

    app = build_app(VaultTools(root, agents, trigger="http"), token, max_body)
    stopped: list[int] = []
    # uvicorn re-raises the signal that stopped it once it has drained; with this handler
    # in place that is a no-op, and the command returns (exit 0) after a graceful stop.
    previous = {sig: signal.signal(sig, lambda sig, frame: stopped.append(sig))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                      lifespan="off", timeout_graceful_shutdown=None)).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
