"""Tools, the tool loop and the authority gate (spec/06 "Tools" and "policy.md", spec/07
"Steps and verdicts"): the offline model, the gate's verdicts, each tool kind's faults,
and the loop through both wire formats against the stub servers."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from atomic_vault import AtomicAgent, runlog, tools
from atomic_vault.config import ToolsConfig
from atomic_vault.errors import ConfigError
from atomic_vault.models import ModelResponse, ToolCall, token_ceiling
from atomic_vault.policy import Gate
from atomic_vault.toolloop import args_sha256
from atomic_vault.vault import open_agent
from provider_stubs import anthropic_message, openai_completion

PY = sys.executable


def records(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))]


def tools_md(vault, declared, extra=""):
    block = json.dumps({"read": ["persona/", "memory/", "wiki/", "journal/"], "write": ["memory/"],
                        "tools": declared})
    (vault / "atlas" / "tools.md").write_text(f"# Tools\n\n```yaml\n{block}\n```\n{extra}")


def policy_md(path, body):
    path.write_text("# Policy\n\nRules.\n\n```yaml\n" + body.strip("\n") + "\n```\n")


def command(name, argv, **more):
    return {"name": name, "kind": "command", "description": f"the {name} tool", "argv": argv,
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}, **more}


def run(vault, work):
    return AtomicAgent("atlas", root=vault, model="offline").call(work)


# --- the sample: an allowed call, a blocked one, an escalated one -------------------------

def test_an_allowed_tool_runs_and_the_offline_model_answers_with_its_result(vault):
    result = run(vault, 'Plan my Monday.\ntool: leap_year {"year": 2028}')
    assert result.status == "ok" and "Tool leap_year answered: true" in result.text
    verdict, begin, commit, record = records(vault)[-4:]  # the verdict, then the effect's ledger
    assert verdict["kind"] == "verdict" and record["kind"] == "run"
    assert (begin["kind"], begin["phase"], commit["phase"], commit["result"]) == ("effect", "begin", "commit", "true")
    assert (verdict["tool"], verdict["outcome"], verdict["run"], verdict["step"]) == (
        "leap_year", "allow", record["run_id"], 1)
    assert verdict["args_sha256"] == args_sha256({"year": 2028})
    assert verdict["rule"] == "policy.md line 11"
    import hashlib
    assert verdict["policy_sha256"] == hashlib.sha256((vault / "atlas" / "policy.md").read_bytes()).hexdigest()
    first, second = record["steps"]
    assert first["calls"][0]["effect"] == {"status": "ok", "result": "true", "key": commit["key"]}
    assert first["calls"][0]["verdict"] == "allow" and second["calls"] == []
    assert runlog.verify(open_agent("atlas", vault)).ok


def test_a_blocked_call_runs_nothing_and_the_model_reads_the_reason(vault):
    result = run(vault, 'tool: leap_year {"year": 1800}')
    assert "the policy blocked this call" in result.text and "1900 to 2100" in result.text
    assert records(vault)[-2]["outcome"] == "block"


def test_an_escalated_call_is_not_run_and_the_run_awaits_a_person(vault):
    marker = vault / "atlas" / "ran"
    tools_md(vault, [command("touch", ["touch", str(marker)])])
    result = run(vault, "tool: touch {}")
    assert not marker.exists()
    assert any("awaits a person's decision" in w for w in result.warnings)
    record = records(vault)[-1]
    assert record["status"] == "awaiting_approval"
    assert record["steps"][0]["calls"][0]["effect"]["status"] == "awaiting_approval"
    assert records(vault)[-2]["outcome"] == "escalate"


def test_invalid_arguments_run_nothing_and_leave_no_verdict(vault):
    result = run(vault, 'tool: leap_year {"year": "soon"}')
    assert "do not fit the tool's schema" in result.text and "arguments.year must be integer" in result.text
    assert [r["kind"] for r in records(vault)] == ["run"]
    assert records(vault)[-1]["steps"][0]["calls"][0]["effect"]["status"] == "invalid"


def test_a_run_with_no_tools_makes_one_call_and_records_no_steps(vault):
    tools_md(vault, [])
    result = run(vault, 'tool: leap_year {"year": 2028}')
    assert "not offered" in result.text
    assert "steps" not in records(vault)[-1]


def test_names_in_the_older_list_form_are_a_warning_not_an_error(vault):
    tools_md(vault, ["web_search"])
    result = run(vault, "Plan my Monday.")
    assert result.status == "ok" and any("'web_search' without declaring it" in w for w in result.warnings)


def test_max_steps_ends_the_loop_with_the_last_calls_not_run(vault):
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\nmodel: offline\nmax_steps: 1\n```\n")
    result = run(vault, 'tool: leap_year {"year": 2028}')
    record = records(vault)[-1]
    assert "max_steps 1 reached" in record["steps"][0]["stopped"]
    assert any("max_steps 1" in w for w in result.warnings)
    assert [r["kind"] for r in records(vault)] == ["run"]  # nothing was gated, nothing ran


# --- the gate -------------------------------------------------------------------------------

def gate(tmp_path, body, floor=None):
    policy_md(tmp_path / "policy.md", body)
    (tmp_path / "root").mkdir(exist_ok=True)
    if floor:
        policy_md(tmp_path / "root" / "policy.md", floor)
    return Gate(tmp_path / "policy.md", tmp_path / "root" / "policy.md")


def test_rules_match_by_glob_exact_regex_and_numeric_bounds_first_match_wins(tmp_path):
    g = gate(tmp_path, """
rules:
  - {tool: "send_*", args: {to: {glob: "*@example.com"}, amount: {max: 100}}, verdict: allow}
  - {tool: send_money, args: {to: {regex: "^evil"}}, verdict: block, reason: not to them}
  - {tool: send_money, args: {currency: USD}, verdict: escalate}
default: block
""")
    assert g.decide("send_money", {"to": "a@example.com", "amount": 5}).outcome == "allow"
    assert g.decide("send_money", {"to": "a@example.com", "amount": 500}).outcome == "block"
    assert g.decide("send_money", {"to": "evil@x", "amount": 1}).reason == "not to them"
    assert g.decide("send_money", {"to": "b@x", "currency": "USD"}).outcome == "escalate"
    assert g.decide("send_money", {"to": "b@x", "amount": True}).rule == "policy.md default"


def test_revise_drops_sets_and_clamps_arguments(tmp_path):
    g = gate(tmp_path, """
rules:
  - {tool: pay, verdict: revise, drop: [force], set: {currency: EUR}, clamp: {amount: {max: 100}}}
""")
    verdict = g.decide("pay", {"amount": 250, "force": True})
    assert verdict.outcome == "revise" and verdict.arguments == {"amount": 100, "currency": "EUR"}


def test_no_policy_and_no_match_escalate(tmp_path):
    assert Gate(tmp_path / "policy.md", tmp_path / "none.md").decide("x", {}).outcome == "escalate"
    assert gate(tmp_path, "rules: [{tool: y, verdict: allow}]").decide("x", {}).outcome == "escalate"


def test_a_policy_with_an_invalid_rule_blocks_everything_and_names_the_line(tmp_path):
    g = gate(tmp_path, """
default: allow
rules:
  - {tool: a, verdict: allow}
  - {tool: b, verdict: perhaps}
""")
    verdict = g.decide("a", {})
    assert verdict.outcome == "block" and "line 9" in verdict.reason and "perhaps" in verdict.reason
    assert g.problems and "policy.md" in g.problems[0]


def test_the_floor_cannot_be_relaxed_by_the_agent(tmp_path):
    g = gate(tmp_path, "rules: [{tool: '*', verdict: allow}]",
             floor="rules: [{tool: delete_*, verdict: block, reason: never delete}]")
    assert g.decide("delete_all", {}).outcome == "block" and g.decide("delete_all", {}).rule.startswith("floor")
    assert g.decide("read", {}).outcome == "allow"  # a floor with no match and no default has no say
    assert g.decide("read", {}).floor_sha256


def test_a_broken_policy_in_a_run_blocks_the_tool_with_a_warning(vault):
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\nrules: [\n```\n")
    result = run(vault, 'tool: leap_year {"year": 2028}')
    assert "the policy cannot be loaded" in result.text and "answered: true" not in result.text
    assert any("policy.md" in w and "invalid YAML" in w for w in result.warnings)


# --- tool kinds and their faults ------------------------------------------------------------

def allow_all(vault):
    policy_md(vault / "atlas" / "policy.md", "default: allow")


def test_arguments_that_look_like_shell_stay_one_argv_item(vault):
    allow_all(vault)
    tools_md(vault, [command("echo_args", [PY, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", "{text}"])])
    hostile = "; rm -rf / $(touch pwned) `touch pwned2` | cat"
    result = run(vault, "tool: echo_args " + json.dumps({"text": hostile}))
    effect = records(vault)[-1]["steps"][0]["calls"][0]["effect"]
    assert effect["status"] == "ok" and json.loads(effect["result"]) == [hostile]
    assert not list(vault.rglob("pwned*")) and "answered" in result.text


def test_a_tool_printing_100_mb_is_capped(vault):
    allow_all(vault)
    tools_md(vault, [command("flood", [PY, "-c", "import sys\nfor _ in range(100): sys.stdout.write('x' * 1048576)"],
                             max_output_bytes=1000)])
    run(vault, "tool: flood {}")
    effect = records(vault)[-1]["steps"][0]["calls"][0]["effect"]
    assert effect["status"] == "ok" and effect["truncated"] is True
    assert "104856600 more bytes were dropped" in effect["result"] or "more bytes were dropped" in effect["result"]


def test_a_hanging_tool_is_killed_at_its_timeout_with_its_children(vault, tmp_path):
    allow_all(vault)
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(300)")
    tools_md(vault, [command("hang", [PY, "-c", script], timeout_s=1)])
    run(vault, "tool: hang {}")
    effect = records(vault)[-1]["steps"][0]["calls"][0]["effect"]
    assert effect["status"] == "timeout" and "stopped after 1 s" in effect["result"]
    child = int(pid_file.read_text())
    for _ in range(100):  # the kill is sent; wait for the orphan to be reaped
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with open(f"/proc/{child}/stat") as stat:  # a zombie not yet reaped is dead too
            assert stat.read().split()[2] == "Z"


def test_a_failing_command_and_a_raising_python_tool_are_results_not_crashes(vault):
    allow_all(vault)
    tools_md(vault, [command("fail", [PY, "-c", "import sys; sys.stderr.write('bad'); sys.exit(3)"]),
                     {"name": "boom", "kind": "python", "function": "json:loads", "description": "parse",
                      "input_schema": {"type": "object", "properties": {"s": {"type": "string"}}}}])
    result = run(vault, 'tool: fail {}\ntool: boom {"s": "{not json"}')
    calls = records(vault)[-1]["steps"][0]["calls"]
    assert result.status == "ok"
    assert calls[0]["effect"]["status"] == "error" and "status 3" in calls[0]["effect"]["result"]
    assert calls[1]["effect"]["status"] == "error" and "JSONDecodeError" in calls[1]["effect"]["result"]


def test_a_command_gets_only_the_allowed_environment(vault, monkeypatch):
    allow_all(vault)
    monkeypatch.setenv("SECRET_THING", "hidden-value-1234")
    monkeypatch.setenv("SHOWN_THING", "visible")
    tools_md(vault, [command("env", [PY, "-c", "import os, json; print(json.dumps(sorted(os.environ)))"],
                             env=["SHOWN_THING"])])
    run(vault, "tool: env {}")
    names = json.loads(records(vault)[-1]["steps"][0]["calls"][0]["effect"]["result"])
    assert "SHOWN_THING" in names and "SECRET_THING" not in names


@pytest.mark.parametrize("declared, field", [
    ({"name": "x", "kind": "shell", "description": "d"}, "tools[0].kind"),
    ({"name": "x", "kind": "command", "description": "d", "argv": "ls"}, "tools[0].argv"),
    ({"name": "x", "kind": "command", "description": "d", "argv": ["echo", "{y}"]}, "tools[0].argv"),
    ({"name": "x", "kind": "python", "description": "d", "function": "m:f",
      "input_schema": {"type": "object", "oneOf": []}}, "tools[0].input_schema"),
    ({"name": "atomic_capture", "kind": "python", "description": "d", "function": "m:f"}, "tools[0].name"),
])
def test_a_malformed_declaration_names_the_tool_and_the_field(tmp_path, declared, field):
    with pytest.raises(ConfigError) as caught:
        tools.load(ToolsConfig(declared=(declared,)), tmp_path / "tools.md")
    assert caught.value.field == field and caught.value.fix


def test_the_schema_subset_passes_and_fails():
    schema = {"type": "object", "required": ["n"], "additionalProperties": False, "properties": {
        "n": {"type": "integer", "minimum": 1}, "tags": {"type": "array", "items": {"type": "string"}},
        "mode": {"enum": ["a", "b"]}, "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}}}
    assert tools.check_schema(schema) is None
    assert tools.validate(schema, {"n": 2, "tags": ["x"], "mode": "a", "name": "abc"}) == []
    errors = tools.validate(schema, {"n": 0, "tags": [1], "mode": "c", "name": "ABCDEFG", "z": 1})
    assert len(errors) == 6
    assert tools.validate(schema, {}) == ["arguments.n is required"]
    assert tools.validate(schema, {"n": True}) == ["arguments.n must be integer, not bool"]


# --- cost guardrails over the loop ------------------------------------------------------------

class AlwaysTool:
    """A priced model that asks for the same tool at every step, billing the ceiling."""

    name = "test:looper"

    def complete(self, request):
        return ModelResponse(text="", input_tokens=token_ceiling(request), output_tokens=100, model=self.name,
                             tool_calls=(ToolCall("c1", "leap_year", '{"year": 2028}'),))


def test_each_further_model_call_is_checked_against_the_caps_before_it_is_made(vault):
    def model_md(run_cap):
        (vault / "atlas" / "model.md").write_text(
            "# Model\n\n```yaml\n" + json.dumps({
                "model": "offline", "max_output_tokens": 100, "journal_days": 0, "recent_notes": 0,
                "max_steps": 5, "prices": {"test:looper": {"input": 1000.0, "output": 1000.0}},
                "cost_guardrails": {"enabled": True, "max_run_usd": run_cap}}) + "\n```\n")
    model_md(1e6)
    AtomicAgent("atlas", root=vault, model=AlwaysTool()).call("Loop.")
    assert len(records(vault)[-1]["steps"]) == 5  # up to max_steps when the caps allow
    first = records(vault)[-1]["guardrail"]["estimate_usd"]
    model_md(first * 1.5)  # one call fits, the first plus another does not
    calls = []
    model = AlwaysTool()
    model.complete = lambda request, inner=model.complete: calls.append(1) or inner(request)
    result = AtomicAgent("atlas", root=vault, model=model).call("Loop.")
    record = records(vault)[-1]
    assert len(calls) == 1 and len(record["steps"]) == 1
    assert "cost guardrails refused step 2" in record["steps"][0]["stopped"]
    assert any("stopped before step 2" in w for w in result.warnings)
    assert record["cost_usd"] == pytest.approx(first)  # the one call made, billed at its ceiling


# --- both wire formats, end to end ----------------------------------------------------------

def model_md(vault, text):
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\n" + text + "\n```\n")


def test_anthropic_tool_use_and_tool_result_through_the_loop(vault, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tools-0123456789abcdef")
    model_md(vault, f"model: anthropic:claude-sonnet-4-6\nproviders: {{anthropic: {{base_url: \"{stub.url}\", timeout_s: 5}}}}")
    stub.reply(body={"input_tokens": 900})
    stub.reply(body=anthropic_message("Checking.", tool_inputs=({"year": 2028},), tool_name="leap_year"))
    stub.reply(body=anthropic_message("2028 is a leap year."))
    result = AtomicAgent("atlas", root=vault).call("Is 2028 a leap year?")
    assert result.text == "Checking.\n\n2028 is a leap year."
    first, second = (r.body for r in stub.requests[1:])
    assert [t["name"] for t in first["tools"]] == ["atomic_capture", "leap_year", "say"]
    assert first["tools"][1]["input_schema"]["required"] == ["year"]
    assistant, results = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"][1] == {
        "type": "tool_use", "id": "toolu_00", "name": "leap_year", "input": {"year": 2028}}
    assert results == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_00",
                                                      "content": "true"}]}
    record = records(vault)[-1]
    assert [s["step"] for s in record["steps"]] == [1, 2] and record["input_tokens"] == 200


def test_openai_function_calls_and_tool_messages_through_the_loop(vault, stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-tools-0123456789abcdef0123")
    model_md(vault, f"model: openai:gpt-4o-mini\nproviders: {{openai: {{base_url: \"{stub.url}/v1\", timeout_s: 5}}}}")
    stub.reply(body=openai_completion(None, tool_calls=(("leap_year", '{"year": 1800}'),)))
    stub.reply(body=openai_completion("Not that one."))
    result = AtomicAgent("atlas", root=vault).call("Was 1800 a leap year?")
    assert result.text == "Not that one."
    first, second = (r.body for r in stub.requests)
    assert first["tools"][1] == {"type": "function", "function": {
        "name": "leap_year", "description": first["tools"][1]["function"]["description"],
        "parameters": first["tools"][1]["function"]["parameters"]}}
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"] == [{"id": "call_0", "type": "function",
                                        "function": {"name": "leap_year", "arguments": '{"year": 1800}'}}]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_0" and "blocked" in tool["content"]
    assert records(vault)[-2]["outcome"] == "block"


# --- mcp ---------------------------------------------------------------------------------------

def test_an_mcp_tool_takes_its_schema_from_the_server_and_its_errors_are_results(vault):
    pytest.importorskip("mcp")
    allow_all(vault)
    server = [PY, str(Path(__file__).resolve().parent / "mcp_tiny_server.py")]
    tools_md(vault, [{"name": "add", "kind": "mcp", "server": server},
                     {"name": "fail", "kind": "mcp", "server": server, "timeout_s": 60}])
    result = run(vault, 'tool: add {"a": 2, "b": 3}\ntool: add {"a": "two"}\ntool: fail {}')
    calls = records(vault)[-1]["steps"][0]["calls"]
    assert "Tool add answered: 5" in result.text
    assert {k: calls[0]["effect"][k] for k in ("status", "result")} == {"status": "ok", "result": "5"}
    assert calls[1]["effect"]["status"] == "invalid"  # the server's schema, checked before anything runs
    assert calls[2]["effect"]["status"] == "error"


def test_an_mcp_server_that_cannot_start_leaves_its_tool_out_with_a_warning(vault):
    pytest.importorskip("mcp")
    tools_md(vault, [{"name": "add", "kind": "mcp", "server": ["/nonexistent/server"]}])
    result = run(vault, 'tool: add {"a": 2, "b": 3}')
    assert "not offered" in result.text
    assert any("'add' is not offered: its MCP server" in w for w in result.warnings)


def test_doctor_names_a_policy_that_fails_closed_and_a_malformed_tool(vault):
    from atomic_vault import doctor

    folder = open_agent("atlas", vault)
    assert not [f for f in doctor.check(folder) if f.check == "config" and f.level != "ok"]
    (vault / "atlas" / "policy.md").write_text("# Policy\n\n```yaml\nrules: [{tool: x, verdict: maybe}]\n```\n")
    tools_md(vault, [{"name": "x", "kind": "shell", "description": "d"}])
    found = [(f.level, f.message) for f in doctor.check(folder) if f.check == "config"]
    assert ("error", "tools[0].kind: kind 'shell' is not one of python, command, mcp, builtin") in found
    assert any(level == "error" and "fails closed" in message and "line 4" in message for level, message in found)


def test_a_loop_that_runs_past_midnight_keeps_its_verdicts_in_the_run_day_file(vault, monkeypatch):
    from datetime import timedelta
    from types import SimpleNamespace

    from atomic_vault import clock, toolloop

    tomorrow = SimpleNamespace(now=lambda zone=None: clock.now(zone) + timedelta(days=1))
    monkeypatch.setattr(toolloop, "clock", tomorrow)  # the gate decides after midnight
    run(vault, 'tool: leap_year {"year": 2028}')
    verdict, begin, commit, record = records(vault)[-4:]
    assert verdict["ts"] == record["ts"] and verdict["decided"][:10] > record["ts"][:10]
    assert begin["ts"] == commit["ts"] == record["ts"]  # the effect's records too
    assert runlog.verify(open_agent("atlas", vault)).ok


def test_a_model_failing_after_a_tool_ran_fails_the_run_on_the_record_with_its_steps(vault):
    from atomic_vault.errors import ModelError

    class ThenFails:
        name = "test:then-fails"

        def __init__(self):
            self.calls = 0

        def complete(self, request):
            self.calls += 1
            if self.calls > 1:
                raise ModelError("the server went away", field="model")
            return ModelResponse(text="", input_tokens=10, output_tokens=5, cost_usd=0.25, model=self.name,
                                 tool_calls=(ToolCall("c1", "leap_year", '{"year": 2028}'),))

    with pytest.raises(ModelError):
        AtomicAgent("atlas", root=vault, model=ThenFails()).call("Check 2028.")
    record = records(vault)[-1]
    assert record["status"] == "error" and record["error"] == "the server went away"
    assert record["steps"][0]["calls"][0]["effect"]["status"] == "ok"  # what ran is on the record
    assert record["cost_usd"] == pytest.approx(0.25)  # the step that was paid for is counted
    day = record["ts"][:10]
    journal = (vault / "atlas" / "journal" / day[:7] / f"{day}.md").read_text()
    assert "the server went away" in journal.split(f"run {record['run_id']}")[1]


def test_a_python_tool_found_through_the_entry_point_group(vault, monkeypatch):
    import importlib.metadata

    class EntryPoint:
        name = "shout"

        def load(self):
            return lambda text: text.upper()

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [EntryPoint()]
                        if kw.get("group") == tools.ENTRY_POINT_GROUP else real(**kw))
    allow_all(vault)
    tools_md(vault, [{"name": "shout", "kind": "python", "entry_point": "shout", "description": "louder",
                      "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}])
    result = run(vault, 'tool: shout {"text": "hello"}')
    assert "Tool shout answered: HELLO" in result.text
