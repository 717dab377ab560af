"""One test per bug found in review; each failed before its fix."""

import json
import shutil
from datetime import date

import pytest

from atomic_vault.backends.files import FileMemory
from atomic_vault import AtomicAgent, captures, runlog
from atomic_vault.config import ToolsConfig, load_model_config
from atomic_vault.errors import ConfigError, NoteError
from atomic_vault.models import ModelRequest, OfflineModel
from atomic_vault.notes import read_note, validate, parse_note_text
from atomic_vault.vault import open_agent
from conftest import capture_block

TODAY = date(2026, 11, 22)


def apply(vault, text):
    folder = open_agent("atlas", vault)
    found, rejected = captures.extract(text)
    return folder, captures.write(folder, FileMemory(), ToolsConfig(), found, TODAY) + rejected


def test_supersedes_never_overwrites_a_note_that_has_the_new_name(vault):
    folder, _ = apply(vault, capture_block(name="Kept", body="original"))
    _, outcomes = apply(vault, capture_block(name="Kept", body="replacement",
                                             supersedes="project_meetup_talk.md"))
    assert outcomes[0]["file"] == "project_kept_v2.md"
    assert read_note(folder.memory / "project_kept.md")[1] == "original"


def test_a_third_version_supersedes_the_current_one_not_the_base(vault):
    folder, _ = apply(vault, capture_block(name="Plan", body="one"))
    apply(vault, capture_block(name="Plan", body="two"))
    _, outcomes = apply(vault, capture_block(name="Plan", body="three"))
    assert outcomes[0]["file"] == "project_plan_v3.md" and outcomes[0]["supersedes"] == "project_plan_v2.md"
    assert read_note(folder.memory / "project_plan.md")[0]["superseded_by"] == "project_plan_v2.md"
    assert read_note(folder.memory / "project_plan_v2.md")[0]["superseded_by"] == "project_plan_v3.md"
    _, again = apply(vault, capture_block(name="Plan", body="three"))
    assert again[0] == {"name": "Plan", "type": "project", "status": "refreshed", "file": "project_plan_v3.md"}


def test_a_byte_order_mark_does_not_crash_an_update(vault):
    path = vault / "atlas" / "memory" / "project_meetup_talk.md"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    _, outcomes = apply(vault, capture_block(name="x", merge_into="project_meetup_talk.md", body="More."))
    assert outcomes[0]["status"] == "merged"
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_an_unclosed_frontmatter_is_a_rejection_not_a_crash(vault):
    path = vault / "atlas" / "memory" / "project_meetup_talk.md"
    path.write_text(path.read_text().replace("\n---\n", "\n----\n", 1))
    _, outcomes = apply(vault, capture_block(name="x", merge_into="project_meetup_talk.md", body="More."))
    assert outcomes[0]["status"] == "rejected" and "frontmatter" in outcomes[0]["reason"]


def test_a_blank_last_line_in_the_log_does_not_block_runs(vault):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one")
    with open(runlog.day_files(agent.folder)[-1], "a") as handle:
        handle.write("\n")
    assert agent.call("two").seq == 2


@pytest.mark.parametrize("last", ['[1, 2]\n', '{"hash": "x"}\n'])
def test_a_strange_last_record_is_a_clear_log_error(vault, last):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one")
    with open(runlog.day_files(agent.folder)[-1], "a") as handle:
        handle.write(last)
    with pytest.raises(Exception) as caught:
        agent.call("two")
    assert type(caught.value).__name__ == "LogError" and caught.value.fix


def test_note_yaml_errors_point_at_the_right_line(tmp_path):
    with pytest.raises(NoteError) as caught:
        parse_note_text("---\nname: a\ntype: b\n: : :\n---\nbody", tmp_path / "reference_x.md")
    assert caught.value.field == "line 4"


def test_a_fenced_model_id_under_the_old_heading(tmp_path):
    path = tmp_path / "model.md"
    path.write_text("## Default model\n\n```text\nclaude-sonnet-4-5\n```\n")
    assert load_model_config(path).model == "anthropic:claude-sonnet-4-5"


def test_duplicate_keys_in_one_block_or_frontmatter_are_errors(tmp_path):
    path = tmp_path / "model.md"
    path.write_text("```yaml\nmodel: offline\nmodel: other\n```\n")
    with pytest.raises(ConfigError, match="set twice"):
        load_model_config(path)
    with pytest.raises(NoteError, match="set twice"):
        parse_note_text("---\nname: a\nname: b\n---\nbody", tmp_path / "reference_x.md")


def test_sources_and_tags_must_be_single_lines():
    _, rejected = captures.extract(capture_block(sources=["a\nb"]))
    assert rejected and "one line each" in rejected[0]["reason"]


def test_crlf_bodies_are_accepted_and_normalised():
    found, _ = captures.extract(capture_block(body="line one\r\nline two"))
    assert found[0].body == "line one\nline two"


def test_null_supersedes_with_merge_into_is_fine():
    found, rejected = captures.extract(capture_block(supersedes=None, merge_into="project_x.md"))
    assert rejected == [] and found[0].merge_into == "project_x.md"


def test_expired_notes_stay_in_their_section_and_doctor_stays_quiet(vault):
    from atomic_vault import doctor
    apply(vault, capture_block(name="Old offer", expires_at="2020-01-01"))
    folder = open_agent("atlas", vault)
    assert doctor.index_changes(folder, FileMemory(), FileMemory().scan(folder)[0]) == {}


@pytest.mark.parametrize("value", ["true", "1.0"])
def test_schema_version_must_be_the_integer_one(tmp_path, value):
    path = tmp_path / "reference_x.md"
    text = (f"---\nschema_version: {value}\nname: X\ndescription: d\ntype: reference\ncaptured: 2026-01-01\n"
            "last_seen: 2026-01-01\nsources: []\nconfidence: low\n---\nb\n")
    path.write_text(text)
    with pytest.raises(NoteError, match="schema_version|this version reads 1"):
        validate(read_note(path)[0], path)


def test_offline_typed_remember_without_letters_captures_nothing():
    request = ModelRequest(model="offline", system=[], messages=[{"role": "user", "content": "remember: user: ???"}],
                           max_output_tokens=10)
    text = OfflineModel().complete(request).text
    assert captures.extract(text) == ([], []) and "Nothing to remember" in text


def test_verify_reads_head_first_so_a_concurrent_append_is_never_truncation(vault, monkeypatch):
    agent = AtomicAgent("atlas", root=vault)
    agent.call("one")
    real = runlog.day_files

    def append_meanwhile(folder):
        monkeypatch.setattr(runlog, "day_files", real)
        agent.call("two")  # a run lands between reading HEAD and reading the records
        return real(folder)

    monkeypatch.setattr(runlog, "day_files", append_meanwhile)
    result = runlog.verify(agent.folder)
    assert result.ok and "HEAD is behind" in result.warnings[0]


def test_a_stray_folder_in_journal_is_not_a_month(vault):
    (vault / "atlas" / "journal" / "old").mkdir()
    (vault / "atlas" / "journal" / "old" / "2030-01-01.md").write_text("# stray\n")
    from conftest import ScriptedModel
    model = ScriptedModel()
    AtomicAgent("atlas", root=vault, model=model).call("go")
    sources = [b["source"] for b in model.requests[0].system if b["layer"] == "journal"]
    assert "journal/old/2030-01-01.md" not in sources


def test_a_dangling_memory_link_is_refused_cleanly(vault, tmp_path):
    memory = vault / "atlas" / "memory"
    import shutil
    shutil.rmtree(memory)
    memory.symlink_to(tmp_path / "nowhere")
    folder = open_agent("atlas", vault)
    outcomes = captures.write(folder, FileMemory(), ToolsConfig(), captures.extract(capture_block())[0], TODAY)
    assert outcomes[0]["status"] == "rejected"


def test_init_refuses_a_bad_model_name(tmp_path):
    from atomic_vault.scaffold import create_agent
    with pytest.raises(ConfigError, match="not a model name"):
        create_agent(tmp_path, "bot", model="bad model!")
    assert not (tmp_path / "bot").exists()


def test_repeated_runs_on_broken_notes_keep_the_same_message(vault):
    memory = vault / "atlas" / "memory"
    for name in ("project_meetup_talk.md", "project_kestrel_dbt_audit.md"):
        (memory / name).write_text("no frontmatter\n")
    agent = AtomicAgent("atlas", root=vault)
    runs = [agent.call("go") for _ in range(3)]
    broken = [[w for w in run.warnings if "is broken" in w] for run in runs]
    assert broken[0] == broken[1] == broken[2] and len(broken[0]) == 2
    assert runs[0].manifest["skipped"] == runs[2].manifest["skipped"]


def test_fencing_tokens_grow_and_the_lock_file_names_the_last_holder(vault):
    from atomic_vault.locks import FileLock
    folder = open_agent("atlas", vault)
    tokens = []
    for _ in range(3):
        with FileLock().hold(folder, timeout=1) as lease:
            tokens.append(lease.token)
    assert tokens == [tokens[0], tokens[0] + 1, tokens[0] + 2]
    assert len((folder.state / "lock").read_text().splitlines()) == 1


def test_crlf_answers_keep_their_captures():
    text = "Answer\r\n" + capture_block().replace("\n", "\r\n") + "\r\nmore text\r\n"
    found, rejected = captures.extract(text)
    assert len(found) == 1 and rejected == []


def test_deleting_the_derived_state_folder_never_locks_the_agent_out(vault):
    agent = AtomicAgent("atlas", root=vault)
    for _ in range(3):
        agent.call("a run")
    shutil.rmtree(vault / "atlas" / ".atomic_vault")  # restarts the file lock's counter
    assert agent.call("after the cleanup").seq == 4
    assert "fence" not in json.loads((vault / "atlas" / "log" / "HEAD").read_text())


def test_resending_a_remember_of_a_fact_edited_by_hand_keeps_the_operators_version(vault, snap):
    agent = AtomicAgent("atlas", root=vault)
    first = agent.call("Plan.\nremember: project: the demo moved to Thursday")
    path = vault / "atlas" / "memory" / first.captures[0]["file"]
    path.write_text(path.read_text().replace("confidence: medium", "confidence: high")
                    .replace("the demo moved to Thursday\n", "the demo moved to Thursday, 14:00, room B\n"))
    kept = path.read_text()
    again = agent.call("Plan.\nremember: project: the demo moved to Thursday")
    assert again.captures[0]["status"] == "rejected" and "written by a person" in again.captures[0]["reason"]
    assert path.read_text() == kept and not list(path.parent.glob("*_v2.md"))
