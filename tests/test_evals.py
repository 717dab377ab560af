"""`atomic-vault eval`: golden cases in evals/*.md, run on a scratch copy of the agent."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from atomic_vault.cli import cli

# The offline model at a price, so cost ceilings and caps have something to hold. One run
# of a sample case costs about $3.4; the guardrail reserves about $18 for it (its ceiling).
PRICED = '  "offline:*": {input: 1000, output: 1000}'


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def tree(folder: Path) -> dict[str, str]:
    """Every file below the agent folder, derived state included, with its sha256."""
    out = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            path = Path(directory) / name
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def write_case(vault, name, block, prose="# A case\n\n"):
    path = vault / "atlas" / "evals" / f"{name}.md"
    path.write_text(f"{prose}```yaml\n{block}\n```\n", encoding="utf-8")
    return path


def price_offline(vault, daily_cap="20.00"):
    model = vault / "atlas" / "model.md"
    text = model.read_text(encoding="utf-8").replace("fallback: null", "fallback: null\nprices:\n" + PRICED)
    model.write_text(text.replace("daily_cap_usd: 1.00", f"daily_cap_usd: {daily_cap}")
                     .replace("monthly_cap_usd: 20.00", "monthly_cap_usd: 1000.00"), encoding="utf-8")


def rows(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_sample_evals_pass_offline_and_leave_the_agent_untouched(vault):
    assert av(vault, "run", "atlas", "first").exit_code == 0  # a log, a journal, derived state
    before = tree(vault / "atlas")
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["case", "result", "status"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["nothing_to_remember", "PASS", "ok"], ["remember_a_project", "PASS", "ok"],
        ["status_brief", "PASS", "ok"]]
    assert "3 passed, 0 failed, 0 skipped; cost $0.0000" in result.stderr
    assert tree(vault / "atlas") == before  # notes, INDEX, journal, log, .atomic_vault


def test_json_lines_one_outcome_per_case_with_its_captures(vault):
    result = av(vault, "eval", "atlas", "remember_a_project", "status_brief.md", "--json")
    assert result.exit_code == 0, result.output
    first, second = rows(result)
    assert (first["case"], first["verdict"], first["status"], first["model"]) == (
        "remember_a_project", "pass", "ok", "offline")
    assert first["captures"][0]["type"] == "project" and first["captures"][0]["status"] == "written"
    assert second["case"] == "status_brief" and second["failures"] == [] and second["cost_usd"] == 0.0


def test_each_case_runs_on_a_fresh_copy(vault):
    """The same capture twice: a copy shared between cases would see the second one as
    `refreshed`; each case starts from the agent as it is, so both are `written`."""
    block = open(vault / "atlas" / "evals" / "remember_a_project.md").read()
    (vault / "atlas" / "evals" / "remember_again.md").write_text(block, encoding="utf-8")
    result = av(vault, "eval", "atlas", "remember_a_project", "remember_again", "--json")
    assert [r["verdict"] for r in rows(result)] == ["pass", "pass"], result.output


def test_every_expectation_kind_reports_what_failed(vault):
    write_case(vault, "all_wrong", """work: |
  Draft the brief.
  remember: project: Verdemar cutover moved to Friday
expect:
  status: ok
  contains: [Offline answer, not in the answer]
  not_contains: Draft the brief
  matches: ['^Offline', 'no such \\d+ thing']
  captures:
    - {type: decision}
    - {name: verdemar cutover moved to friday, status: written}
    - {status: rejected}
  max_input_tokens: 10
  max_output_tokens: 5""")
    result = av(vault, "eval", "atlas", "all_wrong", "--json")
    assert result.exit_code == 1
    (outcome,) = rows(result)
    assert outcome["verdict"] == "fail"
    failures = outcome["failures"]
    assert failures[0] == "answer does not contain 'not in the answer'"
    assert failures[1] == "answer contains 'Draft the brief'"
    assert failures[2] == "answer does not match 'no such \\\\d+ thing'"
    assert failures[3].startswith("no capture with type 'decision' (captures: project/written ")
    assert failures[4].startswith("no capture with status 'rejected'")  # the name matched, any case
    assert failures[5].endswith("input tokens, over 10") and failures[6].endswith("output tokens, over 5")
    assert len(failures) == 7


def test_a_table_row_says_what_failed_and_the_exit_code_is_1(vault):
    write_case(vault, "wrong_word", "work: hello\nexpect:\n  contains: goodbye")
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith("wrong_word"))
    assert row.split()[1:3] == ["FAIL", "ok"] and row.endswith("answer does not contain 'goodbye'")
    assert "3 passed, 1 failed, 0 skipped" in result.stderr


def test_cost_ceiling(vault):
    price_offline(vault, daily_cap="100.00")
    write_case(vault, "dear", "work: hello\nexpect:\n  max_cost_usd: 0.50")
    write_case(vault, "cheap_enough", "work: hello\nexpect:\n  max_cost_usd: 50")
    result = av(vault, "eval", "atlas", "dear", "cheap_enough", "--json")
    dear, cheap = rows(result)
    assert dear["verdict"] == "fail" and dear["failures"][0].startswith("cost $")
    assert dear["failures"][0].endswith(", over $0.5000") and dear["cost_usd"] > 0.5
    assert cheap["verdict"] == "pass"
    assert result.exit_code == 1


def test_a_failed_model_call_is_status_error(vault, tmp_path):
    """A case may expect the error (it passes); a case expecting ok fails with the error."""
    write_case(vault, "expects_error", "work: hello\nexpect:\n  status: error")
    write_case(vault, "expects_ok", "work: hello")
    result = av(vault, "eval", "atlas", "expects_error", "expects_ok", "--model", "nosuch:model", "--json")
    error, ok = rows(result)
    assert error["verdict"] == "pass" and error["status"] == "error" and error["error"]
    assert ok["verdict"] == "fail" and ok["failures"][0].startswith("status error, expected ok: ")
    assert result.exit_code == 1


def test_a_case_under_a_cap_is_skipped_and_exits_3(vault):
    price_offline(vault, daily_cap="1.00")  # every run's ceiling (~$18) is over the cap
    before = tree(vault / "atlas")
    result = av(vault, "eval", "atlas", "status_brief")
    assert result.exit_code == 3, result.output
    row = result.stdout.splitlines()[1]
    assert row.split()[1:3] == ["SKIPPED", "skipped"] and "daily cap $1.00" in row
    assert "0 passed, 0 failed, 1 skipped" in result.stderr
    assert tree(vault / "atlas") == before


def test_a_case_that_expects_the_skip_passes(vault):
    price_offline(vault, daily_cap="1.00")
    write_case(vault, "capped", "work: hello\nexpect:\n  status: skipped")
    result = av(vault, "eval", "atlas", "capped", "--json")
    assert result.exit_code == 0 and rows(result)[0]["verdict"] == "pass"


def test_the_caps_count_the_agents_own_spend(vault):
    """The agent already spent ~$3.4 today: ~$3.4 + the ~$18 ceiling passes the $20 cap,
    although the scratch copy's own log is empty."""
    price_offline(vault, daily_cap="20.00")
    assert av(vault, "run", "atlas", "hello").exit_code == 0
    result = av(vault, "eval", "atlas", "status_brief", "--json")
    assert result.exit_code == 3 and rows(result)[0]["verdict"] == "skipped", result.output


def test_the_caps_count_the_evals_earlier_cases(vault):
    price_offline(vault, daily_cap="20.00")
    write_case(vault, "first", "work: hello")
    write_case(vault, "second", "work: hello")
    result = av(vault, "eval", "atlas", "first", "second", "--json")
    assert [r["verdict"] for r in rows(result)] == ["pass", "skipped"], result.output
    assert result.exit_code == 3


@pytest.mark.parametrize("block, field, words", [
    ("work: hi\nexpect:\n  contians: hello", "line 4: expect.contians",
     "unknown key 'contians': did you mean 'contains'?"),
    ("work: hi\nexpect:\n  status: ok\n  smells: nice", "line 5: expect.smells", "unknown key 'smells'"),
    ("wrok: hi", "line 2: wrok", "did you mean 'work'?"),
    ("expect: {status: ok}", "line 2: work", "is missing or not text"),
    ("work: hi\nexpect:\n  matches: ['(unclosed']", "line 4: expect.matches[0]", "is not a regular expression"),
    ("work: hi\nexpect:\n  matches: '" + "a" * 201 + "'", "line 4: expect.matches", "over 200"),
    ("work: hi\nexpect:\n  status: fine", "line 4: expect.status", "'fine' is not a run status"),
    ("work: hi\nexpect:\n  captures:\n    - type: project\n    - staus: written",
     "line 6: expect.captures[1].staus", "did you mean 'status'?"),
    ("work: hi\nexpect:\n  captures: [{status: kept}]", "line 4: expect.captures[0].status", "not a capture outcome"),
    ("work: hi\nexpect:\n  max_cost_usd: cheap", "line 4: expect.max_cost_usd", "not a non-negative amount"),
    ("work: hi\nexpect:\n  max_output_tokens: 1.5", "line 4: expect.max_output_tokens", "not a whole number"),
    ("work: [hi", "line 3", "invalid YAML"),
    ("work: '" + "a" * 200_001 + "'", "line 2: work", "longer than 200000 characters"),
])
def test_an_invalid_eval_file_names_file_line_and_fix_and_nothing_runs(vault, monkeypatch, block, field, words):
    from atomic_vault import agent

    monkeypatch.setattr(agent.AtomicAgent, "call", lambda *a, **k: pytest.fail("a case was run"))
    path = write_case(vault, "broken", block, prose="")
    before = tree(vault / "atlas")
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert f"error: {path}: {field}" in result.stderr and words in result.stderr and "(fix: " in result.stderr
    assert "1 invalid eval file(s): no case was run" in result.stderr
    assert tree(vault / "atlas") == before


def test_a_file_without_a_yaml_block_or_with_two_is_invalid(vault):
    (vault / "atlas" / "evals" / "prose.md").write_text("# Just prose\n", encoding="utf-8")
    write_case(vault, "two", "work: a\n```\n\n```yaml\nwork: b")
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 2
    assert "prose.md: has no ```yaml block" in result.stderr
    assert "two.md: line 7: has 2 ```yaml blocks" in result.stderr
    assert "2 invalid eval file(s)" in result.stderr


def test_unknown_case_and_no_cases_are_usage_errors(vault, tmp_path):
    result = av(vault, "eval", "atlas", "status_breif")
    assert result.exit_code == 2 and "no eval case 'status_breif'; did you mean 'status_brief'?" in result.stderr
    for case in (vault / "atlas" / "evals").iterdir():
        case.unlink()
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 2 and "no eval cases" in result.stderr and "spec/14-evals.md" in result.stderr
    assert av(vault, "eval", "nobody").exit_code == 2


def test_an_eval_never_writes_to_a_shared_log_store(vault, monkeypatch):
    """The environment names a database for the log: the scratch copy still logs to its
    own files, and the agent's store is only read."""
    db = vault / "shared.sqlite3"
    monkeypatch.setenv("ATOMIC_VAULT_LOG_BACKEND", "sqlite")
    monkeypatch.setenv("ATOMIC_VAULT_LOG_URL", str(db))
    assert av(vault, "run", "atlas", "hello").exit_code == 0
    before = av(vault, "log", "atlas", "--json").stdout
    assert av(vault, "eval", "atlas").exit_code == 0
    assert av(vault, "log", "atlas", "--json").stdout == before


def test_the_readme_shows_the_eval_output_of_the_sample(vault):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    shown = readme.split("$ .venv/bin/atomic-vault --root demo eval atlas\n", 1)[1].split("```", 1)[0]
    result = av(vault, "eval", "atlas")
    assert result.exit_code == 0
    assert shown == result.stdout + result.stderr


def test_an_agent_whose_notes_are_not_files_is_refused_before_any_case(vault):
    from atomic_vault.backends.files import FileLog
    from atomic_vault.errors import ConfigError
    from atomic_vault.evals import load_cases, run_cases
    from atomic_vault.vault import open_agent

    class DatabaseNotes:
        name = "database"

    folder = open_agent("atlas", vault)
    cases, _ = load_cases(folder)
    with pytest.raises(ConfigError, match="notes are kept in the database memory backend"):
        run_cases(folder, cases, FileLog(root=vault), DatabaseNotes())
