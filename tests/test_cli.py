"""The command line (spec/10): commands, exit codes, JSON output, doctor --repair."""

import json
import subprocess
import sys

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
    assert av(tmp_path, "init", "scout").exit_code == 1  # never overwrites


def test_run_reads_stdin_and_prints_json(vault):
    result = av(vault, "run", "atlas", "-", "--json", "--trigger", "cron",
                input="Plan.\nremember: user: likes tea\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["captures"][0]["file"] == "user_likes_tea.md"
    assert data["manifest"]["files"][0]["source"] == "persona/IDENTITY.md"


def test_exit_codes_for_cron(vault):
    assert av(vault, "run", "atlas", "  ").exit_code == 1
    assert av(vault, "run", "ghost", "x").exit_code == 1
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
    assert len(json.loads(listed.stdout)["notes"]) == 12
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
    checks = {(f["check"], f["level"]) for f in json.loads(found.stdout)["findings"]}
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


def test_a_broken_note_is_a_warning_on_stderr_of_run_and_an_error_of_doctor(vault):
    path = vault / "atlas" / "memory" / "project_meetup_talk.md"
    path.write_text(path.read_text().replace("type: project", "type: gossip").replace("confidence: medium", "confidence: sure"))
    run = av(vault, "run", "atlas", "go")
    assert run.exit_code == 0 and "Offline answer" in run.stdout
    assert "warning: memory/project_meetup_talk.md is broken and was left out of this run" in run.stderr
    doctor = av(vault, "doctor", "atlas")
    assert doctor.exit_code == 1
    assert "'gossip' is not a note type" in doctor.output and "'sure' is not allowed" in doctor.output
