"""Helpers (spec/06 `helpers:`): a cheaper model's one-shot transformation, as the built-in
`helper` tool and as `agent.helper` from a Python tool, recorded in the run's step with its
own tokens and cost, and counted in the run's cost."""

import json
import sys

import pytest

from atomic_vault import AtomicAgent, runlog
from atomic_vault.errors import ConfigError
from atomic_vault.vault import open_agent

HERE = sys.modules[__name__]
AGENT = None


def with_helpers(vault, setting="helpers: offline", prices=""):
    path = vault / "atlas" / "model.md"
    text = path.read_text()
    path.write_text(text.replace("max_output_tokens: 2000", f"max_output_tokens: 2000\n{setting}\n{prices}", 1))


def last_run(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault)) if r.get("kind") == "run"][-1]


def test_the_model_can_hand_a_job_to_the_helper_model(vault):
    with_helpers(vault)
    work = 'Plan my Monday.\ntool: helper {"instruction": "summarise", "text": "a long text about Monday"}'
    result = AtomicAgent("atlas", root=vault).call(work)
    assert result.status == "ok" and "Tool helper answered: Offline answer" in result.text
    record = last_run(vault)
    (call,) = record["steps"][0]["calls"]
    assert call["tool"] == "helper" and call["effect"]["status"] == "ok"
    helper = call["helper"]
    assert helper["model"] == "offline" and helper["status"] == "ok"
    assert helper["input_tokens"] > 0 and helper["output_tokens"] > 0 and helper["cost_usd"] == 0.0
    assert record["steps"][0]["helpers"] == [helper]
    kinds = [r["kind"] for _, _, r in runlog.records(open_agent("atlas", vault))][-2:]
    assert kinds[-1] == "run" and "verdict" not in kinds and "effect" not in kinds  # no gate, no ledger


def test_without_helpers_in_model_md_there_is_no_helper_tool(vault):
    result = AtomicAgent("atlas", root=vault).call('tool: helper {"instruction": "x"}')
    assert "Tool helper is not offered to this agent" in result.text
    assert "steps" not in last_run(vault) or all(not s.get("helpers") for s in last_run(vault)["steps"])


def test_a_helper_call_costs_the_run(vault):
    prices = "prices:\n  'offline:*': {input: 1000, output: 1000}"
    with_helpers(vault, prices=prices)
    (vault / "atlas" / "model.md").write_text((vault / "atlas" / "model.md").read_text()
                                             .replace("daily_cap_usd: 1.00", "daily_cap_usd: 500.00")
                                             .replace("monthly_cap_usd: 20.00", "monthly_cap_usd: 900.00"))
    AtomicAgent("atlas", root=vault).call('tool: helper {"instruction": "classify", "text": "spam or not"}')
    record = last_run(vault)
    helper = record["steps"][0]["helpers"][0]
    steps = sum(s["cost_usd"] for s in record["steps"])
    assert helper["cost_usd"] > 0
    assert record["cost_usd"] == pytest.approx(steps + helper["cost_usd"])


def summarise_with_helper(text):
    """A python tool that hands its text to the helper model."""
    return AGENT.helper("summarise in one line", text)


def test_a_python_tool_can_call_agent_helper_during_the_run(vault, monkeypatch):
    with_helpers(vault)
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\ndefault: allow\n```\n")
    tool = {"name": "digest", "kind": "python", "description": "digest a text",
            "function": f"{__name__}:summarise_with_helper",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}
    block = json.dumps({"read": ["persona/", "memory/"], "write": ["memory/"], "tools": [tool]})
    (vault / "atlas" / "tools.md").write_text(f"# Tools\n\n```yaml\n{block}\n```\n")
    agent = AtomicAgent("atlas", root=vault)
    monkeypatch.setattr(HERE, "AGENT", agent)
    result = agent.call('tool: digest {"text": "the quarterly numbers"}')
    assert "Tool digest answered: Offline answer" in result.text
    step = last_run(vault)["steps"][0]
    assert [h["status"] for h in step["helpers"]] == ["ok"] and step["calls"][0]["tool"] == "digest"


def test_agent_helper_outside_a_run_is_refused(vault):
    with_helpers(vault)
    with pytest.raises(ConfigError) as caught:
        AtomicAgent("atlas", root=vault).helper("summarise", "text")
    assert "belongs to a run" in caught.value.message and "python tool" in caught.value.fix


@pytest.mark.parametrize("setting", ["helpers: 42", "helpers: {model: offline, colour: red}",
                                     "helpers: {max_output_tokens: 5}", "helpers: {model: offline, max_output_tokens: 0}"])
def test_a_bad_helpers_setting_names_the_field(vault, setting):
    with_helpers(vault, setting)
    with pytest.raises(ConfigError) as caught:
        AtomicAgent("atlas", root=vault).call("x")
    assert "helpers" in str(caught.value)
