"""Schema upgrades (spec/03 "Schema upgrades", spec/10 `upgrade`): readable steps shown as
diffs, applied file by file, atomically, logged, resumable after a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from atomic_vault import AtomicAgent, upgrades
from atomic_vault.backends import open_backend
from atomic_vault.cli import cli
from atomic_vault.config import load_model_config
from atomic_vault.protocols import LogQuery
from atomic_vault.vault import open_agent

OLDER_MODEL_MD = """# Model

Which model answers.

## Default model

offline

## Fallback

`offline`

```yaml
max_input_tokens: 9000
```
"""


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def _bump(text):
    """A note step of the test's own (the package ships none for notes): v1 -> v2."""
    return text.replace("schema_version: 1\n", "schema_version: 2\n", 1)


BUMP = upgrades.Step("note", 1, 2, "note_v1_to_v2", _bump)


def _stores(vault):
    folder = open_agent("atlas", vault)
    return folder, *(open_backend(kind, None, vault, "atlas") for kind in ("memory", "log", "lock"))


def test_the_older_model_md_is_shown_as_a_diff_then_upgraded_and_logged(vault, snap):
    path = vault / "atlas" / "model.md"
    path.write_text(OLDER_MODEL_MD)
    before_config = load_model_config(path)
    before = snap(vault)
    shown = av(vault, "upgrade", "atlas", "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "--- a/model.md\n+++ b/model.md" in shown.stdout
    assert "+model: offline\n+fallback: offline\n max_input_tokens: 9000" in shown.stdout
    assert "1 files would change" in shown.stderr
    assert snap(vault) == before  # a dry run changes nothing
    done = av(vault, "upgrade", "atlas", "--apply")
    assert done.exit_code == 0 and "upgraded model.md: model_md_v0_to_v1" in done.stdout
    after = load_model_config(path)
    assert (after.model, after.fallback, after.max_input_tokens) == \
        (before_config.model, before_config.fallback, before_config.max_input_tokens)
    assert "## Default model" in path.read_text()  # the prose stays for people
    folder, memory, log, lock = _stores(vault)
    begin, commit = log.query(folder, LogQuery(kind="upgrade"))
    assert begin["phase"] == "begin" and begin["files"][0]["source"] == "model.md"
    assert begin["files"][0]["steps"] == ["model_md_v0_to_v1"] and (begin["files"][0]["from"], begin["files"][0]["to"]) == (0, 1)
    assert commit["phase"] == "commit" and commit["begin"] == begin["seq"]
    assert av(vault, "verify", "atlas").exit_code == 0
    again = av(vault, "upgrade", "atlas", "--apply")
    assert again.exit_code == 0 and "nothing to upgrade" in again.stderr
    assert len(log.query(folder, LogQuery(kind="upgrade"))) == 2


def test_a_current_vault_has_nothing_to_upgrade(vault, snap):
    before = snap(vault)
    done = av(vault, "upgrade", "atlas", "--json")
    assert done.exit_code == 0 and done.stdout == ""
    assert av(vault, "upgrade", "atlas", "--dry-run", "--apply").exit_code == 2
    assert snap(vault) == before


def test_a_step_of_notes_is_applied_to_every_note_and_each_is_whole(vault):
    folder, memory, log, lock = _stores(vault)
    planned = upgrades.plan(folder, memory, [BUMP], {"note": 2})
    notes = sorted(p.name for p in folder.memory.glob("*_*.md"))
    assert sorted(c.source for c in planned.changes) == [f"memory/{n}" for n in notes]
    assert all("-schema_version: 1" in c.diff() and "+schema_version: 2" in c.diff() for c in planned.changes)
    done, records = upgrades.apply(folder, memory, log, lock, available=[BUMP], current={"note": 2})
    assert len(done.changes) == len(notes) and [r["phase"] for r in records] == ["begin", "commit"]
    assert all("schema_version: 2\n" in (folder.memory / n).read_text() for n in notes)
    assert upgrades.plan(folder, memory, [BUMP], {"note": 2}).changes == []


KILLER = textwrap.dedent("""
    import os, signal, sys
    from atomic_vault import upgrades
    from atomic_vault.backends import open_backend
    from atomic_vault.vault import open_agent
    sys.path.insert(0, {tests!r})
    from test_upgrades import BUMP
    root = sys.argv[1]
    folder = open_agent("atlas", root)
    memory, log, lock = (open_backend(k, None, root, "atlas") for k in ("memory", "log", "lock"))
    real, count = memory.put, [0]
    def put(*args, **kwargs):
        count[0] += 1
        if count[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # killed before the third file's write
        return real(*args, **kwargs)
    memory.put = put
    upgrades.apply(folder, memory, log, lock, available=[BUMP], current={{"note": 2}})
""")


def test_an_upgrade_killed_midway_leaves_whole_files_and_a_rerun_converts_the_rest(vault, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILLER.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script), str(vault)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    folder, memory, log, lock = _stores(vault)
    notes = sorted(folder.memory.glob("*_*.md"))
    versions = [p.read_text().count("schema_version: 2\n") for p in notes]
    assert sorted(versions) == [0] * (len(notes) - 2) + [1, 1]  # two converted, the rest as they were
    assert all(p.read_text().count("schema_version: ") == 1 for p in notes)  # no file half written
    assert not list(folder.memory.glob(".*tmp*")) and not list(folder.memory.glob("*.tmp"))
    (begun,) = log.query(folder, LogQuery(kind="upgrade"))
    assert begun["phase"] == "begin" and len(begun["files"]) == len(notes)
    rest, records = upgrades.apply(folder, memory, log, lock, available=[BUMP], current={"note": 2})
    assert len(rest.changes) == len(notes) - 2 and records[0]["resumes"] == begun["seq"]
    assert all("schema_version: 2\n" in p.read_text() for p in notes)
    assert log.verify(folder).ok


def test_a_note_newer_than_the_runtime_is_skipped_with_the_fix_and_never_blocks_the_agent(vault, snap):
    path = vault / "atlas" / "memory" / "project_from_the_future.md"
    path.write_text("---\nschema_version: 9\nname: From the future\ndescription: a newer note\n"
                    "type: project\ncaptured: 2026-11-01\nlast_seen: 2026-11-01\nsources: []\n"
                    "confidence: high\n---\n\nWritten by a newer atomic_vault.\n")
    before = snap(vault)
    shown = av(vault, "upgrade", "atlas", "--json")
    assert shown.exit_code == 0
    (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert row["action"] == "skipped" and row["source"] == "memory/project_from_the_future.md"
    assert "fix: upgrade atomic-vault, pip install -U atomic-vault" in row["reason"]
    assert av(vault, "upgrade", "atlas", "--apply").exit_code == 0
    assert path.read_text().startswith("---\nschema_version: 9\n")
    assert {k: v for k, v in snap(vault).items() if "/log/" not in k} == \
        {k: v for k, v in before.items() if "/log/" not in k}  # --apply with nothing to convert writes nothing
    result = AtomicAgent("atlas", root=vault, model="offline").call("Plan the day.")
    assert result.status == "ok"
    assert any("project_from_the_future.md" in w and "fix: upgrade atomic-vault (pip install -U atomic-vault)" in w for w in result.warnings)
    assert "memory/project_from_the_future.md" in [s["source"] for s in result.manifest["skipped"]]


def test_a_linked_model_md_is_never_written_through(vault, tmp_path):
    shared = tmp_path / "shared-model.md"
    shared.write_text(OLDER_MODEL_MD)
    path = vault / "atlas" / "model.md"
    path.unlink()
    path.symlink_to(shared)
    done = av(vault, "upgrade", "atlas", "--apply")
    assert done.exit_code == 0 and "skipped model.md: is a link" in done.stderr
    assert path.is_symlink() and shared.read_text() == OLDER_MODEL_MD
