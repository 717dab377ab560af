"""Tools an agent may call, declared in tools.md, and how each kind runs.

A tool is a name, a description and a JSON Schema for its arguments, of one kind:
``python`` (a callable: ``module:function`` or an ``atomic_vault.tools`` entry point),
``command`` (an argv template run without a shell) or ``mcp`` (a tool of an MCP server
started over stdio through the official ``mcp`` SDK, the ``[mcp]`` extra, imported only
then; its description and schema come from the server) or ``builtin`` (one the runtime
provides: ``delegate``, delegation.py, bound to the run that offers it). Whatever happens when a tool runs —
an exception, a non-zero exit, a timeout, too much output — becomes a ``Result`` the
model reads; it never crashes the run. Arguments are checked against the schema first
with a small built-in validator (the subset in spec/06); invalid ones run nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .config import ToolsConfig
from .errors import ConfigError

ENTRY_POINT_GROUP = "atomic_vault.tools"
KINDS = ("python", "command", "mcp", "builtin")
# The built-in tools: (default description, arguments' schema); delegation.py runs delegate.
BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "delegate": ("Hand a sub-task to another agent of this vault and get its answer back. "
                 "The agent works in its own folder, with its own memory and tools.",
                 {"type": "object",
                  "properties": {"agent": {"type": "string", "description": "the agent's folder name"},
                                 "task": {"type": "string", "minLength": 1, "maxLength": 200_000,
                                          "description": "the sub-task, as a work item for that agent"}},
                  "required": ["agent", "task"], "additionalProperties": False}),
}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
_KEYS = {"name", "description", "kind", "input_schema", "function", "entry_point", "argv",
         "timeout_s", "cwd", "env", "max_output_bytes", "server", "tool", "idempotent"}
# Always passed to a command (when set); a tool gets any other variable only by naming it in env:.
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_OUTPUT = 64 * 1024
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEMA_KEYS = {"type", "properties", "required", "additionalProperties", "enum", "minimum",
                "maximum", "minLength", "maxLength", "pattern", "items", "description", "default",
                "title"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@dataclass(frozen=True)
class Result:
    """What the model is told about one tool call. ``status``: ok, error, timeout,
    invalid (arguments failed the schema: nothing ran)."""

    status: str
    text: str
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    kind: str
    input_schema: dict[str, Any]
    function: str | None = None
    entry_point: str | None = None
    argv: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    cwd: str | None = None
    env: tuple[str, ...] = ()
    max_output_bytes: int = DEFAULT_MAX_OUTPUT
    server: tuple[str, ...] = ()  # mcp: the server's argv
    remote: str | None = None  # mcp: the tool's name on the server
    checked: bool = True  # False: the schema is beyond the subset, so the server alone validates
    idempotent: bool = False  # True: running it twice is harmless, so an unknown effect is run again
    bound: Callable[[dict[str, Any]], Result] | None = field(default=None, compare=False)  # builtin

    def spec(self) -> dict[str, Any]:
        """The tool as data for a model request (models.ModelRequest.tools)."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class Toolbox:
    """The declared tools by name, and warnings about names listed in the older form."""

    tools: dict[str, Tool] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


_BOXES: dict[int, tuple[ToolsConfig, Toolbox]] = {}


def load(config: ToolsConfig, path: Path) -> Toolbox:
    """The tools tools.md declares; a malformed declaration is a ConfigError naming the
    tool's entry and field. Names in the older list form are a warning: nothing runs them."""
    hit = _BOXES.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    tools: dict[str, Tool] = {}
    for i, raw in enumerate(config.declared):
        tool = _parse(raw, path, f"tools[{i}]")
        if tool.name in tools:
            raise ConfigError(f"declares the tool {tool.name!r} twice", path=path, field=f"tools[{i}].name",
                              fix="give each tool its own name")
        tools[tool.name] = tool
    warnings = tuple(f"tools.md lists {name!r} without declaring it: it is not offered to the model "
                     "(declare it as a mapping with name, description, kind; spec/06)"
                     for name in config.tools if name not in tools)
    box = Toolbox(tools, warnings)
    _BOXES[id(config)] = (config, box)
    return box


def _parse(raw: dict[str, Any], path: Path, where: str) -> Tool:
    def bad(message: str, key: str, fix: str) -> ConfigError:
        return ConfigError(message, path=path, field=f"{where}.{key}", fix=fix)

    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}", unknown[0], f"use only {', '.join(sorted(_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name) or name == "atomic_capture":
        raise bad(f"{name!r} is not a tool name", "name",
                  "a letter then letters, digits, _ or - (64 at most; atomic_capture is the runtime's)")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise bad(f"kind {kind!r} is not one of {', '.join(KINDS)}", "kind",
                  "write kind: python, kind: command, kind: mcp or kind: builtin")
    if kind == "builtin":
        return _parse_builtin(raw, bad)
    idempotent = raw.get("idempotent", False)
    if not isinstance(idempotent, bool):
        raise bad(f"idempotent {idempotent!r} is not true or false", "idempotent",
                  "write idempotent: true only when running the tool twice is harmless")
    if kind == "mcp":  # the server describes its tools
        return replace(_parse_mcp(raw, bad), idempotent=idempotent)
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise bad("a tool needs a description (the model reads it to decide when to call it)",
                  "description", "write description: what the tool does, in one sentence")
    schema = raw.get("input_schema", {"type": "object", "properties": {}})
    problem = check_schema(schema)
    if problem:
        raise bad(f"the schema is not usable: {problem}", "input_schema",
                  "write a JSON Schema of type object within the subset spec/06 lists")
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise bad(f"timeout_s {timeout!r} is not a number of seconds from 0 to 3600", "timeout_s", "write e.g. timeout_s: 30")
    cap = raw.get("max_output_bytes", DEFAULT_MAX_OUTPUT)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 16 * 1024 * 1024:
        raise bad(f"max_output_bytes {cap!r} is not a whole number from 1 to 16777216",
                  "max_output_bytes", "write e.g. max_output_bytes: 65536")
    env = raw.get("env", [])
    if not isinstance(env, list) or not all(isinstance(x, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", x) for x in env):
        raise bad("env must be a list of variable names", "env", "write e.g. env: [MY_TOOL_HOME]")
    common = dict(name=name, description=description.strip(), kind=kind, input_schema=schema,
                  timeout_s=float(timeout), max_output_bytes=cap, env=tuple(env), idempotent=idempotent)
    if kind == "python":
        function, entry = raw.get("function"), raw.get("entry_point")
        if (function is None) == (entry is None):
            raise bad("a python tool names either function: module:function or entry_point: NAME",
                      "function", "write e.g. function: mypackage.tools:lookup")
        if function is not None and (not isinstance(function, str) or not re.match(r"^[\w.]+:[\w.]+\Z", function)):
            raise bad(f"{function!r} is not module:function", "function", "write e.g. function: mypackage.tools:lookup")
        if entry is not None and not isinstance(entry, str):
            raise bad(f"{entry!r} is not an entry point name", "entry_point", "write the name it is registered under")
        return Tool(**common, function=function, entry_point=entry)
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(x, str) for x in argv):
        raise bad("a command tool needs argv: a list of strings (no shell runs it)", "argv",
                  "write e.g. argv: [date, '+%Y-%m-%d']")
    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or ".." in re.split(r"[/\\]", cwd)):
        raise bad(f"cwd {cwd!r} is not a folder path", "cwd", "a folder inside the agent folder, or an absolute path")
    properties = schema.get("properties", {})
    for item in argv:
        for placeholder in _PLACEHOLDER.findall(item):
            if placeholder not in properties:
                raise bad(f"argv names {{{placeholder}}}, which the schema does not declare", "argv",
                          f"add {placeholder} under input_schema.properties")
    return Tool(**common, argv=tuple(argv), cwd=cwd)


def _parse_builtin(raw: dict[str, Any], bad: Callable[[str, str, str], ConfigError]) -> Tool:
    """A tool the runtime provides: only its name (and, if wanted, a description) is declared."""
    if raw["name"] not in BUILTINS:
        raise bad(f"there is no built-in tool {raw['name']!r}", "name", f"the built-in tools are: {', '.join(BUILTINS)}")
    extra = sorted(set(map(str, raw)) - {"name", "kind", "description"})
    if extra:
        raise bad(f"a built-in tool takes no {extra[0]}: the runtime defines it", extra[0], f"remove {extra[0]}:")
    default, schema = BUILTINS[raw["name"]]
    description = raw.get("description", default)
    if not isinstance(description, str) or not description.strip():
        raise bad("the description must be text", "description", "write description: when to delegate")
    return Tool(name=raw["name"], description=description.strip(), kind="builtin", input_schema=schema)


def _parse_mcp(raw: dict[str, Any], bad: Callable[[str, str, str], ConfigError]) -> Tool:
    server = raw.get("server")
    if not isinstance(server, list) or not server or not all(isinstance(x, str) for x in server):
        raise bad("an mcp tool needs server: the server's argv, a list of strings (no shell runs it)",
                  "server", "write e.g. server: [python, my_server.py]")
    for key in ("input_schema", "argv", "function", "entry_point"):
        if key in raw:
            raise bad(f"an mcp tool takes no {key}: the server describes the tool", key, f"remove {key}:")
    remote = raw.get("tool", raw["name"])
    if not isinstance(remote, str) or not remote:
        raise bad(f"{remote!r} is not a tool name", "tool", "write the tool's name as the server lists it")
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise bad(f"timeout_s {timeout!r} is not a number of seconds from 0 to 3600", "timeout_s", "write e.g. timeout_s: 30")
    env = raw.get("env", [])
    if not isinstance(env, list) or not all(isinstance(x, str) for x in env):
        raise bad("env must be a list of variable names", "env", "write e.g. env: [MY_TOOL_HOME]")
    description = raw.get("description")
    return Tool(name=raw["name"], description=description if isinstance(description, str) else "",
                kind="mcp", input_schema={}, server=tuple(server), remote=remote, timeout_s=float(timeout),
                cwd=raw.get("cwd"), env=tuple(env), max_output_bytes=raw.get("max_output_bytes", DEFAULT_MAX_OUTPUT))


def discover(box: Toolbox, agent_root: Path, warnings: list[str]) -> Toolbox:
    """The toolbox with each mcp tool's description and schema as its server lists them.
    A server that cannot be reached, or lacks the tool, leaves that tool out of the run
    with a warning: it is never offered with a guessed schema."""
    if not any(tool.kind == "mcp" for tool in box.tools.values()):
        return box

    listed: dict[tuple[str, ...], Any] = {}
    out: dict[str, Tool] = {}
    for name, tool in box.tools.items():
        if tool.kind != "mcp":
            out[name] = tool
            continue
        if tool.server not in listed:
            try:
                listed[tool.server] = _mcp(tool, agent_root, lambda session: session.list_tools())
            except Exception as exc:  # the SDK missing, the server failing to start or answer
                listed[tool.server] = exc
        found = listed[tool.server]
        if isinstance(found, Exception):
            warnings.append(f"tool {name!r} is not offered: its MCP server {' '.join(tool.server)!r} "
                            f"could not be reached ({_why(found)})")
            continue
        remote = next((t for t in found.tools if t.name == tool.remote), None)
        if remote is None:
            warnings.append(f"tool {name!r} is not offered: its MCP server lists no tool {tool.remote!r}")
            continue
        schema = getattr(remote, "input_schema", None) or getattr(remote, "inputSchema", None) or {"type": "object"}
        out[name] = replace(tool, input_schema=dict(schema), checked=check_schema(schema) is None,
                            description=tool.description or remote.description or name)
    return Toolbox(out, box.warnings)


def _why(exc: Exception) -> str:
    if isinstance(exc, ImportError):
        return "the mcp SDK is not installed: pip install 'atomic-vault[mcp]'"
    text = f"{type(exc).__name__}: {exc}"
    inner = getattr(exc, "exceptions", None)  # a task group's error wraps the real one
    if inner:
        text = f"{type(inner[0]).__name__}: {inner[0]}"
    return text[:300]


def _mcp(tool: Tool, agent_root: Path, act: Callable[[Any], Any]) -> Any:
    """Start the tool's server over stdio, initialise a session, ``act`` on it, stop it;
    all within the tool's timeout."""
    import asyncio

    from mcp import ClientSession, StdioServerParameters  # the [mcp] extra
    from mcp.client.stdio import stdio_client

    cwd = agent_root if tool.cwd is None else (Path(tool.cwd) if os.path.isabs(tool.cwd) else agent_root / tool.cwd)
    env = {name: os.environ[name] for name in (*BASE_ENV, *tool.env) if name in os.environ}
    params = StdioServerParameters(command=tool.server[0], args=list(tool.server[1:]), env=env, cwd=str(cwd))

    async def session() -> Any:
        with open(os.devnull, "w") as quiet:
            async with stdio_client(params, errlog=quiet) as (read, write):
                async with ClientSession(read, write) as client:
                    await client.initialize()
                    return await act(client)

    async def bounded() -> Any:
        return await asyncio.wait_for(session(), timeout=tool.timeout_s)

    return asyncio.run(bounded())


def _run_mcp(tool: Tool, arguments: dict[str, Any], agent_root: Path) -> Result:
    import asyncio

    try:
        answer = _mcp(tool, agent_root, lambda session: session.call_tool(tool.remote, arguments))
    except (asyncio.TimeoutError, TimeoutError):
        return Result("timeout", f"the MCP server gave no answer within {tool.timeout_s:g} s; it was stopped")
    parts = []
    for item in getattr(answer, "content", None) or []:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(getattr(item, "model_dump", lambda: str(item))(),
                                                                   default=str))
    out, cut = _capped("\n".join(parts).encode("utf-8"), tool.max_output_bytes)
    is_error = getattr(answer, "is_error", None)
    if is_error is None:
        is_error = getattr(answer, "isError", False)
    return Result("error" if is_error else "ok", out, cut)


def check_schema(schema: Any, where: str = "") -> str | None:
    """None when the validator below can check ``schema`` fully, else what it cannot:
    a keyword outside the subset would be ignored, so it is refused."""
    if not isinstance(schema, dict):
        return f"{where or 'the schema'} is not a mapping"
    if not where and schema.get("type") != "object":
        return "the top level must be type: object"
    unknown = sorted(set(map(str, schema)) - _SCHEMA_KEYS)
    if unknown:
        return f"keyword {unknown[0]!r} at {where or 'the top'} is not in the supported subset"
    types = schema.get("type")
    for name in (types if isinstance(types, list) else [types] if types is not None else []):
        if name not in (*_TYPES, "integer", "number"):
            return f"type {name!r} at {where or 'the top'} is unknown"
    for key, sub in (schema.get("properties") or {}).items():
        problem = check_schema(sub, f"{where}.{key}" if where else str(key))
        if problem:
            return problem
    if "items" in schema:
        return check_schema(schema["items"], f"{where}[]")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError):
            return f"pattern at {where or 'the top'} is not a regular expression"
    return None


def validate(schema: dict[str, Any], value: Any, where: str = "arguments") -> list[str]:
    """Every way ``value`` fails ``schema`` (the subset check_schema accepts), as text."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is(value, name) for name in names):
            return [f"{where} must be {' or '.join(names)}, not {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where} must be one of {schema['enum']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where} must have at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where} must match {schema['pattern']!r}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}.{key} is required")
        for key, item in value.items():
            if key in properties:
                errors += validate(properties[key], item, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}.{key} is not an argument of this tool")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(schema["items"], item, f"{where}[{i}]")
    return errors


def _is(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) or (None, why they cannot be used)."""
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        return None, f"the arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, "the arguments must be a JSON object"
    return value, None


def run(tool: Tool, arguments: dict[str, Any], agent_root: Path) -> Result:
    """Run ``tool`` with arguments already checked and allowed; never raises."""
    errors = validate(tool.input_schema, arguments) if tool.checked else []
    if errors:  # checked again here: a revised argument must fit the schema too
        return Result("invalid", "the arguments do not fit the tool's schema, nothing was run: " + "; ".join(errors))
    try:
        if tool.kind == "python":
            return _run_python(tool, arguments)
        if tool.kind == "mcp":
            return _run_mcp(tool, arguments, agent_root)
        if tool.kind == "builtin":
            if tool.bound is None:
                return Result("error", f"the built-in tool {tool.name} runs only inside an agent's run")
            return tool.bound(arguments)
        return _run_command(tool, arguments, agent_root)
    except Exception as exc:  # a tool's failure is the model's to read, never a crashed run
        return Result("error", f"the tool failed: {type(exc).__name__}: {exc}"[:2000])


def _capped(data: bytes, cap: int, more: int = 0) -> tuple[str, bool]:
    over = len(data) > cap or more > 0
    text = data[:cap].decode("utf-8", errors="replace")
    if over:
        text += f"\n[output cut at {cap} bytes; {len(data) + more - cap} more bytes were dropped]"
    return text, over


def _callable(tool: Tool) -> Callable[..., Any]:
    import importlib

    if tool.function:
        module, _, name = tool.function.partition(":")
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        return target
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == tool.entry_point]
    if not found:
        raise LookupError(f"no {ENTRY_POINT_GROUP} entry point {tool.entry_point!r} is installed")
    return found[0].load()


def _run_python(tool: Tool, arguments: dict[str, Any]) -> Result:
    value = _callable(tool)(**arguments)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    out, cut = _capped(text.encode("utf-8"), tool.max_output_bytes)
    return Result("ok", out, cut)


def argv_for(tool: Tool, arguments: dict[str, Any]) -> list[str]:
    """The argv with each placeholder replaced by its argument's text. Substitution is
    inside one argv item: whatever the value holds (``; rm -rf /``, ``$(...)``) stays one
    argument, because no shell ever reads it. An item that is only a placeholder for an
    argument not given is left out."""
    out = []
    for item in tool.argv:
        names = _PLACEHOLDER.findall(item)
        if item.startswith("{") and item.endswith("}") and len(names) == 1 and names[0] not in arguments \
                and _PLACEHOLDER.fullmatch(item):
            continue
        out.append(_PLACEHOLDER.sub(lambda m: _text(arguments.get(m.group(1), "")), item))
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _run_command(tool: Tool, arguments: dict[str, Any], agent_root: Path) -> Result:
    cwd = agent_root if tool.cwd is None else (Path(tool.cwd) if os.path.isabs(tool.cwd) else agent_root / tool.cwd)
    env = {name: os.environ[name] for name in (*BASE_ENV, *tool.env) if name in os.environ}
    argv = argv_for(tool, arguments)
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return Result("error", f"the command could not start: {exc.strerror or exc} ({argv[0]})")
    streams = [_Reader(process.stdout, tool.max_output_bytes), _Reader(process.stderr, tool.max_output_bytes)]
    try:
        code = process.wait(timeout=tool.timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        code = process.wait()
    for reader in streams:
        reader.join(timed_out)
    stdout, cut_out = _capped(streams[0].data, tool.max_output_bytes, streams[0].dropped)
    stderr, cut_err = _capped(streams[1].data, tool.max_output_bytes, streams[1].dropped)
    if timed_out:
        return Result("timeout", f"the command was stopped after {tool.timeout_s:g} s (no answer in time)"
                      + (f"; its output so far:\n{stdout}" if stdout else ""), cut_out)
    if code != 0:
        return Result("error", f"the command exited with status {code}" + (f"\nstderr:\n{stderr}" if stderr else "")
                      + (f"\nstdout:\n{stdout}" if stdout else ""), cut_out or cut_err)
    return Result("ok", stdout + (f"\nstderr:\n{stderr}" if stderr else ""), cut_out or cut_err)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the command and every process it started (its own session's group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()


class _Reader:
    """Reads a pipe to its end in a thread, keeping the first ``cap`` bytes and counting
    the rest, so that a tool printing 100 MB costs no memory and never blocks on a full pipe."""

    def __init__(self, pipe: Any, cap: int):
        self.pipe, self.cap, self.data, self.dropped = pipe, cap, b"", 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        kept = bytearray()
        try:
            while True:
                chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
                if not chunk:
                    break
                room = self.cap + 1 - len(kept)
                if room > 0:
                    kept += chunk[:room]
                    self.dropped += max(0, len(chunk) - room)
                else:
                    self.dropped += len(chunk)
        except (OSError, ValueError):
            pass
        self.data = bytes(kept)

    def join(self, timed_out: bool) -> None:
        # A grandchild that escaped the group may hold the pipe open: do not wait forever.
        self.thread.join(timeout=2.0 if timed_out else 10.0)
        if self.thread.is_alive():
            try:
                self.pipe.close()
            except OSError:
                pass
