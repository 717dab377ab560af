"""Configuration (spec/06): the YAML blocks of model.md and tools.md."""

import pytest

from atomic_vault.config import load_model_config, load_tools_config
from atomic_vault.errors import ConfigError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_model_block_is_read_with_defaults_for_the_rest(tmp_path):
    path = write(tmp_path, "model.md", "# Model\n\nProse.\n\n```yaml\nmodel: offline\nmax_input_tokens: 5000\n"
                 "cost_guardrails:\n  enabled: true\n  daily_cap_usd: 2\n  daily_cap_action: skip\n```\n")
    config = load_model_config(path)
    assert config.model == "offline" and config.max_input_tokens == 5000
    assert config.max_output_tokens == 4000 and config.recent_notes == 5 and config.journal_days == 2
    assert config.cost_guardrails == {"enabled": True, "daily_cap_usd": 2, "daily_cap_action": "skip"}


def test_missing_model_md_means_offline(tmp_path):
    assert load_model_config(tmp_path / "model.md").model == "offline"


def test_older_convention_sections_are_read(tmp_path):
    path = write(tmp_path, "model.md", "# Model\n\n## Default model\n\n**`claude-sonnet-4-5`**\n\n"
                 "## Fallback\n`claude-haiku-4-5`\n\n```yaml\ncost_guardrails:\n  enabled: false\n"
                 "  alert_channel: log_only\n```\n")
    config = load_model_config(path)
    assert config.model == "anthropic:claude-sonnet-4-5" and config.fallback == "anthropic:claude-haiku-4-5"
    assert config.mapped == ("model 'claude-sonnet-4-5' is read as 'anthropic:claude-sonnet-4-5'",
                             "fallback 'claude-haiku-4-5' is read as 'anthropic:claude-haiku-4-5'")
    assert config.cost_guardrails["enabled"] is False
    assert config.unknown_keys == ("cost_guardrails.alert_channel",)


@pytest.mark.parametrize("bare, provider", [
    ("claude-opus-4-8", "anthropic"), ("gpt-5-mini", "openai"), ("o3", "openai"), ("o4-mini", "openai"),
    ("kimi-k2-0905-preview", "moonshot"), ("offline", None), ("llama3", None), ("opus", None)])
def test_bare_names_of_well_known_families_map_to_their_provider(tmp_path, bare, provider):
    path = write(tmp_path, "model.md", f"```yaml\nmodel: {bare}\n```\n")
    assert load_model_config(path).model == (f"{provider}:{bare}" if provider else bare)


@pytest.mark.parametrize("name, text, field, message", [
    ("model.md", "# Model\n\n```\nmodel: anthropic:claude-sonnet-4-6\ncost_guardrails: {daily_cap_usd: 1}\n```\n",
     "line 3", "not tagged yaml"),
    ("model.md", "# Model\n\n```json\nmax_output_tokens: 100\n```\n", "line 3", "not tagged yaml"),
    ("model.md", "# Model\n\nRuns on the offline model.\n", None, "has no ```yaml block"),
    ("model.md", "", None, "has no ```yaml block"),
    ("model.md", "```yaml\nmodel: offline\n```\n\n```yaml\nmax_output_tokens: 100\n```\n", "line 5",
     "has 2 ```yaml blocks"),
    ("model.md", "## Default model\n\n(to be decided)\n", "Default model", "names no model"),
    ("tools.md", "# Tools\n\n```\nwrite: [memory/]\n```\n", "line 3", "not tagged yaml"),
    ("tools.md", "# Tools\n\nMay write memory.\n", None, "has no ```yaml block"),
])
def test_a_config_file_without_its_one_yaml_block_is_an_error(tmp_path, name, text, field, message):
    path = write(tmp_path, name, text)
    loader = load_model_config if name == "model.md" else load_tools_config
    with pytest.raises(ConfigError) as caught:
        loader(path)
    assert caught.value.path == str(path) and caught.value.field == field
    assert message in caught.value.message and caught.value.fix


def test_older_convention_files_without_a_yaml_block_load(tmp_path):
    model = write(tmp_path, "model.md", "# MODEL\n\n## Default model\n\n**`claude-opus-4-8`**\n\n"
                  "## Fallback\n\n**`claude-sonnet-4-6`**\n\n## Token budget\n\n```\nanthropic:claude-x\n```\n")
    assert load_model_config(model).model == "anthropic:claude-opus-4-8"
    tools = write(tmp_path, "tools.md", "# TOOLS\n\n## Read paths\n\n- ./ -- own folder\n\n"
                  "## Write paths (own folder ONLY)\n\n- memory/ -- notes\n")
    assert load_tools_config(tools) == load_tools_config(tmp_path / "absent.md")
    assert load_model_config(write(tmp_path, "empty.md", "```yaml\n```\n")).model == "offline"


@pytest.mark.parametrize("text, field, close", [
    ("jounral_days: 1", "jounral_days", "journal_days"),
    ("max_input_token: 5000", "max_input_token", "max_input_tokens"),
    ("cost_guardrails: {daly_cap_usd: 1}", "cost_guardrails.daly_cap_usd", "daily_cap_usd"),
])
def test_a_key_close_to_a_known_one_is_an_error_with_did_you_mean(tmp_path, text, field, close):
    path = write(tmp_path, "model.md", f"```yaml\n{text}\n```\n")
    with pytest.raises(ConfigError, match=f"did you mean '{close}'") as caught:
        load_model_config(path)
    assert caught.value.field == field
    with pytest.raises(ConfigError, match="did you mean 'write'"):
        load_tools_config(write(tmp_path, "tools.md", "```yaml\nwirte: [memory/]\n```\n"))


def test_provider_key_prefixes_the_model(tmp_path):
    path = write(tmp_path, "model.md", "```yaml\nprovider: anthropic\nmodel: claude-x\n```\n")
    assert load_model_config(path).model == "anthropic:claude-x"


@pytest.mark.parametrize("block, field", [
    ("model: offline\nmax_input_tokens: lots\n", "max_input_tokens"),
    ("journal_days: 9\n", "journal_days"),
    ("model: [a, b]\n", "model"),
    ("cost_guardrails:\n  daily_cap_action: explode\n", "cost_guardrails.daily_cap_action"),
    ("cost_guardrails:\n  daily_cap_usd: -1\n", "cost_guardrails.daily_cap_usd"),
    ("cost_guardrails:\n  warning_thresholds: [2]\n", "cost_guardrails.warning_thresholds"),
    ("cost_guardrails: yes please\n", "cost_guardrails"),
    ("approval_hours: 0\n", "approval_hours"),
    ("approval_hours: 1.5\n", "approval_hours"),
])
def test_wrong_values_name_the_field(tmp_path, block, field):
    path = write(tmp_path, "model.md", f"```yaml\n{block}```\n")
    with pytest.raises(ConfigError) as caught:
        load_model_config(path)
    assert caught.value.field == field and caught.value.fix


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model.md", "# Model\n\ntext\n\n```yaml\nmodel: offline\nbad: [unclosed\nx: 1\n```\n")
    with pytest.raises(ConfigError, match="invalid YAML") as caught:
        load_model_config(path)
    assert caught.value.field.startswith("line ")
    assert 6 <= int(caught.value.field.split()[1]) <= 9


def test_unclosed_block_and_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path, "model.md", "```yaml\nmodel: offline\n")
    with pytest.raises(ConfigError, match="never closed"):
        load_model_config(path)
    path = write(tmp_path, "model2.md", "```yaml\nmodel: offline\nmodel: other\n```\n")
    with pytest.raises(ConfigError, match="set twice"):
        load_model_config(path)


def test_unknown_keys_are_kept_for_doctor(tmp_path):
    path = write(tmp_path, "model.md", "```yaml\nmodel: offline\nmood: cheerful\n```\n")
    assert load_model_config(path).unknown_keys == ("mood",)
    tools = write(tmp_path, "tools.md", "```yaml\nwrite: [memory/]\nhard_nos: [shell]\n```\n")
    assert load_tools_config(tools).unknown_keys == ("hard_nos",)


def test_tools_paths_and_write_confinement(tmp_path):
    path = write(tmp_path, "tools.md", "```yaml\nread: [memory/]\nwrite: [./memory]\ntools: [search]\n```\n")
    tools = load_tools_config(path)
    assert tools.may_write("memory/") and not tools.may_write("persona/")
    assert tools.tools == ("search",)
    assert load_tools_config(tmp_path / "absent.md").may_write("memory/")
    assert not load_tools_config(write(tmp_path, "t2.md", "```yaml\nwrite: []\n```\n")).may_write("memory/")


@pytest.mark.parametrize("item", ["../elsewhere", "/etc", "~/x"])
def test_tools_paths_may_not_leave_the_agent_folder(tmp_path, item):
    path = write(tmp_path, "tools.md", f"```yaml\nwrite: ['{item}']\n```\n")
    with pytest.raises(ConfigError, match="leaves the agent folder"):
        load_tools_config(path)


def test_config_is_reread_after_an_edit(tmp_path):
    path = write(tmp_path, "model.md", "```yaml\nmax_input_tokens: 5000\n```\n")
    assert load_model_config(path).max_input_tokens == 5000
    path.write_text("```yaml\nmax_input_tokens: 6000\n```\n")
    assert load_model_config(path).max_input_tokens == 6000
