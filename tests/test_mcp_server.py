"""`atomic-vault mcp` end to end with the SDK's own client, over stdio (a subprocess) and
over streamable HTTP (a subprocess on a free loopback port): every tool, the resources,
read-only refusals, bad names, and a hand edit that a write_note must not overwrite."""

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SAMPLES

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

CLI = [sys.executable, "-m", "atomic_vault"]
WAIT = 30  # seconds: every wait is bounded


def make_vault(root: Path) -> Path:
    shutil.copytree(SAMPLES, root)
    shutil.copytree(root / "atlas", root / "mira")  # a second agent, hidden by --agents atlas
    script = root / "atlas" / "count.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\nprint('counted')\n")
    block = json.dumps({"read": ["persona/", "memory/", "wiki/", "journal/"], "write": ["memory/"],
                        "tools": [{"name": "count", "kind": "command", "description": "count a word",
                                   "argv": [sys.executable, str(script), str(root / "atlas" / "count.txt"), "{word}"],
                                   "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}]})
    (root / "atlas" / "tools.md").write_text(f"# Tools\n\n```yaml\n{block}\n```\n")
    return root


class Client:
    """One SDK client session kept open on a loop in a thread, called synchronously."""

    def __init__(self, connect):
        self.loop = asyncio.new_event_loop()
        self.ready, self.stop = threading.Event(), None
        self.session = None
        self.failure = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(connect),), daemon=True)
        self.thread.start()
        assert self.ready.wait(WAIT), "the MCP session did not start"
        if self.failure:
            raise self.failure

    async def _main(self, connect):
        self.stop = asyncio.Event()
        try:
            async with connect() as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    self.session = session
                    self.ready.set()
                    await self.stop.wait()
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            self.failure = exc
            self.ready.set()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT * 4)

    def call(self, tool, **arguments):
        result = self.run(self.session.call_tool(tool, arguments))
        error = getattr(result, "is_error", getattr(result, "isError", False))
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        structured = getattr(result, "structured_content", getattr(result, "structuredContent", None))
        return error, text, structured

    def ok(self, tool, **arguments):
        error, text, structured = self.call(tool, **arguments)
        assert not error, text
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured if structured is not None else json.loads(text)

    def refused(self, tool, **arguments):
        error, text, _ = self.call(tool, **arguments)
        assert error, text
        return text

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(WAIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["stdio", "http"])
def served(request, tmp_path_factory):
    root = make_vault(tmp_path_factory.mktemp("mcp") / "vault")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["--root", str(root), "mcp", "--agents", "atlas"]
    process = None
    if request.param == "stdio":
        params = StdioServerParameters(command=CLI[0], args=[*CLI[1:], *args], env=env)
        errlog = open(root.parent / "stderr.txt", "w")
        client = Client(lambda: stdio_client(params, errlog=errlog))
    else:
        port = free_port()
        process = subprocess.Popen([*CLI, *args, "--http", f"127.0.0.1:{port}"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        client = Client(lambda: streamable_http_client(f"http://127.0.0.1:{port}/mcp"))
    yield client, root
    client.close()
    if process is not None:
        process.terminate()
        process.wait(WAIT)


def test_every_tool_is_listed_and_agents_are_limited(served):
    client, _ = served
    names = {tool.name for tool in client.run(client.session.list_tools()).tools}
    assert names == {"list_agents", "run_agent", "search_notes", "read_note", "write_note",
                     "recent_activity", "show_run", "query_log", "cost_summary", "list_approvals",
                     "decide_approval", "verify"}
    assert client.ok("list_agents") == ["atlas"]  # mira is in the vault, not served
    assert "not served here" in client.refused("search_notes", agent="mira", query="verdemar")


def test_a_run_its_evidence_log_cost_and_verify(served):
    client, _ = served
    ran = client.ok("run_agent", agent="atlas", work_item="summarise the week", idempotency_key="week-1")
    assert ran["status"] == "ok" and ran["run_id"] and ran["cost_usd"] == 0.0 and "Offline answer" in ran["text"]
    again = client.ok("run_agent", agent="atlas", work_item="summarise the week", idempotency_key="week-1")
    assert again["run_id"] == ran["run_id"]  # the key answers with the first run, not a new one
    shown = client.ok("show_run", agent="atlas", run_id=ran["run_id"])
    assert shown["run_id"] == ran["run_id"] and shown["tampered"] is False
    assert shown["work_item"]["text"] == "summarise the week"
    runs = client.ok("query_log", agent="atlas", kind="run", limit=50)
    assert [r["run_id"] for r in runs].count(ran["run_id"]) == 1
    assert "not a date" in client.refused("query_log", agent="atlas", since="last week")
    cost = client.ok("cost_summary", agent="atlas", by="month")
    assert cost and cost[-1]["runs"] >= 1
    verified = client.ok("verify", agent="atlas")
    assert verified["ok"] is True and verified["records"] >= 1
    activity = client.ok("recent_activity", agent="atlas", limit=5)
    assert ran["run_id"] in [r["run_id"] for r in activity["runs"]] and activity["notes"]
    contents = client.run(client.session.read_resource(f"run://atlas/{ran['run_id']}")).contents
    assert ran["run_id"] in contents[0].text


def test_an_escalated_action_awaits_approval_and_is_decided(served):
    client, root = served
    ran = client.ok("run_agent", agent="atlas", work_item='tool: count {"word": "alpha"}')
    assert ran["status"] == "awaiting_approval" and len(ran["approvals"]) == 1
    assert not (root / "atlas" / "count.txt").exists()
    pending = [a for a in client.ok("list_approvals", agent="atlas") if a["state"] == "pending"]
    assert [a["id"] for a in pending] == ran["approvals"]
    assert "names who took it" in client.refused("decide_approval", agent="atlas", approval_id=ran["approvals"][0],
                                                 decision="approve", by="")
    assert "not an approval id" in client.refused("decide_approval", agent="atlas", approval_id="../x",
                                                  decision="approve", by="maria")
    decided = client.ok("decide_approval", agent="atlas", approval_id=ran["approvals"][0],
                        decision="deny", by="maria", note="not today")
    assert decided["decision"] == "deny" and decided["decided_by"] == "maria"
    assert "is not a decision" in client.refused("decide_approval", agent="atlas",
                                                 approval_id=ran["approvals"][0], decision="maybe", by="x")


def test_notes_search_read_write_and_resource(served):
    client, root = served
    hits = client.ok("search_notes", agent="atlas", query="verdemar")
    assert hits and hits[0]["file"].endswith(".md")
    note = client.ok("read_note", agent="atlas", note="project_verdemar_migration")
    assert note["file"] == "project_verdemar_migration.md"
    assert note["text"] == (root / "atlas" / "memory" / note["file"]).read_text()
    written = client.ok("write_note", agent="atlas", type="reference", name="Printer codes",
                        description="Codes of the office printer", body="Door code 4711.", confidence="high")
    assert written["status"] == "written" and written["file"] == "reference_printer_codes.md"
    text = (root / "atlas" / "memory" / "reference_printer_codes.md").read_text()
    assert "Door code 4711." in text
    assert "reference_printer_codes.md" in (root / "atlas" / "memory" / "INDEX.md").read_text()
    contents = client.run(client.session.read_resource("note://atlas/reference_printer_codes.md")).contents
    assert contents[0].text == text
    try:
        from mcp.shared.exceptions import MCPError
    except ImportError:  # mcp 1
        from mcp.shared.exceptions import McpError as MCPError
    for uri in ("note://atlas/no_such_note.md", "note://mira/reference_printer_codes.md", "run://atlas/nope"):
        with pytest.raises(MCPError) as refused:
            client.run(client.session.read_resource(uri))
        assert "fix:" in str(refused.value.error.message)
    bad = client.refused("write_note", agent="atlas", type="gossip", name="x", description="x", body="x")
    assert "type 'gossip' is not one of" in bad and "fix:" in bad


def test_a_hand_edit_since_the_read_wins_over_write_note(served):
    client, root = served
    first = dict(agent="atlas", type="project", name="Garden shed", description="The shed build",
                 body="Order the timber.", confidence="medium")
    assert client.ok("write_note", **first)["file"] == "project_garden_shed.md"
    path = root / "atlas" / "memory" / "project_garden_shed.md"
    read = client.ok("read_note", agent="atlas", note="Garden shed")  # by its name
    assert read["file"] == path.name and read["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    hand = read["text"].replace("Order the timber.", "Order the timber. Edited by hand: pine, not oak.")
    path.write_text(hand)  # a person edits the note between the client's read and its write
    refused = client.refused("write_note", **{**first, "body": "Timber ordered."},
                             expected_sha256=read["sha256"])
    assert "changed since it was read" in refused and "fix:" in refused
    assert path.read_text() == hand and not list(path.parent.glob("project_garden_shed_v*.md"))
    # Without the client's hash, the capture rules still keep a person's note as it is.
    person = client.refused("write_note", **{**first, "body": "Timber ordered."})
    assert "last written by a person" in person
    assert path.read_text() == hand and not list(path.parent.glob("project_garden_shed_v*.md"))
    # From a fresh read, superseding it is an explicit, kept change.
    fresh = client.ok("read_note", agent="atlas", note=path.name)
    done = client.ok("write_note", **{**first, "body": "Timber ordered."}, supersedes=path.name,
                     expected_sha256=fresh["sha256"])
    assert done["supersedes"] == path.name and "Edited by hand" in path.read_text()


@pytest.mark.parametrize("tool,arguments", [
    ("read_note", {"agent": "../atlas", "note": "x"}),
    ("read_note", {"agent": "atlas", "note": "../../atlas/persona/IDENTITY.md"}),
    ("read_note", {"agent": "atlas", "note": "/etc/passwd"}),
    ("search_notes", {"agent": "atlas/../mira", "query": "x"}),
    ("show_run", {"agent": "..", "run_id": "x"}),
])
def test_names_outside_the_vault_are_refused(served, tool, arguments):
    client, _ = served
    text = client.refused(tool, **arguments)
    assert "fix:" in text and "root:x:" not in text


def test_read_only_refuses_writes_and_stdout_holds_only_protocol_messages(tmp_path):
    """A raw JSON-RPC session over stdio: each stdout line is a protocol message, and the
    writing tools are refused, changing nothing."""
    root = make_vault(tmp_path / "vault")
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".atomic_vault" not in p.parts)
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "run_agent", "arguments": {"agent": "atlas", "work_item": "hello"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "write_note", "arguments": {"agent": "atlas", "type": "user", "name": "n",
                                                 "description": "d", "body": "b"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "decide_approval", "arguments": {"agent": "atlas", "approval_id": "x",
                                                      "decision": "approve", "by": "m"}}},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "list_agents", "arguments": {}}},
    ]
    process = subprocess.Popen([*CLI, "--root", str(root), "mcp", "--read-only"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answers = {}
    try:
        for message in messages:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
            if "id" not in message:
                continue
            while message["id"] not in answers:
                line = process.stdout.readline()
                assert line, process.stderr.read()
                reply = json.loads(line)  # nothing but protocol messages
                assert reply["jsonrpc"] == "2.0"
                if "id" in reply:
                    answers[reply["id"]] = reply
    finally:
        process.stdin.close()
        process.wait(WAIT)
    for call in (2, 3, 4):
        result = answers[call]["result"]
        assert result["isError"] is True and "--read-only" in result["content"][0]["text"]
    assert answers[5]["result"].get("isError") is not True
    after = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".atomic_vault" not in p.parts)
    assert after == before


def test_bad_options_are_usage_errors(tmp_path):
    root = make_vault(tmp_path / "vault")
    for extra, said in ((["--agents", "nobody"], "nobody"), (["--http", "nowhere"], "HOST:PORT"),
                        (["--http", "0.0.0.0:8765"], "not a loopback address"),
                        (["--http", "example.org:80"], "not a loopback address"),
                        (["--agents", "../x"], "invalid agent name")):
        done = subprocess.run([*CLI, "--root", str(root), "mcp", *extra], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=WAIT)
        assert done.returncode in (1, 2) and said in done.stderr and done.stdout == ""


def test_the_sdk_is_imported_only_by_the_mcp_command():
    probe = ("import sys, atomic_vault, atomic_vault.cli; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mcp' or m.endswith('mcp_server')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=WAIT)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
