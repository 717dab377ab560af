"""Projects (spec/18): the role x project cascade in the prompt, scope: project captures,
project.md's strict parsing, membership, the project's policy floor, and the vault's
listing and doctor."""

import json
import threading

import pytest

from atomic_vault import AtomicAgent, projects, runlog
from atomic_vault.errors import ConfigError
from atomic_vault.policy import Gate
from atomic_vault.vault import list_agents, open_agent
from conftest import capture_block


def note(name, body, pinned=False, note_type="project"):
    return ("---\nschema_version: 1\n"
            f"name: {name}\ndescription: {name} in one line\ntype: {note_type}\n"
            "captured: 2026-11-01\nlast_seen: 2026-11-20\nsources:\n- test\nconfidence: high\n"
            + ("pinned: true\n" if pinned else "") + f"---\n{body}\n")


def make_project(vault, name="launch", members=("atlas",), block=None, notes=None):
    folder = vault / "_projects" / name
    (folder / "memory").mkdir(parents=True, exist_ok=True)
    block = block if block is not None else "members: [" + ", ".join(members) + "]\nbudget: 4000"
    (folder / "project.md").write_text(f"# Launch\n\nShip the product launch by December.\n\n```yaml\n{block}\n```\n")
    notes = notes if notes is not None else {
        "project_launch_date.md": note("Launch date", "The launch is on 2026-12-15.", pinned=True),
        "user_working_hours.md": note("Working hours", "Project-wide hours.", pinned=True, note_type="user"),
    }
    lines = ["# Memory Index", "", "## Active Projects"]
    for file in notes:
        (folder / "memory" / file).write_text(notes[file])
        lines.append(f"- [{file}]({file}) — shared")
    (folder / "memory" / "INDEX.md").write_text("\n".join(lines) + "\n")
    return folder


def join(vault, agent="atlas", names=("launch",), extra=None):
    data = {"model": "offline", "projects": list(names), **(extra or {})}
    (vault / agent / "model.md").write_text("# Model\n\n```yaml\n" + json.dumps(data) + "\n```\n")


def sources(result):
    return [(f["layer"], f["source"]) for f in result.manifest["files"]]


def test_project_layers_follow_the_documented_order_with_root_relative_sources(vault):
    make_project(vault)
    join(vault)
    result = AtomicAgent("atlas", root=vault).call("Plan the week.")
    layers = sources(result)
    kinds = [k for k, _ in layers]
    assert ("project goal", "_projects/launch/project.md") in layers
    assert ("project index", "_projects/launch/memory/INDEX.md") in layers
    assert ("project pinned note", "_projects/launch/memory/project_launch_date.md") in layers
    assert kinds.index("project goal") == kinds.index("user") + 1  # right after the persona
    assert kinds.index("project index") == kinds.index("memory index") + 1
    assert kinds.index("project pinned note") == max(i for i, k in enumerate(kinds) if k == "pinned note") + 1
    # each project layer is snapshotted like any layer: the run's prompt can be read back
    record = runlog.records(open_agent("atlas", vault))
    last = [r for _, _, r in record][-1]
    entry = next(f for f in last["manifest"]["files"] if f["layer"] == "project goal")
    assert entry["snapshot"] and entry["sha256"]


def test_the_agents_own_note_wins_over_the_projects_note_of_the_same_name(vault):
    make_project(vault)
    join(vault)
    result = AtomicAgent("atlas", root=vault).call("Plan the week.")
    layer_sources = [s for _, s in sources(result)]
    assert "memory/user_working_hours.md" in layer_sources
    assert "_projects/launch/memory/user_working_hours.md" not in layer_sources
    assert {"source": "_projects/launch/memory/user_working_hours.md",
            "action": "shadowed by memory/user_working_hours.md"}.items() <= next(
        c for c in result.manifest["cuts"] if c["source"].endswith("user_working_hours.md")).items()


def test_the_projects_budget_cuts_its_own_layers_and_records_the_cut(vault):
    make_project(vault, block="members: [atlas]\nbudget: 64")
    join(vault)
    result = AtomicAgent("atlas", root=vault).call("Plan the week.")
    cut = [c for c in result.manifest["cuts"] if c["source"].startswith("_projects/launch/")]
    assert any(c["action"] == "dropped (project budget)" for c in cut)
    project_tokens = sum(f["tokens"] for f in result.manifest["files"] if f["source"].startswith("_projects/"))
    assert project_tokens <= 64


def test_a_scope_project_capture_goes_to_the_project_memory_and_index(vault):
    make_project(vault)
    join(vault)
    work = "Note this.\n\n" + capture_block(name="Press kit owner", body="Ana owns the press kit.",
                                            scope="project")
    model = _Echo(work)
    before = sorted(p.name for p in (vault / "atlas" / "memory").iterdir())
    result = AtomicAgent("atlas", root=vault, model=model).call(work)
    assert result.status == "ok"
    outcome = result.captures[0]
    assert (outcome["status"], outcome["scope"], outcome["project"]) == ("written", "project", "launch")
    assert outcome["source"] == "_projects/launch/memory/project_press_kit_owner.md"
    shared = vault / "_projects" / "launch" / "memory"
    assert "Ana owns the press kit." in (shared / "project_press_kit_owner.md").read_text()
    assert "project_press_kit_owner.md" in (shared / "INDEX.md").read_text()
    assert sorted(p.name for p in (vault / "atlas" / "memory").iterdir()) == before  # the agent's untouched
    record = [r for _, _, r in runlog.records(open_agent("atlas", vault))][-1]
    assert record["captures"][0]["project"] == "launch"


def test_a_non_member_or_an_unknown_project_is_a_rejected_capture(vault):
    make_project(vault)
    work = capture_block(name="Shared fact", body="Something.", scope="project")
    result = AtomicAgent("atlas", root=vault, model=_Echo(work)).call(work)  # atlas joined no project
    assert result.captures[0]["status"] == "rejected"
    assert "member of no project" in result.captures[0]["reason"]
    join(vault)
    work = capture_block(name="Shared fact", body="Something.", scope="project", project="other")
    result = AtomicAgent("atlas", root=vault, model=_Echo(work)).call(work)
    assert result.captures[0]["status"] == "rejected"
    assert "not a member of project 'other'" in result.captures[0]["reason"]
    assert not (vault / "_projects" / "launch" / "memory" / "project_shared_fact.md").exists()


def test_naming_a_project_that_does_not_list_the_agent_refuses_the_run(vault):
    make_project(vault, members=("someone",))
    join(vault)
    with pytest.raises(ConfigError) as caught:
        AtomicAgent("atlas", root=vault).call("Plan.")
    assert caught.value.field == "projects" and "does not list 'atlas'" in caught.value.message
    join(vault, names=("missing",))
    with pytest.raises(ConfigError) as caught:
        AtomicAgent("atlas", root=vault).call("Plan.")
    assert "there is no project 'missing'" in caught.value.message and str(caught.value.path).endswith("model.md")


@pytest.mark.parametrize("block, field, words", [
    ("members: [atlas\nbudget: 3", "line", "invalid YAML"),
    ("members: [atlas]\nmembrs: [x]", "membrs", "did you mean 'members'"),
    ("budget: 100", "members", "names no members"),
    ("members: [atlas]\nbudget: 1", "budget", "whole number of tokens"),
    ("members: ['../etc']", "members", "not an agent name"),
])
def test_an_invalid_project_md_names_the_file_the_field_and_the_fix(vault, block, field, words):
    make_project(vault, block=block)
    with pytest.raises(ConfigError) as caught:
        projects.load(vault, "launch")
    error = caught.value
    assert str(error.path).endswith("project.md") and error.field.startswith(field) and words in error.message
    assert error.fix
    problems = projects.problems(vault)
    assert problems and problems[0][0] == "launch"


def test_invalid_yaml_names_the_line(vault):
    make_project(vault, block="members: [atlas]\nbudget: : 3")
    with pytest.raises(ConfigError) as caught:
        projects.load(vault, "launch")
    assert caught.value.field == "line 7"  # the line of "budget: : 3"


def test_the_projects_folder_is_never_an_agent(vault):
    make_project(vault)
    (vault / "_projects" / "persona").mkdir()  # even with a persona folder inside
    assert "_projects" not in list_agents(vault)
    with pytest.raises(ConfigError):
        open_agent("_projects", vault)


def test_the_project_policy_is_a_floor_for_its_members(vault):
    folder = make_project(vault)
    (folder / "policy.md").write_text("# Floor\n\n```yaml\nrules:\n  - {tool: say, verdict: block, reason: no speaking}\n```\n")
    (vault / "atlas" / "policy.md").write_text("# P\n\n```yaml\ndefault: allow\n```\n")
    gate = Gate(vault / "atlas" / "policy.md", vault / "policy.md",
                (("_projects/launch", folder / "policy.md"),))
    verdict = gate.decide("say", {"text": "hi"})
    assert verdict.outcome == "block" and verdict.rule == "floor _projects/launch/policy.md line 5"
    assert gate.decide("leap_year", {"year": 2000}).outcome == "allow"
    join(vault)
    result = AtomicAgent("atlas", root=vault).call('tool: say {"text": "hi"}')
    assert "no speaking" in result.text


def test_members_writing_one_project_at_once_lose_no_note(vault):
    import shutil
    make_project(vault, members=("atlas", "beta", "gamma", "delta"))
    for name in ("beta", "gamma", "delta"):
        shutil.copytree(vault / "atlas", vault / name, ignore=shutil.ignore_patterns("log", "journal", ".atomic_vault"))
    for name in ("atlas", "beta", "gamma", "delta"):
        join(vault, agent=name)
    errors = []

    def member(name):
        try:
            for i in range(3):
                work = capture_block(name=f"{name} fact {i}", body=f"{name} {i}", scope="project")
                assert AtomicAgent(name, root=vault, model=_Echo(work)).call(work).status == "ok"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=member, args=(n,)) for n in ("atlas", "beta", "gamma", "delta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    index = (vault / "_projects" / "launch" / "memory" / "INDEX.md").read_text()
    for name in ("atlas", "beta", "gamma", "delta"):
        for i in range(3):
            assert f"project_{name}_fact_{i}.md" in index
            assert (vault / "_projects" / "launch" / "memory" / f"project_{name}_fact_{i}.md").is_file()


class _Echo:
    """A model that answers with the given text (its capture blocks included)."""

    name = "test:echo"

    def __init__(self, text):
        self.text = text

    def complete(self, request):
        from atomic_vault.models import ModelResponse
        return ModelResponse(text=self.text, input_tokens=10, output_tokens=5, model=self.name)


def test_doctor_checks_each_project_and_each_members_membership(vault):
    from click.testing import CliRunner

    from atomic_vault.cli import cli

    make_project(vault)
    join(vault)
    result = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "--json"])
    found = [json.loads(line) for line in result.output.splitlines()]
    assert {"agent": "_projects/launch", "check": "project", "level": "ok"}.items() <= next(
        f for f in found if f["agent"] == "_projects/launch" and f["check"] == "project").items()
    assert any(f["agent"] == "atlas" and f["check"] == "projects" and f["level"] == "ok" for f in found)
    (vault / "_projects" / "launch" / "project.md").write_text("# Launch\n\n```yaml\nmembers: [atlas, ghost]\n```\n")
    (vault / "_projects" / "launch" / "memory" / "INDEX.md").write_text("# Memory Index\n")
    result = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "--json"])
    found = [json.loads(line) for line in result.output.splitlines()]
    errors = [(f["check"], f["message"]) for f in found if f["agent"] == "_projects/launch" and f["level"] == "error"]
    assert ("project", "members: member 'ghost' is not an agent of this vault") in errors
    assert any(check == "index" for check, _ in errors)
    assert result.exit_code == 1
    join(vault, names=("nothere",))
    result = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas", "--json"])
    found = [json.loads(line) for line in result.output.splitlines()]
    assert any(f["check"] == "projects" and "no project 'nothere'" in f["message"] for f in found)


def test_a_run_that_fails_before_its_record_takes_back_its_project_notes(vault, monkeypatch):
    from atomic_vault.backends.files import FileLog

    make_project(vault)
    join(vault)
    shared = vault / "_projects" / "launch" / "memory"
    index_before = (shared / "INDEX.md").read_text()
    work = capture_block(name="Doomed fact", body="Never kept.", scope="project")

    original = FileLog.append

    def refuse(self, folder, record, fence=None):
        if record.get("kind") == "run":  # the commit point fails: a full disk
            raise OSError(28, "No space left on device")
        return original(self, folder, record, fence)
    monkeypatch.setattr(FileLog, "append", refuse)
    with pytest.raises(OSError):
        AtomicAgent("atlas", root=vault, model=_Echo(work)).call(work)
    assert not (shared / "project_doomed_fact.md").exists()
    assert (shared / "INDEX.md").read_text() == index_before
