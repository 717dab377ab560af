"""samples/fleet (spec/18, "The sample fleet"): four weeks of a project of three agents,
made by samples/make_fleet.py through the real runtime. Its chains verify, its dashboard
is rendered by one command and shows the delegation trees and the queue depth in a real
browser, and the script makes the same files again, byte for byte. The sample itself is
never written: every test works on a copy."""

import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner

from atomic_vault.cli import cli
from conftest import SAMPLES
from test_dashboard import chromium

FLEET = SAMPLES / "fleet"
SCRIPT = SAMPLES / "make_fleet.py"
AGENTS = ("lead", "scout", "writer")


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def visible(dom: str) -> str:
    """The page's text as a reader sees it: no styles, tags as spaces, spaces collapsed."""
    dom = re.sub(r"<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.fixture
def fleet(tmp_path):
    copy = tmp_path / "fleet"
    shutil.copytree(FLEET, copy)
    return copy


def records(root: Path, agent: str) -> list[dict]:
    return [json.loads(line) for path in sorted((root / agent / "log").glob("*/*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_chain_of_the_sample_verifies_and_its_history_spans_four_weeks(fleet):
    runner = CliRunner()
    for agent in AGENTS:
        done = runner.invoke(cli, ["--root", str(fleet), "verify", agent])
        assert done.exit_code == 0 and done.output.startswith("ok:"), done.output
    runs = [r for a in AGENTS for r in records(fleet, a) if r.get("kind") == "run"]
    days = sorted({r["ts"][:10] for r in runs})
    assert days[0] == "2026-11-02" and days[-1] >= "2026-11-28"
    assert all(isinstance(r["cost_usd"], float) and r["cost_usd"] > 0 for r in runs)  # a priced model
    lead = records(fleet, "lead")
    assert any(r.get("kind") == "approval" and r.get("decision") == "approve" for r in lead)
    assert any(h["status"] == "ok" for r in lead for s in r.get("steps") or [] for h in s.get("helpers") or [])
    assert max(r.get("depth", 0) for r in records(fleet, "writer")) == 2  # lead → scout → writer
    assert sorted(p.name for p in (fleet / "lead" / "evals").glob("*.md"))
    assert len(list((fleet / "_queue" / "done").glob("*.json"))) > 5
    assert len(list((fleet / "_queue" / "dead").glob("*.json"))) == 1


def test_one_command_renders_a_dashboard_with_the_trees_and_the_queue_depth(fleet, tmp_path):
    before = files(fleet)
    out = tmp_path / "dash"
    done = CliRunner().invoke(cli, ["--root", str(fleet), "dashboard", "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert files(fleet) == before  # the dashboard writes nothing into the vault
    overview = visible(chromium(tmp_path, "--dump-dom", (out / "index.html").as_uri()))
    assert "Queue depth 2 ready 0 in flight, 12 done (files queue)" in overview
    assert "Dead items 1" in overview and "Delegation trees 8" in overview

    trees = visible(chromium(tmp_path, "--dump-dom", (out / "trees.html").as_uri()))
    root = next(r for r in records(fleet, "lead") if r.get("kind") == "run" and r.get("children")
                and any(c["agent"] == "scout" for c in r["children"])
                and any(c.get("children") for c in records(fleet, "scout") if c.get("root_run_id") == r["run_id"]))
    scout = next(r for r in records(fleet, "scout") if r.get("parent_run_id") == root["run_id"])
    writer = next(r for r in records(fleet, "writer") if r.get("parent_run_id") == scout["run_id"])
    total = root["cost_usd"] + scout["cost_usd"] + writer["cost_usd"]
    assert f"tree cost ${total:,.4f} over 3 runs" in trees
    for depth, node in enumerate((root, scout, writer)):
        assert f"{node['agent']} {node['run_id']} {depth} ok ${node['cost_usd']:,.4f}" in trees

    page = out / "runs" / "lead" / f"{root['run_id']}.html"
    run = visible(chromium(tmp_path, "--dump-dom", page.as_uri()))
    assert f"Delegation tree this run and every run below it: ${total:,.4f} over 3 runs" in run
    assert f"└ writer {writer['run_id']} 2 ok ${writer['cost_usd']:,.4f}" in run
    child_page = out / "runs" / "writer" / f"{writer['run_id']}.html"
    assert child_page.exists() and "<script" not in page.read_text().lower()


def test_the_script_makes_the_same_files_again(tmp_path):
    out = tmp_path / "again" / "fleet"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    made, kept = files(out), files(FLEET)
    assert sorted(made) == sorted(kept)
    assert [name for name in made if made[name] != kept[name]] == []


def test_the_script_refuses_to_write_over_a_folder(tmp_path):
    taken = tmp_path / "fleet"
    taken.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT), str(taken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "exists" in done.stderr and list(taken.iterdir()) == []
