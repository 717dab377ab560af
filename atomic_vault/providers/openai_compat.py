"""OpenAI's Chat Completions API, and the servers that speak it (Ollama, vLLM, llama.cpp,
Moonshot): one class, and a preset per server for its address, key and dialect."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import keys
from ..errors import ModelError
from ..models import ModelRequest, ModelResponse, ToolCall, estimate_tokens
from . import positive_seconds, require, sdk_error


@dataclass(frozen=True)
class Preset:
    """How to reach one kind of server. ``base_url`` None leaves it to the SDK
    (``$OPENAI_BASE_URL``, else api.openai.com)."""

    provider: str
    base_url: str | None
    key_env: str | None
    key_required: bool
    # OpenAI's reasoning models refuse the old max_tokens; local servers only know it.
    limit_param: str = "max_tokens"
    # A local server rejects tools unless started with them enabled (vLLM, llama.cpp) or
    # the model supports them (Ollama); fenced capture blocks work everywhere.
    tools: bool = False


PRESETS = {preset.provider: preset for preset in (
    Preset("openai", None, "OPENAI_API_KEY", True, "max_completion_tokens", tools=True),
    Preset("ollama", "http://127.0.0.1:11434/v1", None, False),
    Preset("vllm", "http://127.0.0.1:8000/v1", "VLLM_API_KEY", False),
    Preset("llamacpp", "http://127.0.0.1:8080/v1", None, False),
    Preset("moonshot", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY", True, tools=True),
)}


class OpenAIModel:
    """A chat model behind an OpenAI-compatible server. ``provider`` picks the preset;
    ``tools`` overrides whether the request's tools are offered (as functions)."""

    def __init__(self, model_name: str, *, base_url: str | None = None, timeout_s: float = 600.0,
                 api_key_env: str | None = None, tools: bool | None = None, provider: str = "openai"):
        if provider not in PRESETS:
            raise ModelError(f"no OpenAI-compatible preset {provider!r}", field="model",
                             fix=f"use one of {', '.join(PRESETS)}")
        self.preset = PRESETS[provider]
        self.name = f"{provider}:{model_name}"
        self.model_name = model_name
        self.timeout_s = positive_seconds(timeout_s, provider)
        self.tools = self.preset.tools if tools is None else bool(tools)
        env = api_key_env or self.preset.key_env
        self._key = self._find_key(env)
        self._sdk = require(provider, "openai", provider, self._key if self.preset.key_required else None, env)
        self.key_source = self._key.source  # for doctor: where the key came from, never the key
        self._client = self._sdk.OpenAI(
            # A placeholder, because without a key the SDK would send $OPENAI_API_KEY to
            # whatever server this is.
            api_key=self._key.value or "no-key",
            base_url=base_url or self.preset.base_url, timeout=self.timeout_s,
            max_retries=0)  # the runtime retries, so that every attempt is recorded

    def _find_key(self, env: str | None) -> keys.Key:
        if not env and not self.preset.key_required:
            return keys.Key(None, "not needed")  # so a keys file problem cannot stop a local model
        return keys.find_key(self.preset.provider, (env,) if env else ())

    def complete(self, request: ModelRequest) -> ModelResponse:
        system = [{"role": "system", "content": request.system_text}] if request.system_text else []
        params: dict[str, Any] = {"model": self.model_name, "messages": system + _messages(request.messages),
                                  self.preset.limit_param: request.max_output_tokens}
        if request.tools and self.tools:
            params["tools"] = [{"type": "function", "function": {
                "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
                for t in request.tools]
        try:
            completion = self._client.chat.completions.create(**params)
        except self._sdk.APIError as exc:
            raise self._error(exc, offered_tools="tools" in params) from None
        if not completion.choices:
            raise ModelError(f"{self.preset.provider}: the server sent no answer (no choices)",
                             field="model", retryable=True, fix="retry; check the server's logs")
        choice = completion.choices[0]
        text = choice.message.content or ""
        tool_calls = tuple(ToolCall(call.id or f"call_{i}", call.function.name, _arguments(call.function))
                           for i, call in enumerate(choice.message.tool_calls or ())
                           if getattr(call, "function", None))
        extra: dict[str, Any] = {"finish_reason": choice.finish_reason}
        input_tokens, output_tokens, cached = _tokens(completion.usage)
        if input_tokens is None:  # some local servers send no usage
            extra["usage_estimated"] = True
            sent = request.system_text + "".join(str(m.get("content", "")) for m in request.messages)
            input_tokens = estimate_tokens(sent)
            output_tokens = estimate_tokens(text + "".join(c.arguments for c in tool_calls))
        return ModelResponse(text=text, input_tokens=input_tokens, output_tokens=output_tokens,
                             cache_read_tokens=cached, tool_calls=tool_calls, cost_usd=None,
                             model=f"{self.preset.provider}:{completion.model or self.model_name}",
                             extra=extra, tokens_estimated="usage_estimated" in extra)

    def _error(self, exc: Exception, offered_tools: bool) -> ModelError:
        return sdk_error(self._sdk, exc, provider=self.preset.provider, base_url=self._client.base_url,
                         timeout_s=self.timeout_s, key_source=self._key.source,
                         refused=self._refused(offered_tools))

    def _refused(self, offered_tools: bool) -> str:
        if offered_tools:
            return (f"check the model name and max_output_tokens; if the server does not take tools, "
                    f"set tools: false under providers: {self.preset.provider}: in model.md")
        return "the request was refused: check the model name and max_output_tokens in model.md"


def ollama(model_name: str, **options: Any) -> OpenAIModel:
    return OpenAIModel(model_name, provider="ollama", **options)


def vllm(model_name: str, **options: Any) -> OpenAIModel:
    return OpenAIModel(model_name, provider="vllm", **options)


def llamacpp(model_name: str, **options: Any) -> OpenAIModel:
    return OpenAIModel(model_name, provider="llamacpp", **options)


def moonshot(model_name: str, **options: Any) -> OpenAIModel:
    return OpenAIModel(model_name, provider="moonshot", **options)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's messages as Chat Completions wants them: tool calls as functions of
    the assistant turn, each result a ``tool`` message naming its call."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "tool":
            out.append({"role": "tool", "tool_call_id": message["tool_call_id"],
                        "content": message.get("content", "")})
        elif message.get("tool_calls"):
            out.append({"role": "assistant", "content": message.get("content") or None, "tool_calls": [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}}
                for call in message["tool_calls"]]})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out


def _arguments(function: Any) -> str:
    """The call's arguments verbatim, even when they are not valid JSON: the capture
    validation then rejects them with a reason instead of losing them silently."""
    arguments = function.arguments
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _tokens(usage: Any) -> tuple[int | None, int, int]:
    """(uncached input, output, cached input); input None when the server counted nothing."""
    if usage is None or usage.prompt_tokens is None:
        return None, 0, 0
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    if cached is None:  # Moonshot reports it beside prompt_tokens
        cached = getattr(usage, "cached_tokens", None)
    cached = cached if isinstance(cached, int) else 0
    return max(usage.prompt_tokens - cached, 0), usage.completion_tokens or 0, cached


