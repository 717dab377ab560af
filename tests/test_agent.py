"""AtomicAgent.call() end to end (spec/02, 04, 05, 07): what one run reads and writes."""

import subprocess

import pytest

from atomic_vault import AtomicAgent, RunResult, catalog, doctor, runlog
from atomic_vault.backends.files import FileLog
from atomic_vault.errors import (AgentNotFound, AtomicVaultError, ConfigError, ModelError,
                                 NoteError)
from atomic_vault.models import Model
from atomic_vault.vault import open_agent
from conftest import ScriptedModel, capture_block


def test_a_run_writes_only_journal_log_and_captured_notes(vault, snap):
    before = snap(vault)
    result = AtomicAgent("atlas", root=vault).call("Plan Monday.\nremember: project: demo on Thursday")
    after = snap(vault)
    changed = {path for path in after if before.get(path) != after[path]}
    snapshots = {path for path in changed if path.startswith("atlas/log/snapshots/")}
    changed -= snapshots  # the run's texts, by hash (spec/07)
    today = __import__("datetime").date.today()
    assert snapshots == {f"atlas/log/snapshots/{today:%Y-%m-%d}.jsonl"}  # the day's pack
    assert changed == {
        "atlas/memory/project_demo_on_thursday.md", "atlas/memory/INDEX.md",
        f"atlas/journal/{today:%Y-%m}/{today:%Y-%m-%d}.md",
        f"atlas/log/{today:%Y-%m}/{today:%Y-%m-%d}.jsonl", "atlas/log/HEAD"}
    assert isinstance(result, RunResult) and result.status == "ok" and result.seq == 1
    assert result.model == "offline" and result.cost_usd == 0.0
    assert [c["file"] for c in result.captures] == ["project_demo_on_thursday.md"]


def test_git_diff_after_a_run_shows_only_the_run(vault):
    def git(*args):
        return subprocess.run(["git", "-C", str(vault), *args], check=True, capture_output=True,
                              text=True).stdout
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "before")
    AtomicAgent("atlas", root=vault).call("Nothing to remember today.")
    status = git("status", "--porcelain", "--untracked-files=all").split("\n")
    paths = sorted(line[3:] for line in status if line and "/log/snapshots/" not in line)
    assert [p.split("/")[1] for p in paths] == ["journal", "log", "log"]
    snapshots = [line[3:] for line in status if "/log/snapshots/" in line]
    assert len(snapshots) == 1 and snapshots[0].endswith(".jsonl")  # the day's pack: JSON Lines, one per text


def test_result_fields_and_log_record_agree(vault):
    model = ScriptedModel("Answer.\n" + capture_block(name="Alpha") + "\n```atomic_capture\n{bad\n```")
    result = AtomicAgent("atlas", root=vault, trigger="script", model=model).call("Go", critical=True)
    record = list(runlog.records(AtomicAgent("atlas", root=vault).folder))[-1][2]
    assert record["run_id"] == result.run_id and record["seq"] == result.seq
    assert record["trigger"] == "script" and record["critical"] is True
    assert record["input_tokens"] == 10 and record["output_tokens"] == 5 and record["cost_usd"] == 0.001
    assert [c["status"] for c in record["captures"]] == ["written", "rejected"]
    assert record["manifest"] == result.manifest and record["status"] == "ok"
    assert set(record) >= {"ts", "run_id", "agent", "trigger", "model", "input_tokens", "output_tokens",
                           "cost_usd", "status", "summary", "captures", "manifest", "error", "seq",
                           "prev", "hash"}


def test_any_object_with_complete_is_a_model(vault):
    model = ScriptedModel("hi")
    assert isinstance(model, Model)
    AtomicAgent("atlas", root=vault, model=model).call("Go")
    request = model.requests[0]
    assert request.messages == [{"role": "user", "content": "Go"}]
    assert request.system[0]["layer"] == "identity" and request.max_output_tokens == 2000


def test_a_failing_model_is_logged_as_an_error_run_and_raised(vault, snap):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel(error=TimeoutError("slow")))
    with pytest.raises(ModelError, match="TimeoutError: slow") as caught:
        agent.call("Go")
    record = list(runlog.records(agent.folder))[-1][2]
    assert record["status"] == "error" and "TimeoutError: slow" in record["error"]
    assert "seq 1" in str(caught.value)
    assert runlog.verify(agent.folder).ok


def test_a_model_that_cannot_be_built_is_never_replaced_by_the_offline_model(vault):
    model_md = vault / "atlas" / "model.md"
    model_md.write_text(model_md.read_text().replace("model: offline ", "model: nowhere:big-model "))
    with pytest.raises(ModelError, match="no provider 'nowhere'"):
        AtomicAgent("atlas", root=vault).call("Go")
    record = list(runlog.records(AtomicAgent("atlas", root=vault).folder))[-1][2]
    assert record["status"] == "error" and record["model"] == "nowhere:big-model"
    with pytest.raises(ModelError, match="no provider 'nowhere'"):
        AtomicAgent("atlas", root=vault, model="nowhere:x").call("Go")
    assert list(runlog.records(AtomicAgent("atlas", root=vault).folder))[-1][2]["model"] == "nowhere:x"


@pytest.mark.parametrize("work", ["", "   \n", None, "a\x00b"])
def test_bad_work_items_are_refused_and_nothing_is_written(vault, snap, work):
    before = snap(vault)
    with pytest.raises(ConfigError, match="work item"):
        AtomicAgent("atlas", root=vault).call(work)
    assert snap(vault) == before


def test_missing_agent_and_missing_identity(vault):
    with pytest.raises(AgentNotFound, match="no agent folder 'ghost'") as caught:
        AtomicAgent("ghost", root=vault)
    assert "init ghost" in caught.value.fix
    (vault / "atlas" / "persona" / "IDENTITY.md").unlink()
    with pytest.raises(AgentNotFound, match="IDENTITY.md"):
        AtomicAgent("atlas", root=vault)
    with pytest.raises(ConfigError, match="invalid agent name"):
        AtomicAgent("../etc", root=vault)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p.write_text(p.read_text().replace("type: project", "type: gossip")), "type"),
    (lambda p: p.write_text("---\nname: [broken\n---\nbody\n"), "not valid YAML"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "binary"),
    (lambda p: p.write_bytes(b"---\nname: caf\xe9\n---\n"), "UTF-8"),
])
def test_a_broken_note_is_left_out_and_the_run_goes_on(vault, mutate, fragment):
    """One bad hand-written note must not stop the agent: the run leaves it out, says so
    in a warning and in the record's manifest, and answers."""
    mutate(vault / "atlas" / "memory" / "project_meetup_talk.md")
    result = AtomicAgent("atlas", root=vault).call("Go")
    assert result.status == "ok"
    [warning] = [w for w in result.warnings if "project_meetup_talk.md" in w]
    assert fragment in warning and "doctor" in warning
    [skipped] = result.manifest["skipped"]
    assert skipped["source"] == "memory/project_meetup_talk.md" and fragment in skipped["reason"]
    assert "memory/project_meetup_talk.md" not in [f["source"] for f in result.manifest["files"]]
    [logged] = [r for r in FileLog().records(open_agent("atlas", vault)) if r.get("run_id") == result.run_id]
    assert logged["manifest"]["skipped"] == [skipped] and logged["warnings"] == result.warnings


def test_doctor_lists_every_problem_of_every_broken_note_with_its_line(vault):
    memory = vault / "atlas" / "memory"
    talk = memory / "project_meetup_talk.md"
    lines = talk.read_text().split("\n")
    at = {line.split(":")[0]: n for n, line in enumerate(lines, start=1) if ":" in line}
    talk.write_text(talk.read_text().replace("type: project", "type: gossip")
                    .replace("confidence: medium", "confidence: sure").replace("confidence: high", "confidence: sure"))
    (memory / "reference_twice.md").write_text("---\n\nname: a\nname: b\n---\nbody\n")
    findings = [f for f in doctor.check(open_agent("atlas", vault)) if f.check == "notes"]
    messages = [f.message for f in findings]
    assert all(f.level == "error" for f in findings) and len(findings) == 3, messages
    assert f"project_meetup_talk.md: line {at['type']}: type: 'gossip' is not a note type" in messages
    assert f"project_meetup_talk.md: line {at['confidence']}: confidence: 'sure' is not allowed" in messages
    assert "reference_twice.md: line 4: frontmatter is not valid YAML: key 'name' is set twice" in messages


def test_malformed_model_md_stops_the_run(vault, snap):
    (vault / "atlas" / "model.md").write_text("```yaml\nmodel: [\n```\n")
    before = snap(vault)
    with pytest.raises(ConfigError, match="invalid YAML"):
        AtomicAgent("atlas", root=vault).call("Go")
    assert snap(vault) == before


def test_hand_edits_are_seen_on_the_next_call_without_restarting(vault):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel())
    agent.call("one")
    note = vault / "atlas" / "memory" / "project_meetup_talk.md"
    note.write_text(note.read_text().replace("last_seen: ", "pinned: true\nlast_seen: ", 1))
    model = ScriptedModel()
    AtomicAgent("atlas", root=vault, model=model).call("two")
    pinned = [b["source"] for b in model.requests[0].system if b["layer"] == "pinned note"]
    assert "memory/project_meetup_talk.md" in pinned


def test_deleting_the_catalog_cache_changes_nothing_but_speed(vault):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel())
    first = agent.call("same").manifest
    catalog.forget(agent.folder)
    assert not (agent.folder.state / catalog.CACHE_NAME).exists()
    second = agent.call("same").manifest
    assert [f["source"] for f in first["files"] if "journal" not in f["source"]] == \
           [f["source"] for f in second["files"] if "journal" not in f["source"]]


def test_a_torn_log_refuses_the_run_before_any_note_is_written(vault, snap):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("first")
    log_file = runlog.day_files(agent.folder)[-1]
    with open(log_file, "ab") as handle:
        handle.write(b'{"partial":')
    before = snap(vault)
    with pytest.raises(AtomicVaultError, match="torn"):
        agent.call("second\nremember: project: should not be written")
    assert snap(vault) == before


def test_older_convention_vault_loads_unchanged(vault):
    model_md = vault / "atlas" / "model.md"
    model_md.write_text("# Model\n\n## Default model\n`claude-sonnet-4-5`\n\n## Fallback\n`claude-haiku-4-5`\n\n"
                        "```yaml\ncost_guardrails:\n  enabled: true\n  daily_cap_usd: 5.0\n```\n")
    legacy = vault / "atlas" / "log" / "2026-11" / "2026-11-01.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"ts": "2026-11-01T07:00:00Z", "agent": "atlas", "status": "ok", "cost_usd": 0.01}\n')
    result = AtomicAgent("atlas", root=vault, model="offline").call("Go")  # no key here for Claude
    assert result.seq == 1 and result.model == "offline"
    verification = runlog.verify(AtomicAgent("atlas", root=vault).folder)
    assert verification.ok and verification.legacy == 1


def test_a_damaged_catalog_cache_is_ignored_and_rebuilt(vault):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel())
    agent.call("first")
    cache = agent.folder.state / catalog.CACHE_NAME
    assert cache.is_file()
    catalog._MEMO.clear()
    cache.write_bytes(b"\x00garbage")
    notes, broken = catalog.scan(agent.folder)
    assert len(notes) == 12 and broken == {}
    catalog._MEMO.clear()
    notes_again, _ = catalog.scan(agent.folder)  # from the rebuilt cache
    assert notes_again == notes
