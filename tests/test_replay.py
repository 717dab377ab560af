"""replay, diff and eval --replay (spec/10): a recorded run re-executed from its snapshots
with exactly the changes asked for, on the files, SQLite and PostgreSQL logs."""

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, clock, replay as replays
from atomic_vault.assembly import assemble
from atomic_vault.cli import cli
from atomic_vault.config import load_model_config
from atomic_vault.protocols import LogQuery
from conftest import ScriptedModel, capture_block
from test_evidence import backend, _old_then_new, _set_retention, _tamper, snapshot  # noqa: F401 (a fixture)

WORK = "Plan the week.\nremember: project: the launch moves to Friday"


@pytest.fixture(params=["files", "sqlite"])
def local(request, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_LOG_BACKEND", request.param)
    return request.param


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def _offline_run(vault, work=WORK):
    agent = AtomicAgent("atlas", root=vault, model="offline")
    return agent, agent.call(work)


def _records(agent):
    return list(agent.log.records(agent.folder))


def test_a_replay_without_a_note_prints_exactly_what_changed(vault, backend):
    agent, run = _offline_run(vault)
    record = agent.log.get(agent.folder, run.run_id)
    note = next(e for e in record["manifest"]["files"] if e["layer"] == "recent note")
    before = {k: v for k, v in snapshot(vault).items() if "/log/" not in k and not k.endswith(".db")}
    done = av(vault, "replay", "atlas", run.run_id, "--without", note["source"])
    assert done.exit_code == 0, done.output
    new = agent.log.query(agent.folder, LogQuery(limit=1))[0]
    layers, notes = len(record["manifest"]["files"]), sum(
        e["layer"] in ("pinned note", "relevant note", "recent note") for e in record["manifest"]["files"])
    tokens = record["manifest"]["tokens"]
    assert done.stdout == (
        f"run {run.run_id} (seq {run.seq}, offline, ok) → replay {new['run_id']} (seq {new['seq']}, offline, ok)\n"
        f"changes: without {note['source']}\n\n"
        f"## Layers ({layers - 1} the same)\n"
        f"- recent note  {note['source']} · {note['tokens']} tokens\n\n"
        "## Work item: the same\n\n"
        "## Answer\n"
        f"--- run {run.run_id}\n+++ replay {new['run_id']}\n@@ -2,7 +2,7 @@\n \n"
        " Work item (10 words): Plan the week. remember: project: the launch moves to Friday\n \n"
        f"-Context: {layers} prompt layers, {notes} notes in full, 2 journal days.\n"
        f"+Context: {layers - 1} prompt layers, {notes - 1} notes in full, 2 journal days.\n \n"
        " ```atomic_capture\n {\n\n"
        "## Captures (the same)\n"
        "  project: the launch moves to Friday · written → not applied\n\n"
        "## Tokens and cost\n"
        f"prompt {tokens} → {new['manifest']['tokens']} ({new['manifest']['tokens'] - tokens:+d}) · "
        f"input {run.input_tokens} → {new['input_tokens']} ({new['input_tokens'] - run.input_tokens:+d}) · "
        f"output {run.output_tokens} → {new['output_tokens']} (+0)\n"
        "cost $0.0000 → $0.0000 (+$0.0000)\n")
    assert tokens - new["manifest"]["tokens"] == note["tokens"]
    assert new["kind"] == "replay" and new["replays"] == {"run_id": run.run_id, "seq": run.seq, "hash": record["hash"]}
    assert new["changes"]["without"] == [note["source"]] and new["applied"] is False
    assert new["trigger"] == "replay"
    # no note and no journal: only the log changed
    assert {k: v for k, v in snapshot(vault).items() if "/log/" not in k and not k.endswith(".db")} == before
    assert agent.log.verify(agent.folder).ok
    again = av(vault, "replay", "atlas", run.run_id, "--without", note["source"])  # deterministic
    second = agent.log.query(agent.folder, LogQuery(limit=1))[0]
    assert again.stdout == done.stdout.replace(new["run_id"], second["run_id"]).replace(
        f"seq {new['seq']}", f"seq {second['seq']}")


def test_a_replay_reads_the_snapshots_not_todays_files(vault, local):
    model = ScriptedModel("The answer.")
    agent = AtomicAgent("atlas", root=vault, model=model)
    run = agent.call("Plan.")
    sent = [dict(block) for block in model.requests[0].system]
    soul = vault / "atlas" / "persona" / "SOUL.md"
    soul.write_text("An entirely different soul.\n")
    (vault / "atlas" / "memory" / "INDEX.md").write_text("# Index\n")
    done = replays.replay(agent, run.run_id)
    assert [dict(block) for block in model.requests[1].system] == sent
    assert all(layer["change"] == "same" for layer in done.compared["layers"])
    assert done.compared["answer"]["same"] is True and done.status == "ok"
    assert done.record["model"] == "scripted"


def test_with_file_replaces_one_layer_and_is_confined_to_the_agent_folder(vault, local, tmp_path):
    model = ScriptedModel("The answer.")
    agent = AtomicAgent("atlas", root=vault, model=model)
    run = agent.call("Plan.")
    draft = vault / "atlas" / "drafts" / "SOUL.md"
    draft.parent.mkdir()
    draft.write_text("A draft soul.\n")
    done = replays.replay(agent, run.run_id, replays.Changes(with_files=(("persona/SOUL.md", str(draft)),)))
    soul = next(b for b in model.requests[1].system if b["source"] == "persona/SOUL.md")
    assert soul["text"] == "## persona/SOUL.md\n\nA draft soul."
    changed = [layer for layer in done.compared["layers"] if layer["change"] != "same"]
    assert [(layer["source"], layer["change"]) for layer in changed] == [("persona/SOUL.md", "changed")]
    assert done.record["changes"]["with_files"] == [{"source": "persona/SOUL.md", "path": str(draft)}]
    outside = tmp_path / "elsewhere.md"
    outside.write_text("secrets\n")
    link = vault / "atlas" / "drafts" / "link.md"
    link.symlink_to(outside)
    before = snapshot(vault), len(_records(agent)), len(model.requests)
    for source, path, words in [("persona/SOUL.md", str(vault / "atlas" / "drafts" / "nope.md"), "no such file"),
                                ("persona/SOUL.md", str(link), "link out of the agent folder"),
                                ("persona/NOPE.md", str(draft), "has no such layer")]:
        refused = av(vault, "replay", "atlas", run.run_id, "--with-file", f"{source}={path}")
        assert refused.exit_code == 1 and words in refused.stderr and "fix:" in refused.stderr, refused.output
    assert av(vault, "replay", "atlas", run.run_id, "--with-file", "persona/SOUL.md").exit_code == 2
    assert (snapshot(vault), len(_records(agent)), len(model.requests)) == before  # nothing written


def test_max_input_tokens_retrims_by_the_rules_of_assembly(vault, local):
    agent = AtomicAgent("atlas", root=vault, model="offline")
    config = load_model_config(agent.folder.model)
    notes, broken = agent.memory.scan(agent.folder)  # assembly's own cut of the same inputs
    fresh = assemble(agent.folder, replace(config, max_input_tokens=1500), notes, "Plan the week.",
                     clock.now(config.zone).date().isoformat(), agent.memory, agent.journal, broken)
    run = agent.call("Plan the week.")
    record = agent.log.get(agent.folder, run.run_id)
    assert not record["manifest"]["cuts"]
    done = replays.replay(agent, run.run_id, replays.Changes(max_input_tokens=1500))
    replayed = done.record["manifest"]
    assert replayed["cuts"] == fresh.cuts and replayed["cuts"]
    assert [(e["source"], e["tokens"]) for e in replayed["files"]] == [(l.source, l.tokens) for l in fresh.layers]
    assert replayed["budget"] == 1500 and replayed["tokens"] <= 1500
    assert done.record["changes"]["max_input_tokens"] == 1500
    refused = av(agent.folder.root, "replay", "atlas", run.run_id, "--max-input-tokens", "10")
    assert refused.exit_code == 1 and "max_input_tokens" in refused.stderr


def test_apply_writes_the_captures_and_the_journal_like_a_run(vault, local):
    agent, run = _offline_run(vault)
    note = agent.log.get(agent.folder, run.run_id)["captures"][0]["file"]
    agent.memory.delete(agent.folder, note)
    day = sorted((vault / "atlas" / "journal").rglob("*.md"))[-1]
    sections = day.read_text().count("\n## ")
    done = av(vault, "replay", "atlas", run.run_id, "--apply", "--json")
    assert done.exit_code == 0, done.output
    new = agent.log.query(agent.folder, LogQuery(limit=1))[0]
    assert new["applied"] is True and new["captures"][0]["status"] == "written"
    assert agent.memory.get(agent.folder, new["captures"][0]["file"]) is not None
    assert day.read_text().count("\n## ") == sections + 1 and f"run {new['run_id']}" in day.read_text()
    assert json.loads(done.stdout)["b"]["run_id"] == new["run_id"]


def test_a_replay_with_another_model_and_diff_of_two_runs(vault, local):
    agent, first = _offline_run(vault, "Plan the week.")
    model = ScriptedModel("Another answer.\n" + capture_block(name="Alpha"))
    done = replays.replay(AtomicAgent("atlas", root=vault, model=model), first.run_id)
    assert done.compared["answer"]["same"] is False
    assert "+Another answer." in done.compared["answer"]["diff"]
    assert [(c["name"], c["change"]) for c in done.compared["captures"]] == [("Alpha", "added")]
    assert done.compared["capture_json_same"] is False
    shown = av(vault, "diff", "atlas", first.run_id, done.record["run_id"])
    assert shown.exit_code == 0 and shown.stdout == replays.render(done.compared) + "\n"
    second = agent.call("Plan the month.")
    view = json.loads(av(vault, "diff", "atlas", first.run_id, second.run_id, "--json").stdout)
    assert view["work_item"]["diff"][-2:] == ["-Plan the week.", "+Plan the month."]
    assert view["changes"] is None
    before = snapshot(vault)
    unknown = av(vault, "diff", "atlas", first.run_id, "20990101T000000-deadbeef")
    assert unknown.exit_code == 2 and "no run '20990101T000000-deadbeef'" in unknown.output
    assert snapshot(vault) == before  # diff writes nothing


def test_replay_bad_inputs_are_refused_and_write_nothing(vault, backend):
    agent, run = _offline_run(vault)
    before = snapshot(vault), len(_records(agent))
    unknown = av(vault, "replay", "atlas", "20990101T000000-deadbeef")
    assert unknown.exit_code == 2 and "no run '20990101T000000-deadbeef'" in unknown.output
    nolayer = av(vault, "replay", "atlas", run.run_id, "--without", "memory/nothing.md")
    assert nolayer.exit_code == 1 and "--without memory/nothing.md" in nolayer.stderr
    assert "persona/SOUL.md" in nolayer.stderr  # the fix names the run's layers
    assert (snapshot(vault), len(_records(agent))) == before
    work = agent.log.get(agent.folder, run.run_id)["snapshots"]["work_item"]
    _tamper(agent, work, "A forged work item.")
    before = snapshot(vault), len(_records(agent))
    tampered = av(vault, "replay", "atlas", run.run_id)
    assert tampered.exit_code == 1 and f"snapshot {work} does not match its hash (tampering)" in tampered.stderr
    assert (snapshot(vault), len(_records(agent))) == before


def test_a_pruned_run_says_which_snapshots_are_gone(vault, local, monkeypatch):
    agent, old, new = _old_then_new(vault, monkeypatch)
    _set_retention(vault, 30)
    assert av(vault, "prune", "atlas").exit_code == 0
    prune = agent.log.query(agent.folder, LogQuery(kind="prune"))[0]
    before = snapshot(vault), len(_records(agent))
    refused = av(vault, "replay", "atlas", old.run_id)
    assert refused.exit_code == 1 and "cannot be replayed" in refused.stderr
    work = agent.log.get(agent.folder, old.run_id)["snapshots"]["work_item"]
    assert f"{work} (pruned by record seq {prune['seq']})" in refused.stderr
    assert (snapshot(vault), len(_records(agent))) == before


def test_a_replay_under_the_cap_is_skipped_like_a_run(vault, local):
    agent, run = _offline_run(vault, "Plan.")
    (vault / "atlas" / "model.md").write_text(
        "```yaml\nmodel: offline\nprices: {'offline:*': {input: 1000, output: 1000}}\n"
        "cost_guardrails: {enabled: true, daily_cap_usd: 0.0001, daily_cap_action: skip}\n```\n")
    journal = {k: v for k, v in snapshot(vault).items() if "/journal/" in k}
    done = av(vault, "replay", "atlas", run.run_id)
    assert done.exit_code == 3 and "skipped by the cost guardrails: daily cap" in done.stderr
    new = agent.log.query(agent.folder, LogQuery(limit=1))[0]
    assert new["kind"] == "replay" and new["status"] == "skipped" and new["attempts"] == []
    assert {k: v for k, v in snapshot(vault).items() if "/journal/" in k} == journal


def test_eval_replay_reports_each_run_against_another_model(vault, local):
    agent, first = _offline_run(vault, "Plan the week.")
    second = agent.call("Plan the month.")
    done = av(vault, "eval", "atlas", "--replay", "2", "--model", "offline", "--json")
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["run_id"] for row in rows] == [second.run_id, first.run_id]
    assert all(row["answer_same"] and row["captures_same"] and row["cost_delta_usd"] == 0 for row in rows)
    replayed = agent.log.query(agent.folder, LogQuery(kind="replay"))
    assert {r["replays"]["run_id"] for r in replayed} == {first.run_id, second.run_id}
    table = av(vault, "eval", "atlas", "--replay", "1", "--model", "offline")
    assert table.exit_code == 0 and second.run_id in table.stdout and "same" in table.stdout
    assert av(vault, "eval", "atlas", "--replay", "1").exit_code == 2  # --model is required


def test_a_replays_spend_counts_against_the_caps_like_a_runs(vault, backend):
    from atomic_vault import guardrails

    path = vault / "atlas" / "model.md"
    path.write_text(path.read_text().replace("model: ", "prices: {'offline:*': {input: 1, output: 1}}\nmodel: ", 1))
    agent, run = _offline_run(vault, "Plan.")
    done = replays.replay(agent, run.run_id)
    assert done.status == "ok" and done.record["cost_usd"] > 0
    rows = agent.log.cost(agent.folder, "day")
    assert sum(row.runs for row in rows) == 2
    assert sum(row.cost_usd for row in rows) == pytest.approx(run.cost_usd + done.record["cost_usd"])
    day, _ = guardrails.spent(agent.log, agent.folder, clock.now(None))
    assert day == pytest.approx(run.cost_usd + done.record["cost_usd"])
    assert agent.log.verify(agent.folder).ok  # the spend table agrees with the records


def test_a_failed_replay_is_logged_exits_1_and_can_be_shown(vault, local):
    agent, run = _offline_run(vault, "Plan.")
    failing = AtomicAgent("atlas", root=vault, model=ScriptedModel(error=RuntimeError("the provider fell over")))
    done = replays.replay(failing, run.run_id)
    assert done.status == "error" and "the provider fell over" in done.record["error"]
    assert done.compared["answer"]["same"] is None  # the replay has no answer to compare
    shown = av(vault, "show", "atlas", done.record["run_id"])
    assert shown.exit_code == 0 and "the provider fell over" in shown.output
    cli_done = av(vault, "replay", "atlas", run.run_id, "--model", "nosuch:model")
    assert cli_done.exit_code == 1 and "nosuch" in cli_done.output
    assert agent.log.query(agent.folder, LogQuery(limit=1))[0]["status"] == "error"


def test_a_replay_gives_back_the_recorded_tool_results_and_runs_no_tool(vault, monkeypatch):
    """A replay never repeats an effect: each tool call the model makes again is answered
    with the recorded run's result, and a call the run never made is answered with a refusal."""
    from atomic_vault import tools
    agent = AtomicAgent("atlas", root=vault)
    first = agent.call('Is 2028 a leap year?\ntool: leap_year {"year": 2028}')
    assert "Tool leap_year answered: true" in first.text

    def never(*args, **kwargs):
        raise AssertionError("a replay ran a tool")
    monkeypatch.setattr(tools, "run", never)
    again = replays.replay(agent, first.run_id)
    assert again.record["status"] == "ok"
    assert agent.log.get_snapshot(agent.folder, again.record["snapshots"]["answer"]) == first.text
    assert again.record["steps"][0]["calls"][0]["effect"] == {"status": "replayed", "result": "true"}
    assert not [r for r in agent.log.query(agent.folder, LogQuery(limit=10)) if r.get("kind") == "verdict"
                and r.get("run") == again.record["run_id"]]
    from atomic_vault.snapshots import Loaded
    other = replays.recorded_results({**agent.log.get(agent.folder, first.run_id), "steps": []}, Loaded())
    assert other == {}  # a run without steps has nothing to give back: every call is refused


def test_a_replay_with_a_stricter_policy_shows_what_it_would_have_stopped(vault):
    """replay --policy FILE judges the recorded tool calls again: a call the new policy
    blocks is not given its recorded result, and the diff shows the answer that follows."""
    agent = AtomicAgent("atlas", root=vault)
    first = agent.call('Is 2028 a leap year?\ntool: leap_year {"year": 2028}')
    strict = vault / "atlas" / "policy-strict.md"
    strict.write_text("# Strict\n\n```yaml\nrules:\n  - tool: leap_year\n    verdict: block\n"
                      "    reason: no calendar questions today\ndefault: block\n```\n", encoding="utf-8")
    again = replays.replay(agent, first.run_id, replays.Changes(policy=str(strict)))
    call = again.record["steps"][0]["calls"][0]
    assert call["effect"]["status"] == "blocked" and call["verdict"] == "block"
    assert "no calendar questions today" in call["effect"]["result"]
    assert again.record["changes"]["policy"] == str(strict)
    assert "Tool leap_year answered: true" not in agent.log.get_snapshot(agent.folder, again.record["snapshots"]["answer"])
    broken = vault / "atlas" / "policy-broken.md"
    broken.write_text("```yaml\nrules: [\n```\n", encoding="utf-8")
    before = snapshot(vault)
    with pytest.raises(replays.ReplayError, match="--policy"):
        replays.replay(agent, first.run_id, replays.Changes(policy=str(broken)))
    assert snapshot(vault) == before  # refused before any model call: nothing written
    outside = vault / "elsewhere.md"
    outside.write_text(strict.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(replays.ReplayError, match="--policy"):
        replays.replay(agent, first.run_id, replays.Changes(policy=str(outside)))
