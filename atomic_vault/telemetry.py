"""OpenTelemetry spans of a run, built from its committed log record (spec/15).

Off unless asked for (``ATOMIC_VAULT_OTEL=1`` with ``OTEL_EXPORTER_OTLP_ENDPOINT``, or
``otel: true`` in the vault's atomic_vault.yaml); nothing of opentelemetry is imported
until then. The spans are made after the record is written, from the record and its
attempts, so a trace shows what the log says and never something the log does not.
Sending them is best effort: a missing extra is a warning on the record, and an exporter
that fails or hangs costs the run at most the flush timeout, never its outcome.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .keys import redact

ENABLE_ENV = "ATOMIC_VAULT_OTEL"
CONTENT_ENV = "ATOMIC_VAULT_OTEL_CONTENT"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
EXPORT_TIMEOUT_S = 3.0   # one export request, unless OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT says otherwise
FLUSH_TIMEOUT_MS = 5000  # the most a run waits for its spans to leave the process
SCOPE = "atomic_vault"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

_provider: Any = None  # the TracerProvider spans go to: a caller's own, or one built for OTLP


class Telemetry:
    """Where one run's spans go, and whether they may carry message content."""

    def __init__(self, provider: Any, content: bool):
        self.provider, self.content = provider, content


def set_tracer_provider(provider: Any) -> None:
    """Send spans to ``provider`` (a script's or a test's own TracerProvider) instead of an
    OTLP exporter built from the environment; None goes back to that default. Telemetry
    must still be switched on (``ATOMIC_VAULT_OTEL=1`` or ``otel: true``)."""
    global _provider
    _provider = provider


def settings(root: Path) -> tuple[bool, bool]:
    """(on, content): the environment first, then ``otel:`` in atomic_vault.yaml."""
    from .backends import CONFIG_NAME, vault_file

    data = vault_file(Path(root)) or {}
    value = data.get("otel", False)
    path = Path(root) / CONFIG_NAME
    if isinstance(value, bool):
        on, content = value, False
    elif isinstance(value, dict) and set(value) <= {"enabled", "content"} and all(
            isinstance(v, bool) for v in value.values()):
        on, content = value.get("enabled", True), value.get("content", False)
    else:
        raise ConfigError("`otel` must be true, false or {enabled: BOOL, content: BOOL}", path=path,
                          field="otel", fix="write e.g.  otel: true   or   otel: {content: true}")
    return _flag(ENABLE_ENV, on), _flag(CONTENT_ENV, content)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={raw[:40]!r} is not 1 or 0", field=name, fix=f"set {name}=1 or unset it")


def for_run(root: Path, warnings: list[str]) -> Telemetry | None:
    """The run's telemetry, or None when it is off or cannot work here (then said in
    ``warnings``, which go on the run's record)."""
    on, content = settings(root)
    if not on:
        return None
    if _provider is not None:
        return Telemetry(_provider, content)
    if not (os.environ.get(ENDPOINT_ENV) or os.environ.get(TRACES_ENDPOINT_ENV)):
        warnings.append(f"telemetry is on but {ENDPOINT_ENV} is not set: no spans were sent "
                        f"(set it to the OTLP/HTTP collector, e.g. http://localhost:4318)")
        return None
    try:
        provider = _otlp_provider()
    except ImportError as exc:
        warnings.append(f"telemetry is on but the otel extra is missing ({exc}): no spans were sent "
                        "(pip install 'atomic-vault[otel]')")
        return None
    except Exception as exc:  # a bad OTEL_* setting must not stop the run
        warnings.append(f"telemetry is on but its exporter cannot be built ({type(exc).__name__}: "
                        f"{redact(str(exc))[:200]}): no spans were sent")
        return None
    return Telemetry(provider, content)


def _otlp_provider() -> Any:
    """One TracerProvider per process, batching to the OTLP/HTTP exporter that the standard
    OTEL_* variables configure."""
    global _provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    timeout = None if (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                       or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")) else EXPORT_TIMEOUT_S
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "atomic-vault"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=timeout)))
    _provider = provider
    return provider


def export(telemetry: Telemetry | None, record: dict[str, Any], request: Any = None,
           answer: str | None = None) -> None:
    """Make the run's spans from its committed ``record`` and flush them. Never raises:
    the run has already happened, whatever a collector thinks of it."""
    if telemetry is None:
        return
    try:
        _spans(telemetry, record, request if telemetry.content else None,
               answer if telemetry.content else None)
        flush = getattr(telemetry.provider, "force_flush", None)
        if callable(flush) and not flush(FLUSH_TIMEOUT_MS):
            _warn("the spans of run %s were not all sent within %d ms", record.get("run_id"), FLUSH_TIMEOUT_MS)
    except Exception as exc:
        _warn("the spans of run %s were not sent (%s: %s)", record.get("run_id"), type(exc).__name__,
              redact(str(exc))[:200])


def _warn(message: str, *args: Any) -> None:
    """On stderr (through logging, as the SDK reports its own failures): the record is
    already written, so a lost trace can only be said here."""
    import logging  # only a failure needs it: the CLI's start stays fast

    logging.getLogger(__name__).warning("atomic_vault telemetry: " + message, *args)


def _spans(telemetry: Telemetry, record: dict[str, Any], request: Any, answer: str | None) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = telemetry.provider.get_tracer(SCOPE)
    started, finished = _at(record.get("ts")), _at(record.get("finished")) or _at(record.get("ts"))
    model = str(record.get("model") or "")
    attempts = [a for a in record.get("attempts") or [] if a.get("attempt")]  # 0: a fallback never built
    first = str(attempts[0].get("model")) if attempts else model
    run = tracer.start_span(f"invoke_agent {record.get('agent')}", kind=SpanKind.INTERNAL,
                            start_time=_ns(started), attributes={
                                "gen_ai.operation.name": "invoke_agent",
                                "gen_ai.agent.name": str(record.get("agent")),
                                **_model(first, "request"), **_usage(record),
                                **({"gen_ai.response.model": _split(model)[1]} if record.get("status") == "ok" else {}),
                                **_ours(record)})
    context = trace.set_span_in_context(run)
    at = started
    for entry in attempts:
        begin = _at(entry.get("ts")) or at
        end = begin + timedelta(milliseconds=float(entry.get("ms") or 0))
        if finished is not None:
            end = min(end, finished)
        name = str(entry.get("model"))
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", **_model(name, "request"),
                                      "atomic_vault.attempt": int(entry["attempt"])}
        ok = entry.get("outcome") == "ok"
        if ok:
            attributes.update({"gen_ai.response.model": _split(model)[1], **_usage(record)})
        else:
            attributes["error.type"] = _error_type(entry)
        if request is not None:
            attributes.update(_content(request, answer if ok else None))
        span = tracer.start_span(f"chat {_split(name)[1]}", context=context, kind=SpanKind.CLIENT,
                                 start_time=_ns(begin), attributes=attributes)
        if not ok:
            span.set_status(Status(StatusCode.ERROR, str(entry.get("error") or "")[:500]))
        span.end(end_time=_ns(end))
        at = end + timedelta(seconds=float(entry.get("wait_s") or 0))
    if record.get("status") == "error":
        run.set_attribute("error.type", _error_type(attempts[-1]) if attempts else "_OTHER")
        run.set_status(Status(StatusCode.ERROR, str(record.get("error") or "")[:500]))
    run.end(end_time=_ns(finished))


def _split(name: str) -> tuple[str, str]:
    """(provider, model) of a ``provider:model`` name; a bare name is both."""
    provider, _, model = name.partition(":")
    return provider, model or provider


def _model(name: str, which: str) -> dict[str, Any]:
    provider, model = _split(name)
    return {"gen_ai.provider.name": provider, f"gen_ai.{which}.model": model}


def _usage(record: dict[str, Any]) -> dict[str, int]:
    """Token counts as the convention counts them: input includes the cached tokens,
    which the record keeps apart (spec/12)."""
    read, write = int(record.get("cache_read_tokens") or 0), int(record.get("cache_write_tokens") or 0)
    return {"gen_ai.usage.input_tokens": int(record.get("input_tokens") or 0) + read + write,
            "gen_ai.usage.output_tokens": int(record.get("output_tokens") or 0),
            "gen_ai.usage.cache_read.input_tokens": read,
            "gen_ai.usage.cache_creation.input_tokens": write}


def _ours(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"atomic_vault.run_id": str(record.get("run_id")),
                           "atomic_vault.status": str(record.get("status")),
                           "atomic_vault.trigger": str(record.get("trigger")),
                           "atomic_vault.captures": len(record.get("captures") or [])}
    if isinstance(record.get("seq"), int):
        out["atomic_vault.seq"] = record["seq"]
    if isinstance(record.get("cost_usd"), (int, float)):
        out["atomic_vault.cost_usd"] = float(record["cost_usd"])
    if record.get("fallback_from"):
        out["atomic_vault.fallback_from"] = str(record["fallback_from"])
    return out


def _error_type(entry: dict[str, Any]) -> str:
    """Low-cardinality, as the convention asks: the HTTP status when known."""
    return str(entry["status"]) if entry.get("status") is not None else "_OTHER"


def _content(request: Any, answer: str | None) -> dict[str, str]:
    """The messages in the convention's JSON shape, every key redacted."""
    def text(value: Any) -> list[dict[str, str]]:
        return [{"type": "text", "content": redact(str(value))}]
    out = {"gen_ai.system_instructions": json.dumps(
               [part for block in request.system for part in text(block["text"])], ensure_ascii=False),
           "gen_ai.input.messages": json.dumps(
               [{"role": m["role"], "parts": text(m["content"])} for m in request.messages], ensure_ascii=False)}
    if answer is not None:
        out["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": text(answer), "finish_reason": "stop"}], ensure_ascii=False)
    return out


def _at(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _ns(when: datetime | None) -> int | None:
    return None if when is None else round(when.timestamp() * 1000) * 1_000_000
