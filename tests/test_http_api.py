"""`atomic-vault serve` end to end: the real command in a subprocess on a free loopback port,
hit over HTTP. Every route, the token, the body limit, names that try to leave the vault,
idempotent runs, an escalated run and its decision, a client that leaves mid-run, SIGTERM
while a run is in flight, and a small version of bench/bench_serve.py (spec/16)."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SAMPLES

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
try:
    import httpx
except ImportError:  # the mcp SDK's own fork of httpx
    httpx = pytest.importorskip("httpx2")

spec = importlib.util.spec_from_file_location(
    "bench_serve", Path(__file__).resolve().parent.parent / "bench" / "bench_serve.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TOKEN = "test-token-0123456789"
WAIT = 30
MAX_BODY = 4096
NAP = "import pathlib, sys, time; pathlib.Path(sys.argv[2]).touch(); time.sleep(float(sys.argv[1]))"


def make_vault(root: Path) -> Path:
    """The sample vault, a hidden second agent, a tool that sleeps (allowed) and one that
    counts (escalated: a person decides)."""
    shutil.copytree(SAMPLES, root)
    shutil.copytree(root / "atlas", root / "mira")
    atlas = root / "atlas"
    script = atlas / "count.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\nprint('counted')\n")
    block = json.dumps({"read": ["persona/", "memory/", "wiki/", "journal/"], "write": ["memory/"], "tools": [
        {"name": "count", "kind": "command", "description": "count a word",
         "argv": [sys.executable, str(script), str(atlas / "count.txt"), "{word}"],
         "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}},
        {"name": "nap", "kind": "command", "description": "wait a while",
         "argv": [sys.executable, "-c", NAP, "{s}", str(atlas / "napping")],
         "input_schema": {"type": "object", "properties": {"s": {"type": "string"}}}}]})
    (atlas / "tools.md").write_text(f"# Tools\n\n```yaml\n{block}\n```\n")
    (atlas / "policy.md").write_text("# Policy\n\n```yaml\ndefault: escalate\nrules:\n  - tool: nap\n"
                                     "    verdict: allow\n    reason: waiting changes nothing\n```\n")
    return root


class Server:
    def __init__(self, root: Path, *args: str, token: str | None = TOKEN):
        env = {"ATOMIC_VAULT_TOKEN": token or ""}
        self.process, self.port = bench.start_server(root, *args, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=WAIT)

    def get(self, path, **params):
        return self.http.get(path, params=params)

    def post(self, path, body):
        return self.http.post(path, json=body)

    def stop(self) -> int:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_vault(tmp_path_factory.mktemp("serve") / "vault")
    served = Server(root, "--agents", "atlas", "--max-body", str(MAX_BODY))
    served.root = root
    yield served
    served.stop()


def runs_logged(root: Path, agent: str = "atlas") -> list[dict]:
    from atomic_vault.backends import open_backend
    from atomic_vault.protocols import LogQuery
    from atomic_vault.vault import open_agent

    folder = open_agent(agent, root)
    return open_backend("log", None, root, agent).query(folder, LogQuery(kind="run"))


def refused(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] and body["fix"], body
    return body


# -- routes and their description ---------------------------------------------------------

def test_every_route_is_in_the_openapi_description(server):
    from atomic_vault.http_api import build_app
    from atomic_vault.mcp_server import VaultTools

    described = server.get("/openapi.json").json()
    assert described["openapi"].startswith("3.")
    listed = {(path, method.upper()) for path, ops in described["paths"].items() for method in ops}
    app = build_app(VaultTools(server.root)).app
    served = {(route.path, method) for route in app.routes for method in route.methods if method != "HEAD"}
    assert served == listed
    for path, ops in described["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_healthz_and_agents(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/agents").json() == {"agents": ["atlas"]}  # mira is in the vault, not served
    refused(server.get("/agents/mira/runs"), 403)
    refused(server.get("/agents/nobody/runs"), 403)  # served or not, before it is looked for
    refused(server.get("/no/such/route"), 404)
    refused(server.http.delete("/agents"), 405)


def test_a_token_is_required_when_it_is_set(server):
    bare = httpx.Client(base_url=server.url, timeout=WAIT)
    try:
        assert bare.get("/healthz").status_code == 200  # liveness tells nothing of the vault
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            body = refused(bare.get("/agents", headers=headers), 401)
            assert "ATOMIC_VAULT_TOKEN" in body["fix"]
        before = len(runs_logged(server.root))
        refused(bare.post("/agents/atlas/runs", json={"work_item": "x"}), 401)
        assert len(runs_logged(server.root)) == before
        assert bare.get("/agents", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        bare.close()


def test_without_a_token_it_serves_loopback_and_refuses_other_hosts(tmp_path, monkeypatch):
    from atomic_vault.cli import cli

    root = make_vault(tmp_path / "vault")
    monkeypatch.delenv("ATOMIC_VAULT_TOKEN", raising=False)
    for host in ("0.0.0.0", "192.0.2.7", "::"):
        result = CliRunner().invoke(cli, ["--root", str(root), "serve", "--host", host])
        assert result.exit_code == 2 and "ATOMIC_VAULT_TOKEN" in result.output, result.output
    open_server = Server(root, token=None)
    try:
        assert open_server.get("/agents").json() == {"agents": ["atlas", "mira"]}
        assert "no agent folder 'nobody'" in refused(open_server.get("/agents/nobody/runs"), 404)["error"]
    finally:
        assert open_server.stop() == 0


# -- runs ---------------------------------------------------------------------------------

def test_a_run_is_idempotent_shown_and_in_the_log(server):
    ran = server.post("/agents/atlas/runs", {"work_item": "summarise the week", "idempotency_key": "week-1"})
    assert ran.status_code == 200, ran.text
    first = ran.json()
    assert first["status"] == "ok" and first["cost_usd"] == 0.0 and "Offline answer" in first["text"]
    again = server.post("/agents/atlas/runs", {"work_item": "summarise the week", "idempotency_key": "week-1"}).json()
    assert again["run_id"] == first["run_id"]  # the key answers with the first run
    records = server.get("/agents/atlas/runs", kind="run", limit="100").json()["records"]
    assert [r["run_id"] for r in records].count(first["run_id"]) == 1
    assert [r["run_id"] for r in runs_logged(server.root)].count(first["run_id"]) == 1
    assert records[-1]["trigger"] == "http"
    shown = server.get(f"/agents/atlas/runs/{first['run_id']}").json()
    assert shown["run_id"] == first["run_id"] and shown["tampered"] is False
    assert shown["work_item"]["text"] == "summarise the week"
    refused(server.get("/agents/atlas/runs/20260101T000000-00000000"), 404)
    other = server.post("/agents/atlas/runs", {"work_item": "something else", "idempotency_key": "week-1"})
    assert "week-1" in refused(other, 400)["error"]  # one key, one work item


def test_log_filters_are_checked_as_the_cli_checks_them(server):
    server.post("/agents/atlas/runs", {"work_item": "filters"})
    assert all(r["status"] == "ok" for r in server.get("/agents/atlas/runs", status="ok").json()["records"])
    assert len(server.get("/agents/atlas/runs", limit="1").json()["records"]) == 1
    for params, field in (({"since": "last week"}, "since"), ({"until": "2026-13-45"}, "until"),
                          ({"status": "fine"}, "status"), ({"kind": "gossip"}, "kind"),
                          ({"limit": "many"}, "limit"), ({"colour": "red"}, "colour")):
        assert refused(server.get("/agents/atlas/runs", **params), 400)["field"] == field


def test_bad_run_bodies_are_refused_and_nothing_runs(server):
    before = len(runs_logged(server.root))
    for body, field in (({}, "work_item"), ({"work_item": ""}, "work_item"), ({"work_item": 7}, "work_item"),
                        ({"work_item": "x", "critical": True}, "critical"),
                        ({"work_item": "x", "model": "no such model!"}, "model"),
                        ({"work_item": "x", "idempotency_key": "two\nlines"}, "idempotency_key"),
                        (["work_item"], "body")):
        assert refused(server.post("/agents/atlas/runs", body), 400)["field"] == field
    not_json = server.http.post("/agents/atlas/runs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert refused(not_json, 400)["field"] == "body"
    assert len(runs_logged(server.root)) == before


def test_a_conversation_id_makes_runs_turns_of_one_conversation(server):
    first = server.post("/agents/atlas/runs", {"work_item": "hello", "conversation_id": "c-1"})
    assert first.status_code == 200, first.text
    second = server.post("/agents/atlas/runs", {"work_item": "and then?", "conversation_id": "c-1"})
    assert second.status_code == 200, second.text
    records = {r["run_id"]: r for r in runs_logged(server.root)}
    turn = records[second.json()["run_id"]]
    assert turn["conversation_id"] == "c-1"
    assert [t["run_id"] for t in turn["manifest"]["conversation"]["turns"]] == [first.json()["run_id"]]
    before = len(runs_logged(server.root))
    assert refused(server.post("/agents/atlas/runs", {"work_item": "x", "conversation_id": "../up"}),
                   400)["field"] == "conversation_id"
    assert len(runs_logged(server.root)) == before


def test_a_body_over_the_limit_is_refused_with_413(server):
    before = len(runs_logged(server.root))
    big = {"work_item": "x" * (MAX_BODY + 1)}
    assert refused(server.post("/agents/atlas/runs", big), 413)["field"] == "body"

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(8):
            yield b" " * 1024
    streamed = server.http.post("/agents/atlas/runs", content=chunks(), headers={"Content-Type": "application/json"})
    refused(streamed, 413)
    assert len(runs_logged(server.root)) == before


# -- approvals ------------------------------------------------------------------------------

def test_an_escalated_run_awaits_approval_and_is_decided(server):
    ran = server.post("/agents/atlas/runs", {"work_item": 'tool: count {"word": "alpha"}'}).json()
    assert ran["status"] == "awaiting_approval" and len(ran["approvals"]) == 1
    approval_id = ran["approvals"][0]
    assert not (server.root / "atlas" / "count.txt").exists()
    listed = server.get("/agents/atlas/approvals").json()["approvals"]
    assert approval_id in [a["id"] for a in listed if a["state"] == "pending"]
    shown = server.get(f"/agents/atlas/approvals/{approval_id}").json()
    assert shown["id"] == approval_id and shown["tool"] == "count" and shown["state"] == "pending"
    path = f"/agents/atlas/approvals/{approval_id}"
    assert refused(server.post(path, {"decision": "approve"}), 400)["field"] == "by"
    assert refused(server.post(path, {"decision": "maybe", "by": "maria"}), 400)["field"] == "decision"
    assert "not an approval id" in refused(server.get("/agents/atlas/approvals/..x"), 400)["error"]
    assert "no approval" in refused(server.get("/agents/atlas/approvals/20260101T000000-00000000-1-1"), 400)["error"]
    decided = server.post(path, {"decision": "deny", "by": "maria", "note": "not today"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"] == "deny" and decided.json()["decided_by"] == "maria"
    again = refused(server.post(path, {"decision": "approve", "by": "maria"}), 400)
    assert "already decided" in again["error"]
    from atomic_vault.cli import cli  # the CLI says the very same words

    said = CliRunner().invoke(cli, ["--root", str(server.root), "approvals", "atlas", "approve", approval_id,
                                    "--by", "maria"])
    assert said.exit_code == 1 and said.output.strip() == f"error: {again['error']} (fix: {again['fix']})"


# -- notes and names ----------------------------------------------------------------------

def test_notes_search_and_read(server):
    hits = server.get("/agents/atlas/notes", q="verdemar", limit="3").json()["results"]
    assert 1 <= len(hits) <= 3 and hits[0]["file"].endswith(".md")
    assert refused(server.get("/agents/atlas/notes"), 400)["field"] == "query"
    note = server.get("/agents/atlas/notes/project_verdemar_migration").json()
    assert note["file"] == "project_verdemar_migration.md"
    assert note["text"] == (server.root / "atlas" / "memory" / note["file"]).read_text()


@pytest.mark.parametrize("path", [
    "/agents/../mira/runs", "/agents/..%2Fmira/runs", "/agents/%2E%2E/runs", "/agents/atlas%2F..%2Fmira/runs",
    "/agents/atlas/notes/..%2F..%2Fmira%2Fpersona%2FIDENTITY.md", "/agents/atlas/notes/%2Fetc%2Fpasswd",
    "/agents/atlas/notes/..", "/agents/atlas/notes/reference_leak.md", "/agents/%2Fetc/notes?q=root",
    "/agents/atlas/approvals/..%2F..%2Fmira%2Fpersona%2FIDENTITY",
])
def test_names_that_leave_the_vault_are_refused(server, path):
    leak = server.root / "atlas" / "memory" / "reference_leak.md"
    if not leak.is_symlink():
        leak.symlink_to("/etc/passwd")
    response = server.http.get(path)  # sent as written: the client does not fold the dots
    assert response.status_code in (400, 403, 404), response.text
    body = response.json()
    assert body["fix"] and "root:x:" not in response.text and "Mira" not in response.text


# -- a client that leaves, and SIGTERM ----------------------------------------------------

def _post_raw(port: int, body: dict, token: str | None = TOKEN) -> socket.socket:
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall((f"POST /agents/atlas/runs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    return sock


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _with_key(root: Path, key: str) -> list[dict]:
    return [r for r in runs_logged(root) if (r.get("idempotency") or {}).get("key") == key]


def test_a_client_that_leaves_mid_run_does_not_stop_it(server):
    napping = server.root / "atlas" / "napping"
    napping.unlink(missing_ok=True)
    sock = _post_raw(server.port, {"work_item": 'tool: nap {"s": "1.5"}', "idempotency_key": "gone-1"})
    _wait_for(napping.exists, "the run's tool step")
    sock.close()
    logged = _wait_for(lambda: _with_key(server.root, "gone-1"), "the run's record")
    assert len(logged) == 1 and logged[0]["status"] == "ok"
    time.sleep(0.5)
    assert len(_with_key(server.root, "gone-1")) == 1
    again = server.post("/agents/atlas/runs", {"work_item": 'tool: nap {"s": "1.5"}', "idempotency_key": "gone-1"})
    assert again.json()["run_id"] == logged[0]["run_id"]  # asked again, it answers with that run
    assert len(_with_key(server.root, "gone-1")) == 1


def test_sigterm_lets_the_run_in_flight_finish_then_exits_0(tmp_path):
    root = make_vault(tmp_path / "vault")
    served = Server(root)
    reply = {}

    def post():
        reply["response"] = served.post("/agents/atlas/runs", {"work_item": 'tool: nap {"s": "1.5"}',
                                                              "idempotency_key": "drain-1"})
    client = threading.Thread(target=post)
    client.start()
    _wait_for((root / "atlas" / "napping").exists, "the run's tool step")
    served.process.send_signal(signal.SIGTERM)
    client.join(WAIT)
    response = reply["response"]
    assert response.status_code == 200 and response.json()["status"] == "ok", response.text
    assert served.process.wait(WAIT) == 0
    assert [r["run_id"] for r in _with_key(root, "drain-1")] == [response.json()["run_id"]]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
    served.http.close()


# -- the bench, small -----------------------------------------------------------------------

def test_concurrent_clients_each_run_logged_exactly_once_and_the_chain_holds(tmp_path):
    root = tmp_path / "vault"
    shutil.copytree(SAMPLES, root)
    process, port = bench.start_server(root, env={"ATOMIC_VAULT_TOKEN": TOKEN})
    try:
        rows = bench.hammer(port, "atlas", clients=4, runs=5, token=TOKEN)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    bench.check(root, "atlas", rows, expected=20)
    assert len({row["run_id"] for row in rows}) == 20


def test_the_bench_check_can_fail(tmp_path):
    """A run logged but never acknowledged is caught (so is a dropped one)."""
    root = tmp_path / "vault"
    shutil.copytree(SAMPLES, root)
    from atomic_vault.agent import AtomicAgent

    acknowledged = [AtomicAgent("atlas", root=root).call(f"run {i}", idempotency_key=f"k{i}") for i in range(2)]
    rows = [{"key": f"k{i}", "run_id": r.run_id} for i, r in enumerate(acknowledged)]
    with pytest.raises(AssertionError, match="not exactly the acknowledged"):
        bench.check(root, "atlas", rows[:1], expected=1)


def test_starlette_and_uvicorn_are_imported_only_by_serve():
    code = ("import sys, atomic_vault, atomic_vault.cli, atomic_vault.agent; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn') "
            "or m.endswith('http_api')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
