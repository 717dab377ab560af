"""OpenTelemetry spans (spec/15): one invoke_agent span per run and one chat span per model
attempt, built from the committed record; off by default; never a reason for a run to fail."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from datetime import datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from atomic_vault import AtomicAgent, runlog, telemetry
from atomic_vault.errors import ConfigError, ModelError
from atomic_vault.models import ModelResponse
from atomic_vault.vault import open_agent
from conftest import ScriptedModel

SECRET = "sk-test-0123456789SECRETVALUE"


@pytest.fixture
def spans(monkeypatch):
    """Telemetry on, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.set_tracer_provider(provider)
    monkeypatch.setenv("ATOMIC_VAULT_OTEL", "1")
    monkeypatch.delenv("ATOMIC_VAULT_OTEL_CONTENT", raising=False)
    yield exporter
    telemetry.set_tracer_provider(None)


def records(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))]


def by_name(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


def ns(iso):
    return round(datetime.fromisoformat(iso).timestamp() * 1000) * 1_000_000


class Flaky:
    """Fails with a retryable 503 first, then answers with known token counts."""

    name = "anthropic:claude-test"

    def __init__(self, failures=1):
        self.failures = failures

    def complete(self, request):
        if self.failures:
            self.failures -= 1
            raise ModelError("overloaded", retryable=True, status=503)
        return ModelResponse(text="the answer", input_tokens=40, output_tokens=7, cache_read_tokens=100,
                             cache_write_tokens=3, cost_usd=0.0042,
                             model="anthropic:claude-test-20261001")


def fast_retries(vault):
    path = vault / "atlas" / "model.md"
    text = path.read_text()
    path.write_text(text.replace("max_output_tokens: 2000", "max_output_tokens: 2000\nretries: "
                                 "{attempts: 3, base_delay_s: 0.01, max_delay_s: 0.02}"))


def test_a_run_is_one_invoke_agent_span_with_one_chat_span_per_attempt(vault, spans):
    fast_retries(vault)
    result = AtomicAgent("atlas", root=vault, model=Flaky()).call("Plan Monday.")
    record = records(vault)[-1]
    found = by_name(spans)
    assert set(found) == {"invoke_agent atlas", "chat claude-test"} and len(spans.get_finished_spans()) == 3
    run = found["invoke_agent atlas"]
    chats = [s for s in spans.get_finished_spans() if s.name == "chat claude-test"]
    assert run.kind == SpanKind.INTERNAL and run.parent is None
    assert all(c.kind == SpanKind.CLIENT and c.parent.span_id == run.context.span_id
               and c.context.trace_id == run.context.trace_id for c in chats)
    assert dict(run.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "atlas",
        "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-test",
        "gen_ai.response.model": "claude-test-20261001",
        "gen_ai.usage.input_tokens": 143, "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 100, "gen_ai.usage.cache_creation.input_tokens": 3,
        "atomic_vault.run_id": result.run_id, "atomic_vault.seq": result.seq, "atomic_vault.status": "ok",
        "atomic_vault.trigger": "manual", "atomic_vault.captures": 0,
        "atomic_vault.cost_usd": 0.0042}
    failed, ok = sorted(chats, key=lambda s: s.attributes["atomic_vault.attempt"])
    assert failed.attributes["error.type"] == "503" and failed.status.status_code == StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert ok.attributes["gen_ai.operation.name"] == "chat" and "error.type" not in ok.attributes
    assert ok.attributes["gen_ai.response.model"] == "claude-test-20261001"
    assert ok.attributes["gen_ai.usage.output_tokens"] == 7
    # The spans say what the record says, to the millisecond.
    assert (run.start_time, run.end_time) == (ns(record["ts"]), ns(record["finished"]))
    for span, attempt in zip((failed, ok), record["attempts"]):
        assert span.start_time == ns(attempt["ts"])
        assert span.end_time - span.start_time == attempt["ms"] * 1_000_000
    assert run.start_time <= failed.start_time <= ok.start_time <= run.end_time


def test_a_run_inside_the_callers_span_is_its_child(vault, spans):
    tracer = telemetry._provider.get_tracer("script")
    with tracer.start_as_current_span("nightly batch") as outer:
        AtomicAgent("atlas", root=vault).call("Plan Monday.")
    run = by_name(spans)["invoke_agent atlas"]
    assert run.parent.span_id == outer.get_span_context().span_id


def test_a_failed_run_carries_error_type_on_its_span(vault, spans):
    fast_retries(vault)
    with pytest.raises(ModelError):
        AtomicAgent("atlas", root=vault, model=ScriptedModel(error=ModelError("no such model", status=404))
                    ).call("Plan Monday.")
    record = records(vault)[-1]
    run = by_name(spans)["invoke_agent atlas"]
    chat = by_name(spans)["chat scripted"]
    assert record["status"] == "error"
    assert run.status.status_code == StatusCode.ERROR and run.attributes["error.type"] == "404"
    assert run.attributes["atomic_vault.status"] == "error" and "gen_ai.response.model" not in run.attributes
    assert chat.attributes["error.type"] == "404" and chat.status.description == "no such model"


def test_a_skipped_run_is_one_span_and_no_model_call(vault, spans):
    (vault / "atlas" / "model.md").write_text(
        "```yaml\nmodel: offline\nprices: {'offline:*': {input: 1000, output: 1000}}\n"
        "cost_guardrails: {enabled: true, daily_cap_usd: 0.0001, daily_cap_action: skip}\n```\n")
    result = AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert result.status == "skipped"
    (run,) = spans.get_finished_spans()
    assert run.name == "invoke_agent atlas" and run.status.status_code == StatusCode.UNSET
    assert run.attributes["atomic_vault.status"] == "skipped"
    assert run.attributes["atomic_vault.seq"] == records(vault)[-1]["seq"]


def test_message_content_is_sent_only_when_asked_and_redacted(vault, spans, monkeypatch):
    monkeypatch.setenv("TELEMETRY_TEST_API_KEY", SECRET)
    AtomicAgent("atlas", root=vault).call(f"Plan Monday. The key is {SECRET}.")
    chat = by_name(spans)["chat offline"]
    assert not [key for key in chat.attributes if "messages" in key or "instructions" in key]
    spans.clear()
    monkeypatch.setenv("ATOMIC_VAULT_OTEL_CONTENT", "1")
    result = AtomicAgent("atlas", root=vault).call(f"Plan Monday. The key is {SECRET}.")
    chat = by_name(spans)["chat offline"]
    sent = json.loads(chat.attributes["gen_ai.input.messages"])
    assert sent[-1]["role"] == "user" and "Plan Monday. The key is ***." in sent[-1]["parts"][0]["content"]
    assert json.loads(chat.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == result.text
    assert json.loads(chat.attributes["gen_ai.system_instructions"])[0]["type"] == "text"
    assert SECRET not in json.dumps(dict(chat.attributes))


def test_the_vault_config_switches_telemetry_on_and_a_bad_value_is_refused(vault, spans, snap, monkeypatch):
    monkeypatch.delenv("ATOMIC_VAULT_OTEL")
    AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert spans.get_finished_spans() == ()
    (vault / "atomic_vault.yaml").write_text("otel: {content: true}\n")
    AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert "gen_ai.input.messages" in by_name(spans)["chat offline"].attributes
    (vault / "atomic_vault.yaml").write_text("otel: yes please\n")
    before = snap(vault)
    with pytest.raises(ConfigError) as bad:
        AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert bad.value.field == "otel" and str(bad.value.path).endswith("atomic_vault.yaml") and bad.value.fix
    assert snap(vault) == before


def test_a_bad_switch_is_refused_before_anything_is_written(vault, spans, snap, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_OTEL", "maybe")
    before = snap(vault)
    with pytest.raises(ConfigError) as bad:
        AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert bad.value.field == "ATOMIC_VAULT_OTEL" and "ATOMIC_VAULT_OTEL=1" in bad.value.fix
    assert snap(vault) == before and spans.get_finished_spans() == ()
    monkeypatch.setenv("ATOMIC_VAULT_OTEL", "0")  # over the config file
    (vault / "atomic_vault.yaml").write_text("otel: true\n")
    AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert spans.get_finished_spans() == ()


def test_a_failing_exporter_never_fails_a_run(vault, spans, caplog):
    class Broken:
        def get_tracer(self, *args, **kwargs):
            raise RuntimeError("collector on fire")

    telemetry.set_tracer_provider(Broken())
    result = AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert result.status == "ok" and records(vault)[-1]["status"] == "ok"
    assert "collector on fire" in caplog.text


def test_switched_on_without_the_extra_is_a_warning_on_the_record(vault, monkeypatch):
    telemetry.set_tracer_provider(None)
    monkeypatch.setenv("ATOMIC_VAULT_OTEL", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    result = AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert result.status == "ok"
    assert any("pip install 'atomic-vault[otel]'" in w for w in records(vault)[-1]["warnings"])


def test_switched_on_without_an_endpoint_is_a_warning_on_the_record(vault, monkeypatch):
    telemetry.set_tracer_provider(None)
    monkeypatch.setenv("ATOMIC_VAULT_OTEL", "1")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    AtomicAgent("atlas", root=vault).call("Plan Monday.")
    assert any("OTEL_EXPORTER_OTLP_ENDPOINT is not set" in w for w in records(vault)[-1]["warnings"])


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_VAULT_", "OTEL_"))}
    return {**env, **extra}


def test_off_by_default_nothing_of_opentelemetry_is_imported(vault):
    script = ("import sys; from atomic_vault import AtomicAgent; "
              f"r = AtomicAgent('atlas', root={str(vault)!r}).call('Plan Monday.'); "
              "print(r.status, sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "[]"]


class Receiver(http.server.BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP collector: keeps each POST /v1/traces body."""

    bodies: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/traces":
            self.bodies.append(body)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_cli(vault, endpoint):
    return subprocess.run([sys.executable, "-m", "atomic_vault", "--root", str(vault), "run", "atlas",
                           "Plan Monday."], capture_output=True, text=True, timeout=120,
                          env=clean_env(ATOMIC_VAULT_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))


def test_end_to_end_the_cli_sends_the_spans_to_an_otlp_http_collector(vault):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run_cli(vault, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    record = records(vault)[-1]
    sent = []
    for body in Receiver.bodies:
        request = ExportTraceServiceRequest.FromString(body)
        sent += [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert sorted(span.name for span in sent) == ["chat offline", "invoke_agent atlas"]
    run = next(span for span in sent if span.name == "invoke_agent atlas")
    chat = next(span for span in sent if span.name == "chat offline")
    attributes = {a.key: a.value for a in run.attributes}
    assert attributes["atomic_vault.run_id"].string_value == record["run_id"]
    assert attributes["atomic_vault.seq"].int_value == record["seq"]
    assert chat.parent_span_id == run.span_id and chat.trace_id == run.trace_id
    assert run.start_time_unix_nano == ns(record["ts"])


def test_an_unreachable_collector_still_exits_0_with_the_run_ok(vault):
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = run_cli(vault, f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    assert records(vault)[-1]["status"] == "ok"


def test_a_replay_makes_spans_of_its_own(vault, spans):
    from atomic_vault import replay

    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel("The answer."))
    first = agent.call("Plan.")
    spans.clear()
    done = replay.replay(agent, first.run_id)
    run_span = by_name(spans)["invoke_agent atlas"]
    assert run_span.attributes["atomic_vault.run_id"] == done.record["run_id"] != first.run_id
    assert "chat scripted" in by_name(spans)
