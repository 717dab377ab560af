"""Which model answers (spec/09 "Choosing the model", spec/06 bare names): never one the
operator did not name; a model that cannot be built fails the run on the record, naming
every missing piece; custom models need only ``text``."""

import sys

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, runlog
from atomic_vault.cli import cli
from atomic_vault.errors import ModelError
from atomic_vault.models import ModelResponse
from atomic_vault.vault import open_agent
from provider_stubs import anthropic_message

PEER_MODEL_MD = """# MODEL: atlas

## Default model

**`claude-opus-4-8`**

Chosen for: reasoning depth.

## Fallback

**`claude-sonnet-4-6`**

## Cost guardrail

```yaml
cost_guardrails:
  enabled: true
  daily_cap_usd: 0.50
  monthly_cap_usd: 7.00
  daily_cap_action: skip
  monthly_cap_action: skip
  warning_thresholds: [0.50, 0.80]
```
"""


def model_md(vault, text):
    (vault / "atlas" / "model.md").write_text(text, encoding="utf-8")


def records(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))]


@pytest.fixture
def no_keys(vault, monkeypatch):
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MOONSHOT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATOMIC_VAULT_KEYS_FILE", str(vault / "no-keys.json"))


def test_no_key_and_no_sdk_are_named_at_once_and_the_cli_exits_1_with_an_error_record(vault, no_keys,
                                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "anthropic", None)  # the [anthropic] extra is not installed
    model_md(vault, "```yaml\nmodel: anthropic:claude-sonnet-4-6\n```\n")
    done = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", "--trigger", "cron", "Summarise."])
    assert done.exit_code == 1, done.output
    assert "needs ANTHROPIC_API_KEY (not in the environment nor in" in done.output
    assert "and the anthropic SDK (pip install 'atomic-vault[anthropic]')" in done.output
    assert "Offline answer" not in done.output
    record = records(vault)[-1]
    assert (record["status"], record["model"], record["trigger"]) == ("error", "anthropic:claude-sonnet-4-6", "cron")
    assert "needs ANTHROPIC_API_KEY" in record["error"] and "anthropic SDK" in record["error"]


def test_a_configured_fallback_answers_with_a_warning_when_the_model_cannot_be_built(vault, no_keys):
    model_md(vault, "```yaml\nmodel: anthropic:claude-sonnet-4-6\nfallback: offline\n```\n")
    result = AtomicAgent("atlas", root=vault).call("Go")
    assert result.status == "ok" and result.model == "offline"
    assert result.fallback_from == "anthropic:claude-sonnet-4-6"
    assert "cannot be used here" in result.warnings[0] and "the fallback offline answers" in result.warnings[0]
    assert records(vault)[-1]["fallback_from"] == "anthropic:claude-sonnet-4-6"


def test_when_neither_model_nor_fallback_can_be_built_the_error_names_both(vault, no_keys):
    model_md(vault, "```yaml\nmodel: anthropic:claude-sonnet-4-6\nfallback: nowhere:tiny\n```\n")
    with pytest.raises(ModelError) as caught:
        AtomicAgent("atlas", root=vault).call("Go")
    assert "needs ANTHROPIC_API_KEY" in caught.value.message and "no provider 'nowhere'" in caught.value.message
    assert "set ANTHROPIC_API_KEY" in caught.value.fix and "known provider" in caught.value.fix
    assert [r["status"] for r in records(vault)] == ["error"]


def test_doctor_fails_for_a_model_that_cannot_be_built_without_a_usable_fallback(vault, no_keys):
    model_md(vault, "```yaml\nmodel: anthropic:claude-sonnet-4-6\n```\n")
    done = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas"])
    assert done.exit_code != 0
    assert "model 'anthropic:claude-sonnet-4-6' cannot be built here" in done.output
    assert "its runs fail" in done.output
    model_md(vault, "```yaml\nmodel: anthropic:claude-sonnet-4-6\nfallback: offline\n```\n")
    done = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas"])
    assert "runs use the fallback offline" in done.output and "its runs fail" not in done.output


def test_a_peer_convention_model_md_without_a_key_fails_naming_the_key(vault, no_keys):
    model_md(vault, PEER_MODEL_MD)
    with pytest.raises(ModelError, match="needs ANTHROPIC_API_KEY"):
        AtomicAgent("atlas", root=vault).call("Go")
    record = records(vault)[-1]
    assert record["status"] == "error" and record["model"] == "anthropic:claude-opus-4-8"
    out = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas"]).output
    assert "model 'claude-opus-4-8' is read as 'anthropic:claude-opus-4-8'" in out
    assert "fallback 'claude-sonnet-4-6' is read as 'anthropic:claude-sonnet-4-6'" in out


def test_a_peer_convention_model_md_runs_with_the_model_it_names(vault, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-peer-0123456789abcdef")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
    model_md(vault, PEER_MODEL_MD.replace("daily_cap_usd: 0.50", "daily_cap_usd: 5.00")
             + "\n```\nnot settings\n```\n")
    stub.reply(body={"input_tokens": 900})  # count_tokens
    stub.reply(body=anthropic_message("Opus here.", model="claude-opus-4-8", input_tokens=900, output_tokens=10))
    result = AtomicAgent("atlas", root=vault).call("Go")
    assert result.text == "Opus here." and result.model == "anthropic:claude-opus-4-8"
    assert stub.requests[-1].body["model"] == "claude-opus-4-8"


class TextOnly:
    """The smallest custom model: an answer and nothing else."""

    name = "mine:echo"

    def complete(self, request):
        return ModelResponse(text="Echo: " + request.messages[-1]["content"])


def test_a_custom_model_may_return_only_text_and_its_tokens_are_estimated_and_flagged(vault):
    result = AtomicAgent("atlas", root=vault, model=TextOnly()).call("Hello there")
    assert result.status == "ok" and result.text == "Echo: Hello there"
    assert result.tokens_estimated is True and result.input_tokens > 0 and result.output_tokens == 5
    record = records(vault)[-1]
    assert record["tokens_estimated"] is True and record["input_tokens"] == result.input_tokens
    assert AtomicAgent("atlas", root=vault).call("Go").tokens_estimated is False  # offline counts


def test_a_rejected_capture_is_a_warning_on_the_result_and_on_stderr(vault):
    (vault / "atlas" / "tools.md").write_text("```yaml\nwrite: []\n```\n")
    result = AtomicAgent("atlas", root=vault).call("Note it.\nremember: project: Kestrel ships in May")
    assert result.captures[0]["status"] == "rejected"
    assert any(w.startswith("capture 'Kestrel ships in May' rejected: tools.md does not allow")
               for w in result.warnings)
    assert records(vault)[-1]["warnings"] == result.warnings
    done = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", "remember: project: Kestrel ships"])
    assert done.exit_code == 0
    assert "warning: capture 'Kestrel ships' rejected: tools.md does not allow" in done.output


def test_unknown_keys_are_warnings_on_the_run_and_in_doctor(vault):
    model_md(vault, "```yaml\nmodel: offline\nresearch_integrity: {enabled: false}\n```\n")
    (vault / "atlas" / "tools.md").write_text("```yaml\nwrite: [memory/]\nhard_nos: [shell]\n```\n")
    result = AtomicAgent("atlas", root=vault).call("Go")
    assert "model.md: unknown key 'research_integrity' ignored (spec/06-config.md lists every key)" in result.warnings
    assert any("tools.md: unknown key 'hard_nos'" in w for w in result.warnings)
    assert records(vault)[-1]["warnings"] == result.warnings
    out = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas"]).output
    assert "unknown keys ignored: research_integrity" in out and "unknown keys ignored: hard_nos" in out


def test_a_model_chosen_on_the_command_line_that_cannot_be_built_fails_on_the_record(vault):
    done = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", "x", "--model", "nowhere:x"])
    assert done.exit_code == 1 and "no provider 'nowhere'" in done.output
    assert "Offline answer" not in done.output
    assert [(r["status"], r["model"]) for r in records(vault)] == [("error", "nowhere:x")]
