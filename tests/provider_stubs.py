"""Local HTTP servers that answer like the Anthropic and OpenAI APIs, so the real SDKs can
be exercised end to end without a network: a test queues the replies, the SDK talks HTTP
to the stub, and the test reads back exactly what was sent."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest


@dataclass
class Reply:
    """One scripted answer; ``delay_s`` holds it back so a client timeout can fire first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    """One request as the stub saw it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: Any


class StubServer:
    """A server on 127.0.0.1 with a free port, serving queued replies in order.

    Use it as a context manager (``with StubServer() as stub``) or through the ``stub``
    fixture. A request with nothing queued gets a 599 so that the test fails loudly.
    """

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def reply(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None,
              delay_s: float = 0.0) -> StubServer:
        self.replies.append(Reply(status, body, dict(headers or {}), delay_s))
        return self

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            if self.replies:
                return self.replies.pop(0)
        return Reply(599, {"error": {"message": "the stub had no reply queued", "type": "stub"}})

    def __enter__(self) -> StubServer:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a reply still sleeping for a timeout test must not hold up close


def _handler_for(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = stub._next(Received(self.path, headers, json.loads(raw) if raw else None))
            time.sleep(reply.delay_s)
            payload = json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: that is what a timeout test wants

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler


# --- Anthropic Messages API wire format -------------------------------------------------

def anthropic_message(text: str | None = "Hello.", *, tool_inputs: tuple[Any, ...] = (),
                      tool_name: str = "atomic_capture", model: str = "claude-haiku-4-5-20251001",
                      input_tokens: int = 100, output_tokens: int = 20,
                      cache_read: int | None = 0, cache_write: int | None = 0,
                      stop_reason: str = "end_turn") -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text is not None else []
    content += [{"type": "tool_use", "id": f"toolu_{i:02d}", "name": tool_name, "input": tool_input}
                for i, tool_input in enumerate(tool_inputs)]
    return {"id": "msg_stub", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if tool_inputs else stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": cache_read,
                      "cache_creation_input_tokens": cache_write}}


def anthropic_error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


# --- OpenAI Chat Completions wire format ------------------------------------------------

def openai_completion(content: str | None = "Hello.", *, tool_calls: tuple[tuple[str, str], ...] = (),
                      model: str = "gpt-4o-mini-2024-07-18", prompt_tokens: int | None = 100,
                      completion_tokens: int = 20, cached_tokens: int | None = 0,
                      finish_reason: str = "stop") -> dict[str, Any]:
    """A chat.completion; ``prompt_tokens=None`` leaves usage out, as some local servers do."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for i, (name, arguments) in enumerate(tool_calls)]
    body: dict[str, Any] = {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if tool_calls else finish_reason}]}
    if prompt_tokens is not None:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
        if cached_tokens is not None:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body


def openai_error(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
