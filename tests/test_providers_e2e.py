"""Whole runs through the real SDKs against local stub servers: model.md picks the
provider, the runtime retries, prices, reserves, captures and logs (spec/12)."""

import pytest

from atomic_vault import AtomicAgent, runlog
from atomic_vault.errors import ModelError
from atomic_vault.vault import open_agent
from provider_stubs import anthropic_error, anthropic_message, openai_completion

KEY = "sk-ant-e2e-0123456789abcdef"
NOTE = {"type": "decision", "name": "Use Dagster for Kestrel", "description": "orchestrator choice",
        "confidence": "high", "sources": ["call 2026-11-27"], "body": "We chose Dagster."}


def model_md(vault, text):
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\n" + text + "\n```\n")


def last_record(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))][-1]


def test_anthropic_run_retries_counts_prices_and_captures_through_the_tool(vault, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    model_md(vault, f"""model: anthropic:claude-sonnet-4-6
max_output_tokens: 500
providers: {{anthropic: {{base_url: "{stub.url}", timeout_s: 5}}}}
retries: {{attempts: 3, base_delay_s: 0.01, max_delay_s: 0.1}}
cost_guardrails: {{enabled: true, daily_cap_usd: 5.0}}""")
    stub.reply(body={"input_tokens": 2345})  # count_tokens: the budget check and the reservation
    stub.reply(status=429, body=anthropic_error("rate_limit_error", "slow down"), headers={"retry-after": "0"})
    stub.reply(body=anthropic_message("Noted the decision.", tool_inputs=(NOTE,), model="claude-sonnet-4-6",
                                      input_tokens=400, output_tokens=60, cache_read=1800, cache_write=200))
    result = AtomicAgent("atlas", root=vault).call("We picked Dagster for Kestrel.")
    record = last_record(vault)
    assert [r.path for r in stub.requests] == ["/v1/messages/count_tokens", "/v1/messages", "/v1/messages"]
    assert result.text == "Noted the decision." and result.model == "anthropic:claude-sonnet-4-6"
    assert [(a["attempt"], a["outcome"], a.get("status")) for a in record["attempts"]] == [
        (1, "error", 429), (2, "ok", None)]
    # claude-sonnet-4-6 list price: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million
    assert record["cost_usd"] == pytest.approx((400 * 3 + 60 * 15 + 1800 * 0.30 + 200 * 3.75) / 1e6)
    assert (record["cache_read_tokens"], record["cache_write_tokens"]) == (1800, 200)
    assert record["guardrail"]["estimate_usd"] == pytest.approx((2345 * 3.75 + 500 * 15) / 1e6)
    assert record["manifest"]["tokens_counted"] == 2345
    assert record["captures"][0]["status"] == "written"
    folder = open_agent("atlas", vault)
    assert (folder.memory / "decision_use_dagster_for_kestrel.md").is_file()
    assert "decision_use_dagster_for_kestrel.md" in folder.index.read_text()
    sent = stub.requests[-1].body
    assert sum("cache_control" in block for block in sent["system"]) >= 1
    assert sent["tools"][0]["name"] == "atomic_capture"
    for path in vault.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_refused_request_falls_back_to_a_local_server(vault, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    model_md(vault, f"""model: anthropic:claude-haiku-4-5
fallback: ollama:llama3.1
providers:
  anthropic: {{base_url: "{stub.url}", timeout_s: 5}}
  ollama: {{base_url: "{stub.url}/v1", timeout_s: 5}}""")
    stub.reply(body={"input_tokens": 1200})  # count_tokens: the provider's count of the prompt
    stub.reply(status=400, body=anthropic_error("invalid_request_error", "prompt is too long"))
    stub.reply(body=openai_completion("Local answer.", model="llama3.1", prompt_tokens=900, completion_tokens=40))
    result = AtomicAgent("atlas", root=vault).call("Summarise.")
    record = last_record(vault)
    assert result.text == "Local answer." and result.fallback_from == "anthropic:claude-haiku-4-5"
    assert record["model"] == "ollama:llama3.1" and record["cost_usd"] == 0.0
    assert [a["model"] for a in record["attempts"]] == ["anthropic:claude-haiku-4-5", "ollama:llama3.1"]
    assert "HTTP 400 invalid_request_error: prompt is too long" in record["attempts"][0]["error"]


def test_imperfect_json_from_a_local_model_is_rejected_with_its_reason_never_lost(vault, stub):
    model_md(vault, f"""model: ollama:qwen2.5
providers: {{ollama: {{base_url: "{stub.url}/v1", tools: true}}}}""")
    answer = ("Done.\n\n```atomic_capture\n{\"type\": \"user\", \"name\": \"Likes tea\",}\n```\n\n"
              "```atomic_capture\n{\"type\": \"user\"")
    stub.reply(body=openai_completion(answer, tool_calls=(("atomic_capture", '{"type": "user", name: x}'),)))
    result = AtomicAgent("atlas", root=vault).call("Remember I like tea.")
    reasons = [c["reason"] for c in result.captures]
    assert len(reasons) == 3 and all(c["status"] == "rejected" for c in result.captures)
    assert any("never closed" in r for r in reasons)
    assert sum("invalid JSON" in r for r in reasons) == 2
    record = last_record(vault)
    assert [c["excerpt"][:17] for c in record["captures"]][-1] == '{"type": "user", '
    from datetime import date
    folder = open_agent("atlas", vault)
    journal = folder.journal_file(date.fromisoformat(record["ts"][:10])).read_text()
    assert "rejected" in journal


def test_a_missing_key_fails_the_run_on_the_record_when_no_fallback_can_answer(vault, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ATOMIC_VAULT_KEYS_FILE", str(vault / "no-keys.json"))
    model_md(vault, "model: anthropic:claude-haiku-4-5")
    with pytest.raises(ModelError, match="needs ANTHROPIC_API_KEY") as caught:
        AtomicAgent("atlas", root=vault).call("Hello.")
    assert "set ANTHROPIC_API_KEY" in caught.value.fix
    record = last_record(vault)
    assert record["status"] == "error" and record["model"] == "anthropic:claude-haiku-4-5"
    assert "needs ANTHROPIC_API_KEY" in record["error"] and record["cost_usd"] == 0.0


def test_unknown_provider_lists_the_known_ones(vault):
    with pytest.raises(ModelError, match="anthropic.*ollama.*openai"):
        AtomicAgent("atlas", root=vault, model="nosuch:model").call("Hello.")


class Dense:
    """A model whose own token count is three times the estimate."""

    name = "test:dense"

    def count_tokens(self, request):
        return 3 * sum(len(block["text"]) // 4 for block in request.system)

    def complete(self, request):
        from atomic_vault.models import ModelResponse
        return ModelResponse(text="ok", input_tokens=self.count_tokens(request), output_tokens=1,
                             cost_usd=0.0, model=self.name)


def test_the_providers_count_decides_the_budget(vault):
    model_md(vault, "model: offline\nmax_input_tokens: 3000")
    result = AtomicAgent("atlas", root=vault, model=Dense()).call("Plan the week.")
    manifest = result.manifest
    # the provider's count (three times the estimate) is recorded and is what fits the limit
    assert 2 * manifest["tokens"] < manifest["tokens_counted"] <= 3000
    assert manifest["tokens"] <= manifest["budget"] < 3000 and manifest["cuts"]


def test_an_unknown_model_fails_with_the_known_ones_and_a_per_call_override_wins(vault, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    model_md(vault, f"""model: offline
providers: {{anthropic: {{base_url: "{stub.url}"}}}}""")
    stub.reply(body={"input_tokens": 10})
    stub.reply(status=404, body=anthropic_error("not_found_error", "model: claude-nope"))
    agent = AtomicAgent("atlas", root=vault)
    with pytest.raises(ModelError) as raised:
        agent.call("Hello.", model="anthropic:claude-nope")
    assert "known anthropic models: claude-3-5-haiku" in raised.value.fix
    attempt = last_record(vault)["attempts"][0]
    assert attempt["status"] == 404 and "not_found_error" in attempt["error"]
    assert agent.call("Hello again.").model == "offline"  # the override was for one call only
