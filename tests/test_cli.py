"""The command line (spec/10): commands, exit codes, JSON output, doctor --repair."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from atomic_vault import runlog
from atomic_vault.cli import cli
from atomic_vault.locks import FileLock
from atomic_vault.vault import open_agent


def av(vault, *args, input=None):
    return CliRunner().invoke(cli, ["--root", str(vault), *args], input=input)


def test_init_scaffolds_a_working_agent_without_any_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = av(tmp_path, "init", "scout", "--operator", "Sam")
    assert result.exit_code == 0, result.output
    agent = tmp_path / "scout"
    assert "Sam" in (agent / "persona" / "USER.md").read_text()
    assert (agent / "memory" / "INDEX.md").is_file() and not list(tmp_path.glob(".scout*"))
    run = av(tmp_path, "run", "scout", "hello")
    assert run.exit_code == 0 and "Offline answer for scout" in run.output
    doctor = av(tmp_path, "doctor", "scout")
    assert doctor.exit_code == 0, doctor.output
    again = av(tmp_path, "init", "scout")
    assert again.exit_code == 2 and "already exists" in again.output  # never overwrites
    kept = av(tmp_path, "init", "scout", "--exist-ok")
    assert kept.exit_code == 0 and "left as it is" in kept.output


def test_init_from_copies_an_agent_with_a_log_of_its_own(vault, tmp_path, snap):
    av(vault, "run", "atlas", "first\nremember: user: likes tea")
    before = snap(vault)
    copy = tmp_path / "demo"
    made = CliRunner().invoke(cli, ["init", "scout", "--from", str(vault / "atlas"), "--root", str(copy)])
    assert made.exit_code == 0, made.output
    assert snap(vault) == before  # the source is only read
    copied = snap(copy / "scout")
    original = {path: digest for path, digest in before.items() if path.startswith("atlas/")}
    assert copied == {path[len("atlas/"):]: digest for path, digest in original.items()
                      if not path.startswith("atlas/log/")}
    assert (copy / "scout" / "log").is_dir() and not list((copy / "scout" / "log").iterdir())
    assert not (copy / "scout" / ".atomic_vault").exists()
    assert av(copy, "run", "scout", "hello").exit_code == 0
    assert av(copy, "verify", "scout").stdout.startswith("ok: 1 records verify")
    refused = av(copy, "init", "scout", "--from", str(vault / "atlas"))
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert av(copy, "init", "other", "--from", str(tmp_path)).exit_code == 1  # not an agent
    mixed = av(copy, "init", "other", "--from", str(vault / "atlas"), "--model", "offline")
    assert mixed.exit_code == 2 and "--from copies the agent as it is" in mixed.stderr
    (vault / "atlas" / "memory" / "escape.md").symlink_to(tmp_path / "outside.md")
    linked = av(copy, "init", "third", "--from", str(vault / "atlas"))
    assert linked.exit_code == 1 and "escape.md" in linked.output and not (copy / "third").exists()


def test_run_reads_stdin_and_prints_json(vault):
    result = av(vault, "run", "atlas", "-", "--json", "--trigger", "cron",
                input="Plan.\nremember: user: likes tea\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["captures"][0]["file"] == "user_likes_tea.md"
    assert data["manifest"]["files"][0]["source"] == "persona/IDENTITY.md"


def test_exit_codes_for_cron(vault):
    assert av(vault, "run", "atlas", "  ").exit_code == 2
    assert av(vault, "run", "atlas", "-", input="\n").exit_code == 2
    ghost = av(vault, "run", "atlsa", "x")
    assert ghost.exit_code == 2 and "did you mean 'atlas'?" in ghost.output
    assert av(vault, "run").exit_code == 2
    folder = open_agent("atlas", vault)
    with FileLock().hold(folder, timeout=0):
        busy = av(vault, "run", "atlas", "x", "--no-wait")
    assert busy.exit_code == 4 and "busy" in busy.output
    assert av(vault, "run", "atlas", "x", "--model", "offline").exit_code == 0
    assert av(vault, "run", "atlas", "x", "--model", "nowhere:x").exit_code == 1


def test_python_dash_m_and_console_script_agree(vault):
    out = subprocess.run([sys.executable, "-m", "atomic_vault", "--root", str(vault), "verify", "atlas"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ok: 0 records verify")
    helped = subprocess.run([sys.executable, "-m", "atomic_vault", "--help"], capture_output=True, text=True)
    for command in ("init", "run", "doctor", "verify", "log", "notes"):
        assert command in helped.stdout


def test_read_only_commands_write_nothing(vault, snap):
    av(vault, "run", "atlas", "first")
    before = snap(vault)
    state = sorted(p.name for p in (vault / "atlas" / ".atomic_vault").iterdir())
    for args in (["log", "atlas"], ["log", "atlas", "--json"], ["notes", "atlas"],
                 ["notes", "atlas", "show", "project_meetup_talk.md"], ["verify", "atlas"],
                 ["doctor"], ["doctor", "atlas", "--json"], ["--help"]):
        assert av(vault, *args).exit_code == 0, args
    assert snap(vault) == before
    assert sorted(p.name for p in (vault / "atlas" / ".atomic_vault").iterdir()) == state


def test_log_and_notes_output(vault):
    av(vault, "run", "atlas", "one")
    av(vault, "run", "atlas", "two")
    lines = av(vault, "log", "atlas", "--json").stdout.strip().split("\n")
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert "ok" in av(vault, "log", "atlas", "-n", "1").stdout
    listed = av(vault, "notes", "atlas", "--json")
    assert len([json.loads(line) for line in listed.stdout.splitlines()]) == 12
    shown = av(vault, "notes", "atlas", "show", "project_meetup_talk.md")
    assert shown.stdout.startswith("---\nschema_version: 1")
    assert av(vault, "notes", "atlas", "show", "../model.md").exit_code == 1


def test_verify_reports_the_first_broken_record(vault):
    for i in range(3):
        av(vault, "run", "atlas", f"run {i}")
    path = runlog.day_files(open_agent("atlas", vault))[-1]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"ok"', '"error"') + lines[2])
    result = av(vault, "verify", "atlas", "--json")
    assert result.exit_code == 1
    bad = json.loads(result.stdout)["first_bad"]
    assert bad["seq"] == 2 and bad["line"] == 2 and bad["reason"].startswith("edited")


def test_doctor_finds_and_repairs_what_is_safe(vault):
    av(vault, "run", "atlas", "one\nremember: project: repaired later")
    folder = open_agent("atlas", vault)
    log_file = runlog.day_files(folder)[-1]
    with open(log_file, "ab") as handle:
        handle.write(b'{"torn":')
    index_text = folder.index.read_text()
    folder.index.write_text(index_text.replace("- [repaired later](project_repaired_later.md) — repaired later\n", ""))
    (folder.memory / ".INDEX.md.123.abcd.avtmp").write_text("leftover")
    folder.head.unlink()

    found = av(vault, "doctor", "atlas", "--json")
    assert found.exit_code == 1
    checks = {(f["check"], f["level"]) for f in map(json.loads, found.stdout.splitlines())}
    assert {("log", "warn"), ("index", "error"), ("temp files", "warn"), ("chain", "error")} <= checks

    repaired = av(vault, "doctor", "atlas", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "moved a torn line" in repaired.output and "updated memory/INDEX.md" in repaired.output
    assert "removed leftover temp file" in repaired.output and "set log/HEAD" in repaired.output
    assert (log_file.parent / (log_file.name + ".torn")).read_bytes() == b'{"torn":\n'
    assert "project_repaired_later.md" in folder.index.read_text()
    records = [r for _, _, r in runlog.records(folder)]
    assert records[-1]["kind"] == "repair" and len(records[-1]["actions"]) == 4
    assert runlog.verify(folder).ok
    assert av(vault, "doctor", "atlas").exit_code == 0
    assert av(vault, "run", "atlas", "after repair").exit_code == 0


def test_root_is_accepted_after_every_command(vault, tmp_path):
    for name, command in cli.commands.items():
        assert "--root" in {opt for param in command.params for opt in getattr(param, "opts", [])}, name
    run = CliRunner().invoke(cli, ["run", "atlas", "hello", "--root", str(vault)])
    assert run.exit_code == 0, run.output
    # after the command wins over before it (and over ATOMIC_VAULT_ROOT)
    shown = CliRunner().invoke(cli, ["--root", str(tmp_path / "elsewhere"), "log", "atlas", "--root", str(vault)],
                               env={"ATOMIC_VAULT_ROOT": str(tmp_path / "nowhere")})
    assert shown.exit_code == 0 and "Offline answer" in shown.stdout


def test_agents_lists_last_run_status_and_todays_spend(vault, tmp_path):
    empty = av(tmp_path / "none", "agents")
    assert empty.exit_code == 0 and empty.stdout == "" and "no agents in" in empty.stderr
    av(vault, "init", "scout")
    av(vault, "run", "atlas", "hello")
    listed = av(vault, "agents")
    assert listed.exit_code == 0, listed.output
    header, atlas, scout = listed.stdout.splitlines()
    assert header.split() == ["agent", "last", "run", "status", "spent", "today", "runs", "today"]
    assert atlas.split()[0] == "atlas" and atlas.split()[2:] == ["ok", "$0.0000", "1"]
    assert scout.split() == ["scout", "-", "-", "$0.0000", "0"]
    rows = [json.loads(line) for line in av(vault, "agents", "--json").stdout.splitlines()]
    assert [(r["agent"], r["status"], r["today_runs"], r["today_usd"]) for r in rows] == [
        ("atlas", "ok", 1, 0.0), ("scout", None, 0, 0.0)]
    (vault / "scout" / "model.md").write_text("# Model\n\n```yaml\nmodel: [offline\n```\n")
    broken = av(vault, "agents")
    assert broken.exit_code == 1 and "error: scout:" in broken.stderr and "atlas" in broken.stdout


def test_unknown_agents_and_bad_filters_are_usage_errors_that_name_the_fix(vault):
    for args in (["log", "atlsa"], ["notes", "Atlas"], ["verify", "atla"], ["doctor", "atlass"]):
        result = av(vault, *args)
        assert result.exit_code == 2 and "did you mean 'atlas'?" in result.stderr, args
    assert "did you mean" not in av(vault, "log", "zzzz").stderr
    for args, says in ((["--since", "garbage"], "YYYY-MM-DD"), (["--until", "2026-13-01"], "YYYY-MM-DD"),
                       (["--since", "2026-11-01 10:00"], "YYYY-MM-DDTHH:MM"),
                       (["--status", "eror"], "'ok', 'error', 'skipped'"),
                       (["--trigger", "a\nb"], "one line")):
        result = av(vault, "log", "atlas", *args)
        assert result.exit_code == 2 and says in result.stderr, (args, result.stderr)
    assert av(vault, "log", "atlas", "--since", "2026-11-01T10:00", "--until", "2026-11-30").exit_code == 0


def test_empty_results_say_so(vault):
    empty = av(vault, "log", "atlas")
    assert empty.exit_code == 0 and empty.stdout == "" and "no runs yet" in empty.stderr
    av(vault, "run", "atlas", "hello")
    for args in (["log", "atlas", "--status", "error"], ["log", "atlas", "--trigger", "cron", "--json"],
                 ["log", "atlas", "cost", "--since", "2999-01-01"]):
        result = av(vault, *args)
        assert result.exit_code == 0 and "no runs match" in result.stderr, args
    notes = av(vault, "notes", "atlas", "list", "--type", "user", "--archived")
    assert notes.exit_code == 0 and notes.stderr.startswith("no notes match")


def test_log_has_a_header_and_the_answers_gist(vault):
    av(vault, "run", "atlas", "Plan my Monday")
    header, row = av(vault, "log", "atlas").stdout.splitlines()
    assert header.split() == ["seq", "time", "status", "trigger", "model", "cost", "summary"]
    assert row.split()[:3] == ["1", row.split()[1], "ok"]
    gist = row[header.index("summary"):]
    assert gist.startswith("Offline answer for atlas. Work item") and gist.endswith("…") and len(gist) == 60


def test_notes_show_takes_a_name_with_or_without_md_or_the_notes_name(vault):
    whole = av(vault, "notes", "atlas", "show", "project_meetup_talk.md").stdout
    assert whole.startswith("---\nschema_version: 1")
    assert av(vault, "notes", "atlas", "show", "project_meetup_talk").stdout == whole
    assert av(vault, "notes", "atlas", "show", "meetup talk on boring PIPELINES").stdout == whole
    missing = av(vault, "notes", "atlas", "show", "no such note")
    assert missing.exit_code == 1 and "'no such note' is not a note file name, nor the name" in missing.stderr
    assert "no note 'project_nothing.md'" in av(vault, "notes", "atlas", "show", "project_nothing").stderr
    folder = open_agent("atlas", vault)
    twin = (folder.memory / "project_meetup_talk.md").read_text().replace("type: project", "type: reference")
    (folder.memory / "reference_meetup_talk_on_boring_pipelines.md").write_text(twin)
    ambiguous = av(vault, "notes", "atlas", "show", "Meetup talk on boring pipelines")
    assert ambiguous.exit_code == 2 and "names 2 notes" in ambiguous.stderr


def test_every_list_command_prints_json_lines(vault):
    av(vault, "run", "atlas", "one")
    av(vault, "run", "atlas", "two\nremember: project: quinces are in season")
    for args in (["log", "atlas"], ["log", "atlas", "cost"], ["log", "atlas", "cost", "--by", "month"],
                 ["notes", "atlas"], ["notes", "atlas", "search", "quinces"], ["agents"],
                 ["doctor"], ["doctor", "atlas", "--repair"]):
        result = av(vault, *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        lines = result.stdout.splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines), args
    repaired = [json.loads(line) for line in av(vault, "doctor", "--repair", "--json").stdout.splitlines()]
    assert {f["check"] for f in repaired} >= {"chain", "notes"}
    assert all(set(f) == {"agent", "check", "level", "message", "path", "fix"} for f in repaired)


def test_shell_completion_works_as_documented(vault):
    docs = (Path(__file__).resolve().parent.parent / "spec" / "10-cli.md").read_text(encoding="utf-8")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for shell in ("bash", "zsh", "fish"):
        assert f"_ATOMIC_VAULT_COMPLETE={shell}_source atomic-vault" in docs + readme, shell
        script = CliRunner().invoke(cli, [], prog_name="atomic-vault",
                                    env={"_ATOMIC_VAULT_COMPLETE": f"{shell}_source"})
        assert script.exit_code == 0 and "_ATOMIC_VAULT_COMPLETE" in script.stdout, shell


def test_verify_explains_a_log_copied_from_another_agent(vault):
    av(vault, "run", "atlas", "one")
    shutil.copytree(vault / "atlas", vault / "scout")
    result = av(vault, "verify", "scout")
    assert result.exit_code == 1
    assert "belongs to another agent ('atlas')" in result.stdout
    assert "this log was copied from agent 'atlas'" in result.stdout and "Move log/ aside" in result.stdout
    assert "init NAME --from PATH" in result.stdout
    assert json.loads(av(vault, "verify", "scout", "--json").stdout)["fix"].startswith("this log was copied")
    doctor = [json.loads(line) for line in av(vault, "doctor", "scout", "--json").stdout.splitlines()]
    assert [f["fix"] for f in doctor if f["check"] == "chain"][0].startswith("this log was copied")
    (vault / "scout" / "log").rename(vault / "scout" / "log.from-atlas")  # the remedy works
    assert av(vault, "run", "scout", "fresh").exit_code == 0 and av(vault, "verify", "scout").exit_code == 0


def test_a_broken_note_is_a_warning_on_stderr_of_run_and_an_error_of_doctor(vault):
    path = vault / "atlas" / "memory" / "project_meetup_talk.md"
    path.write_text(path.read_text().replace("type: project", "type: gossip").replace("confidence: medium", "confidence: sure"))
    run = av(vault, "run", "atlas", "go")
    assert run.exit_code == 0 and "Offline answer" in run.stdout
    assert "warning: memory/project_meetup_talk.md is broken and was left out of this run" in run.stderr
    doctor = av(vault, "doctor", "atlas")
    assert doctor.exit_code == 1
    assert "'gossip' is not a note type" in doctor.output and "'sure' is not allowed" in doctor.output
