"""Approvals as files, suspend and resume, the effect ledger (spec/07 "Approvals and
effects"): an escalated call waits in approvals/<id>.md, the run ends awaiting_approval,
resume continues from the recorded state; each effect runs at most once."""

import json
import sys

import pytest
import yaml

from atomic_vault import AtomicAgent, approvals, runlog
from atomic_vault.errors import AwaitingApproval, ConfigError
from atomic_vault.vault import open_agent

PY = sys.executable


def records(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))]


def tools_md(vault, declared):
    block = json.dumps({"read": ["persona/", "memory/", "wiki/", "journal/"], "write": ["memory/"],
                        "tools": declared})
    (vault / "atlas" / "tools.md").write_text(f"# Tools\n\n```yaml\n{block}\n```\n")


def counter(vault, **more):
    """A command tool that appends a line to a file each time it runs: effects are countable."""
    script = vault / "atlas" / "count.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\nprint('counted', sys.argv[2])\n")
    tools_md(vault, [{"name": "count", "kind": "command", "description": "count a word",
                      "argv": [PY, str(script), str(vault / "atlas" / "count.txt"), "{word}"],
                      "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
                      **more}])
    return vault / "atlas" / "count.txt"


def agent(vault, model="offline"):
    return AtomicAgent("atlas", root=vault, model=model)


def edit(vault, approval_id, **changes):
    path = vault / "atlas" / "approvals" / f"{approval_id}.md"
    text = path.read_text()
    for key, value in changes.items():
        text = text.replace(f"\n{key}: null", f"\n{key}: {value}", 1).replace(
            f"\n{key}: pending", f"\n{key}: {value}", 1)
    path.write_text(text)
    return path


def suspend(vault, work='tool: count {"word": "alpha"}'):
    ran = counter(vault)
    result = agent(vault).call(work)
    assert result.status == "awaiting_approval"
    return ran, result, approvals.listing(vault / "atlas" / "")[0]


def test_an_escalated_call_writes_an_approval_file_and_the_run_awaits_it(vault):
    ran, result, approval_id = suspend(vault)
    assert not ran.exists()
    text = (vault / "atlas" / "approvals" / f"{approval_id}.md").read_text()
    fields = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    assert fields["decision"] == "pending" and fields["tool"] == "count"
    assert fields["arguments"] == {"word": "alpha"}
    assert fields["args_sha256"] == approvals.args_sha256({"word": "alpha"})
    assert (fields["run"], fields["step"]) == (result.run_id, 1) and fields["expires_at"]
    record = records(vault)[-1]
    assert record["status"] == "awaiting_approval" and record["suspended"]["step"] == 1
    assert any("awaits a person's decision" in w for w in result.warnings)


def test_the_approval_expiry_is_model_mds_approval_hours(vault):
    from datetime import datetime, timedelta

    model = vault / "atlas" / "model.md"
    model.write_text(model.read_text().replace("```yaml\n", "```yaml\napproval_hours: 5\n", 1))
    _, _, approval_id = suspend(vault)
    fields = approvals.read(vault / "atlas", approval_id).fields
    waited = datetime.fromisoformat(fields["expires_at"]) - datetime.fromisoformat(fields["requested_at"])
    assert waited == timedelta(hours=5)


def test_resume_before_a_decision_is_refused_and_changes_nothing(vault):
    ran, result, approval_id = suspend(vault)
    before = len(records(vault))
    with pytest.raises(AwaitingApproval, match=approval_id):
        agent(vault).resume(result.run_id)
    assert len(records(vault)) == before and not ran.exists()


def test_approved_by_editing_the_file_the_resumed_run_runs_it_once_without_asking_again(vault):
    ran, result, approval_id = suspend(vault)
    edit(vault, approval_id, decision="approve", decided_by="maria")

    class Counting:
        name, calls = "offline", 0

        def complete(self, request):
            from atomic_vault.models import OfflineModel
            Counting.calls += 1
            assert any(m.get("role") == "tool" for m in request.messages)  # resumes, never re-asks
            return OfflineModel().complete(request)

    resumed = agent(vault, Counting()).resume(result.run_id)
    assert resumed.status == "ok" and "Tool count answered: counted alpha" in resumed.text
    assert Counting.calls == 1 and ran.read_text() == "alpha\n"
    kinds = [r["kind"] for r in records(vault)]
    assert kinds[-4:] == ["approval", "effect", "effect", "run"]
    taken, begin, commit, record = records(vault)[-4:]
    assert taken["decision"] == "approve" and taken["decided_by"] == "maria" and taken["approval"] == approval_id
    assert (begin["phase"], commit["phase"], begin["key"]) == ("begin", "commit", commit["key"])
    assert record["resumes"] == result.run_id
    assert runlog.verify(open_agent("atlas", vault)).ok
    journal = "".join(p.read_text() for p in (vault / "atlas" / "journal").rglob("*.md"))
    assert f"run {resumed.run_id}" in journal and "awaiting_approval" in journal
    with pytest.raises(ConfigError, match="resumed already"):  # taken exactly once
        agent(vault).resume(result.run_id)
    assert ran.read_text() == "alpha\n"


def test_a_denial_is_the_tools_result_and_nothing_runs(vault):
    ran, result, approval_id = suspend(vault)
    approvals.decide(vault / "atlas", approval_id, "deny", "maria", "not today")
    resumed = agent(vault).resume(result.run_id)
    assert "denied this call" in resumed.text and "not today" in resumed.text
    assert not ran.exists() and records(vault)[-2]["decision"] == "deny"


def test_an_expired_approval_is_denied(vault, monkeypatch):
    ran, result, approval_id = suspend(vault)
    path = vault / "atlas" / "approvals" / f"{approval_id}.md"
    text = path.read_text()
    path.write_text(text.replace(text.split("expires_at: ")[1].split("\n")[0], "'2000-01-01T00:00:00+00:00'"))
    resumed = agent(vault).resume(result.run_id)
    assert "expired" in resumed.text and not ran.exists()
    assert records(vault)[-2]["decision"] == "expired"


def test_invalid_yaml_after_an_edit_is_refused_naming_the_file(vault):
    ran, result, approval_id = suspend(vault)
    path = edit(vault, approval_id, decision="approve", decided_by="maria")
    path.write_text(path.read_text().replace("decided_by: maria", "decided_by: [maria"))
    before = len(records(vault))
    with pytest.raises(ConfigError) as caught:
        agent(vault).resume(result.run_id)
    assert str(path) in str(caught.value) and len(records(vault)) == before and not ran.exists()


def test_a_decision_for_other_arguments_is_refused(vault):
    ran, result, approval_id = suspend(vault)
    path = edit(vault, approval_id, decision="approve", decided_by="maria")
    path.write_text(path.read_text().replace("word: alpha", "word: omega"))
    with pytest.raises(ConfigError, match="arguments were edited"):
        agent(vault).resume(result.run_id)
    assert not ran.exists()


def test_an_approval_does_not_cover_another_run(vault):
    ran, first, first_id = suspend(vault)
    second = agent(vault).call('tool: count {"word": "alpha"}')
    second_id = [i for i in approvals.listing(vault / "atlas") if i != first_id][0]
    # the first run's approval, copied over the second's: same tool and arguments, other run
    text = (vault / "atlas" / "approvals" / f"{first_id}.md").read_text().replace("id: " + first_id, "id: " + second_id)
    (vault / "atlas" / "approvals" / f"{second_id}.md").write_text(text)
    edit(vault, second_id, decision="approve", decided_by="maria")
    with pytest.raises(ConfigError, match="does not cover"):
        agent(vault).resume(second.run_id)
    assert not ran.exists()


def test_a_later_edit_of_a_taken_decision_is_reported_never_applied(vault):
    ran, result, approval_id = suspend(vault)
    path = edit(vault, approval_id, decision="deny", decided_by="maria")
    from atomic_vault import resume as resuming
    # take the decision, then crash before the resumed run's record: a second resume reuses it
    a = agent(vault)
    original = a._loop
    a._loop = lambda *args, **kw: (_ for _ in ()).throw(RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        a.resume(result.run_id)
    path.write_text(path.read_text().replace("decision: deny", "decision: approve"))
    resumed = agent(vault).resume(result.run_id)
    assert "denied this call" in resumed.text and not ran.exists()
    assert any("edited after" in str(d.get("note")) for d in records(vault)[-1]["decisions"])
    assert [r["kind"] for r in records(vault)].count("approval") == 1


def test_an_effect_begun_but_never_committed_is_unknown_and_waits_for_a_person(vault, monkeypatch):
    ran, result, approval_id = suspend(vault)
    edit(vault, approval_id, decision="approve", decided_by="maria")
    from atomic_vault import tools
    real = tools.run
    monkeypatch.setattr(tools, "run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed between begin and commit
        agent(vault).resume(result.run_id)
    monkeypatch.setattr(tools, "run", real)
    assert records(vault)[-1]["phase"] == "begin"
    again = agent(vault).resume(result.run_id)
    assert "never recorded as done" in again.text and not ran.exists()  # not run twice unasked


def test_a_committed_effect_is_reused_by_a_retried_resume(vault, monkeypatch):
    ran, result, approval_id = suspend(vault)
    edit(vault, approval_id, decision="approve", decided_by="maria")
    a = agent(vault)
    from atomic_vault import toolloop
    real = toolloop.complete
    monkeypatch.setattr(toolloop, "complete", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed after the effect committed, before the model
        a.resume(result.run_id)
    monkeypatch.setattr(toolloop, "complete", real)
    again = agent(vault).resume(result.run_id)
    assert "counted alpha" in again.text and ran.read_text() == "alpha\n"


# --- whole runs at most once ---------------------------------------------------------------

class Counting:
    name = "offline"

    def __init__(self):
        self.calls = 0

    def complete(self, request):
        from atomic_vault.models import OfflineModel
        self.calls += 1
        return OfflineModel().complete(request)


def test_a_second_call_with_the_key_returns_the_first_result_without_the_model(vault):
    ran = counter(vault)
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\ndefault: allow\nrules: []\n```\n")
    model = Counting()
    first = agent(vault, model).call('tool: count {"word": "a"}', idempotency_key="daily-2026-12-01")
    again = agent(vault, model).call('tool: count {"word": "a"}', idempotency_key="daily-2026-12-01")
    assert model.calls == 2 and ran.read_text() == "a\n"  # one run: two model steps, one effect
    assert (again.run_id, again.text, again.seq) == (first.run_id, first.text, first.seq)
    assert "Tool count answered: counted a" in again.text
    assert any("not called again" in w for w in again.warnings)
    assert [r["kind"] for r in records(vault)].count("run") == 1


def test_the_same_key_with_another_work_item_is_an_error(vault):
    agent(vault).call("Plan my Monday.", idempotency_key="k1")
    with pytest.raises(ConfigError, match="another work item"):
        agent(vault).call("Plan my Tuesday.", idempotency_key="k1")


def test_the_key_index_is_derived_a_wrong_or_missing_index_is_rebuilt_from_the_log(vault):
    first = agent(vault).call("Plan my Monday.", idempotency_key="k1")
    other = agent(vault).call("Plan my Tuesday.", idempotency_key="k2")
    index = vault / "atlas" / ".atomic_vault" / "runkeys.jsonl"
    index.write_text(json.dumps({"key": "k1", "run_id": other.run_id}) + "\n")  # wrong
    model = Counting()
    assert agent(vault, model).call("Plan my Monday.", idempotency_key="k1").run_id == first.run_id
    index.unlink()
    assert agent(vault, model).call("Plan my Tuesday.", idempotency_key="k2").run_id == other.run_id
    assert model.calls == 0


def test_a_keyed_run_that_crashed_after_its_effect_reuses_it_when_retried(vault, monkeypatch):
    ran = counter(vault)
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\ndefault: allow\nrules: []\n```\n")
    from atomic_vault import captures
    real = captures.write
    monkeypatch.setattr(captures, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed in the write-back, after the effect committed
        agent(vault).call('tool: count {"word": "a"}', idempotency_key="k")
    monkeypatch.setattr(captures, "write", real)
    again = agent(vault).call('tool: count {"word": "a"}', idempotency_key="k")
    assert again.status == "ok" and ran.read_text() == "a\n" and "counted a" in again.text
    assert records(vault)[-1]["steps"][0]["calls"][0]["effect"]["reused"] is True


# --- the command line and the dashboard ----------------------------------------------------

def cli(vault, *args):
    from click.testing import CliRunner
    from atomic_vault.cli import cli as main
    return CliRunner().invoke(main, ["--root", str(vault), *args])


def test_the_cli_run_exits_5_then_approvals_approve_and_resume_finish_the_run(vault):
    ran = counter(vault)
    first = cli(vault, "run", "atlas", 'tool: count {"word": "cli"}', "--model", "offline", "--json")
    assert first.exit_code == 5, first.output
    run_id = json.loads(first.stdout)["run_id"]
    listed = cli(vault, "approvals", "atlas", "--json")
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["state"] == "pending" and row["tool"] == "count"
    assert cli(vault, "resume", "atlas", run_id).exit_code == 5  # still pending
    assert cli(vault, "approvals", "atlas", "approve", row["id"]).exit_code == 2  # --by is required
    assert cli(vault, "approvals", "atlas", "approve", row["id"], "--by", "maria").exit_code == 0
    done = cli(vault, "resume", "atlas", run_id, "--model", "offline")
    assert done.exit_code == 0, done.output and ran.read_text() == "cli\n"
    shown = json.loads(cli(vault, "approvals", "atlas", "show", row["id"], "--json").stdout)
    assert shown["state"] == "taken: approve"
    kinds = cli(vault, "log", "atlas", "--kind", "approval", "--json").stdout.splitlines()
    assert len(kinds) == 1 and json.loads(kinds[0])["decided_by"] == "maria"
    assert len(cli(vault, "log", "atlas", "--kind", "effect", "--json").stdout.splitlines()) == 2


def test_run_with_an_idempotency_key_prints_the_first_result_again(vault):
    one = cli(vault, "run", "atlas", "Plan my Monday.", "--model", "offline", "--idempotency-key", "d-1", "--json")
    two = cli(vault, "run", "atlas", "Plan my Monday.", "--model", "offline", "--idempotency-key", "d-1", "--json")
    assert one.exit_code == two.exit_code == 0
    assert json.loads(one.stdout)["run_id"] == json.loads(two.stdout)["run_id"]


def test_the_dashboard_counts_the_approvals_waiting(vault):
    from datetime import date
    from atomic_vault import dashboard
    from atomic_vault.backends.files import FileLog
    suspend(vault)
    folder = open_agent("atlas", vault)
    assert dashboard.gather(folder, FileLog(), date.today()).awaiting == 1


# --- both wire formats: suspend, approve, resume ------------------------------------------

def model_md(vault, text):
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\n" + text + "\n```\n")


def test_anthropic_suspend_and_resume_sends_the_decided_result_without_asking_again(vault, stub, monkeypatch):
    from provider_stubs import anthropic_message
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tools-0123456789abcdef")
    model_md(vault, f"model: anthropic:claude-sonnet-4-6\nproviders: {{anthropic: {{base_url: \"{stub.url}\", timeout_s: 5}}}}")
    stub.reply(body={"input_tokens": 900})
    stub.reply(body=anthropic_message("Saying it.", tool_inputs=({"text": "hi"},), tool_name="say"))
    result = AtomicAgent("atlas", root=vault).call("Say hi.")
    assert result.status == "awaiting_approval"
    approvals.decide(vault / "atlas", approvals.listing(vault / "atlas")[0], "deny", "maria", "not now")
    asked = len(stub.requests)
    stub.reply(body=anthropic_message("Understood, I did not say it."))
    resumed = AtomicAgent("atlas", root=vault).resume(result.run_id)
    assert resumed.text == "Understood, I did not say it."
    sent = [r.body for r in stub.requests[asked:] if "messages" in r.body]
    assert len(sent) == 1  # one call: the step already taken is not asked again
    assistant, results = sent[0]["messages"][-2:]
    assert assistant["content"][1]["type"] == "tool_use" and assistant["content"][1]["input"] == {"text": "hi"}
    assert results["content"][0]["type"] == "tool_result" and "denied" in results["content"][0]["content"]


def test_openai_suspend_and_resume_runs_the_approved_call_once(vault, stub, monkeypatch):
    from provider_stubs import openai_completion
    monkeypatch.setenv("OPENAI_API_KEY", "sk-tools-0123456789abcdef0123")
    model_md(vault, f"model: openai:gpt-4o-mini\nproviders: {{openai: {{base_url: \"{stub.url}/v1\", timeout_s: 5}}}}")
    stub.reply(body=openai_completion(None, tool_calls=(("say", '{"text": "hello there"}'),)))
    result = AtomicAgent("atlas", root=vault).call("Say hello.")
    assert result.status == "awaiting_approval"
    edit(vault, approvals.listing(vault / "atlas")[0], decision="approve", decided_by="maria")
    stub.reply(body=openai_completion("Said it."))
    resumed = AtomicAgent("atlas", root=vault).resume(result.run_id)
    assert resumed.text == "Said it." and len(stub.requests) == 2
    assistant, tool = stub.requests[1].body["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "say"
    assert tool["role"] == "tool" and tool["content"].strip() == "hello there"
    assert [r["phase"] for r in records(vault) if r["kind"] == "effect"] == ["begin", "commit"]


def test_two_calls_with_one_key_started_together_run_the_model_once(vault):
    """The lookup and a claim of the key are made under the agent's lock: while the first
    call runs, a second with the same key is refused as busy; afterwards it answers with
    the first run's result, and the model was called once."""
    import threading

    from atomic_vault.errors import LockTimeout
    from atomic_vault.models import ModelResponse

    inside, release = threading.Event(), threading.Event()

    class Slow:
        name = "slow"
        calls = 0

        def complete(self, request):
            Slow.calls += 1
            inside.set()
            release.wait(30)
            return ModelResponse(text="the one answer", input_tokens=1, output_tokens=1)

    agent = AtomicAgent("atlas", root=vault, model=Slow())
    first: list = []
    worker = threading.Thread(target=lambda: first.append(agent.call("brief", idempotency_key="k-1")))
    worker.start()
    assert inside.wait(30)
    with pytest.raises(LockTimeout, match="in progress"):
        AtomicAgent("atlas", root=vault, model=Slow()).call("brief", idempotency_key="k-1")
    release.set()
    worker.join(30)
    again = AtomicAgent("atlas", root=vault, model=Slow()).call("brief", idempotency_key="k-1")
    assert again.run_id == first[0].run_id and again.text == "the one answer" and Slow.calls == 1


def test_a_claim_left_by_a_dead_process_is_taken_over(vault):
    from atomic_vault import runkeys

    agent = AtomicAgent("atlas", root=vault)
    path = runkeys._claim_path(agent, "k-2")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("pid=999999999\n", encoding="utf-8")  # no such process
    result = agent.call("brief", idempotency_key="k-2")
    assert result.status == "ok" and not path.exists()


def approval_findings(vault):
    from atomic_vault import doctor

    return [f for f in doctor.check(open_agent("atlas", vault)) if f.check == "approvals"]


def test_doctor_names_an_approval_file_a_resume_would_refuse(vault):
    ran, result, approval_id = suspend(vault)
    path = vault / "atlas" / "approvals" / f"{approval_id}.md"
    assert [f.message for f in approval_findings(vault)] == ["1 approval(s) pending"]
    path.write_text(path.read_text().replace('word: alpha', 'word: omega'))  # not what was asked
    found = [f for f in approval_findings(vault) if f.level == "error"]
    assert len(found) == 1 and found[0].path == str(path) and "arguments" in found[0].message
    assert "amended_args" in found[0].fix
    path.write_text(path.read_text().replace("decision: pending", "decision: [approve"))
    found = [f for f in approval_findings(vault) if f.level == "error"]
    assert len(found) == 1 and found[0].path == str(path) and "YAML" in found[0].message and found[0].fix


def test_doctor_warns_about_an_expired_pending_approval(vault):
    _, result, approval_id = suspend(vault)
    path = vault / "atlas" / "approvals" / f"{approval_id}.md"
    text = path.read_text()
    path.write_text(text.replace(text.split("expires_at: ")[1].split("\n")[0], "'2000-01-01T00:00:00+00:00'"))
    found = {f.level: f for f in approval_findings(vault)}
    assert "expired" in found["warn"].message and f"resume atlas {result.run_id}" in found["warn"].fix
    assert found["ok"].message == "0 approval(s) pending"


def test_doctor_repair_moves_an_orphan_approval_aside_never_deleting_it(vault):
    from datetime import datetime, timezone

    from atomic_vault import doctor

    counter(vault)
    folder = vault / "atlas"
    # what a run killed after writing the file and before its record leaves behind
    orphan = approvals.request(folder, agent="atlas", run="20200101T000000-0badc0de", step=1, index=1,
                               call="c1", tool="count", arguments={"word": "x"}, rule=None, reason="r",
                               now=datetime(2020, 1, 1, tzinfo=timezone.utc))
    young = approvals.request(folder, agent="atlas", run="20991231T000000-0badc0de", step=1, index=1,
                              call="c1", tool="count", arguments={"word": "y"}, rule=None, reason="r",
                              now=datetime.now(timezone.utc))  # its run may still be going
    warned = [f for f in approval_findings(vault) if f.level == "warn"]
    assert len(warned) == 1 and orphan in warned[0].message and "no record" in warned[0].message
    text = (folder / "approvals" / f"{orphan}.md").read_text()
    actions = doctor.repair(open_agent("atlas", vault))
    assert any(f"approvals/{orphan}.md.orphan" in a for a in actions)
    assert (folder / "approvals" / f"{orphan}.md.orphan").read_text() == text
    assert not (folder / "approvals" / f"{orphan}.md").exists() and (folder / "approvals" / f"{young}.md").exists()
    assert [f.level for f in approval_findings(vault)] == ["ok"]
    assert records(vault)[-1]["kind"] == "repair"


# --- show: each tool step with its verdict, effect and approval ----------------------------

def test_show_gives_each_tool_step_its_verdict_effect_and_approval_then_the_resume(vault):
    counter(vault)
    (vault / "atlas" / "policy.md").write_text(
        "# Policy\n\n```yaml\ndefault: escalate\nrules:\n  - tool: count\n    args: {word: alpha}\n"
        "    verdict: allow\n```\n")
    first = agent(vault).call('tool: count {"word": "alpha"}\ntool: count {"word": "beta"}')
    assert first.status == "awaiting_approval"
    approval_id = approvals.listing(vault / "atlas")[0]
    shown = json.loads(cli(vault, "show", "atlas", first.run_id, "--json").stdout)
    step = shown["steps"][0]
    assert step["step"] == 1 and step["input_tokens"] and step["cost_usd"] == 0.0
    allowed, escalated = step["calls"]
    assert allowed["tool"] == "count" and allowed["arguments"] == '{"word": "alpha"}'
    assert allowed["arguments_from"] == "snapshot" and allowed["verdict"] == "allow"
    assert allowed["rule"].startswith("policy.md line") and allowed["policy_sha256"]
    assert allowed["effect"]["status"] == "ok" and allowed["effect"]["result"] == "counted alpha\n"
    assert allowed["effect"]["key"] and allowed["effect"]["reused"] is False
    assert escalated["arguments"] == '{"word": "beta"}' and escalated["arguments_from"] == "record"
    assert escalated["verdict"] == "escalate" and "no rule matches" in escalated["reason"]
    assert escalated["approval"] == {"id": approval_id, "decision": "pending", "decided_by": None,
                                     "note": None, "taken_seq": None}
    command = f"atomic-vault resume atlas {first.run_id}"
    assert shown["awaiting"]["files"] == [f"approvals/{approval_id}.md"] and shown["awaiting"]["command"] == command
    text = cli(vault, "show", "atlas", first.run_id).stdout
    assert "## Tool steps" in text and "verdict: allow" in text and "result: counted alpha" in text
    assert f"approval {approval_id}: pending" in text and command in text

    approvals.decide(vault / "atlas", approval_id, "approve", "maria", "fine")
    second = agent(vault).resume(first.run_id)
    after = json.loads(cli(vault, "show", "atlas", first.run_id, "--json").stdout)
    assert after["steps"][0]["calls"][1]["approval"]["decision"] == "approve"
    assert after["awaiting"]["resumed_by"] == second.run_id
    resumed = json.loads(cli(vault, "show", "atlas", second.run_id, "--json").stdout)
    assert resumed["resumes"] == first.run_id and resumed["awaiting"] is None
    assert resumed["decisions"][0]["approval"] == approval_id and resumed["decisions"][0]["decision"] == "approve"
    text = cli(vault, "show", "atlas", second.run_id).stdout
    assert f"## Resumes run {first.run_id}" in text and f"approval {approval_id}: approve by maria" in text


def test_show_says_an_effect_was_reused_from_an_earlier_attempt(vault, monkeypatch):
    counter(vault)
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\ndefault: allow\nrules: []\n```\n")
    from atomic_vault import captures
    real = captures.write
    monkeypatch.setattr(captures, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        agent(vault).call('tool: count {"word": "a"}', idempotency_key="k")
    monkeypatch.setattr(captures, "write", real)
    again = agent(vault).call('tool: count {"word": "a"}', idempotency_key="k")
    call = json.loads(cli(vault, "show", "atlas", again.run_id, "--json").stdout)["steps"][0]["calls"][0]
    assert call["effect"]["reused"] is True and call["effect"]["status"] == "ok"
    assert "reused (it ran in an earlier attempt)" in cli(vault, "show", "atlas", again.run_id).stdout


# --- effect lookups read the log after the index's watermark, never all of it --------------

def _effects(agent_, day, *keys, phase="commit"):
    for key in keys:
        agent_.log.append(agent_.folder, {"kind": "effect", "agent": "atlas", "ts": f"{day}T10:00:00+00:00",
                                          "run": "r", "step": 1, "key": key, "tool": "count", "phase": phase,
                                          "status": "ok", "result": f"done {key}"})


def _counting(monkeypatch, agent_):
    seen = []
    real = agent_.log.query

    def query(folder, q=None):
        out = real(folder, q) if q is not None else real(folder)
        seen.extend(out)
        return out
    monkeypatch.setattr(agent_.log, "query", query)
    return seen


def test_an_effect_lookup_reads_the_log_after_the_index_watermark_not_every_record(vault, monkeypatch):
    from atomic_vault import ledger

    a = agent(vault)
    for day in range(1, 6):
        _effects(a, f"2026-11-0{day}", *(f"k{day}-{i}" for i in range(20)))
    assert ledger.find(a, "k1-3").record["result"] == "done k1-3"  # the first lookup builds the index
    seen = _counting(monkeypatch, a)
    assert ledger.find(a, "k2-7").state == "committed" and ledger.find(a, "nope") is None
    assert 0 < len(seen) <= 2 * 20 + 20  # a hit's day and the watermark's day, not the 100 effects
    _effects(a, "2026-11-06", "late", phase="begin")
    assert ledger.find(a, "late").state == "unknown"


def test_the_effect_index_is_checked_a_wrong_one_is_rebuilt_from_the_log(vault):
    from atomic_vault import ledger

    a = agent(vault)
    _effects(a, "2026-11-01", "k1", "k2")
    _effects(a, "2026-11-02", "k3")
    assert ledger.find(a, "k1").state == "committed"
    index = a.folder.state / ledger.INDEX
    lines = index.read_text().splitlines()
    index.write_text("\n".join(line for line in lines if '"k2"' not in line) + "\n")  # a line lost
    assert ledger.find(a, "k2").record["result"] == "done k2"
    text = index.read_text()
    index.write_text(text.replace('"seq": 2,', '"seq": 3,', 1))  # an entry pointing at another record
    assert ledger.find(a, "k1").record["result"] == "done k1"
    index.unlink()
    assert ledger.find(a, "k3").state == "committed"


def test_an_effect_logged_into_an_earlier_day_after_the_watermark_is_found(vault):
    from atomic_vault import ledger

    a = agent(vault)
    _effects(a, "2026-11-05", "new")
    assert ledger.find(a, "x") is None  # watermark on 2026-11-05
    _effects(a, "2026-11-04", "long-run")  # a run that started the day before logs its effect now
    assert ledger.find(a, "long-run").state == "committed"
