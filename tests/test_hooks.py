"""The commit doorbell: hooks called after each run's record commits, NOTIFY from the
PostgreSQL log in the append's transaction, and the generation counter."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from atomic_vault import AtomicAgent, hooks
from atomic_vault import backends
from atomic_vault.backends.postgres import CHANNEL, PostgresLog
from atomic_vault.errors import LockLost
from atomic_vault.testing import make_agent
from atomic_vault.vault import AgentFolder

from conftest import POSTGRES

BIN = Path(sys.executable).parent



class FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self.target = name, f"tests:{name}", target

    def load(self):
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


@pytest.fixture
def installed(monkeypatch):
    """Install hooks as entry points would: through the lookup the runtime uses."""
    def install(**targets):
        monkeypatch.setitem(backends._ENTRY_POINTS, hooks.GROUP,
                            {name: FakeEntryPoint(name, target) for name, target in targets.items()})
        monkeypatch.setattr(hooks, "_LOADED", None)
    yield install
    hooks._LOADED = None


def test_a_hook_gets_each_committed_record(tmp_path, installed):
    make_agent(tmp_path, "bot")
    agent = AtomicAgent("bot", root=str(tmp_path))
    seen = []

    def probe(folder, record):
        stored = agent.log.get(folder, record["run_id"])  # already durable when the bell rings
        seen.append((folder.name, record["seq"], stored == record))
    installed(probe=probe)
    first = agent.call("one")
    second = agent.call("two")
    assert seen == [("bot", first.seq, True), ("bot", second.seq, True)]


def test_a_failing_or_broken_hook_never_fails_the_run(tmp_path, installed, capsys):
    make_agent(tmp_path, "bot")
    calls = []

    def boom(folder, record):
        raise RuntimeError("the dashboard is down")
    installed(a_broken=ImportError("no module named nowhere"), b_boom=boom,
              c_fine=lambda folder, record: calls.append(record["seq"]))
    result = AtomicAgent("bot", root=str(tmp_path)).call("work")
    assert result.status == "ok" and calls == [result.seq]
    err = capsys.readouterr().err
    assert "hook 'a_broken'" in err and "cannot be loaded" in err
    assert "hook 'b_boom' failed" in err and "the dashboard is down" in err and f"seq {result.seq}" in err


def test_no_hook_installed_loads_nothing(tmp_path, installed):
    installed()
    make_agent(tmp_path, "bot")
    AtomicAgent("bot", root=str(tmp_path)).call("work")
    assert hooks._LOADED == []


def test_a_hook_installed_as_a_package_rings_in_a_fresh_process(tmp_path):
    """A real entry point (a dist-info on PYTHONPATH; nothing is pip-installed)."""
    site = tmp_path / "site"
    (site / "bell_probe-1.0.dist-info").mkdir(parents=True)
    (site / "bell_probe-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bell-probe\nVersion: 1.0\n")
    (site / "bell_probe-1.0.dist-info" / "entry_points.txt").write_text("[atomic_vault.hooks]\nbell = bell_probe:ring\n")
    (site / "bell_probe.py").write_text(
        "import os\n"
        "def ring(folder, record):\n"
        "    with open(os.environ['BELL_OUT'], 'a') as f:\n"
        "        f.write(f\"{folder.name}:{record['seq']}:{record['status']}\\n\")\n")
    root = tmp_path / "vault"
    make_agent(root, "bot")
    out = tmp_path / "rang.txt"
    env = {**os.environ, "PYTHONPATH": str(site), "BELL_OUT": str(out)}
    for _ in range(2):
        done = subprocess.run([str(BIN / "atomic-vault"), "--root", str(root), "run", "bot", "hello"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == ["bot:1:ok", "bot:2:ok"]


def test_the_generation_moves_with_each_run(tmp_path):
    make_agent(tmp_path, "bot")
    agent = AtomicAgent("bot", root=str(tmp_path))
    before = agent.log.generation(agent.folder)
    agent.call("one")
    middle = agent.log.generation(agent.folder)
    agent.call("two")
    assert before < middle < agent.log.generation(agent.folder)


def test_the_postgres_log_notifies_each_commit_and_only_commits(pg_url):
    folder = AgentFolder(Path("/nonexistent"), "bot")
    log = PostgresLog(pg_url)
    log.ready(folder)
    with psycopg.connect(POSTGRES, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        first = log.append(folder, {"kind": "run", "ts": "2026-12-01T10:00:00", "agent": "bot", "run_id": "r1",
                                    "status": "ok"}, fence=("redis", 5))
        with pytest.raises(LockLost):  # refused: rolled back, so nobody is woken for it
            log.append(folder, {"kind": "run", "ts": "2026-12-01T10:00:01", "agent": "bot", "run_id": "r2",
                                "status": "ok"}, fence=("redis", 4))
        log.append(folder, {"kind": "run", "ts": "2026-12-01T10:00:02", "agent": "bot", "run_id": "r3",
                            "status": "ok"})
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
    assert got == [(CHANNEL, f"bot:{first['seq']}"), (CHANNEL, "bot:2")]
    assert log.generation(folder) == 2
