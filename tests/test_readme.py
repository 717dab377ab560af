"""The README's two commands: .ci/run runs them verbatim, and the first leaves samples/ as it is."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from atomic_vault import runlog
from atomic_vault.vault import open_agent
from conftest import SAMPLES, snapshot

REPO = SAMPLES.parent


def readme_commands() -> list[str]:
    """The shell lines of the README's "Two commands" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_ci_runs_both_readme_commands_verbatim_and_in_order():
    first, second = readme_commands()
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert first in lines and second in lines
    assert lines.index(first) < lines.index(second)
    assert "samples" not in first.split("--from samples/atlas")[1], "the run must not write into samples/"


def test_the_first_command_leaves_the_sample_pristine_and_can_be_run_again(tmp_path):
    """The first command's CLI steps (without the install), run twice from a copy of the
    repository's samples: samples/ is unchanged, demo/atlas holds two verified runs."""
    first = readme_commands()[0]
    steps = [step.strip() for step in first.split(" && ") if ".venv/bin/atomic-vault" in step]
    assert len(steps) == 2 and "init atlas --from samples/atlas" in steps[0]
    cli = f"{shlex.quote(sys.executable)} -m atomic_vault"
    script = " && ".join(steps).replace(".venv/bin/atomic-vault", cli)
    subprocess.run(["cp", "-r", str(SAMPLES), str(tmp_path / "samples")], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_VAULT_")}
    for attempt in (1, 2):
        done = subprocess.run(["bash", "-c", "set -o pipefail; " + script], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, (attempt, done.stderr)
    assert "left as it is" in done.stdout
    assert snapshot(tmp_path / "samples") == snapshot(SAMPLES)
    folder = open_agent("atlas", tmp_path / "demo")
    assert runlog.verify(folder).ok and runlog.verify(folder).records == 2
    assert (folder.memory / "project_the_verdemar_demo_moved_to_thursday.md").is_file()


def test_demo_is_git_ignored():
    assert "demo/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
