"""Backend selection (argument, environment, vault config), the CLI commands that use
backends (search, log filters, cost, reindex, migrate), and doctor's backend checks."""

import json
import shutil

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent
from atomic_vault.backends import open_backend, redact, vault_config
from atomic_vault.backends.files import FileLog, FileMemory
from atomic_vault.cli import cli
from atomic_vault.errors import BackendError, ConfigError
from atomic_vault.migrate import migrate_memory
from atomic_vault.vault import open_agent

KINDS = ("memory", "log", "lock", "journal")


@pytest.fixture(autouse=True)
def no_backend_env(monkeypatch):
    for kind in KINDS:
        monkeypatch.delenv(f"ATOMIC_VAULT_{kind.upper()}_BACKEND", raising=False)
        monkeypatch.delenv(f"ATOMIC_VAULT_{kind.upper()}_URL", raising=False)


def av(vault, *args, input=None):
    return CliRunner().invoke(cli, ["--root", str(vault), *args], input=input)


def run_some(vault, count=3, **backends):
    agent = AtomicAgent("atlas", root=vault, **backends)
    for i in range(count):
        agent.call(f"item {i}\nremember: project: fact number {i} about quinces")
    return agent


def test_unknown_backend_names_the_known_ones(vault, monkeypatch):
    with pytest.raises(BackendError) as caught:
        AtomicAgent("atlas", root=vault, log="nosuch")
    assert "nosuch" in caught.value.message and "files" in caught.value.fix and "sqlite" in caught.value.fix
    monkeypatch.setenv("ATOMIC_VAULT_MEMORY_BACKEND", "tape")
    with pytest.raises(BackendError) as caught:
        AtomicAgent("atlas", root=vault)
    assert "ATOMIC_VAULT_MEMORY_BACKEND" in caught.value.message
    with pytest.raises(BackendError):
        open_backend("log", object(), vault)  # not a backend at all


def test_precedence_argument_then_environment_then_vault_config(vault, monkeypatch):
    (vault / "atomic_vault.yaml").write_text("backends:\n  log: sqlite\n  memory: {backend: sqlite}\n")
    agent = AtomicAgent("atlas", root=vault)
    assert (agent.log.name, agent.memory.name, agent.lock.name) == ("sqlite", "sqlite", "files")
    monkeypatch.setenv("ATOMIC_VAULT_LOG_BACKEND", "files")
    assert AtomicAgent("atlas", root=vault).log.name == "files"
    assert AtomicAgent("atlas", root=vault, log="sqlite").log.name == "sqlite"
    mine = FileLog()
    assert AtomicAgent("atlas", root=vault, log=mine).log is mine


def test_a_bad_vault_config_is_a_clear_error(vault):
    (vault / "atomic_vault.yaml").write_text("backends:\n  logs: sqlite\n")
    with pytest.raises(ConfigError) as caught:
        vault_config(vault)
    assert caught.value.field == "backends.logs" and "memory, log, lock, journal" in caught.value.fix
    (vault / "atomic_vault.yaml").write_text("backends:\n  log: {backend: sqlite, uri: x}\n")
    with pytest.raises(ConfigError):
        vault_config(vault)


def test_passwords_are_redacted():
    assert redact("postgresql://av:s3cret@db.example:5432/prod") == "postgresql://av:***@db.example:5432/prod"
    assert redact("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("postgresql://db/x") == "postgresql://db/x"


def test_an_agent_runs_unchanged_on_sqlite(vault, snap):
    agent = run_some(vault, log="sqlite", memory="sqlite")
    assert agent.log.verify(agent.folder).ok
    records = list(agent.log.records(agent.folder))
    assert [r["seq"] for r in records] == [1, 2, 3] and not (vault / "atlas" / "log" / "HEAD").exists()
    assert (vault / "atlas" / "memory" / "project_fact_number_2_about_quinces.md").is_file()
    hits = agent.memory.search(agent.folder, "quinces number")
    assert len(hits) == 3


def test_cli_log_filters_and_cost(vault):
    run_some(vault, 3)
    agent = AtomicAgent("atlas", root=vault, trigger="cron")
    agent.call("one more")
    out = av(vault, "log", "atlas", "--trigger", "cron", "--json")
    assert out.exit_code == 0, out.output
    records = [json.loads(line) for line in out.output.splitlines()]
    assert [r["seq"] for r in records] == [4] and records[0]["trigger"] == "cron"
    assert len(av(vault, "log", "atlas", "-n", "2").stdout.splitlines()) == 1 + 2  # a header, two runs
    none = av(vault, "log", "atlas", "--since", "2999-01-01")
    assert none.exit_code == 0 and none.stdout == "" and none.stderr == "no runs match\n"
    cost = av(vault, "log", "atlas", "cost", "--by", "month", "--json")
    rows = [json.loads(line) for line in cost.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["runs"] == 4 and rows[0]["period"] == records[0]["ts"][:7]
    table = av(vault, "log", "atlas", "cost")
    assert table.exit_code == 0 and "total" in table.output
    assert av(vault, "log", "atlas", "cost", "--by", "week").exit_code == 2


def test_cli_search_and_reindex(vault):
    run_some(vault, 2)
    found = av(vault, "notes", "atlas", "search", "quinces", "--json")
    assert found.exit_code == 0, found.output
    results = [json.loads(line) for line in found.stdout.splitlines()]
    assert {r["file"] for r in results} == {"project_fact_number_0_about_quinces.md",
                                            "project_fact_number_1_about_quinces.md"}
    assert "[" in results[0]["snippet"]
    plain = av(vault, "notes", "atlas", "search", '"quinces"', "(number*)", "fact-number")
    assert plain.exit_code == 0 and "project_fact_number" in plain.output
    assert av(vault, "notes", "atlas", "search").exit_code == 2
    reindexed = av(vault, "reindex", "atlas")
    assert reindexed.exit_code == 0 and "indexed" in reindexed.output
    listed = av(vault, "notes", "atlas", "list", "--type", "project", "-n", "1", "--json")
    assert [json.loads(line)["type"] for line in listed.stdout.splitlines()] == ["project"]


def test_migrate_to_sqlite_and_back_keeps_the_chain(vault, tmp_path):
    run_some(vault, 4)
    folder = open_agent("atlas", vault)
    source = list(FileLog().records(folder))
    out = av(vault, "migrate", "atlas", "--to", "sqlite", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["copied"] == 4
    sqlite_log = open_backend("log", "sqlite", vault)
    assert list(sqlite_log.records(folder)) == source
    again = json.loads(av(vault, "migrate", "atlas", "--from", "files", "--to", "sqlite", "--json").stdout)[0]
    assert (again["copied"], again["already"]) == (0, 4)  # resumable, idempotent
    AtomicAgent("atlas", root=vault, log="sqlite").call("a run on sqlite")
    # export back to plain files, in another vault copy
    export_root = tmp_path / "export"
    shutil.copytree(vault / "atlas", export_root / "atlas", ignore=shutil.ignore_patterns("log"))
    database = vault / "atlas" / "log" / "log.sqlite3"
    back = av(export_root, "migrate", "atlas", "--from", "sqlite", "--from-url", str(database), "--to", "files")
    assert back.exit_code == 0, back.output
    exported = list(FileLog().records(open_agent("atlas", export_root)))
    assert [r["hash"] for r in exported] == [r["hash"] for r in sqlite_log.records(folder)]
    assert av(export_root, "verify", "atlas").exit_code == 0


def test_migrate_switches_the_agent_and_going_back_copies_the_records_written_since(vault):
    (vault / "atomic_vault.yaml").write_text("# the vault's own settings\nprices:\n  'offline:*': {input: 0, output: 0}\n")
    run_some(vault, 2)
    folder = open_agent("atlas", vault)
    there = av(vault, "migrate", "atlas", "--to", "sqlite")
    assert there.exit_code == 0, there.output
    assert "atlas now uses the sqlite log backend" in there.output
    config = (vault / "atomic_vault.yaml").read_text()
    assert config.startswith("# the vault's own settings\nprices:\n  'offline:*': {input: 0, output: 0}\n")
    assert AtomicAgent("atlas", root=vault).log.name == "sqlite"  # the next run writes there
    run_some(vault, 1)
    assert len(list(FileLog().records(folder))) == 2
    back = av(vault, "migrate", "atlas", "--to", "files", "--json")
    assert back.exit_code == 0, back.output
    outcome = json.loads(back.stdout)[0]
    assert (outcome["already"], outcome["copied"], outcome["switched"]) == (2, 1, True)
    assert AtomicAgent("atlas", root=vault).log.name == "files"
    assert [r["seq"] for r in FileLog().records(folder)] == [1, 2, 3]
    assert av(vault, "verify", "atlas").exit_code == 0
    assert "prices:\n  'offline:*': {input: 0, output: 0}\n" in (vault / "atomic_vault.yaml").read_text()


def test_migrate_switches_one_agent_only(vault):
    shutil.copytree(vault / "atlas", vault / "other")
    assert av(vault, "migrate", "atlas", "--to", "sqlite").exit_code == 0
    assert AtomicAgent("atlas", root=vault).log.name == "sqlite"
    assert AtomicAgent("other", root=vault).log.name == "files"


def test_migrate_prints_the_setting_when_the_environment_decides(vault, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_LOG_BACKEND", "files")
    run_some(vault, 1)
    out = av(vault, "migrate", "atlas", "--to", "sqlite")
    assert out.exit_code == 0, out.output
    assert "not switched" in out.output and "set ATOMIC_VAULT_LOG_BACKEND=sqlite" in out.output
    assert not (vault / "atomic_vault.yaml").exists()


def test_migrate_into_a_store_that_is_ahead_says_so(vault):
    run_some(vault, 1)
    assert av(vault, "migrate", "atlas", "--to", "sqlite", "--no-switch").exit_code == 0
    AtomicAgent("atlas", root=vault, log="sqlite").call("a run on sqlite")
    out = av(vault, "migrate", "atlas", "--to", "sqlite")
    assert out.exit_code == 1 and "ahead" in out.output and "--from sqlite --to files" in out.output


def test_migrate_refuses_a_target_with_other_records(vault):
    run_some(vault, 2)
    folder = open_agent("atlas", vault)
    AtomicAgent("atlas", root=vault, log="sqlite").call("a different history")
    out = av(vault, "migrate", "atlas", "--to", "sqlite")
    assert out.exit_code == 1 and "nothing was copied" in out.output
    assert len(list(open_backend("log", "sqlite", vault).records(folder))) == 1


def test_doctor_reports_two_logs_that_disagree(vault):
    run_some(vault, 2)
    assert av(vault, "migrate", "atlas", "--to", "sqlite").exit_code == 0
    (vault / "atomic_vault.yaml").write_text("backends:\n  log: sqlite\n")
    agreeing = [json.loads(line) for line in av(vault, "doctor", "atlas", "--json").stdout.splitlines()]
    assert any("older copy" in f["message"] for f in agreeing)
    AtomicAgent("atlas", root=vault, log="files").call("a run that went to the files log")
    found = [json.loads(line) for line in av(vault, "doctor", "atlas", "--json").stdout.splitlines()]
    disagree = [f for f in found if "disagree" in f["message"]]
    assert disagree and disagree[0]["level"] == "warn" and "migrate" in disagree[0]["fix"]


def test_migrate_memory_copies_every_note(vault, tmp_path):
    folder = open_agent("atlas", vault)
    files = FileMemory()
    notes, broken = files.scan(folder)
    target_root = tmp_path / "copy"
    shutil.copytree(vault / "atlas" / "persona", target_root / "atlas" / "persona")
    target_folder = open_agent("atlas", target_root)
    result = migrate_memory(folder, files, _Relocated(target_folder))
    assert result.copied == len(notes) + len(broken) > 0
    for file in notes:
        assert files.get(target_folder, file) == files.get(folder, file)
    assert files.get_index(target_folder) == files.get_index(folder)
    assert migrate_memory(folder, files, _Relocated(target_folder)).already == result.copied


class _Relocated(FileMemory):
    """A files memory store that keeps its notes in another agent folder (a second store)."""

    def __init__(self, folder):
        super().__init__()
        self.target = folder

    def get(self, folder, file):
        return super().get(self.target, file)

    def put(self, folder, file, text):
        return super().put(self.target, file, text)

    def get_index(self, folder):
        return super().get_index(self.target)

    def put_index(self, folder, text):
        return super().put_index(self.target, text)

    def reindex(self, folder, progress=None):
        return super().reindex(self.target, progress)


def test_commands_about_one_agent_use_its_own_backend(vault):
    run_some(vault, 1)
    assert av(vault, "migrate", "atlas", "--to", "sqlite").exit_code == 0
    run_some(vault, 1)  # only in the sqlite log now
    found = [json.loads(line) for line in av(vault, "doctor", "atlas", "--json").stdout.splitlines()]
    assert any("verify in the sqlite log" in f["message"] for f in found)
    shown = json.loads(av(vault, "verify", "atlas", "--json").output)
    assert shown["ok"] and shown["records"] == 2
