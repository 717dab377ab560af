"""Note edit commands, note history and promotion into persona files (spec/03, spec/07)."""

import json
import sys
from hashlib import sha256

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, history, noteedit, retention
from atomic_vault.backends.files import FileMemory
from atomic_vault.backends.postgres import PostgresMemory
from atomic_vault.cli import cli
from atomic_vault.migrate import migrate_memory
from atomic_vault.protocols import UNCHECKED
from atomic_vault.vault import open_agent

from conftest import ScriptedModel, capture_block

TALK = "project_meetup_talk.md"
RATE = "reference_rate_card.md"
MONTHLY, MILESTONE = "decision_invoice_monthly.md", "decision_invoice_per_milestone.md"


@pytest.fixture(params=["files", "sqlite", "postgres"])
def backend(request, vault, monkeypatch):
    """The memory backend under test, chosen as an operator would (environment)."""
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", request.param)
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("ATOMIC_VAULT_MEMORY_URL", url)
        migrate_memory(open_agent("atlas", vault), FileMemory(), PostgresMemory(url))
    return request.param


def av(vault, *args, input=None, env=None):
    return CliRunner().invoke(cli, ["--root", str(vault), *args], input=input, env=env)


def agent(vault, **kwargs):
    return AtomicAgent("atlas", root=vault, **kwargs)


def text_of(vault, file):
    a = agent(vault)
    return a.memory.get(a.folder, file)


def index_of(vault):
    a = agent(vault)
    return a.memory.get_index(a.folder)


def records(vault):
    a = agent(vault)
    return list(a.log.records(a.folder))


def sha(text):
    return sha256(text.encode("utf-8")).hexdigest()


def section_of(index_text, file):
    section = None
    for line in index_text.split("\n"):
        if line.startswith("## "):
            section = line[3:]
        elif f"]({file})" in line:
            return section
    return None


def verified(vault):
    result = av(vault, "verify", "atlas")
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------- the flags

def test_archive_and_unarchive_keep_keys_and_body_and_move_the_index_line(vault, backend):
    before = text_of(vault, TALK)
    result = av(vault, "notes", "atlas", "archive", "project_meetup_talk")
    assert result.exit_code == 0, result.output
    after = text_of(vault, TALK)
    old_lines, new_lines = before.split("\n"), after.split("\n")
    end = old_lines.index("---", 1)
    assert new_lines == old_lines[:end] + ["archived: true"] + old_lines[end:]  # order and body kept
    assert section_of(index_of(vault), TALK) == "Archive"
    record = records(vault)[-1]
    assert (record["kind"], record["op"], record["file"]) == ("note_edit", "archive", TALK)
    assert record["before"] == sha(before) and record["after"] == sha(after)
    assert record["changes"] == [{"file": TALK, "before": sha(before), "after": sha(after)}]

    assert av(vault, "notes", "atlas", "unarchive", TALK).exit_code == 0
    assert text_of(vault, TALK) == before  # byte for byte back
    assert section_of(index_of(vault), TALK) == "Active Projects"
    again = av(vault, "notes", "atlas", "unarchive", TALK)
    assert again.exit_code == 0 and "already not archived" in again.output
    assert [r["op"] for r in records(vault)] == ["archive", "unarchive"]
    listed = av(vault, "log", "atlas", "--kind", "note_edit", "--json").output.splitlines()
    assert [json.loads(line)["op"] for line in listed] == ["archive", "unarchive"]
    assert "2 records verify" in verified(vault)


def test_pin_and_unpin(vault, backend):
    before, index_before = text_of(vault, RATE), index_of(vault)
    assert av(vault, "notes", "atlas", "pin", "Rate card 2026").exit_code == 0  # by the note's name
    assert "pinned: true" in text_of(vault, RATE) and index_of(vault) == index_before
    assert av(vault, "notes", "atlas", "unpin", RATE).exit_code == 0
    assert text_of(vault, RATE) == before
    verified(vault)


def test_a_note_the_runtime_wrote_stays_marked_as_its_own(vault, backend):
    result = agent(vault, model=ScriptedModel(capture_block(name="Harbour visit", body="Friday."))).call("go")
    file = result.captures[0]["file"]
    from atomic_vault.notes import written_by_runtime

    assert written_by_runtime(text_of(vault, file))
    assert av(vault, "notes", "atlas", "archive", file).exit_code == 0
    assert written_by_runtime(text_of(vault, file))


# ---------------------------------------------------------------- supersede, rename

def test_supersede_links_both_sides_and_refuses_a_loop(vault, backend, snap):
    assert av(vault, "notes", "atlas", "unarchive", TALK).exit_code == 0  # nothing to do: no record
    result = av(vault, "notes", "atlas", "supersede", TALK, "project_kestrel_dbt_audit")
    assert result.exit_code == 0, result.output
    assert "superseded_by: project_kestrel_dbt_audit.md" in text_of(vault, TALK)
    assert f"supersedes: {TALK}" in text_of(vault, "project_kestrel_dbt_audit.md")
    assert section_of(index_of(vault), TALK) == "Archive"
    assert section_of(index_of(vault), "project_kestrel_dbt_audit.md") == "Active Projects"
    record = records(vault)[-1]
    assert record["op"] == "supersede" and {c["file"] for c in record["changes"]} == {
        TALK, "project_kestrel_dbt_audit.md"}

    state = snap(vault)
    loop = av(vault, "notes", "atlas", "supersede", MILESTONE, MONTHLY)  # monthly -> milestone exists
    assert loop.exit_code == 1 and "a loop" in loop.output and snap(vault) == state
    itself = av(vault, "notes", "atlas", "supersede", TALK, TALK)
    assert itself.exit_code == 1 and "itself" in itself.output and snap(vault) == state
    verified(vault)


def test_rename_moves_the_file_its_links_and_its_index_line(vault, backend):
    body = text_of(vault, MILESTONE)
    result = av(vault, "notes", "atlas", "rename", MILESTONE, "decision_invoicing_rule")
    assert result.exit_code == 0, result.output
    new = "decision_invoicing_rule.md"
    assert text_of(vault, MILESTONE) is None and text_of(vault, new) == body
    assert f"superseded_by: {new}" in text_of(vault, MONTHLY)  # the link that named it
    index_text = index_of(vault)
    assert f"]({MILESTONE})" not in index_text and section_of(index_text, new) == "Locked Decisions"
    wrong_type = av(vault, "notes", "atlas", "rename", new, "project_invoicing")
    assert wrong_type.exit_code == 1 and "decision_" in wrong_type.output
    taken = av(vault, "notes", "atlas", "rename", new, MONTHLY)
    assert taken.exit_code == 1 and "exists already" in taken.output
    assert [r["op"] for r in records(vault)] == ["rename"]
    verified(vault)


def test_ambiguous_names_list_the_candidates(vault, backend, snap):
    a = agent(vault)
    twin = text_of(vault, TALK).replace("project_meetup_talk", "x")
    a.memory.put(a.folder, "project_meetup_talk_copy.md", twin)
    state = snap(vault)
    result = av(vault, "notes", "atlas", "archive", "Meetup talk on boring pipelines")
    assert result.exit_code == 1
    assert f"{TALK}, project_meetup_talk_copy.md" in result.output and "file name" in result.output
    assert snap(vault) == state


# ---------------------------------------------------------------- write, edit

def test_write_takes_a_capture_from_stdin(vault, backend, snap):
    raw = json.dumps({"type": "reference", "name": "Boat schedule", "description": "ferries to the island",
                      "confidence": "high", "sources": ["port"], "body": "Every hour from 07:00."})
    result = av(vault, "notes", "atlas", "write", input=raw)
    assert result.exit_code == 0, result.output
    assert "Every hour from 07:00." in text_of(vault, "reference_boat_schedule.md")
    assert section_of(index_of(vault), "reference_boat_schedule.md") == "Reference"
    record = records(vault)[-1]
    assert record["op"] == "write" and record["changes"][0]["before"] is None

    state = snap(vault)
    bad = av(vault, "notes", "atlas", "write", input=raw.replace('"high"', '"sure"'))
    assert bad.exit_code == 1 and "confidence" in bad.output and snap(vault) == state
    verified(vault)


def editor(tmp_path, code, exit_code=0):
    """An $EDITOR command: a Python script that edits the file it is given."""
    script = tmp_path / f"editor_{abs(hash(code))}.py"
    script.write_text("import sys\npath = sys.argv[1]\ntext = open(path, encoding='utf-8').read()\n"
                      f"{code}\nopen(path, 'w', encoding='utf-8').write(text)\nsys.exit({exit_code})\n")
    return {"VISUAL": "", "EDITOR": f"{sys.executable} {script}"}


def test_edit_writes_a_valid_result(vault, backend, tmp_path):
    env = editor(tmp_path, "text = text.replace('slides not started', 'slides half done')")
    result = av(vault, "notes", "atlas", "edit", TALK, env=env)
    assert result.exit_code == 0, result.output
    assert "slides half done" in text_of(vault, TALK) and "slides half done" in index_of(vault)
    assert records(vault)[-1]["op"] == "edit"
    verified(vault)


@pytest.mark.parametrize("code, exit_code, why", [
    ("text = text.replace('slides not started', 'gone')", 3, "exited with status 3"),
    ("text = text.replace('confidence: ', 'confidence: sure_')", 0, "not valid"),
])
def test_edit_keeps_a_refused_result_aside(vault, backend, tmp_path, snap, code, exit_code, why):
    state = snap(vault)
    result = av(vault, "notes", "atlas", "edit", TALK, env=editor(tmp_path, code, exit_code))
    assert result.exit_code == 1 and why in result.output
    kept = next((vault / "atlas" / ".atomic_vault" / "rejected").glob("project_meetup_talk.*.md"))
    assert ".atomic_vault/rejected/" in " ".join(result.output.split()).replace("\\", "/")
    assert kept.name in result.output.replace("\n", "")
    assert snap(vault) == state and records(vault) == []


def test_edit_refuses_when_the_note_changed_meanwhile(vault, backend, tmp_path, snap):
    # The "editor" also changes the note itself, as a person saving another window would.
    a = agent(vault)
    hand = text_of(vault, TALK).replace("outline drafted", "outline by hand")

    def run_editor(path):
        a.memory.put(a.folder, TALK, hand)
        with open(path, "a", encoding="utf-8") as f:
            f.write("More.\n")
        return 0

    with pytest.raises(noteedit.EditRefused) as caught:
        noteedit.edit(a, TALK, run_editor=run_editor)
    assert "changed on disk" in caught.value.message and text_of(vault, TALK) == hand
    assert open(caught.value.kept, encoding="utf-8").read().endswith("More.\n")
    assert records(vault) == []


# ---------------------------------------------------------------- compare-and-swap

class Racing:
    """The memory backend, with a person saving the note just before the first write."""

    def __init__(self, inner, file, change):
        self.inner, self.file, self.change, self.raced = inner, file, change, False

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def put(self, folder, file, text, *, expected=UNCHECKED):
        if file == self.file and not self.raced:
            self.raced = True
            self.inner.put(folder, file, self.change(self.inner.get(folder, file)))
        self.inner.put(folder, file, text, expected=expected)


def test_a_hand_edit_racing_a_change_is_kept(vault, backend):
    a = agent(vault)
    racing = Racing(a.memory, TALK, lambda t: t.replace("outline drafted", "outline by hand"))
    done = noteedit.set_flag(agent(vault, memory=racing), "archive", TALK)
    text = text_of(vault, TALK)
    assert racing.raced and "outline by hand" in text and "archived: true" in text
    assert done.record["changes"][0]["after"] == sha(text)
    # The edit made outside shows in the record: the note held a text the log never had.
    assert done.record["hand_edits"][0]["after"] == done.record["before"]
    verified(vault)


# ---------------------------------------------------------------- history, restore

def test_history_and_restore(vault, backend):
    original = text_of(vault, TALK)
    av(vault, "notes", "atlas", "archive", TALK)
    archived = text_of(vault, TALK)
    av(vault, "notes", "atlas", "pin", TALK)
    first = records(vault)[0]["run_id"]
    shown = av(vault, "notes", "atlas", "history", TALK, "--json")
    rows = [json.loads(line) for line in shown.output.splitlines()]
    assert [r["op"] for r in rows] == ["outside", "archive", "pin"]  # the sample was never recorded
    assert rows[1]["before"] == sha(original) and rows[1]["after"] == sha(archived)

    result = av(vault, "notes", "atlas", "restore", TALK, "--to", first)
    assert result.exit_code == 0, result.output
    assert text_of(vault, TALK) == archived
    record = records(vault)[-1]
    assert record["op"] == "restore" and record["restored_from"] == first and "hand_edits" not in record
    missing = av(vault, "notes", "atlas", "restore", TALK, "--to", "20990101T000000-00000000")
    assert missing.exit_code == 1 and "no record" in missing.output
    assert av(vault, "notes", "atlas", "restore", TALK).exit_code == 2  # --to is required
    verified(vault)


def test_restoring_a_pruned_version_names_the_prune_record(vault, backend, snap):
    from datetime import datetime, timedelta, timezone

    av(vault, "notes", "atlas", "archive", TALK)
    av(vault, "notes", "atlas", "unarchive", TALK)
    first = records(vault)[0]["run_id"]
    model = vault / "atlas" / "model.md"
    model.write_text(model.read_text().replace("```yaml\n", "```yaml\nretention: 1\n", 1))
    plan = retention.prune(agent(vault), now=datetime.now(timezone.utc) + timedelta(days=30))
    assert plan.removed
    state = snap(vault)
    result = av(vault, "notes", "atlas", "restore", TALK, "--to", first)
    assert result.exit_code == 1 and f"prune record seq {plan.seq}" in " ".join(result.output.split())
    assert snap(vault) == state
    verified(vault)


# ---------------------------------------------------------------- runs

def test_a_runs_captures_carry_before_and_after(vault, backend):
    a = agent(vault, model=ScriptedModel(capture_block(name="Meetup talk on boring pipelines",
                                                       body="A new plan.", supersedes=TALK)))
    before = text_of(vault, TALK)
    result = a.call("go")
    outcome = result.captures[0]
    changes = {c["file"]: c for c in outcome["changes"]}
    assert changes[TALK]["before"] == sha(before) and changes[TALK]["after"] == sha(text_of(vault, TALK))
    assert changes[outcome["file"]]["before"] is None
    stored = a.log.get_snapshot(a.folder, changes[TALK]["before"])
    assert stored == before
    rows = history.entries(a.log, a.folder, TALK)
    assert rows[-1]["run_id"] == result.run_id and rows[-1]["op"] == "capture (written)"
    verified(vault)


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_a_hand_edit_between_runs_is_recorded_by_the_next_run(vault, monkeypatch, kind):
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", kind)
    agent(vault, model=ScriptedModel("nothing")).call("first")  # the catalog's first build
    agent(vault, model=ScriptedModel(capture_block(name="Harbour visit", body="Friday."))).call("write")
    quiet = agent(vault, model=ScriptedModel("nothing")).call("after the write")
    assert "hand_edits" not in agent(vault).log.get(agent(vault).folder, quiet.run_id)  # its own write

    path = vault / "atlas" / "memory" / TALK
    path.write_text(path.read_text() + "\nA line by hand.\n")
    seen = agent(vault, model=ScriptedModel("nothing")).call("see it")
    record = agent(vault).log.get(agent(vault).folder, seen.run_id)
    assert record["hand_edits"] == [{"file": TALK, "before": None, "after": sha(path.read_text())}]
    again = agent(vault, model=ScriptedModel("nothing")).call("once only")
    assert "hand_edits" not in agent(vault).log.get(agent(vault).folder, again.run_id)
    result = av(vault, "notes", "atlas", "restore", TALK, "--to", seen.run_id)
    assert result.exit_code == 0 and "already holds" in result.output
    verified(vault)


# ---------------------------------------------------------------- promotion

def propose(vault, note="user_working_hours", to="persona/USER.md"):
    result = av(vault, "promote", "atlas", note, "--to", to, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_promote_applies_only_once_approved(vault, backend, snap):
    user = vault / "atlas" / "persona" / "USER.md"
    before = user.read_text()
    state = snap(vault)
    proposal = propose(vault)
    assert "+## Working hours and focus time" in proposal["diff"]
    assert [p for p in snap(vault) if p not in state] == [f"atlas/approvals/{proposal['id']}.md"]
    assert user.read_text() == before  # a proposal changes nothing else

    early = av(vault, "promote", "atlas", "--apply", proposal["id"])
    assert early.exit_code == 1 and "still pending" in early.output and user.read_text() == before
    result = av(vault, "approvals", "atlas", "approve", proposal["id"], "--by", "mira")
    assert result.exit_code == 0, result.output
    after = user.read_text()
    assert after.startswith(before.rstrip("\n")) and after.endswith("Lisbon time first.\n")
    record = records(vault)[-1]
    assert (record["kind"], record["decision"], record["applied"]) == ("approval", "approve", True)
    assert record["changes"] == [{"file": "persona/USER.md", "before": sha(before), "after": sha(after)}]
    again = av(vault, "promote", "atlas", "--apply", proposal["id"])
    assert again.exit_code == 1 and "already taken" in again.output
    listed = av(vault, "approvals", "atlas", "--json")
    assert json.loads(listed.output.splitlines()[0])["state"] == "taken: approve"
    verified(vault)


def test_promote_denied_writes_nothing_but_the_record(vault, backend):
    user = vault / "atlas" / "persona" / "USER.md"
    before = user.read_text()
    proposal = propose(vault, "feedback_brief_format", "SOUL")
    assert proposal["target"] == "persona/SOUL.md"
    result = av(vault, "approvals", "atlas", "deny", proposal["id"], "--by", "mira")
    assert result.exit_code == 0 and "nothing was written" in result.output
    assert user.read_text() == before
    assert records(vault)[-1]["decision"] == "deny" and records(vault)[-1]["applied"] is False


def test_promote_refuses_a_persona_file_changed_since_the_proposal(vault, backend):
    user = vault / "atlas" / "persona" / "USER.md"
    proposal = propose(vault)
    user.write_text(user.read_text() + "\nA line by hand.\n")
    edited = user.read_text()
    approval = vault / "atlas" / "approvals" / f"{proposal['id']}.md"  # decided in an editor
    approval.write_text(approval.read_text().replace("decision: pending\ndecided_by: null",
                                                     "decision: approve\ndecided_by: mira"))
    result = av(vault, "promote", "atlas", "--apply", proposal["id"])
    assert result.exit_code == 1 and "changed since the promotion was proposed" in result.output
    assert user.read_text() == edited
    record = records(vault)[-1]
    assert record["applied"] is False and record["refused"]
    verified(vault)


def test_promote_only_into_persona_files(vault, backend, snap):
    state = snap(vault)
    for to in ("model.md", "persona/../model.md", "persona/OTHER.md"):
        result = av(vault, "promote", "atlas", "user_working_hours", "--to", to)
        assert result.exit_code == 1 and "is not a persona file" in result.output
    assert av(vault, "promote", "atlas", "--to", "USER").exit_code == 2
    assert snap(vault) == state


def test_a_broken_note_changed_between_runs_does_not_stop_the_next_run(vault, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", "files")
    agent(vault, model=ScriptedModel("nothing")).call("first")
    (vault / "atlas" / "memory" / TALK).write_bytes(b"---\nname: \xff\n---\n")
    result = agent(vault, model=ScriptedModel("nothing")).call("again")
    assert result.status == "ok" and any(TALK in w for w in result.warnings)


def test_write_a_capture_that_supersedes(vault, backend):
    raw = json.dumps({"type": "project", "name": "Meetup talk on boring pipelines", "description": "moved",
                      "confidence": "high", "sources": ["mail"], "body": "Moved to January.",
                      "supersedes": TALK})
    result = av(vault, "notes", "atlas", "write", "--json", input=raw)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    new = record["outcome"]["file"]
    assert record["file"] == new and new != TALK and record["before"] is None
    assert {c["file"] for c in record["changes"]} == {TALK, new}
    assert f"superseded_by: {new}" in text_of(vault, TALK)
    verified(vault)
