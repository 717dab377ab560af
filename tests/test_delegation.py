"""Delegation (spec/18): the built-in delegate tool, child runs and their record fields,
the tree cost cap, the depth limit, cycles, and many trees at once."""

import json
import shutil
import threading

import pytest

from atomic_vault import AtomicAgent, evidence, runlog
from atomic_vault.errors import ConfigError
from atomic_vault.vault import open_agent

PRICES = {"offline:*": {"input": 2.0, "output": 4.0}}  # USD per million tokens: a call bounds at ~$0.02


def records(vault, agent):
    return [r for _, _, r in runlog.records(open_agent(agent, vault))]


def runs(vault, agent):
    return [r for r in records(vault, agent) if r.get("kind", "run") == "run"]


def setup(vault, *agents, max_depth=None, prices=True):
    """atlas plus helper agents, each offered delegate and allowed to call it."""
    for name in agents:
        shutil.copytree(vault / "atlas", vault / name, ignore=shutil.ignore_patterns("log", "journal", ".atomic_vault"))
    for name in ("atlas", *agents):
        folder = vault / name
        model = {"model": "offline", "max_output_tokens": 200, "journal_days": 0, "recent_notes": 0,
                 **({"prices": PRICES} if prices else {}), **({"max_depth": max_depth} if max_depth is not None else {})}
        (folder / "model.md").write_text("# Model\n\n```yaml\n" + json.dumps(model) + "\n```\n")
        tools = {"read": ["persona/", "memory/"], "write": ["memory/"],
                 "tools": [{"name": "delegate", "kind": "builtin"}]}
        (folder / "tools.md").write_text("# Tools\n\n```yaml\n" + json.dumps(tools) + "\n```\n")
        (folder / "policy.md").write_text("# Policy\n\n```yaml\nrules:\n  - {tool: delegate, verdict: allow, reason: sub-tasks}\n```\n")


def delegate(agent, task):
    return "tool: delegate " + json.dumps({"agent": agent, "task": task})


def test_a_child_run_answers_the_parent_and_both_records_name_the_tree(vault):
    setup(vault, "scout")
    result = AtomicAgent("atlas", root=vault).call(delegate("scout", "Find the venue."))
    assert result.status == "ok" and "Offline answer for scout" in result.text
    parent = runs(vault, "atlas")[-1]
    child = runs(vault, "scout")[-1]
    assert (child["parent_run_id"], child["root_run_id"], child["depth"], child["trigger"]) == (
        parent["run_id"], parent["run_id"], 1, "delegate")
    assert (parent["root_run_id"], parent["depth"]) == (parent["run_id"], 0)
    assert parent["children"] == [{"agent": "scout", "depth": 1, "run_id": child["run_id"], "status": "ok",
                                   "cost_usd": child["cost_usd"]}]
    call = parent["steps"][0]["calls"][0]
    assert call["tool"] == "delegate" and call["verdict"] == "allow" and call["effect"]["status"] == "ok"
    assert runlog.verify(open_agent("scout", vault)).ok and runlog.verify(open_agent("atlas", vault)).ok


def test_the_tree_draws_each_node_with_its_cost(vault):
    setup(vault, "scout", "ranger")
    AtomicAgent("atlas", root=vault).call(delegate("scout", delegate("ranger", "Count the chairs.")))
    root = runs(vault, "atlas")[-1]
    tree = evidence.tree(vault, "atlas", root["run_id"])
    assert [n["agent"] for n in evidence.walk(tree)] == ["atlas", "scout", "ranger"]
    assert [n["depth"] for n in evidence.walk(tree)] == [0, 1, 2]
    total = sum(n["cost_usd"] for n in evidence.walk(tree))
    assert tree["tree_cost_usd"] == pytest.approx(total) and total > 0
    text = evidence.render_tree(tree)
    assert "atlas" in text and "  scout" in text and "    ranger" in text and "$" in text


def test_delegating_to_itself_or_to_an_agent_on_the_path_is_a_refused_cycle(vault):
    setup(vault, "scout")
    AtomicAgent("atlas", root=vault).call(delegate("atlas", "Again."))
    call = runs(vault, "atlas")[-1]["steps"][0]["calls"][0]
    assert call["effect"]["status"] == "error" and "cycle" in call["effect"]["result"]
    assert len(runs(vault, "atlas")) == 1  # no child run of atlas was made
    AtomicAgent("atlas", root=vault).call(delegate("scout", delegate("atlas", "Back to you.")))
    child_call = runs(vault, "scout")[-1]["steps"][0]["calls"][0]
    assert "cycle" in child_call["effect"]["result"] and "atlas > scout" in child_call["effect"]["result"]


def test_the_depth_limit_refuses_a_deeper_child(vault):
    setup(vault, "scout", "ranger", max_depth=1)
    AtomicAgent("atlas", root=vault).call(delegate("scout", delegate("ranger", "Too deep.")))
    assert runs(vault, "ranger") == []
    call = runs(vault, "scout")[-1]["steps"][0]["calls"][0]
    assert "may be 1 deep" in call["effect"]["result"]


def test_an_unknown_agent_is_a_refused_delegation_not_a_crash(vault):
    setup(vault)
    result = AtomicAgent("atlas", root=vault).call(delegate("nobody", "Hello."))
    assert result.status == "ok"
    call = runs(vault, "atlas")[-1]["steps"][0]["calls"][0]
    assert call["effect"]["status"] == "error" and "no agent folder 'nobody'" in call["effect"]["result"]


def tree_cost(vault, root_id):
    return sum(r["cost_usd"] or 0.0 for agent in ("atlas", "scout") for r in runs(vault, agent)
               if r.get("root_run_id") == root_id)


def test_no_tree_passes_its_cap_and_a_child_that_would_is_refused(vault):
    setup(vault, "scout")
    outcomes = []
    for cap in (0.001, 0.01, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05, 0.06, 0.08, 0.1, 1.0):
        result = AtomicAgent("atlas", root=vault).call(delegate("scout", "Find the venue."), tree_cap_usd=cap)
        root = runs(vault, "atlas")[-1]
        assert root["run_id"] == result.run_id and root["tree_cap_usd"] == cap
        assert tree_cost(vault, root["run_id"]) <= cap  # the property, whatever the cap
        children = [r for r in runs(vault, "scout") if r.get("root_run_id") == root["run_id"]]
        outcomes.append((root["status"], [c["status"] for c in children]))
        for child in children:
            if child["status"] == "skipped":
                assert "tree cap" in child["summary"]
    assert ("skipped", []) in outcomes  # the root's own first call did not fit
    assert ("ok", ["skipped"]) in outcomes  # the root ran, its child did not fit
    assert ("ok", ["ok"]) in outcomes  # everything fitted


def test_the_cap_comes_from_model_md_and_a_bad_one_is_refused(vault):
    setup(vault, "scout")
    text = (vault / "atlas" / "model.md").read_text().replace('"model": "offline"', '"model": "offline", "tree_cap_usd": 0.0001')
    (vault / "atlas" / "model.md").write_text(text)
    result = AtomicAgent("atlas", root=vault).call(delegate("scout", "Find."))
    assert result.status == "skipped" and "tree cap $0.0001" in result.warnings[-1]
    with pytest.raises(ConfigError):
        AtomicAgent("atlas", root=vault).call("x", tree_cap_usd=-1)


def test_a_tree_without_a_price_cannot_be_bounded_and_is_refused(vault):
    setup(vault, "scout", prices=False)
    (vault / "atlas" / "model.md").write_text("# M\n\n```yaml\nmodel: test:unpriced\n```\n")

    class Unpriced:
        name = "test:unpriced"

        def complete(self, request):
            raise AssertionError("never called: the cap cannot bound it")
    result = AtomicAgent("atlas", root=vault, model=Unpriced()).call("x", tree_cap_usd=1.0)
    assert result.status == "skipped" and "no price is known" in result.warnings[-1]


def test_eight_concurrent_trees_delegating_to_one_child_keep_their_caps_and_the_childs_chain(vault):
    setup(vault, "scout")
    cap = 0.06
    errors, results = [], []

    def root(i):
        try:
            results.append(AtomicAgent("atlas", root=vault).call(delegate("scout", f"Task {i}."), tree_cap_usd=cap))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=root, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8
    roots = runs(vault, "atlas")
    assert len(roots) == 8
    for record in roots:
        assert tree_cost(vault, record["run_id"]) <= cap
    children = runs(vault, "scout")
    assert len(children) == 8 and {c["root_run_id"] for c in children} == {r["run_id"] for r in roots}
    assert all(c["parent_run_id"] == c["root_run_id"] for c in children)
    assert runlog.verify(open_agent("scout", vault)).ok and runlog.verify(open_agent("atlas", vault)).ok


def test_a_replay_of_the_root_replays_its_child_and_gives_back_the_childs_new_answer(vault):
    from atomic_vault import replay
    from atomic_vault.backends import open_backend
    from atomic_vault.protocols import LogQuery

    setup(vault, "scout")
    AtomicAgent("atlas", root=vault).call(delegate("scout", "Find the venue."))
    root = runs(vault, "atlas")[-1]
    child = runs(vault, "scout")[-1]
    before = len(runs(vault, "scout"))
    replayed = replay.replay(AtomicAgent("atlas", root=vault), root["run_id"], replay.Changes(model="offline:other"))
    assert len(runs(vault, "scout")) == before  # the child's run is replayed, not run again
    scout = open_agent("scout", vault)
    child_replays = open_backend("log", None, vault, "scout").query(scout, LogQuery(kind="replay"))
    assert [r["replays"]["run_id"] for r in child_replays] == [child["run_id"]]
    assert child_replays[0]["changes"]["model"] == "offline:other" and child_replays[0]["model"] == "offline:other"
    assert replayed.record["children"] == [{"agent": "scout", "replays": child["run_id"],
                                            "run_id": child_replays[0]["run_id"], "status": "ok",
                                            "cost_usd": child_replays[0]["cost_usd"]}]
    call = replayed.record["steps"][0]["calls"][0]
    assert call["effect"]["status"] == "replayed"
    assert runlog.verify(scout).ok and runlog.verify(open_agent("atlas", vault)).ok


def test_run_tree_cap_usd_log_tree_and_show_from_the_cli(vault):
    from click.testing import CliRunner

    from atomic_vault.cli import cli

    setup(vault, "scout")
    cli_run = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", delegate("scout", "Find."),
                                       "--tree-cap-usd", "0.001", "--json"])
    assert cli_run.exit_code == 3 and "tree cap" in cli_run.output  # skipped by the tree cap
    cli_run = CliRunner().invoke(cli, ["--root", str(vault), "run", "atlas", delegate("scout", "Find."),
                                       "--tree-cap-usd", "1", "--json"])
    assert cli_run.exit_code == 0, cli_run.output
    root = runs(vault, "atlas")[-1]
    child = runs(vault, "scout")[-1]
    drawn = CliRunner().invoke(cli, ["--root", str(vault), "log", "atlas", "--tree", root["run_id"]])
    assert drawn.exit_code == 0
    first, second, total = drawn.output.splitlines()
    assert first.startswith(f"atlas {root['run_id']} · ok · ${root['cost_usd']:.4f}")
    assert second.startswith(f"  scout {child['run_id']} · ok · ${child['cost_usd']:.4f}")
    assert total == f"tree cost ${root['cost_usd'] + child['cost_usd']:.4f} over 2 runs"
    lines = CliRunner().invoke(cli, ["--root", str(vault), "log", "atlas", "--tree", root["run_id"], "--json"])
    assert [json.loads(x)["depth"] for x in lines.output.splitlines()] == [0, 1]
    unknown = CliRunner().invoke(cli, ["--root", str(vault), "log", "atlas", "--tree", "nope"])
    assert unknown.exit_code == 2
    shown = CliRunner().invoke(cli, ["--root", str(vault), "show", "atlas", root["run_id"]])
    assert "## Delegation tree" in shown.output and f"scout run {child['run_id']} · ok" in shown.output
    shown = CliRunner().invoke(cli, ["--root", str(vault), "show", "scout", child["run_id"]])
    assert f"child at depth 1 of run {root['run_id']}" in shown.output
