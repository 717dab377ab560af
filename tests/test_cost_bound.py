"""The cost caps bound what the provider bills (spec/12 "Token counts", spec/13): the
reservation prices an upper bound of the input tokens, never the chars/4 estimate."""

import json
import multiprocessing

import pytest

from atomic_vault import AtomicAgent, runlog
from atomic_vault.models import ModelRequest, PART_OVERHEAD, TOOL_OVERHEAD, estimate_tokens, token_ceiling
from atomic_vault.vault import open_agent
from provider_stubs import openai_completion

RATE = 1000.0  # USD per million tokens: one token costs $0.001
RUNS = 6


def model_md(vault, url, cap):
    settings = {"model": "openai:gpt-dense", "max_output_tokens": 10, "journal_days": 0, "recent_notes": 0,
                "providers": {"openai": {"base_url": f"{url}/v1", "timeout_s": 10}},
                "retries": {"attempts": 1},
                "prices": {"openai:gpt-dense": {"input": RATE, "output": RATE}},
                "cost_guardrails": {"enabled": True, "daily_cap_usd": cap, "daily_cap_action": "skip"}}
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\n" + json.dumps(settings) + "\n```\n")


def prompt_bytes(body):
    return sum(len(str(m["content"]).encode("utf-8")) for m in body["messages"])


def _racer(root, barrier, results):
    agent = AtomicAgent("atlas", root=root, lock_timeout=None)
    barrier.wait()
    results.put(agent.call("Plan the week.").status)


def test_runs_started_together_never_settle_past_the_cap_when_the_provider_counts_densely(vault, stub,
                                                                                         monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dense-0123456789abcdef")
    model_md(vault, stub.url, 1000.0)
    stub.reply(body=openai_completion("probe", model="gpt-dense", prompt_tokens=1, completion_tokens=1))
    AtomicAgent("atlas", root=vault).call("Plan the week.")
    size = prompt_bytes(stub.requests[0].body)
    billed = size * 600 // 1356  # 600 prompt tokens for a 1,356-byte prompt: far above chars/4
    assert billed > estimate_tokens("x" * size)
    one = (billed + 10) * RATE / 1e6
    spent_before = sum(r["cost_usd"] or 0 for _, _, r in runlog.records(open_agent("atlas", vault)))
    cap = round(spent_before + 3.5 * one, 6)  # by the estimate, all six runs would fit
    model_md(vault, stub.url, cap)
    for _ in range(RUNS):
        stub.reply(body=openai_completion("dense", model="gpt-dense", prompt_tokens=billed, completion_tokens=10),
                   delay_s=0.3)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(RUNS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(vault), barrier, results)) for _ in range(RUNS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    statuses = [results.get() for _ in procs]
    records = [r for _, _, r in runlog.records(open_agent("atlas", vault))]
    settled = sum(r["cost_usd"] or 0 for r in records)
    assert statuses.count("ok") >= 1, statuses  # the cap admits a run: the test is not vacuous
    assert settled <= cap, (statuses, settled, cap)
    for record in records[1:]:
        if record["status"] == "ok":
            assert record["cost_usd"] <= record["guardrail"]["estimate_usd"]
            assert record["guardrail"]["input_tokens_bound"] >= record["input_tokens"]


def test_the_ceiling_counts_bytes_so_dense_text_cannot_pass_it():
    cjk = "東京の天気は晴れ" * 50  # 3 bytes a character: four times the chars/4 estimate
    request = ModelRequest(model="m", system=[{"text": "系统", "layer": "identity"}],
                           messages=[{"role": "user", "content": cjk}], max_output_tokens=1)
    assert token_ceiling(request) == len(cjk.encode()) + len("系统".encode()) + 3 * PART_OVERHEAD
    assert token_ceiling(request) > 3 * len(cjk) > estimate_tokens(cjk)
    with_tool = ModelRequest(model="m", system=[], messages=[{"role": "user", "content": "hi"}],
                             max_output_tokens=1)
    assert token_ceiling(with_tool, "{}") == 2 + 2 * PART_OVERHEAD + TOOL_OVERHEAD + 2
    assert token_ceiling(with_tool) == 2 + 2 * PART_OVERHEAD  # no tool offered to count
