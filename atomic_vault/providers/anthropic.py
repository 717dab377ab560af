"""Claude through Anthropic's Messages API: the assembly's cache marks become prompt-cache
breakpoints, and the request's tools (the capture tool among them) are offered as tools,
their calls coming back as ``tool_use`` blocks and their results sent as ``tool_result``."""

from __future__ import annotations

import json
from typing import Any

from .. import keys
from ..errors import ModelError
from ..models import ModelRequest, ModelResponse, ToolCall
from . import positive_seconds, require, sdk_error

PROVIDER = "anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"
_REFUSED = "the request was refused: check the model name and max_output_tokens in model.md"


class AnthropicModel:
    """A Claude model. ``base_url`` defaults to ``$ANTHROPIC_BASE_URL``, then the public API;
    ``api_key_env`` names another variable to read the key from."""

    def __init__(self, model_name: str, *, base_url: str | None = None, timeout_s: float = 600.0,
                 api_key_env: str | None = None):
        self.name = f"{PROVIDER}:{model_name}"
        self.model_name = model_name
        self.timeout_s = positive_seconds(timeout_s, PROVIDER)
        env = api_key_env or KEY_ENV
        self._key = keys.find_key(PROVIDER, (env,))
        self._sdk = require(PROVIDER, "anthropic", "anthropic", self._key, env)
        self.key_source = self._key.source  # for doctor: where the key came from, never the key
        # The runtime retries, not the SDK, so that every attempt is recorded.
        self._client = self._sdk.Anthropic(api_key=self._key.value, base_url=base_url,
                                           timeout=self.timeout_s, max_retries=0)

    def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            message = self._client.messages.create(max_tokens=request.max_output_tokens,
                                                   **self._prompt(request))
        except self._sdk.APIError as exc:
            raise self._error(exc) from None
        usage = message.usage
        return ModelResponse(
            text="".join(block.text for block in message.content if block.type == "text"),
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
            tool_calls=tuple(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False))
                             for block in message.content if block.type == "tool_use"),
            model=f"{PROVIDER}:{message.model or self.model_name}",
            cost_usd=None,
            extra={"stop_reason": message.stop_reason},
        )

    def count_tokens(self, request: ModelRequest) -> int:
        """Anthropic's own count of the request's input tokens (a free API call)."""
        try:
            return self._client.messages.count_tokens(**self._prompt(request)).input_tokens
        except self._sdk.APIError as exc:
            raise self._error(exc) from None

    def _prompt(self, request: ModelRequest) -> dict[str, Any]:
        prompt: dict[str, Any] = {"model": self.model_name, "messages": _messages(request.messages)}
        system = _system_blocks(request.system)
        if system:
            prompt["system"] = system
        if request.tools:
            prompt["tools"] = [{"name": t["name"], "description": t["description"],
                                "input_schema": t["input_schema"]} for t in request.tools]
        return prompt

    def _error(self, exc: Exception) -> ModelError:
        return sdk_error(self._sdk, exc, provider=PROVIDER, base_url=self._client.base_url,
                         timeout_s=self.timeout_s, key_source=self._key.source, refused=_REFUSED)


def _system_blocks(system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text blocks with a cache breakpoint where the assembly marked one. The API refuses
    blank blocks; a blank block's mark moves to the block before it, which ends the same
    cached prefix."""
    blocks: list[dict[str, Any]] = []
    for block in system:
        if block["text"].strip():
            blocks.append({"type": "text", "text": block["text"]})
        if block.get("cache_breakpoint") and blocks:
            blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return blocks


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's messages in the Messages API's shape: an assistant turn's tool calls
    become ``tool_use`` blocks, and the results that follow one user turn of ``tool_result``
    blocks (the API wants every result of a turn in the next user message)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"],
                     "content": message.get("content", "")}
            if message.get("is_error"):
                block["is_error"] = True
            if out and out[-1].get("_results"):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_results": True})
        elif message.get("tool_calls"):
            content: list[dict[str, Any]] = [{"type": "text", "text": message["content"]}] \
                if message.get("content") else []
            content += [{"type": "tool_use", "id": call["id"], "name": call["name"],
                         "input": _input(call["arguments"])} for call in message["tool_calls"]]
            out.append({"role": "assistant", "content": content})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    for message in out:
        message.pop("_results", None)
    return out


def _input(arguments: str) -> Any:
    """A call's arguments as sent back: the object the model wrote (an unparsable one as
    it was; the runtime told the model it was not valid)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"unparsed": arguments}
    return value if isinstance(value, dict) else {"value": value}
