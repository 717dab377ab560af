"""The Anthropic and OpenAI-compatible providers, each talking real HTTP to a local stub."""

import json
import os
import socket
import subprocess
import sys

import pytest

from atomic_vault import captures, toolloop
from atomic_vault.captures import TOOL_DESCRIPTION, TOOL_NAME, TOOL_SCHEMA
from atomic_vault.errors import ConfigError, ModelError
from atomic_vault.models import ModelRequest, estimate_tokens, load_model
from atomic_vault.providers.anthropic import AnthropicModel
from atomic_vault.providers.openai_compat import OpenAIModel, llamacpp, moonshot, ollama, vllm
from provider_stubs import (anthropic_error, anthropic_message, openai_completion,
                            openai_error)

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
OPENAI_KEY = "sk-proj-test-0123456789abcdef"
SYSTEM = [
    {"layer": "identity", "source": "persona.md", "text": "I am Atlas.", "cache_breakpoint": True},
    {"layer": "pinned note", "source": "memory/a.md", "text": "Pinned A.", "cache_breakpoint": False},
    {"layer": "pinned note", "source": "memory/b.md", "text": "Pinned B.", "cache_breakpoint": True},
    {"layer": "journal", "source": "journal/today.md", "text": "Today.", "cache_breakpoint": False},
]
VALID_CAPTURE = {"type": "project", "name": "Launch date", "description": "when we launch",
                 "confidence": "high", "sources": ["work item"], "body": "We launch in May."}


@pytest.fixture(autouse=True)
def no_real_keys(monkeypatch, tmp_path):
    """No key or address from the developer's machine may reach a test."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_")) or name in ("MOONSHOT_API_KEY", "VLLM_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMIC_VAULT_KEYS_FILE", str(tmp_path / "keys.json"))


def request(capture_tool=True):
    return ModelRequest(model="test", system=SYSTEM, agent="atlas", tools=(captures.TOOL,) if capture_tool else (),
                        messages=[{"role": "user", "content": "What did we decide?"}],
                        max_output_tokens=300)


def keys_file(tmp_path, mode, **entries):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    path.chmod(mode)
    return path


def claude(stub, **options):
    return AnthropicModel("claude-haiku-4-5", base_url=stub.url, timeout_s=options.pop("timeout_s", 5),
                          **options)


def sent_api_key(received):
    """The key as the SDK sent it: this SDK version uses a bearer token, older ones x-api-key."""
    scheme, _, token = received.headers.get("authorization", "").partition(" ")
    return received.headers.get("x-api-key") or (token if scheme == "Bearer" else None)


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- Anthropic ---------------------------------------------------------------------------

def test_anthropic_maps_text_and_tokens_including_the_cache(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message("Hello.", input_tokens=120, output_tokens=15,
                                      cache_read=900, cache_write=300))
    response = claude(stub).complete(request())
    assert response.text == "Hello."
    assert (response.input_tokens, response.output_tokens) == (120, 15)
    assert (response.cache_read_tokens, response.cache_write_tokens) == (900, 300)
    assert response.model == "anthropic:claude-haiku-4-5-20251001"
    assert response.cost_usd is None and response.tool_captures == ()
    assert response.extra["stop_reason"] == "end_turn"


def test_anthropic_counts_absent_cache_usage_as_zero(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message(cache_read=None, cache_write=None))
    response = claude(stub).complete(request())
    assert (response.cache_read_tokens, response.cache_write_tokens) == (0, 0)


def test_anthropic_sends_cache_marks_only_on_marked_blocks_the_tool_and_the_key(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message())
    claude(stub).complete(request())
    [sent] = stub.requests  # one attempt only: the SDK does not retry on its own
    assert sent.path == "/v1/messages"
    assert sent.body["system"] == [
        {"type": "text", "text": "I am Atlas.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Pinned A."},
        {"type": "text", "text": "Pinned B.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Today."},
    ]
    assert sent.body["messages"] == [{"role": "user", "content": "What did we decide?"}]
    assert sent.body["model"] == "claude-haiku-4-5" and sent.body["max_tokens"] == 300
    assert sent.body["tools"] == [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION,
                                   "input_schema": TOOL_SCHEMA}]
    assert sent_api_key(sent) == ANTHROPIC_KEY
    assert "anthropic-version" in sent.headers


def test_anthropic_offers_no_tool_when_the_request_says_so(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message())
    claude(stub).complete(request(capture_tool=False))
    assert "tools" not in stub.requests[0].body


def test_anthropic_base_url_comes_from_the_environment(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
    stub.reply(body=anthropic_message("via env"))
    assert AnthropicModel("claude-haiku-4-5", timeout_s=5).complete(request()).text == "via env"


def test_anthropic_capture_tool_calls_become_tool_captures(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message("Saving that.", tool_inputs=(VALID_CAPTURE, {"name": "x"})))
    stub.reply(body=anthropic_message("", tool_inputs=({"q": 1},), tool_name="web_search"))
    model = claude(stub)
    response = toolloop._split(model.complete(request()))  # the runtime moves capture calls to captures
    assert response.text == "Saving that." and response.extra["stop_reason"] == "tool_use"
    assert [json.loads(raw) for raw in response.tool_captures] == [VALID_CAPTURE, {"name": "x"}]
    found, rejected = captures.extract(response.text, response.tool_captures)
    assert [c.name for c in found] == ["Launch date"] and len(rejected) == 1
    other = toolloop._split(model.complete(request()))
    assert other.tool_captures == () and other.tool_calls[0].name == "web_search"  # not a capture


@pytest.mark.parametrize("status, error_type, headers, retryable, retry_after", [
    (429, "rate_limit_error", {"retry-after": "7"}, True, 7.0),
    (429, "rate_limit_error", {"retry-after-ms": "1500"}, True, 1.5),
    (529, "overloaded_error", {}, True, None),
    (500, "api_error", {}, True, None),
    (400, "invalid_request_error", {}, False, None),
    (401, "authentication_error", {}, False, None),
])
def test_anthropic_errors_say_whether_to_retry(stub, monkeypatch, status, error_type, headers,
                                               retryable, retry_after):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(status, anthropic_error(error_type, "something went wrong"), headers)
    with pytest.raises(ModelError) as caught:
        claude(stub).complete(request())
    error = caught.value
    assert (error.retryable, error.retry_after, error.status) == (retryable, retry_after, status)
    assert error.message == f"anthropic: HTTP {status} {error_type}: something went wrong"
    assert error.fix and len(stub.requests) == 1
    if status == 401:
        assert "ANTHROPIC_API_KEY" in error.fix


def test_anthropic_timeout_is_retryable(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message(), delay_s=1.0)
    with pytest.raises(ModelError) as caught:
        claude(stub, timeout_s=0.2).complete(request())
    assert caught.value.retryable and "0.2 s" in caught.value.message
    assert "timeout_s" in caught.value.fix


def test_anthropic_unreachable_server_is_retryable(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    model = AnthropicModel("claude-haiku-4-5", base_url=closed_port_url(), timeout_s=2)
    with pytest.raises(ModelError) as caught:
        model.complete(request())
    assert caught.value.retryable and "cannot reach" in caught.value.message
    assert "base_url" in caught.value.fix


def test_anthropic_counts_tokens_with_the_same_prompt(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body={"input_tokens": 1234})
    assert claude(stub).count_tokens(request()) == 1234
    [sent] = stub.requests
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.body["tools"][0]["name"] == TOOL_NAME and "max_tokens" not in sent.body


def test_anthropic_count_tokens_errors_are_translated(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "3"})
    with pytest.raises(ModelError) as caught:
        claude(stub).count_tokens(request())
    assert caught.value.retryable and caught.value.retry_after == 3.0


# --- keys --------------------------------------------------------------------------------

def test_a_key_from_a_private_keys_file_is_used(stub, tmp_path):
    keys_file(tmp_path, 0o600, anthropic=ANTHROPIC_KEY)
    stub.reply(body=anthropic_message())
    claude(stub).complete(request())
    assert sent_api_key(stub.requests[0]) == ANTHROPIC_KEY


def test_the_environment_wins_over_the_keys_file(stub, tmp_path, monkeypatch):
    keys_file(tmp_path, 0o600, anthropic="sk-ant-from-the-file-000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message())
    claude(stub).complete(request())
    assert sent_api_key(stub.requests[0]) == ANTHROPIC_KEY


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_keys_file_others_can_read_is_refused(stub, tmp_path):
    keys_file(tmp_path, 0o644, anthropic=ANTHROPIC_KEY)
    with pytest.raises(ConfigError) as caught:
        claude(stub)
    assert "chmod 600" in caught.value.fix and ANTHROPIC_KEY not in str(caught.value)


@pytest.mark.parametrize("make, env", [
    (lambda: AnthropicModel("claude-haiku-4-5"), "ANTHROPIC_API_KEY"),
    (lambda: OpenAIModel("gpt-4o-mini"), "OPENAI_API_KEY"),
    (lambda: moonshot("kimi-k2"), "MOONSHOT_API_KEY"),
])
def test_a_missing_required_key_fails_at_construction(tmp_path, make, env):
    with pytest.raises(ModelError) as caught:
        make()
    assert env in caught.value.fix and str(tmp_path / "keys.json") in caught.value.fix


def test_api_key_env_names_another_variable(stub, monkeypatch):
    monkeypatch.setenv("WORK_CLAUDE_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message())
    claude(stub, api_key_env="WORK_CLAUDE_KEY").complete(request())
    assert sent_api_key(stub.requests[0]) == ANTHROPIC_KEY


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_ollama_needs_no_key_and_never_sends_the_openai_one(stub, tmp_path, monkeypatch):
    keys_file(tmp_path, 0o644, openai=OPENAI_KEY)  # not even read: a local model needs no key
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    stub.reply(body=openai_completion("local"))
    assert ollama("llama3", base_url=stub.url + "/v1").complete(request()).text == "local"
    assert OPENAI_KEY not in stub.requests[0].headers.get("authorization", "")


def test_vllm_sends_its_optional_key_when_set(stub, monkeypatch):
    stub.reply(body=openai_completion()).reply(body=openai_completion())
    vllm("qwen", base_url=stub.url + "/v1").complete(request())
    monkeypatch.setenv("VLLM_API_KEY", "vllm-secret-123456")
    vllm("qwen", base_url=stub.url + "/v1").complete(request())
    assert "vllm-secret" not in stub.requests[0].headers["authorization"]
    assert stub.requests[1].headers["authorization"] == "Bearer vllm-secret-123456"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_key_never_appears_in_an_error(stub, monkeypatch, provider):
    if provider == "anthropic":
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        key, model = ANTHROPIC_KEY, claude(stub)
        stub.reply(401, anthropic_error("authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}"))
    else:
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        key, model = OPENAI_KEY, OpenAIModel("gpt-4o-mini", base_url=stub.url + "/v1", timeout_s=5)
        stub.reply(401, openai_error(f"Incorrect API key provided: {OPENAI_KEY}", "invalid_request_error",
                                     "invalid_api_key"))
    with pytest.raises(ModelError) as caught:
        model.complete(request())
    error = caught.value
    assert "HTTP 401" in error.message and "***" in error.message
    assert all(key not in text for text in (str(error), repr(error), error.fix))


# --- OpenAI-compatible -------------------------------------------------------------------

def gpt(stub, **options):
    return OpenAIModel("gpt-4o-mini", base_url=stub.url + "/v1", timeout_s=5, **options)


def test_openai_maps_text_and_tokens_with_cached_input_apart(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    stub.reply(body=openai_completion("Hi.", prompt_tokens=1000, completion_tokens=50, cached_tokens=800))
    response = gpt(stub).complete(request())
    assert response.text == "Hi."
    assert (response.input_tokens, response.cache_read_tokens, response.output_tokens) == (200, 800, 50)
    assert response.cache_write_tokens == 0 and response.cost_usd is None
    assert response.model == "openai:gpt-4o-mini-2024-07-18"
    assert "usage_estimated" not in response.extra


def test_openai_sends_one_system_message_the_tool_and_the_key(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    stub.reply(body=openai_completion())
    gpt(stub).complete(request())
    [sent] = stub.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [
        {"role": "system", "content": "I am Atlas.\n\nPinned A.\n\nPinned B.\n\nToday."},
        {"role": "user", "content": "What did we decide?"}]
    assert sent.body["max_completion_tokens"] == 300 and "max_tokens" not in sent.body
    assert sent.body["tools"] == [{"type": "function", "function": {
        "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_SCHEMA}}]
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openai_base_url_comes_from_the_environment(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.url + "/v1")
    stub.reply(body=openai_completion("via env"))
    assert OpenAIModel("gpt-4o-mini", timeout_s=5).complete(request()).text == "via env"


def test_openai_offers_no_tool_when_the_request_or_the_settings_say_so(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    stub.reply(body=openai_completion()).reply(body=openai_completion())
    gpt(stub).complete(request(capture_tool=False))
    gpt(stub, tools=False).complete(request())
    assert ["tools" in sent.body for sent in stub.requests] == [False, False]


def test_local_servers_take_max_tokens_and_tools_only_when_enabled(stub):
    stub.reply(body=openai_completion()).reply(body=openai_completion())
    llamacpp("qwen", base_url=stub.url + "/v1").complete(request())
    ollama("llama3.1", base_url=stub.url + "/v1", tools=True).complete(request())
    first, second = stub.requests
    assert first.body["max_tokens"] == 300 and "max_completion_tokens" not in first.body
    assert "tools" not in first.body and second.body["tools"][0]["function"]["name"] == TOOL_NAME


def test_tool_calls_are_kept_verbatim_even_when_not_json(stub):
    broken = '{"type": "project", "name": "Half'
    stub.reply(body=openai_completion(None, tool_calls=(
        (TOOL_NAME, json.dumps(VALID_CAPTURE)), ("lookup", "{}"), (TOOL_NAME, broken))))
    response = toolloop._split(ollama("llama3.1", base_url=stub.url + "/v1", tools=True).complete(request()))
    assert response.text == "" and response.tool_captures == (json.dumps(VALID_CAPTURE), broken)
    found, rejected = captures.extract(response.text, response.tool_captures)
    assert [c.name for c in found] == ["Launch date"]
    assert rejected[0]["excerpt"] == broken and "invalid JSON" in rejected[0]["reason"]


def test_a_server_without_usage_gets_an_estimate(stub):
    stub.reply(body=openai_completion("A local answer.", prompt_tokens=None))
    response = ollama("llama3", base_url=stub.url + "/v1").complete(request())
    sent = "".join(block["text"] for block in SYSTEM)
    assert response.extra["usage_estimated"] is True
    assert response.input_tokens >= estimate_tokens(sent) > 0
    assert response.output_tokens == estimate_tokens("A local answer.")
    assert response.model == "ollama:gpt-4o-mini-2024-07-18"


@pytest.mark.parametrize("status, headers, retryable, retry_after", [
    (429, {"retry-after": "7"}, True, 7.0),
    (500, {}, True, None),
    (503, {}, True, None),
    (400, {}, False, None),
    (401, {}, False, None),
])
def test_openai_errors_say_whether_to_retry(stub, monkeypatch, status, headers, retryable, retry_after):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    stub.reply(status, openai_error("it failed", "server_error", "some_code"), headers)
    with pytest.raises(ModelError) as caught:
        gpt(stub).complete(request())
    error = caught.value
    assert (error.retryable, error.retry_after, error.status) == (retryable, retry_after, status)
    assert error.message == f"openai: HTTP {status} server_error: it failed"
    assert len(stub.requests) == 1
    if status == 401:
        assert "OPENAI_API_KEY" in error.fix


def test_ollama_plain_text_errors_keep_their_message(stub):
    stub.reply(404, {"error": 'model "llama9" not found, try pulling it first'})
    with pytest.raises(ModelError) as caught:
        ollama("llama9", base_url=stub.url + "/v1").complete(request())
    assert not caught.value.retryable and caught.value.status == 404
    assert 'model "llama9" not found' in caught.value.message and "model name" in caught.value.fix


def test_a_slow_local_model_works_once_timeout_s_is_raised(stub):
    stub.reply(body=openai_completion(), delay_s=0.5).reply(body=openai_completion("slow"), delay_s=0.3)
    with pytest.raises(ModelError) as caught:
        ollama("llama3", base_url=stub.url + "/v1", timeout_s=0.1).complete(request())
    assert caught.value.retryable and "timeout_s" in caught.value.fix
    assert ollama("llama3", base_url=stub.url + "/v1", timeout_s=3).complete(request()).text == "slow"


def test_an_unreachable_local_server_is_retryable_and_names_base_url():
    with pytest.raises(ModelError) as caught:
        ollama("llama3", base_url=closed_port_url() + "/v1", timeout_s=2).complete(request())
    assert caught.value.retryable and "base_url" in caught.value.fix


# --- loading through the entry points ------------------------------------------------------

def test_load_model_builds_ollama_from_model_md_settings(stub):
    stub.reply(body=openai_completion("from ollama"))
    model = load_model("ollama:llama3", {"base_url": stub.url + "/v1", "timeout_s": 5})
    assert isinstance(model, OpenAIModel) and model.name == "ollama:llama3"
    assert model.complete(request()).text == "from ollama"
    assert stub.requests[0].body["model"] == "llama3"


def test_load_model_builds_anthropic_from_model_md_settings(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    stub.reply(body=anthropic_message("from claude"))
    model = load_model("anthropic:claude-haiku-4-5", {"base_url": stub.url, "timeout_s": 5})
    assert isinstance(model, AnthropicModel) and model.name == "anthropic:claude-haiku-4-5"
    assert model.complete(request()).text == "from claude"


@pytest.mark.parametrize("spec", ["ollama:llama3", "anthropic:claude-haiku-4-5", "vllm:qwen"])
def test_an_unknown_setting_is_a_model_error(monkeypatch, spec):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    with pytest.raises(ModelError) as caught:
        load_model(spec, {"temprature": 0.2})
    assert "temprature" in caught.value.message
    assert caught.value.field == f"providers.{spec.partition(':')[0]}"


@pytest.mark.parametrize("timeout_s", ["soon", 0, -1, True])
def test_timeout_s_must_be_a_positive_number(timeout_s):
    with pytest.raises(ModelError) as caught:
        load_model("ollama:llama3", {"timeout_s": timeout_s})
    assert caught.value.field == "providers.ollama.timeout_s"


def test_importing_atomic_vault_does_not_import_the_sdks():
    code = ("import sys, atomic_vault, atomic_vault.models, atomic_vault.providers.anthropic, "
            "atomic_vault.providers.openai_compat; print(sorted({'anthropic', 'openai'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
