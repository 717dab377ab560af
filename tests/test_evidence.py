"""show, prune (retention), export and verify-bundle on the files, SQLite and PostgreSQL
logs: what a person reads, what is gone, and a bundle an auditor checks with no vault."""

import io
import json
import sqlite3
import tarfile
from datetime import timedelta

import pytest
from click.testing import CliRunner

from atomic_vault import AtomicAgent, clock, retention, snapshots
from atomic_vault.backends import files as files_backend
from atomic_vault.cli import cli
from atomic_vault.errors import ConfigError
from conftest import ScriptedModel, capture_block, tamper_snapshot
from conftest import snapshot as _files


def snapshot(vault):
    """Every file of the vault, without SQLite's shared-memory and WAL files (a read maps them)."""
    return {k: v for k, v in _files(vault).items() if not k.endswith(("-shm", "-wal"))}


@pytest.fixture(params=["files", "sqlite", "postgres"])
def backend(request, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_LOG_BACKEND", request.param)
    if request.param == "postgres":
        monkeypatch.setenv("ATOMIC_VAULT_LOG_URL", request.getfixturevalue("pg_url"))
    return request.param


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def _run(vault, work_item, answer="The answer.", **kwargs):
    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel(answer), **kwargs)
    return agent, agent.call(work_item)


def _tamper(agent, sha, text):
    log = agent.log
    if log.name == "files":
        tamper_snapshot(agent.folder, sha, text)
    elif log.name == "sqlite":
        conn = sqlite3.connect(log.path(agent.folder), isolation_level=None)
        conn.execute("UPDATE snapshots SET text=? WHERE agent=? AND sha=?", (text, "atlas", sha))
        conn.close()
    else:
        with log.db.transaction() as conn:
            conn.execute("UPDATE log_snapshots SET text=%s WHERE agent=%s AND sha=%s", (text, "atlas", sha))


def _set_retention(vault, days):
    path = vault / "atlas" / "model.md"
    path.write_text(path.read_text().replace("journal_days: 2", f"journal_days: 2\nretention: {days}"))


# ---- show

def test_show_reads_the_run_as_the_model_saw_it(vault, backend):
    _, result = _run(vault, "Plan the week.", "Answer.\n" + capture_block(name="Alpha"))
    before = snapshot(vault)
    shown = av(vault, "show", "atlas", result.run_id)
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "## Work item\nPlan the week." in text and "persona/SOUL.md" in text
    assert "## Answer\nAnswer." in text and "- written: " in text and "scripted #1: ok" in text
    assert text.index("persona/IDENTITY.md") < text.index("persona/SOUL.md") < text.index("memory/INDEX.md")
    last = json.loads(av(vault, "show", "atlas", "--last", "--json").output)
    assert last["run_id"] == result.run_id and last["work_item"]["text"] == "Plan the week."
    assert all(layer["state"] == "ok" and layer["text"].startswith("## ") for layer in last["layers"])
    assert last["captures"][0]["status"] == "written" and last["gone"] == []
    assert snapshot(vault) == before  # show writes nothing


def test_show_of_an_unknown_run_is_a_usage_error_and_writes_nothing(vault, backend):
    _run(vault, "Plan.")
    before = snapshot(vault)
    shown = av(vault, "show", "atlas", "20990101T000000-deadbeef")
    assert shown.exit_code == 2 and "no run '20990101T000000-deadbeef'" in shown.output
    assert "atomic-vault log atlas" in shown.output
    assert av(vault, "show", "atlas").exit_code == 2  # neither RUN_ID nor --last
    assert snapshot(vault) == before


def test_a_tampered_snapshot_is_named_by_show_verify_and_export(vault, backend, tmp_path):
    agent, result = _run(vault, "Plan.", "The true answer.")
    answer = agent.log.get(agent.folder, result.run_id)["snapshots"]["answer"]
    _tamper(agent, answer, "A forged answer.")
    shown = av(vault, "show", "atlas", result.run_id)
    assert shown.exit_code == 1 and f"TAMPERED: snapshot {answer}" in shown.output
    assert "forged" not in shown.output
    checked = av(vault, "verify", "atlas")
    assert checked.exit_code == 1 and f"tampered: snapshot {answer} does not match its hash" in checked.output
    out = tmp_path / "b.tar.gz"
    exported = av(vault, "export", "atlas", result.run_id, "-o", str(out))
    assert exported.exit_code == 1 and "tampering" in exported.output and not out.exists()


# ---- retention and prune

def _old_then_new(vault, monkeypatch):
    real = clock.now
    monkeypatch.setattr(clock, "now", lambda zone: real(zone) - timedelta(days=40))
    agent, old = _run(vault, "An old work item.", "An old answer.")
    monkeypatch.setattr(clock, "now", real)
    agent, new = _run(vault, "A new work item.", "A new answer.")
    return agent, old, new


def test_prune_removes_only_what_no_recent_run_names(vault, backend, monkeypatch):
    agent, old, new = _old_then_new(vault, monkeypatch)
    _set_retention(vault, 30)
    old_refs = agent.log.get(agent.folder, old.run_id)["snapshots"]
    new_record = agent.log.get(agent.folder, new.run_id)
    before = snapshot(vault), agent.log.snapshot_hashes(agent.folder), len(list(agent.log.records(agent.folder)))
    dry = av(vault, "prune", "atlas", "--dry-run", "--json")
    assert dry.exit_code == 0 and old_refs["work_item"] in json.loads(dry.output)["removed"]
    assert (snapshot(vault), agent.log.snapshot_hashes(agent.folder),
            len(list(agent.log.records(agent.folder)))) == before  # a dry run writes nothing
    done = av(vault, "prune", "atlas")
    assert done.exit_code == 0 and "removed" in done.output and "of 1 runs" in done.output
    stored = set(agent.log.snapshot_hashes(agent.folder))
    assert old_refs["work_item"] not in stored and old_refs["answer"] not in stored
    assert set(snapshots.named(new_record)) <= stored  # persona layers the new run used stay
    prune = agent.log.query(agent.folder)[-1]
    assert prune["kind"] == "prune" and old_refs["answer"] in prune["removed"] and prune["runs"] == [old.run_id]
    assert len(list(agent.log.records(agent.folder))) == 3  # no record removed
    assert av(vault, "verify", "atlas").exit_code == 0  # the chain and what remains verify
    shown = av(vault, "show", "atlas", old.run_id)
    assert shown.exit_code == 0 and f"[pruned by record seq {prune['seq']}" in shown.output
    gone = json.loads(av(vault, "show", "atlas", old.run_id, "--json").output)["gone"]
    assert {g["snapshot"] for g in gone} >= {old_refs["work_item"], old_refs["answer"]}
    assert all(g["state"] == "pruned" for g in gone)


def test_a_snapshot_deleted_without_a_prune_record_is_missing_not_pruned(vault, backend):
    agent, result = _run(vault, "Plan.")
    answer = agent.log.get(agent.folder, result.run_id)["snapshots"]["answer"]
    agent.log.delete_snapshots(agent.folder, [answer])
    checked = av(vault, "verify", "atlas")
    assert checked.exit_code == 1 and f"missing: snapshot {answer}" in checked.output
    assert "MISSING" in av(vault, "show", "atlas", "--last").output


def test_prune_without_retention_is_refused_and_writes_nothing(vault, backend):
    agent, _ = _run(vault, "Plan.")
    before = snapshot(vault), agent.log.snapshot_hashes(agent.folder)
    refused = av(vault, "prune", "atlas")
    assert refused.exit_code == 1 and "retention" in refused.output and "model.md" in refused.output
    assert (snapshot(vault), agent.log.snapshot_hashes(agent.folder)) == before


def test_retention_from_the_vault_config_and_a_bad_value(vault, backend):
    agent = AtomicAgent("atlas", root=vault)
    (vault / "atomic_vault.yaml").write_text("retention: 7\n")
    assert retention.configured(agent)[0] == 7
    _set_retention(vault, "soon")
    with pytest.raises(ConfigError) as caught:
        retention.configured(agent)
    assert caught.value.field == "retention"


# ---- export and verify-bundle

def _export(vault, run_id, out):
    made = av(vault, "export", "atlas", run_id, "-o", str(out))
    assert made.exit_code == 0, made.output
    return out


def _rewrite(path, change):
    """Rewrite a bundle tar with ``change(members)`` applied (a dict name -> bytes)."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    change(members)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    path.write_bytes(buffer.getvalue())


def test_a_bundle_verifies_with_no_vault(vault, backend, tmp_path):
    agent, first = _run(vault, "First.")
    _run(vault, "Second.")
    bundle = _export(vault, first.run_id, tmp_path / "run.tar.gz")
    checked = CliRunner().invoke(cli, ["verify-bundle", str(bundle), "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.output)
    assert report["ok"] and report["run_id"] == first.run_id and report["head"]["seq"] == 2
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    record = agent.log.get(agent.folder, first.run_id)
    assert {f"snapshots/{sha}.txt" for sha in snapshots.named(record)} <= names
    assert {"README.md", "MANIFEST.json", "record.json", "chain.jsonl", "HEAD.json"} <= names
    head = agent.log.head(agent.folder)
    anchored = CliRunner().invoke(cli, ["verify-bundle", str(bundle), "--anchor", f"2:{head['hash']}"])
    assert anchored.exit_code == 0, anchored.output
    wrong = CliRunner().invoke(cli, ["verify-bundle", str(bundle), "--anchor", f"2:{'0' * 64}"])
    assert wrong.exit_code == 1 and "anchor differs" in wrong.output
    folder = _export(vault, first.run_id, tmp_path / "run-folder")
    assert CliRunner().invoke(cli, ["verify-bundle", str(folder)]).exit_code == 0
    plain = _export(vault, first.run_id, tmp_path / "run.tar")  # not compressed
    with tarfile.open(plain, mode="r:") as tar:
        assert set(tar.getnames()) == names
    assert CliRunner().invoke(cli, ["verify-bundle", str(plain)]).exit_code == 0


def test_the_chain_is_copied_as_stored_and_read_record_by_record_when_it_cannot_be(vault, backend):
    """chain.jsonl of an old run: the stored lines from its record to HEAD, byte for byte
    what serialising each record gives; a store that cannot say (HEAD behind) reads records."""
    from atomic_vault import bundle, runlog

    agent, first = _run(vault, "First.")
    for work in ("Second.", "Third."):
        _run(vault, work)
    record = agent.log.get(agent.folder, first.run_id)
    chain = bundle.chain_to_head(agent.log, agent.folder, record)
    serialised = "".join(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
                         for r in chain).encode("utf-8")
    stored = agent.log.chain_text(agent.folder, record)
    assert [r["seq"] for r in chain] == [1, 2, 3]
    assert (stored.encode("utf-8") if isinstance(stored, str) else stored) == serialised
    assert bundle.chain_bytes(agent.log, agent.folder, record) == serialised
    if backend == "files":
        day = runlog.day_files(agent.folder)[-1]
        raw = day.read_bytes()
        day.write_bytes(raw.replace(b"\n", b"\n\n", 1))  # a blank line: more lines than seqs
        assert agent.log.chain_text(agent.folder, record) is None
        assert bundle.chain_bytes(agent.log, agent.folder, record) == serialised
        day.write_bytes(raw)
        head = json.loads(agent.folder.head.read_text())
        agent.folder.head.write_text(json.dumps({**head, "seq": 2}))  # HEAD behind: cannot say
        assert agent.log.chain_text(agent.folder, record) is None


@pytest.mark.parametrize("change, named", [
    (lambda m: m.pop("HEAD.json"), "missing: HEAD.json"),
    (lambda m: m.pop("MANIFEST.json"), "missing: MANIFEST.json"),
    (lambda m: m.__setitem__("notes.txt", b"slipped in"), "added: notes.txt"),
    (lambda m: m.__setitem__("../../escape.txt", b"out"), "added: ../../escape.txt"),
    (lambda m: m.__setitem__("record.json", m["record.json"].replace(b'"status":"ok"', b'"status":"error"')),
     "altered: record.json"),
    (lambda m: m.pop(next(n for n in m if n.startswith("snapshots/"))), "missing: snapshots/"),
    (lambda m: m.__setitem__(next(n for n in m if n.startswith("snapshots/")), b"forged"),
     "altered: snapshots/"),
    (lambda m: m.__setitem__("chain.jsonl", m["chain.jsonl"].splitlines(keepends=True)[0]),
     "the chain does not end at HEAD"),
])
def test_a_bundle_names_every_missing_added_or_altered_file(vault, backend, tmp_path, change, named):
    _, first = _run(vault, "First.")
    _run(vault, "Second.")
    bundle = _export(vault, first.run_id, tmp_path / "run.tar.gz")
    _rewrite(bundle, change)
    checked = CliRunner().invoke(cli, ["verify-bundle", str(bundle)], catch_exceptions=False)
    assert checked.exit_code == 1 and named in checked.output, checked.output
    assert not (tmp_path.parent / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_a_pruned_run_exports_what_remains_and_the_bundle_proves_the_prune(vault, backend, tmp_path, monkeypatch):
    _, old, _ = _old_then_new(vault, monkeypatch)
    _set_retention(vault, 30)
    assert av(vault, "prune", "atlas").exit_code == 0
    bundle = _export(vault, old.run_id, tmp_path / "old.tar.gz")
    checked = CliRunner().invoke(cli, ["verify-bundle", str(bundle)])
    assert checked.exit_code == 0 and "was pruned (prune record seq 3" in checked.output, checked.output


def test_export_refuses_an_unknown_run_and_an_existing_target(vault, backend, tmp_path):
    _, result = _run(vault, "Plan.")
    out = tmp_path / "b.tar.gz"
    unknown = av(vault, "export", "atlas", "nope", "-o", str(out))
    assert unknown.exit_code == 2 and not out.exists()
    out.write_text("keep me")
    refused = av(vault, "export", "atlas", result.run_id, "-o", str(out))
    assert refused.exit_code == 1 and "already exists" in refused.output and out.read_text() == "keep me"
