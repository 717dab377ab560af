"""Conversations (spec/04, spec/07): the earlier turns of a conversation go in before the
work item, read back from the log's snapshots, on the files, SQLite and PostgreSQL logs."""

import json
import shutil
from datetime import timedelta

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, clock, replay as replays
from atomic_vault.cli import cli
from atomic_vault.errors import ConfigError
from atomic_vault.mcp_server import VaultTools
from conftest import SAMPLES, ScriptedModel
from test_evidence import _set_retention, _tamper, backend  # noqa: F401 (a fixture)


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


class Echo(ScriptedModel):
    """Answers each work item with a text of its own, and keeps the requests."""

    def complete(self, request):
        self.text = f"Answer to: {request.messages[-1]['content']}"
        return super().complete(request)


def _talk(vault, items, model=None, conversation="new"):
    agent = AtomicAgent("atlas", root=vault, model=model or "offline")
    results = [agent.call(items[0], conversation_id=conversation)]
    for item in items[1:]:
        results.append(agent.call(item, conversation_id=results[0].conversation_id))
    return agent, results


def test_earlier_turns_go_in_before_the_work_item_and_are_recorded(vault, backend):
    model = Echo()
    agent, (first, second, third) = _talk(vault, ["Plan Monday.", "And Tuesday?", "And Wednesday?"], model)
    assert first.conversation_id.startswith("conv-") and first.conversation_id == third.conversation_id
    assert model.requests[0].messages == [{"role": "user", "content": "Plan Monday."}]
    assert model.requests[2].messages == [
        {"role": "user", "content": "Plan Monday."}, {"role": "assistant", "content": "Answer to: Plan Monday."},
        {"role": "user", "content": "And Tuesday?"}, {"role": "assistant", "content": "Answer to: And Tuesday?"},
        {"role": "user", "content": "And Wednesday?"}]
    record = agent.log.get(agent.folder, third.run_id)
    assert record["conversation_id"] == first.conversation_id
    talk = record["manifest"]["conversation"]
    assert [t["run_id"] for t in talk["turns"]] == [first.run_id, second.run_id]
    assert talk["new"] is False and talk["dropped"] == [] and talk["skipped"] == []
    first_refs = agent.log.get(agent.folder, first.run_id)["snapshots"]
    assert talk["turns"][0]["work_item"] == first_refs["work_item"]
    assert talk["turns"][0]["answer"] == first_refs["answer"]
    assert agent.log.get(agent.folder, first.run_id)["manifest"]["conversation"]["new"] is True
    one_shot = agent.call("Unrelated.")
    assert one_shot.conversation_id is None and "conversation" not in one_shot.manifest
    assert "conversation_id" not in agent.log.get(agent.folder, one_shot.run_id)
    assert model.requests[-1].messages == [{"role": "user", "content": "Unrelated."}]
    assert av(vault, "verify", "atlas").exit_code == 0


def test_the_offline_model_answers_a_conversation_the_same_way_every_time(tmp_path):
    answers = []
    for copy in ("a", "b"):
        root = tmp_path / copy
        shutil.copytree(SAMPLES, root)
        _, results = _talk(root, ["Plan the week.", "What about Friday?"])
        answers.append([r.text for r in results])
    assert answers[0] == answers[1]
    assert "Conversation:" not in answers[0][0]
    assert "Conversation: 1 earlier turns; the last one asked: Plan the week." in answers[0][1]


def test_an_unknown_id_starts_the_conversation_and_latest_continues_the_newest(vault):
    agent = AtomicAgent("atlas", root=vault, model="offline")
    with pytest.raises(ConfigError, match="no conversation to continue"):
        agent.call("Go on.", conversation_id="latest")
    started = agent.call("Hello.", conversation_id="chat-42")
    assert started.conversation_id == "chat-42"
    assert any("conversation chat-42 has no earlier runs: this run starts it" in w for w in started.warnings)
    other = agent.call("Another topic.", conversation_id="new")
    again = agent.call("Back to it.", conversation_id="chat-42")
    assert not any("starts it" in w for w in again.warnings)
    assert [t["run_id"] for t in again.manifest["conversation"]["turns"]] == [started.run_id]
    newest = agent.call("And?", conversation_id="latest")
    assert newest.conversation_id == "chat-42"
    assert [t["run_id"] for t in newest.manifest["conversation"]["turns"]] == [started.run_id, again.run_id]
    assert other.run_id not in json.dumps(newest.manifest)
    for bad in ("two words", "", "x" * 101, "../up"):
        with pytest.raises(ConfigError, match="is not a conversation id"):
            agent.call("Hello.", conversation_id=bad)


def test_the_oldest_turns_are_dropped_first_to_fit_the_budget_and_said_so(vault, backend):
    model = Echo()
    long = ["Turn one. " + "word " * 400, "Turn two. " + "word " * 400, "Turn three. " + "word " * 400]
    config = vault / "atlas" / "model.md"
    config.write_text(config.read_text().replace("journal_days: 2", "journal_days: 0"))
    agent, results = _talk(vault, long, model)
    turns = results[2].manifest["conversation"]["turns"]
    newest = len(long[2]) // 4 + len(f"Answer to: {long[2]}") // 4 + 2
    budget = results[2].manifest["tokens"] - sum(t["tokens"] for t in turns) + newest + 60  # one turn's room
    config.write_text(config.read_text().replace("max_input_tokens: ", f"max_input_tokens: {budget} #"))
    last = agent.call("Sum up.", conversation_id=results[0].conversation_id)
    talk = last.manifest["conversation"]
    assert [t["run_id"] for t in talk["turns"]] == [results[2].run_id]
    assert [(d["run_id"], d["reason"]) for d in talk["dropped"]] == [
        (results[0].run_id, "budget"), (results[1].run_id, "budget")]
    assert {"source": f"turn {results[0].run_id}", "action": "dropped",
            "tokens": talk["dropped"][0]["tokens"]} in last.manifest["cuts"]
    assert last.manifest["tokens"] <= budget
    assert [m["content"] for m in model.requests[-1].messages][0].startswith("Turn three.")


def test_a_turn_whose_snapshots_were_pruned_is_left_out_and_said_so(vault, backend, monkeypatch):
    real = clock.now
    monkeypatch.setattr(clock, "now", lambda zone: real(zone) - timedelta(days=40))
    agent = AtomicAgent("atlas", root=vault, model=Echo())
    old = agent.call("An old question.", conversation_id="long-talk")
    monkeypatch.setattr(clock, "now", real)
    _set_retention(vault, 30)
    assert av(vault, "prune", "atlas").exit_code == 0
    prune = agent.log.query(agent.folder)[-1]
    assert prune["kind"] == "prune" and old.run_id in prune["runs"]
    new = agent.call("A new question.", conversation_id="long-talk")
    talk = new.manifest["conversation"]
    assert talk["turns"] == [] and talk["new"] is False
    assert talk["skipped"][0]["run_id"] == old.run_id and "pruned" in talk["skipped"][0]["reason"]
    assert f"prune record seq {prune['seq']}" in talk["skipped"][0]["reason"]
    assert any(f"the turn of run {old.run_id} was left out" in w for w in new.warnings)
    assert agent.model.requests[-1].messages == [{"role": "user", "content": "A new question."}]


def test_a_tampered_turn_is_never_sent(vault, backend):
    agent, (first, _) = _talk(vault, ["The question.", "Next."], Echo())
    answer = agent.log.get(agent.folder, first.run_id)["snapshots"]["answer"]
    _tamper(agent, answer, "A forged answer.")
    later = agent.call("Again.", conversation_id=first.conversation_id)
    skipped = later.manifest["conversation"]["skipped"]
    assert skipped[0]["run_id"] == first.run_id and "tampered" in skipped[0]["reason"]
    assert "forged" not in json.dumps([m for r in agent.model.requests for m in r.messages])


def test_a_failed_run_is_no_turn(vault):
    agent = AtomicAgent("atlas", root=vault, model="offline")
    first = agent.call("Start.", conversation_id="new")
    broken = AtomicAgent("atlas", root=vault, model=ScriptedModel(error=ConfigError("down")))
    with pytest.raises(Exception):
        broken.call("Fails.", conversation_id=first.conversation_id)
    after = agent.call("Go on.", conversation_id=first.conversation_id)
    talk = after.manifest["conversation"]
    assert [t["run_id"] for t in talk["turns"]] == [first.run_id]
    assert "status error" in talk["skipped"][0]["reason"]
    assert not any("left out" in w for w in after.warnings)  # it lost nothing: it never had an answer


def test_a_replay_sends_the_same_earlier_turns_from_the_snapshots(vault, backend):
    model = Echo()
    agent, (first, second) = _talk(vault, ["Plan Monday. " + "detail " * 800, "And Tuesday?"], model)
    sent = model.requests[-1].messages
    done = replays.replay(agent, second.run_id)
    assert model.requests[-1].messages == sent and len(sent) == 3
    assert done.record["conversation_id"] == first.conversation_id
    assert done.record["manifest"]["conversation"]["turns"] == \
        agent.log.get(agent.folder, second.run_id)["manifest"]["conversation"]["turns"]
    assert done.compared["answer"]["same"] is True
    # a replay with a smaller budget drops the earlier turn (after the journal days), and says so
    turn = second.manifest["conversation"]["turns"][0]["tokens"]
    tight = replays.replay(agent, second.run_id, replays.Changes(
        max_input_tokens=second.manifest["tokens"] - turn // 2))
    assert tight.record["manifest"]["conversation"]["turns"] == []
    assert tight.record["manifest"]["conversation"]["dropped"][0]["run_id"] == first.run_id
    # a gone turn snapshot refuses the replay, as a gone layer does
    _tamper(agent, agent.log.get(agent.folder, first.run_id)["snapshots"]["work_item"], "forged")
    with pytest.raises(replays.ReplayError, match="tampering"):
        replays.replay(agent, second.run_id)


def test_continue_on_the_command_line(vault):
    started = av(vault, "run", "atlas", "Plan the week.", "--continue", "new", "--json")
    assert started.exit_code == 0, started.output
    cid = json.loads(started.stdout)["conversation_id"]
    assert cid.startswith("conv-")
    went_on = av(vault, "run", "atlas", "What about Friday?", "--continue")
    assert went_on.exit_code == 0 and f"conversation {cid}" in went_on.stderr
    assert "Conversation: 1 earlier turns" in went_on.stdout
    by_id = av(vault, "run", "atlas", "And Saturday?", "--continue", cid, "--json")
    assert json.loads(by_id.stdout)["manifest"]["conversation"]["turns"][-1]["seq"] is not None
    shown = av(vault, "show", "atlas", "--last")
    assert f"## Conversation {cid}" in shown.output and shown.output.count("- turn of run") == 2
    wrong = av(vault, "run", "atlas", "--continue", "plan my day")
    assert wrong.exit_code == 2 and "put it after WORK_ITEM" in wrong.output
    one_shot = av(vault, "run", "atlas", "Alone.", "--json")
    assert json.loads(one_shot.stdout)["conversation_id"] is None


def test_continue_with_no_conversation_yet_is_a_usage_error(vault, snap):
    before = snap(vault)
    done = av(vault, "run", "atlas", "Go on.", "--continue")
    assert done.exit_code == 2 and "no conversation to continue" in done.output and "--continue new" in done.output
    assert snap(vault) == before


def test_the_mcp_run_agent_tool_takes_a_conversation_id(vault):
    tools = VaultTools(vault)
    first = tools.run_agent("atlas", "Plan the week.", model="offline", conversation_id="new")
    second = tools.run_agent("atlas", "And Friday?", model="offline", conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"]
    assert "Conversation: 1 earlier turns" in second["text"]
    with pytest.raises(ConfigError, match="is not a conversation id"):
        tools.run_agent("atlas", "Hi.", model="offline", conversation_id="a b")


def test_a_resumed_run_is_the_turn_of_the_run_it_resumes(vault):
    from test_approvals import counter, edit
    from atomic_vault import approvals

    counter(vault)
    agent = AtomicAgent("atlas", root=vault, model="offline")
    first = agent.call("Plan.", conversation_id="new")
    waiting = agent.call('tool: count {"word": "alpha"}', conversation_id=first.conversation_id)
    assert waiting.status == "awaiting_approval" and waiting.conversation_id == first.conversation_id
    edit(vault, approvals.listing(vault / "atlas")[0], decision="approve", decided_by="ops")
    resumed = AtomicAgent("atlas", root=vault, model="offline", trigger="resume").resume(waiting.run_id)
    assert resumed.status == "ok" and resumed.conversation_id == first.conversation_id
    later = agent.call("And then?", conversation_id=first.conversation_id)
    talk = later.manifest["conversation"]
    assert [t["run_id"] for t in talk["turns"]] == [first.run_id, resumed.run_id]
    assert [s["run_id"] for s in talk["skipped"]] == [waiting.run_id]
