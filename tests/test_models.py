"""The Model Protocol and the offline model (spec/09)."""

import json
import re
from importlib.metadata import entry_points

import pytest
from hypothesis import given, settings, strategies as st

from atomic_vault import captures
from atomic_vault.errors import ModelError
from atomic_vault.models import ModelRequest, OfflineModel, load_model, providers


def request(work, system=None):
    return ModelRequest(model="offline", system=system or [{"layer": "identity", "source": "p", "text": "I am"}],
                        messages=[{"role": "user", "content": work}], max_output_tokens=100, agent="bot")


def test_built_in_providers_come_from_entry_points():
    names = {ep.name for ep in entry_points(group="atomic_vault.models")}
    assert "offline" in names and set(providers()) == names
    assert isinstance(load_model("offline"), OfflineModel)


def test_an_unknown_provider_lists_the_known_ones():
    with pytest.raises(ModelError) as caught:
        load_model("mystery:model-9")
    assert "no provider 'mystery'" in caught.value.message and "offline" in caught.value.fix


def test_offline_is_deterministic_and_summarises_the_work_item():
    model = OfflineModel()
    first = model.complete(request("Summarise the quarterly numbers for the board"))
    assert first == model.complete(request("Summarise the quarterly numbers for the board"))
    assert "Summarise the quarterly numbers for the board" in first.text
    assert first.cost_usd == 0.0 and first.input_tokens > 0 and first.output_tokens > 0
    assert captures.extract(first.text) == ([], [])


@pytest.mark.parametrize("line, kind", [("remember: tea at four", "reference"),
                                        ("Remember: decision: deploy on Tuesdays", "decision")])
def test_offline_turns_a_remember_line_into_one_valid_capture(line, kind):
    text = OfflineModel().complete(request(f"Hello\n{line}\nbye")).text
    found, rejected = captures.extract(text)
    assert rejected == [] and len(found) == 1 and found[0].type == kind


def test_offline_turns_every_remember_line_into_a_capture_in_order():
    text = OfflineModel().complete(request(
        "Plan.\nremember: project: demo on Thursday\nremember: ???\n  REMEMBER: user: likes tea\n")).text
    found, rejected = captures.extract(text)
    assert rejected == [] and [(c.type, c.name) for c in found] == [
        ("project", "demo on Thursday"), ("user", "likes tea")]
    assert text.count("Nothing to remember") == 1


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_offline_captures_are_always_valid_or_absent(text):
    work = "remember: " + text
    answer = OfflineModel().complete(request(work)).text
    found, rejected = captures.extract(answer)
    lines = re.findall(r"^[^\S\n]*remember:[^\S\n]*\S", work, re.IGNORECASE | re.MULTILINE)
    assert rejected == [] and len(found) <= len(lines)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "name", "description", "confidence", "sources", "body",
                                        "supersedes", "merge_into", "pinned", "tags", "zzz"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=50),
                                 st.lists(st.text(max_size=10), max_size=3))))
def test_the_capture_parser_accepts_or_rejects_with_a_reason(data):
    found, rejected = captures.extract("```atomic_capture\n" + json.dumps(data) + "\n```")
    assert len(found) + len(rejected) == 1
    if rejected:
        assert rejected[0]["reason"]
