"""The Model Protocol, the entry-point registry of providers, and the offline model.

A provider is any class registered in the ``atomic_vault.models`` entry-point group whose
instances, built as ``Provider(model_name)``, have a ``complete(request)`` method. The
built-in offline model is registered the same way as any third-party provider.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from .errors import ModelError
from .notes import slugify

ENTRY_POINT_GROUP = "atomic_vault.models"


@dataclass(frozen=True)
class ToolCall:
    """One tool call a model asked for: the provider's id for it, the tool's name, and
    the arguments as the raw JSON text the model wrote (validated by the runtime)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelRequest:
    """What a provider gets: system text blocks (in order, each with ``text``, ``layer``,
    ``source`` and ``cache_breakpoint``), the chat messages, and the output limit.

    ``tools`` are plain data, each ``{"name", "description", "input_schema"}`` (the capture
    tool among them); a provider that supports tools translates them to its wire format.
    Besides ``user`` / ``assistant`` text, ``messages`` of a tool loop hold an assistant
    turn with ``tool_calls`` (``[{"id", "name", "arguments"}]``, arguments as JSON text) and
    one ``{"role": "tool", "tool_call_id", "name", "content", "is_error"}`` per result."""

    model: str
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    max_output_tokens: int
    agent: str = ""
    tools: tuple[dict[str, Any], ...] = ()

    @property
    def system_text(self) -> str:
        return "\n\n".join(block["text"] for block in self.system)


@dataclass(frozen=True)
class ModelResponse:
    """What a provider returns. ``input_tokens`` counts uncached input only; tokens read
    from or written to a prompt cache are counted apart. ``tool_captures`` holds the raw
    JSON of captures a custom model hands over directly, validated like a fenced block
    (providers return every tool call, the capture tool's too, in ``tool_calls``). The runtime
    prices the tokens (pricing.py); ``cost_usd`` is used only for a model the price table
    does not know (None: unknown). A model that cannot count may leave the token counts
    out: the runtime then estimates them and records ``tokens_estimated``."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    model: str = ""
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_captures: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_estimated: bool = False
    tool_calls: tuple[ToolCall, ...] = ()  # every tool call, the capture tool's included


@runtime_checkable
class Model(Protocol):
    """Anything that can answer a request: providers, test doubles, a script's own object.

    Failures raise ``ModelError``; ``retryable=True`` marks a transient one (rate limit,
    timeout, 5xx) that the runtime retries with backoff. A provider may also offer
    ``count_tokens(request) -> int``, its own count of the request's input tokens, which
    the cost guardrails then use instead of the estimate."""

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...


_PROVIDERS: dict[str, Any] | None = None


def providers() -> dict[str, Any]:
    """Registered provider entry points by name (from the one scan of backends.entry_points_of)."""
    global _PROVIDERS
    if _PROVIDERS is None:
        from .backends import entry_points_of
        _PROVIDERS = entry_points_of(ENTRY_POINT_GROUP)
    return _PROVIDERS


class UnavailableModel:
    """Stands in for a model that cannot be built here (no key, no SDK, no provider), so
    that the run fails on the record instead of being answered by another model: calling
    it raises the build error, which is not retryable."""

    def __init__(self, name: str, error: ModelError):
        self.name, self.error = name, error

    def complete(self, request: ModelRequest) -> ModelResponse:
        raise self.error


# Bare model names of well-known families, as vaults of the older convention write them.
_FAMILIES = ((re.compile(r"claude-"), "anthropic"), (re.compile(r"(gpt-|chatgpt-|o[1-9]\d*(-|\Z))"), "openai"),
             (re.compile(r"(kimi-|moonshot-)"), "moonshot"))


def qualify(spec: str) -> str:
    """``provider:model`` for a bare name of a well-known family (``claude-opus-4-8`` is
    ``anthropic:claude-opus-4-8``); any other name is returned as it is."""
    if ":" in spec:
        return spec
    for family, provider in _FAMILIES:
        if family.match(spec) and spec not in providers():
            return f"{provider}:{spec}"
    return spec


def load_model(spec: str, options: dict[str, Any] | None = None) -> Model:
    """Build the model named ``provider:model`` (or a bare provider name such as
    ``offline``, or a bare model name of a well-known family, see ``qualify``).
    ``options`` are the provider's settings from model.md's ``providers:`` block (e.g.
    ``base_url``, ``timeout_s``), passed as keyword arguments."""
    spec = qualify(spec)
    provider, _, model = spec.partition(":")
    known = providers()
    if provider not in known:
        names = ", ".join(sorted(known)) or "none (is atomic-vault installed? pip install -e .)"
        raise ModelError(f"no provider {provider!r} for model {spec!r}", field="model",
                         fix=f"use provider:model with a known provider: {names}")
    try:
        factory = known[provider].load()
    except ImportError as exc:
        raise ModelError(f"provider {provider!r} cannot be loaded ({exc})", field="model",
                         fix=f"pip install 'atomic-vault[{provider}]'") from None
    try:
        return factory(model or provider, **(options or {}))
    except TypeError as exc:
        raise ModelError(f"provider {provider!r} does not take these settings ({exc})",
                         field=f"providers.{provider}", fix="check the keys under providers: in model.md") from None
    except ModelError:
        raise
    except Exception as exc:  # a broken third-party plug-in must not look like our bug
        raise ModelError(f"provider {provider!r} failed to start: {exc}", field="model",
                         fix="check the provider's installation and settings") from exc


def estimate_tokens(text: str) -> int:
    """The documented estimate used when a provider gives no count: 1 token per 4 characters."""
    return (len(text) + 3) // 4


def with_usage(response: ModelResponse, request: ModelRequest) -> ModelResponse:
    """``response`` with the estimate filled in for any token count the model left out."""
    if response.input_tokens is not None and response.output_tokens is not None:
        return response
    sent = request.system_text + "".join(str(m.get("content", "")) for m in request.messages)
    return replace(response, tokens_estimated=True,
                   input_tokens=estimate_tokens(sent) if response.input_tokens is None else response.input_tokens,
                   output_tokens=(estimate_tokens(response.text + "".join(response.tool_captures))
                                  if response.output_tokens is None else response.output_tokens))


# Tokens a chat format may add around each part of a request (role markers, separators),
# and once for the tool-use instructions a provider adds when a tool is offered
# (Anthropic documents a few hundred). Spec/12 "Token counts" rests the ceiling on them.
PART_OVERHEAD = 16
TOOL_OVERHEAD = 1024


def token_ceiling(request: ModelRequest, tool_schema: str = "") -> int:
    """An upper bound of the input tokens a byte-level BPE tokenizer can bill for
    ``request``: each such token stands for at least one UTF-8 byte, so the bytes of every
    system block, message (tool calls and results included) and offered tool schema, plus
    the overheads above, bound the count from above whatever the text (code, CJK, emoji)."""
    parts = [block["text"] for block in request.system]
    parts += [str(message.get("content", "")) for message in request.messages]
    parts += [json.dumps(message["tool_calls"], ensure_ascii=False)
              for message in request.messages if message.get("tool_calls")]
    schemas = len(tool_schema.encode("utf-8")) + (
        len(json.dumps(list(request.tools), ensure_ascii=False).encode("utf-8")) if request.tools else 0)
    tools = TOOL_OVERHEAD + schemas if schemas else 0
    return sum(len(part.encode("utf-8")) for part in parts) + PART_OVERHEAD * (len(parts) + 1) + tools


# [^\S\n]: spaces within the line only, so that one line's text never runs into the next.
_REMEMBER = re.compile(r"^[^\S\n]*remember:[^\S\n]*(?P<text>\S.*)$", re.IGNORECASE | re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CANDIDATES = re.compile(r"^```atomic_consolidation_candidates\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
_TYPED = re.compile(r"^(user|feedback|project|decision|reference):\s*(.+)$", re.IGNORECASE)
_TOOL = re.compile(r"^[^\S\n]*tool:[^\S\n]*(?P<name>[A-Za-z0-9_.-]+)[^\S\n]*(?P<args>\{.*\})?[^\S\n]*$",
                   re.IGNORECASE | re.MULTILINE)


class OfflineModel:
    """A deterministic model that needs no key and no network.

    It summarises the work item and what the prompt held, and turns each line
    ``remember: <text>`` (optionally ``remember: <type>: <text>``) into a capture marker,
    so the whole loop — captures, INDEX, journal, log — runs on a fresh machine.
    """

    def __init__(self, model: str = "offline", **options: Any):
        # ``offline:NAME`` answers as that name, so a price table can tell two apart (a
        # helper model priced below the main one, bench/bench_helpers.py).
        self.name = "offline" if model in ("", "offline") else f"offline:{model}"

    def complete(self, request: ModelRequest) -> ModelResponse:
        work = next((str(m.get("content", "")) for m in reversed(request.messages) if m.get("role") == "user"), "")
        results = [m for m in request.messages if m.get("role") == "tool"]
        lines = list(_TOOL.finditer(work))
        offered = {tool.get("name") for tool in request.tools}
        if lines and not results:  # first step: ask for every offered tool its line names
            calls = tuple(ToolCall(f"offline_{i}", m.group("name"), m.group("args") or "{}")
                          for i, m in enumerate(lines, 1) if m.group("name") in offered)
            if calls:
                return ModelResponse(text="", input_tokens=estimate_tokens(request.system_text + work),
                                     output_tokens=sum(estimate_tokens(c.arguments) for c in calls),
                                     cost_usd=0.0, model=self.name, tool_calls=calls)
        proposal = self._consolidation(work)
        if proposal is not None:
            return ModelResponse(text=proposal, input_tokens=estimate_tokens(request.system_text + work),
                                 output_tokens=estimate_tokens(proposal), cost_usd=0.0, model=self.name)
        words = work.split()
        first = " ".join(words[:24]) + (" …" if len(words) > 24 else "")
        layers = [block["layer"] for block in request.system if "layer" in block]
        notes = sum(1 for name in layers if name in ("pinned note", "relevant note", "recent note",
                                                     "project pinned note"))
        parts = [
            f"Offline answer for {request.agent or 'this agent'}.",
            f"Work item ({len(words)} words): {first}",
            f"Context: {len(layers)} prompt layers, {notes} notes in full, "
            f"{sum(1 for name in layers if name == 'journal')} journal days.",
        ]
        earlier = [m for m in request.messages if m.get("role") == "assistant" and not m.get("tool_calls")]
        if earlier:  # a conversation's earlier turns came before the work item
            asked = [str(m.get("content", "")) for m in request.messages if m.get("role") == "user"]
            last = " ".join(asked[-2].split()[:12]) if len(asked) > 1 else ""
            parts.append(f"Conversation: {len(earlier)} earlier turns; the last one asked: {last}")
        for match in _REMEMBER.finditer(work):  # every remember: line, in order
            remembered = " ".join(_CONTROL.sub(" ", match.group("text")).split())
            typed = _TYPED.match(remembered)
            topic = typed.group(2) if typed else remembered
            if slugify(" ".join(topic.split()[:8])[:80]):
                parts.append(self._capture(remembered))
            else:
                parts.append("Nothing to remember: the remember: line has no letters or digits.")
        for m in lines:
            if m.group("name") not in offered:
                parts.append(f"Tool {m.group('name')} is not offered to this agent.")
        for result in results:
            answer = " ".join(str(result.get("content", "")).split())
            parts.append(f"Tool {result.get('name')} answered: {answer[:500]}")
        text = "\n\n".join(parts) + "\n"
        said = "".join(str(m.get("content", "")) for m in request.messages if m.get("role") != "tool")
        return ModelResponse(text=text,
                             input_tokens=estimate_tokens(request.system_text + said),
                             output_tokens=estimate_tokens(text), cost_usd=0.0, model=self.name)

    @staticmethod
    def _consolidation(work: str) -> str | None:
        """For `consolidate` (spec/17): merge each group of exact duplicates into its first
        note's wording (the newest seen); retire and distil nothing. None: not asked."""
        found = _CANDIDATES.search(work)
        if found is None:
            return None
        try:
            shown = json.loads(found.group(1))
            merges = [{"files": [note["file"] for note in group["notes"]],
                       **{key: group["notes"][0][key] for key in ("type", "name", "description", "confidence", "body")},
                       "reason": "exact duplicates: the same type and body"}
                      for group in shown.get("duplicates", []) if group.get("exact")]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "The consolidation candidates could not be read; nothing is proposed."
        answer = {"merges": merges, "retire": [], "distil": []}
        return "```atomic_consolidation\n" + json.dumps(answer, ensure_ascii=False, indent=2) + "\n```\n"

    @staticmethod
    def _capture(text: str) -> str:
        note_type = "reference"
        typed = _TYPED.match(text)
        if typed:
            note_type, text = typed.group(1).lower(), typed.group(2).strip()
        name = " ".join(text.split()[:8])[:80]
        capture = {
            "type": note_type, "name": name, "description": text[:200],
            "confidence": "medium", "sources": ["work item"], "body": text,
        }
        return "```atomic_capture\n" + json.dumps(capture, ensure_ascii=False, indent=2) + "\n```"
