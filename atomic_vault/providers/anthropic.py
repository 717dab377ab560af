"""Claude through Anthropic's Messages API: the assembly's cache marks become prompt-cache
breakpoints, and captures may arrive as calls of the ``atomic_capture`` tool."""

from __future__ import annotations

import json
from typing import Any

from .. import keys
from ..captures import TOOL_DESCRIPTION, TOOL_NAME, TOOL_SCHEMA
from ..errors import ModelError
from ..models import ModelRequest, ModelResponse
from . import positive_seconds, require, sdk_error

PROVIDER = "anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"
_REFUSED = "the request was refused: check the model name and max_output_tokens in model.md"
CAPTURE_TOOL = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_SCHEMA}


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
            tool_captures=tuple(json.dumps(block.input, ensure_ascii=False) for block in message.content
                                if block.type == "tool_use" and block.name == TOOL_NAME),
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
        prompt: dict[str, Any] = {"model": self.model_name, "messages": list(request.messages)}
        system = _system_blocks(request.system)
        if system:
            prompt["system"] = system
        if request.capture_tool:
            prompt["tools"] = [CAPTURE_TOOL]
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


