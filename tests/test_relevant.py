"""The relevant-notes layer (spec/04): ranked by full-text relevance to the work item, on
every memory backend, within its share of the budget, never a note twice, never an
archived, superseded or expired note, and never an error for any work item."""

from dataclasses import replace

import pytest

from atomic_vault import AtomicAgent, evidence
from atomic_vault.assembly import assemble
from atomic_vault.backends import known
from atomic_vault.backends.files import FileJournal
from atomic_vault.config import ModelConfig, Relevance, load_model_config
from atomic_vault.errors import ConfigError
from atomic_vault.relevance import query_terms
from atomic_vault.testing import make_agent, note_text

TODAY = "2026-11-22"
ONLY_RELEVANT = ModelConfig(recent_notes=0, journal_days=0, relevant=Relevance(count=5, share=0.5))


@pytest.fixture(params=["files", "sqlite", "postgres"])
def memory(request, tmp_path):
    url = request.getfixturevalue("pg_url_factory")() if request.param == "postgres" else None
    return known("memory")[request.param].load()(url=url, root=tmp_path)


@pytest.fixture
def agent(tmp_path, memory):
    folder = make_agent(tmp_path)
    facts = {
        "reference_lisbon_office.md": ("lisbon office", "The door code of the Lisbon office is 4417."),
        "reference_porto_office.md": ("porto office", "The Porto office opens at nine; its door is blue."),
        "project_garden.md": ("garden", "Tomatoes need watering twice a week."),
        "project_invoices.md": ("invoices", "Invoices go out on the first working day."),
    }
    for file, (name, body) in facts.items():
        memory.put(folder, file, note_text(name, body, type=file.split("_")[0]))
    return folder


def prompt_for(memory, folder, work, config=ONLY_RELEVANT):
    """The prompt as a run assembles it (a database backend chooses pinned and recent)."""
    if callable(getattr(memory, "selection", None)):
        pinned, recent, broken = memory.selection(folder, TODAY, config.recent_notes)
        notes, chosen = {}, (pinned, recent)
    else:
        (notes, broken), chosen = memory.scan(folder), None
    return assemble(folder, config, notes, work, TODAY, memory, FileJournal(), broken, chosen)


def of(prompt, kind):
    return [layer.source for layer in prompt.layers if layer.layer == kind]


def test_the_best_matching_note_comes_first_with_rank_and_score(memory, agent):
    prompt = prompt_for(memory, agent, "What is the door code of the Lisbon office?")
    relevant = of(prompt, "relevant note")
    assert relevant[0] == "memory/reference_lisbon_office.md"
    assert "memory/project_garden.md" not in relevant
    entries = [f for f in prompt.manifest["files"] if f["layer"] == "relevant note"]
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert "4417" in prompt.layers[[layer.source for layer in prompt.layers].index(relevant[0])].text
    assert prompt.manifest["relevant_share"] == 0.5
    assert all("rank" not in f for f in prompt.manifest["files"] if f["layer"] != "relevant note")


def test_the_layer_sits_between_pinned_and_recent_notes(memory, agent):
    memory.put(agent, "project_pinned.md", note_text("pinned", "Always remember the office.", pinned=True))
    memory.put(agent, "project_newest.md", note_text("newest", "Lunch is at noon.", last_seen="2026-11-21"))
    prompt = prompt_for(memory, agent, "Where is the Lisbon office door?",
                        replace(ONLY_RELEVANT, recent_notes=1))
    kinds = [layer.layer for layer in prompt.layers]
    assert kinds.index("pinned note") < kinds.index("relevant note") < kinds.index("recent note")
    # No cached prefix ends after a note chosen by the work item; the pinned note ends one.
    marks = prompt.manifest["cache_breakpoints"]
    assert "memory/project_pinned.md" in marks
    assert not set(marks) & set(of(prompt, "relevant note") + of(prompt, "recent note"))


def test_a_pinned_note_is_not_repeated(memory, agent):
    memory.put(agent, "reference_lisbon_office.md", note_text(
        "lisbon office", "The door code of the Lisbon office is 4417.", type="reference", pinned=True))
    prompt = prompt_for(memory, agent, "door code of the Lisbon office")
    sources = [layer.source for layer in prompt.layers]
    assert sources.count("memory/reference_lisbon_office.md") == 1
    assert of(prompt, "pinned note") == ["memory/reference_lisbon_office.md"]
    assert "memory/reference_lisbon_office.md" not in of(prompt, "relevant note")


def test_a_relevant_note_is_not_repeated_among_recent_ones(memory, agent):
    memory.put(agent, "reference_lisbon_office.md", note_text(
        "lisbon office", "The door code of the Lisbon office is 4417.", type="reference",
        last_seen="2026-11-21"))
    prompt = prompt_for(memory, agent, "door code Lisbon", replace(ONLY_RELEVANT, recent_notes=3))
    sources = [layer.source for layer in prompt.layers]
    assert sources.count("memory/reference_lisbon_office.md") == 1
    assert "memory/reference_lisbon_office.md" in of(prompt, "relevant note")
    assert "memory/reference_lisbon_office.md" not in of(prompt, "recent note")
    assert of(prompt, "recent note") == ["memory/project_invoices.md"]  # the one recent note left


@pytest.mark.parametrize("how", [{"archived": True}, {"superseded_by": "reference_new.md"},
                                 {"expires_at": "2026-01-01"}])
def test_archived_superseded_and_expired_notes_never_come_in(memory, agent, how):
    memory.put(agent, "reference_lisbon_office.md", note_text(
        "lisbon office", "The door code of the Lisbon office is 4417.", type="reference", **how))
    prompt = prompt_for(memory, agent, "What is the door code of the Lisbon office?")
    assert "memory/reference_lisbon_office.md" not in [layer.source for layer in prompt.layers]
    assert of(prompt, "relevant note")  # the Porto note still matches "office" and "door"


def test_archived_notes_crowding_the_top_do_not_hide_a_live_one(memory, agent):
    for i in range(12):
        memory.put(agent, f"reference_old_lisbon_{i}.md", note_text(
            f"old lisbon {i}", "Lisbon office door code: Lisbon office door code.", type="reference",
            archived=True))
    prompt = prompt_for(memory, agent, "Lisbon office door code", replace(ONLY_RELEVANT, relevant=Relevance(1, 0.5)))
    assert of(prompt, "relevant note") == ["memory/reference_lisbon_office.md"]


def test_broken_notes_never_come_in(memory, agent):
    memory.put(agent, "reference_broken.md", "---\nname: broken\n---\nThe Lisbon office door code.\n")
    prompt = prompt_for(memory, agent, "Lisbon office door code")
    assert "memory/reference_broken.md" not in [layer.source for layer in prompt.layers]
    assert any(s["source"] == "memory/reference_broken.md" for s in prompt.manifest["skipped"])


@pytest.mark.parametrize("work", [
    'the "door code', "door AND NOT (code*)", "NEAR(door code) ^lisbon", "lisbon OR", "*",
    "()", '" OR "', "'; DROP TABLE notes; --", "door:* & !x | y", "%_\\", "{name} : lisbon",
    "-lisbon +door", "лиссабон 里斯本 door", "\x00\x01 code", "", "   ", "the of and or what is",
    "lisbon " * 500])
def test_no_work_item_ever_breaks_the_search(memory, agent, work):
    prompt = prompt_for(memory, agent, work)
    for layer in prompt.layers:
        assert layer.layer != "relevant note" or layer.rank >= 1


def test_the_query_is_plain_words_without_stop_words():
    assert query_terms('What is the "door code" of the Lisbon office (NEAR*)?') == [
        "door", "code", "lisbon", "office", "near"]
    assert query_terms("What is it?") == []
    assert len(query_terms(" ".join(f"word{i}" for i in range(1000)))) == 24
    assert query_terms("Lisbon lisbon LISBON") == ["lisbon"]


def test_count_zero_turns_the_layer_off(memory, agent):
    prompt = prompt_for(memory, agent, "door code Lisbon", replace(ONLY_RELEVANT, relevant=Relevance(0, 0.2)))
    assert of(prompt, "relevant note") == [] and "relevant_share" not in prompt.manifest


def test_count_caps_the_layer(memory, agent):
    prompt = prompt_for(memory, agent, "office door code", replace(ONLY_RELEVANT, relevant=Relevance(1, 0.5)))
    assert of(prompt, "relevant note") == ["memory/reference_lisbon_office.md"]


def test_the_share_keeps_the_best_that_fit_and_records_the_rest(memory, agent):
    big = "The Lisbon office door code is 4417. " + "More about the Lisbon office. " * 60
    memory.put(agent, "reference_lisbon_office.md", note_text("lisbon office", big, type="reference"))
    config = replace(ONLY_RELEVANT, max_input_tokens=2000, relevant=Relevance(5, 0.1))  # 200 tokens
    prompt = prompt_for(memory, agent, "Lisbon office door code", config)
    assert "memory/reference_lisbon_office.md" not in [layer.source for layer in prompt.layers]
    cut = [c for c in prompt.cuts if c["action"] == "over relevant share"]
    assert cut[0]["source"] == "memory/reference_lisbon_office.md" and cut[0]["tokens"] > 200
    # best first until one does not fit: a lower-ranked note does not take its place
    assert of(prompt, "relevant note") == []
    roomy = prompt_for(memory, agent, "Lisbon office door code", replace(config, relevant=Relevance(5, 0.9)))
    assert of(roomy, "relevant note")[0] == "memory/reference_lisbon_office.md"


def test_the_budget_drops_recent_notes_first_then_relevant_ones_worst_first(memory, agent):
    for i in range(2):
        memory.put(agent, f"project_filler{i}.md", note_text(f"filler {i}", "x " * 300,
                                                             last_seen="2026-11-21"))
    (agent.path / "persona" / "IDENTITY.md").write_text("# bot\n\n" + "I am a careful bot.\n" * 60)
    config = ModelConfig(recent_notes=2, journal_days=0, relevant=Relevance(3, 1.0))
    full = prompt_for(memory, agent, "Lisbon Porto office door code", config)
    relevant = of(full, "relevant note")
    assert len(relevant) == 2
    assert of(full, "recent note") == ["memory/project_filler0.md", "memory/project_filler1.md"]
    tight = full.tokens - sum(layer.tokens for layer in full.layers if layer.layer == "recent note") \
        - next(layer.tokens for layer in full.layers if layer.source == relevant[-1]) + 1
    cut = prompt_for(memory, agent, "Lisbon Porto office door code", replace(config, max_input_tokens=tight))
    assert of(cut, "recent note") == []
    assert of(cut, "relevant note") == relevant[:1]  # the worst-ranked went, the best stayed
    dropped = [c["source"] for c in cut.cuts if c["action"] == "dropped"]
    assert dropped[-1] == relevant[-1] and set(dropped[:-1]) == set(of(full, "recent note"))


def test_a_run_records_the_layer_and_show_displays_it(memory, agent):
    (agent.path / "model.md").write_text("# Model\n\n```yaml\nmodel: offline\nrelevant: {count: 2, share: 0.3}\n```\n")
    run = AtomicAgent(agent.name, root=agent.root, model="offline", memory=memory).call(
        "What is the door code of the Lisbon office?")
    log = AtomicAgent(agent.name, root=agent.root).log
    record = log.get(agent, run.run_id)
    entries = [f for f in record["manifest"]["files"] if f["layer"] == "relevant note"]
    assert entries[0]["source"] == "memory/reference_lisbon_office.md" and entries[0]["rank"] == 1
    assert record["manifest"]["relevant_share"] == 0.3
    shown = evidence.view(record, evidence.load_texts(log, agent, record))
    assert [x.get("rank") for x in shown["layers"] if x["layer"] == "relevant note"][0] == 1
    assert "relevant note memory/reference_lisbon_office.md" in evidence.render(shown)
    assert "rank 1 (score" in evidence.render(shown)


def test_config_reads_relevant_strictly(tmp_path):
    path = tmp_path / "model.md"

    def load(block):
        path.write_text(f"```yaml\n{block}\n```\n")
        return load_model_config(path)

    assert load("model: offline").relevant == Relevance(3, 0.2)
    assert load("relevant: {count: 7, share: 0.5}").relevant == Relevance(7, 0.5)
    assert load("relevant: {count: 0}").relevant.count == 0
    for block, field in [("relevant: {cuont: 3}", "relevant.cuont"), ("relevant: {count: 3, top: 1}", "relevant.top"),
                         ("relevant: {share: 0}", "relevant.share"), ("relevant: {share: 2}", "relevant.share"),
                         ("relevant: {count: -1}", "relevant.count"), ("relevant: {count: true}", "relevant.count"),
                         ("relevant: 5", "relevant"), ("relevnt: {count: 3}", "relevnt")]:
        with pytest.raises(ConfigError) as caught:
            load(block)
        assert caught.value.field == field and caught.value.fix
    with pytest.raises(ConfigError, match="did you mean 'count'"):
        load("relevant: {cuont: 3}")


def test_the_files_word_index_follows_every_change_and_compacts():
    from atomic_vault.backends.files import WordIndex

    def summary(name):
        return {"name": name, "description": "d"}

    texts = {f"n{i}.md": f"apple {i} banana" for i in range(2000)}
    notes = {file: summary(file) for file in texts}
    index = WordIndex()
    index.update(notes, texts.get)
    assert [f for f, _ in index.best(["apple", "7"], 1)] == ["n7.md"]
    for round_ in range(3):  # replace every note: dead postings pile up, then are rewritten
        texts = {file: f"cherry {round_} {file}" for file in texts}
        notes = {file: summary(file) for file in texts}
        index.update(notes, texts.get)
        assert index.best(["apple"], 5) == []
        assert len(index.best(["cherry"], 5000)) == 2000
    assert index.dead <= len(index.docs) // 2 + 1000
    del notes["n7.md"]
    notes = dict(notes)
    index.update(notes, texts.get)
    assert "n7.md" not in [f for f, _ in index.best(["cherry", "n7"], 10)]
    assert [f for f, _ in index.best(["n8"], 10)] == ["n8.md"]


def _page(folder, name, text):
    (folder.path / "wiki").mkdir(exist_ok=True)
    (folder.path / "wiki" / name).write_text(text, encoding="utf-8")


def test_wiki_pages_come_in_beside_notes_ranked_by_the_work_item(memory, agent):
    _page(agent, "INDEX.md", "# Wiki\n\n- [Boiler](boiler-manual.md)\n")
    _page(agent, "boiler-manual.md", "# Boiler manual\n\nTo reset the boiler, hold the red button for ten seconds.\n")
    _page(agent, "tea.md", "# Tea\n\nGreen tea wants water at eighty degrees.\n")
    prompt = prompt_for(memory, agent, "How do I reset the boiler?")
    relevant = of(prompt, "relevant note")
    assert relevant[0] == "wiki/boiler-manual.md"
    assert "wiki/tea.md" not in relevant and "wiki/INDEX.md" not in relevant
    assert of(prompt, "wiki index") == ["wiki/INDEX.md"]  # the index stays its own layer
    sent = prompt.layers[[layer.source for layer in prompt.layers].index("wiki/boiler-manual.md")].text
    assert "hold the red button" in sent
    entries = [f for f in prompt.manifest["files"] if f["layer"] == "relevant note"]
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    # a note and a page that both match: both come in, each once
    both = of(prompt_for(memory, agent, "door code of the Lisbon office, and how to reset the boiler"),
              "relevant note")
    assert {"memory/reference_lisbon_office.md", "wiki/boiler-manual.md"} <= set(both)
    assert len(both) == len(set(both))


def test_an_edited_wiki_page_is_ranked_by_its_new_text(memory, agent):
    _page(agent, "garage.md", "# Garage\n\nThe garage key hangs in the hall.\n")
    assert "wiki/garage.md" not in of(prompt_for(memory, agent, "Where is the kayak paddle?"), "relevant note")
    _page(agent, "garage.md", "# Garage\n\nThe kayak paddle is on the garage wall, left of the door.\n")
    assert of(prompt_for(memory, agent, "Where is the kayak paddle?"), "relevant note")[0] == "wiki/garage.md"


def test_an_unreadable_wiki_page_is_listed_as_skipped_never_sent(memory, agent, tmp_path):
    _page(agent, "good.md", "# Boiler\n\nReset the boiler with the red button.\n")
    (agent.path / "wiki" / "latin1.md").write_bytes("# Boiler\n\nchaudi\xe8re reset boiler\n".encode("latin-1"))
    outside = tmp_path / "outside.md"
    outside.write_text("# Boiler\n\nboiler secrets from outside the agent\n", encoding="utf-8")
    (agent.path / "wiki" / "linked.md").symlink_to(outside)
    prompt = prompt_for(memory, agent, "reset the boiler")
    assert "wiki/good.md" in of(prompt, "relevant note")
    assert not {"wiki/latin1.md", "wiki/linked.md"} & set(of(prompt, "relevant note"))
    skipped = {entry["source"]: entry["reason"] for entry in prompt.manifest["skipped"]}
    assert "UTF-8" in skipped["wiki/latin1.md"] and "wiki/linked.md" in skipped
    assert all("outside the agent" not in layer.text for layer in prompt.layers)
