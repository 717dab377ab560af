"""Cost guardrails, pricing and retries (spec/12): caps hold under concurrency, each
action does what model.md says, and every attempt and decision is in the log."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from atomic_vault import AtomicAgent, clock, guardrails, runlog
from atomic_vault.backends.files import FileLog
from atomic_vault.config import RetryPolicy
from atomic_vault.errors import ModelError
from atomic_vault.models import ModelResponse, token_ceiling
from atomic_vault.retries import backoff
from atomic_vault.vault import open_agent

RATE = 1000.0  # USD per million tokens: one token costs $0.001


class Metered:
    """A model whose bill is exactly the guardrail's ceiling: as many input tokens as the
    request has bytes plus overheads (models.token_ceiling) and every allowed output token."""

    def __init__(self, name="test:metered", failures=(), delay=0.0):
        self.name = name
        self.failures = list(failures)
        self.delay = delay
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        time.sleep(self.delay)
        tokens = token_ceiling(request)  # the request carries its tools (the capture tool)
        return ModelResponse(text="metered answer", input_tokens=tokens,
                             output_tokens=request.max_output_tokens, model=self.name)


def set_model_md(vault, **rails):
    settings = {"model": "offline", "max_output_tokens": 100, "journal_days": 0,
                "recent_notes": 0, "retries": {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05},
                "prices": {"test:metered": {"input": RATE, "output": RATE},
                           "test:dear": {"input": RATE * 100, "output": RATE * 100}}}
    settings.update(rails.pop("top", {}))
    settings["cost_guardrails"] = {"enabled": True, **rails}
    (vault / "atlas" / "model.md").write_text("# Model\n\n```yaml\n" + json.dumps(settings) + "\n```\n")


def run_cost(vault, work="Plan the week."):
    """The ceiling of one Metered run on this prompt, measured by running one."""
    set_model_md(vault, daily_cap_usd=1000.0)
    agent = AtomicAgent("atlas", root=vault, model=Metered())
    return agent.call(work).cost_usd


def records(vault):
    return [r for _, _, r in runlog.records(open_agent("atlas", vault))]


def test_under_the_cap_a_run_is_priced_from_model_md_and_recorded(vault):
    set_model_md(vault, daily_cap_usd=100.0)
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    record = records(vault)[-1]
    assert result.status == "ok"
    assert result.cost_usd == pytest.approx((record["input_tokens"] + 100) * RATE / 1e6)
    assert record["guardrail"]["action"] == "pass"
    assert record["guardrail"]["estimate_usd"] == pytest.approx(result.cost_usd)
    assert record["attempts"][0]["outcome"] == "ok"
    assert not list((open_agent("atlas", vault).state / "reservations").iterdir())


def test_skip_at_the_daily_cap_logs_a_skipped_run_and_does_not_call_the_model(vault):
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=one * 1.5, daily_cap_action="skip")
    model = Metered()
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan the week.")
    assert result.status == "skipped" and model.calls == 0
    record = records(vault)[-1]
    assert record["status"] == "skipped" and record["cost_usd"] == 0.0
    assert record["guardrail"]["action"] == "skip"
    assert "daily cap" in record["guardrail"]["reasons"][0]
    assert record["summary"].startswith("skipped: daily cap")
    assert runlog.verify(open_agent("atlas", vault)).ok


def test_skip_exits_3_from_the_cli(vault):
    (vault / "atlas" / "model.md").write_text(
        "```yaml\nmodel: offline\nprices: {'offline:*': {input: 1000, output: 1000}}\n"
        "cost_guardrails: {enabled: true, daily_cap_usd: 0.0001, daily_cap_action: skip}\n```\n")
    done = subprocess.run([sys.executable, "-m", "atomic_vault", "--root", str(vault), "run", "atlas", "hi"],
                          capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert "skipped by the cost guardrails: daily cap $0.00" in done.stderr
    assert records(vault)[-1]["status"] == "skipped"


def test_fallback_at_the_cap_switches_to_the_cheaper_model_and_records_it(vault):
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=one * 1.5, daily_cap_action="fallback", top={"fallback": "offline"})
    model = Metered()
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan the week.")
    record = records(vault)[-1]
    assert result.status == "ok" and model.calls == 0
    assert record["model"] == "offline" and record["fallback_from"] == "offline"
    assert record["guardrail"]["action"] == "fallback"
    assert any("switched to the fallback offline" in r for r in record["guardrail"]["reasons"])
    assert record["cost_usd"] == 0.0


def test_fallback_without_a_fallback_model_skips(vault):
    set_model_md(vault, daily_cap_usd=0.0, daily_cap_action="fallback")
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    assert result.status == "skipped"
    assert "names no fallback model" in records(vault)[-1]["guardrail"]["reasons"][-1]


def test_a_fallback_of_unknown_price_is_not_the_way_out_of_a_cap(vault):
    """spec/12: a fallback whose price is unknown cannot be shown to fit the cap: skip."""
    set_model_md(vault, daily_cap_usd=0.0, daily_cap_action="fallback", top={"fallback": "test:unpriced"})
    model = Metered()
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan the week.")
    record = records(vault)[-1]
    assert result.status == "skipped" and model.calls == 0
    assert record["model"] == "test:metered" and record["fallback_from"] is None
    assert record["guardrail"]["action"] == "skip"
    assert record["guardrail"]["reasons"][-1] == ("no price is known for the fallback test:unpriced, "
                                                  "so it cannot be shown to fit the cap")


def test_a_fallback_that_would_pass_the_cap_too_is_not_used(vault):
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=one * 1.5, daily_cap_action="fallback", top={"fallback": "test:dear"})
    model = Metered()
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan the week.")  # one spent, one more passes
    record = records(vault)[-1]
    assert result.status == "skipped" and model.calls == 0
    assert record["model"] == "test:metered" and record["fallback_from"] is None
    assert record["guardrail"]["action"] == "skip"
    assert record["guardrail"]["reasons"][-1] == "the fallback test:dear would pass the cap too"
    assert guardrails.in_flight(open_agent("atlas", vault)) == {}  # nothing was reserved


def test_alert_proceeds_and_records_a_warning(vault):
    set_model_md(vault, daily_cap_usd=0.0, daily_cap_action="alert")
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    record = records(vault)[-1]
    assert result.status == "ok"
    assert record["guardrail"]["action"] == "alert"
    assert any("daily cap $0.00" in w for w in record["warnings"])


def test_critical_bypasses_the_cap_and_is_recorded(vault):
    set_model_md(vault, daily_cap_usd=0.0, monthly_cap_usd=0.0, monthly_cap_action="skip")
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.", critical=True)
    record = records(vault)[-1]
    assert result.status == "ok" and record["critical"] is True
    assert record["guardrail"]["action"] == "bypassed"
    assert "critical run" in record["guardrail"]["reasons"][-1]


def test_per_run_maximum_uses_the_daily_action(vault):
    set_model_md(vault, max_run_usd=0.0001, daily_cap_action="skip")
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    assert result.status == "skipped"
    assert "max_run_usd" in records(vault)[-1]["guardrail"]["reasons"][0]


def run_at(monkeypatch, when: str) -> None:
    """Runs start at ``when`` (ISO, UTC), whatever the real date."""
    fixed = datetime.fromisoformat(when).replace(tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "now", lambda zone: fixed.astimezone(zone))


def spent_on(vault, ts: str, usd: float) -> None:
    FileLog().append(open_agent("atlas", vault), {"kind": "run", "agent": "atlas", "ts": ts,
                                                  "cost_usd": usd, "status": "ok"})


def test_monthly_cap_counts_earlier_days_of_the_month(vault, monkeypatch):
    set_model_md(vault, monthly_cap_usd=5.0, monthly_cap_action="skip", top={"timezone": "UTC"})
    run_at(monkeypatch, "2026-03-15T09:00:00")
    spent_on(vault, "2026-03-01T09:00:00.000+00:00", 5.0)
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    assert result.status == "skipped"
    assert records(vault)[-1]["ts"].startswith("2026-03-15T09:00:00")
    assert "monthly cap $5.00" in records(vault)[-1]["guardrail"]["reasons"][0]


def test_the_first_of_the_month_starts_a_new_monthly_budget(vault, monkeypatch):
    cap = 3 * run_cost(vault)  # one run fits; the cap spent in February would not leave room
    set_model_md(vault, monthly_cap_usd=cap, monthly_cap_action="skip", top={"timezone": "UTC"})
    spent_on(vault, "2026-02-28T23:59:00.000+00:00", cap)
    run_at(monkeypatch, "2026-03-01T00:01:00")
    result = AtomicAgent("atlas", root=vault, model=Metered()).call("Plan the week.")
    assert result.status == "ok"
    assert records(vault)[-1]["guardrail"]["spent_month_usd"] == 0.0


def test_each_warning_threshold_fires_once_per_day(vault):
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=one * 10.5, warning_thresholds=[0.5, 0.8], daily_cap_action="alert")
    agent = AtomicAgent("atlas", root=vault, model=Metered())
    for _ in range(11):
        agent.call("Plan the week.")
    warnings = [w for r in records(vault) for w in r["warnings"] if "spend reached" in w]
    assert [re.search(r"reached (.+?) \$", w).group(1) for w in warnings] == [
        "50% of the cap", "80% of the cap", "the cap"]


def test_unknown_price_runs_and_records_unknown_cost(vault):
    set_model_md(vault, daily_cap_usd=5.0)
    result = AtomicAgent("atlas", root=vault, model=Metered(name="test:unpriced")).call("Plan.")
    record = records(vault)[-1]
    assert result.status == "ok" and record["cost_usd"] is None
    assert any("no price is known for test:unpriced" in w for w in record["warnings"])
    assert FileLog().cost(open_agent("atlas", vault), "day")[-1].unknown_cost == 1


def test_vault_prices_file_extends_the_table_and_model_md_wins(vault):
    (vault / "atomic_vault.yaml").write_text(
        "prices:\n  'test:vaultpriced': {input: 1000, output: 1000}\n  'test:metered': {input: 1, output: 1}\n")
    set_model_md(vault)
    AtomicAgent("atlas", root=vault, model=Metered(name="test:vaultpriced")).call("Plan.")
    AtomicAgent("atlas", root=vault, model=Metered()).call("Plan.")
    first, second = records(vault)[-2:]
    assert first["cost_usd"] == pytest.approx((first["input_tokens"] + 100) / 1000)
    assert second["cost_usd"] == pytest.approx((second["input_tokens"] + 100) / 1000)  # model.md's RATE


def test_operator_time_zone_sets_the_run_day(vault):
    set_model_md(vault, daily_cap_usd=5.0, top={"timezone": "Pacific/Kiritimati"})
    AtomicAgent("atlas", root=vault, model=Metered()).call("Plan.")
    assert records(vault)[-1]["ts"].endswith("+14:00")


def test_a_dead_runs_reservation_is_dropped(vault):
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=one * 3.5)
    held = open_agent("atlas", vault).state / "reservations"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket
    for name, usd, pid in (("ghost.json", 100.0, int(dead)), ("alive.json", one, os.getpid())):
        (held / name).write_text(json.dumps({"usd": usd, "host": socket.gethostname(), "pid": pid,
                                             "at": time.time()}))
    (held / "torn.json").write_text('{"usd": 10')  # a writer killed mid-write
    agent = AtomicAgent("atlas", root=vault, model=Metered())
    assert agent.call("Plan the week.").status == "ok"  # spent 1 + alive 1 + this 1 <= 3.5
    assert agent.call("Plan the week.").status == "skipped"  # spent 2 + alive 1 + 1 > 3.5
    assert sorted(p.name for p in held.iterdir()) == ["alive.json"]


def _racer(root, barrier, results):
    agent = AtomicAgent("atlas", root=root, model=Metered(delay=0.2), lock_timeout=None)
    barrier.wait()
    results.put(agent.call("Plan the week.").status)


def test_many_runs_at_once_right_under_the_cap_never_overshoot(vault):
    one = run_cost(vault)
    allowed = 4
    cap = round(one * (allowed + 1.5), 6)  # the probe run, then room for exactly `allowed` more
    set_model_md(vault, daily_cap_usd=cap, daily_cap_action="skip", monthly_cap_usd=cap)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(12), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(vault), barrier, results)) for _ in range(12)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    statuses = sorted(results.get() for _ in procs)
    assert statuses.count("ok") == allowed and statuses.count("skipped") == 12 - allowed
    spent = sum(r["cost_usd"] for r in records(vault) if r["cost_usd"])
    assert spent <= cap
    assert runlog.verify(open_agent("atlas", vault)).ok


def test_transient_failures_are_retried_and_every_attempt_is_recorded(vault):
    set_model_md(vault)
    busy = ModelError("test: HTTP 429 rate_limit_error", retryable=True, retry_after=0.01, status=429)
    model = Metered(failures=[busy, ModelError("test: HTTP 503", retryable=True, status=503)])
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan.")
    attempts = records(vault)[-1]["attempts"]
    assert result.status == "ok" and model.calls == 3
    assert [(a["attempt"], a["outcome"], a.get("status")) for a in attempts] == [
        (1, "error", 429), (2, "error", 503), (3, "ok", None)]
    assert attempts[0]["wait_s"] == 0.01  # the provider's retry-after


def test_a_client_error_is_not_retried_and_the_fallback_answers(vault):
    set_model_md(vault, top={"fallback": "offline"})
    model = Metered(failures=[ModelError("test: HTTP 400 invalid_request_error", status=400)])
    result = AtomicAgent("atlas", root=vault, model=model).call("Plan.")
    record = records(vault)[-1]
    assert result.status == "ok" and model.calls == 1
    assert record["model"] == "offline" and record["fallback_from"] == "test:metered"
    assert [(a["model"], a["outcome"]) for a in record["attempts"]] == [
        ("test:metered", "error"), ("offline", "ok")]


def test_when_retries_and_fallback_fail_the_run_is_an_error_with_every_attempt(vault):
    set_model_md(vault)
    down = [ModelError("test: HTTP 500", retryable=True, status=500) for _ in range(3)]
    with pytest.raises(ModelError, match="HTTP 500"):
        AtomicAgent("atlas", root=vault, model=Metered(failures=down)).call("Plan.")
    record = records(vault)[-1]
    assert record["status"] == "error" and len(record["attempts"]) == 3
    assert "wait_s" not in record["attempts"][-1]


def test_a_dearer_fallback_is_not_used_past_the_reservation(vault):
    set_model_md(vault, daily_cap_usd=100.0, top={"fallback": "test:dear"})
    with pytest.raises(ModelError):
        AtomicAgent("atlas", root=vault, model=Metered(failures=[ModelError("x", status=400)])).call("Plan.")
    assert [a["model"] for a in records(vault)[-1]["attempts"]] == ["test:metered"]


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=5.0)
    assert backoff(policy, 1, None, jitter=lambda: 0.0) == 0.5
    assert backoff(policy, 2, None, jitter=lambda: 0.999) == pytest.approx(2.0, rel=0.01)
    assert backoff(policy, 6, None, jitter=lambda: 0.999) <= 5.0
    assert backoff(policy, 1, 30.0) == 5.0  # retry-after is honoured up to the cap
    assert backoff(policy, 1, 2.0) == 2.0


def test_a_key_in_a_model_error_never_reaches_the_log(vault, monkeypatch):
    monkeypatch.setenv("TEST_PROVIDER_API_KEY", "sk-test-0123456789abcdef")
    set_model_md(vault)
    leak = ModelError("rejected key sk-test-0123456789abcdef", status=401)
    with pytest.raises(ModelError) as raised:
        AtomicAgent("atlas", root=vault, model=Metered(failures=[leak])).call("Plan.")
    assert "sk-test-0123456789abcdef" not in str(raised.value)
    for path in Path(vault).rglob("*"):
        if path.is_file():
            assert b"sk-test-0123456789abcdef" not in path.read_bytes(), path


def test_the_cost_rollup_reads_only_new_lines_and_sees_hand_edits(vault):
    folder = open_agent("atlas", vault)
    log = FileLog()
    day = "2026-11-20"
    for cost in (1.0, 2.0):
        log.append(folder, {"kind": "run", "agent": "atlas", "ts": f"{day}T09:00:00.000+00:00",
                            "cost_usd": cost, "status": "ok"})
    assert log.cost(folder, "day", since=day, until=day)[0].cost_usd == 3.0
    cache = json.loads((folder.state / "cost-rollup.json").read_text())
    assert cache[f"{day}.jsonl"]["days"][day][3] == 1.0  # saved at the first append; lags by one
    import atomic_vault.backends.files as files
    files._ROLLUPS.clear()  # a new process: only the cache file remains, and it lags
    log.append(folder, {"kind": "run", "agent": "atlas", "ts": f"{day}T10:00:00.000+00:00",
                        "cost_usd": 4.0, "status": "ok"})
    assert log.cost(folder, "day", since=day, until=day)[0].cost_usd == 7.0
    path = folder.log_file(__import__("datetime").date.fromisoformat(day))
    path.write_text(path.read_text().replace('"cost_usd":1.0', '"cost_usd":9'))  # shorter: not an append
    files._ROLLUPS.clear()
    assert log.cost(folder, "day", since=day, until=day)[0].cost_usd == 15.0
    (folder.state / "cost-rollup.json").write_text("{not json")
    files._ROLLUPS.clear()
    assert log.cost(folder, "day", since=day, until=day)[0].cost_usd == 15.0


def test_log_cost_shows_spend_against_the_caps(vault):
    from click.testing import CliRunner
    from atomic_vault.cli import cli
    one = run_cost(vault)
    set_model_md(vault, daily_cap_usd=round(one * 4, 6), monthly_cap_usd=round(one * 40, 6))
    runner = CliRunner()
    shown = runner.invoke(cli, ["--root", str(vault), "log", "atlas", "cost"])
    assert shown.exit_code == 0, shown.output
    assert "25%" in shown.output  # one run of a cap of four
    assert f"today ${one:.4f} of ${one * 4:.4f}" in shown.output and "guardrails enforced" in shown.output
    rows = [json.loads(line) for line in runner.invoke(cli, ["--root", str(vault), "log", "atlas", "cost",
                                                             "--by", "month", "--json"]).stdout.splitlines()]
    assert rows[-1]["cap_usd"] == pytest.approx(one * 40) and rows[-1]["cost_usd"] == pytest.approx(one)


def test_doctor_names_where_keys_come_from_and_warns_about_unknown_prices(vault, monkeypatch):
    from click.testing import CliRunner
    from atomic_vault.cli import cli
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-doctor-0123456789")
    (vault / "atlas" / "model.md").write_text(
        "```yaml\nmodel: anthropic:claude-haiku-4-5\nfallback: openai:my-finetune\n"
        "cost_guardrails: {enabled: true, daily_cap_usd: 2.0, monthly_cap_usd: 1.0, daily_cap_action: fallback}\n```\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-doctor-0123456789")
    out = CliRunner().invoke(cli, ["--root", str(vault), "doctor", "atlas"]).output
    assert "model 'anthropic:claude-haiku-4-5' is available; API key from environment variable ANTHROPIC_API_KEY" in out
    assert "sk-ant-doctor" not in out and "sk-openai-doctor" not in out
    assert "no price is known for openai:my-finetune" in out
    assert "the daily cap $2.00 is above the monthly cap $1.00" in out
    assert "anthropic:claude-haiku-4-5: $1 in / $5 out per million tokens" in out


def test_a_key_pasted_into_the_work_item_or_echoed_by_the_model_is_never_written(vault, monkeypatch):
    secret = "sk-ant-pasted-0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    set_model_md(vault)

    class Echo(Metered):
        def complete(self, request):
            answer = super().complete(request)
            block = ('```atomic_capture\n{"type": "reference", "name": "The key", "description": "d", '
                     f'"confidence": "low", "sources": ["{secret}"], "body": "key is {secret}"}}\n```')
            from dataclasses import replace
            return replace(answer, text=f"Your key {secret}\n\n{block}", tool_captures=(block[18:-4],))

    result = AtomicAgent("atlas", root=vault, model=Echo()).call(f"my key is {secret}, remember it")
    assert secret not in result.text and [c["status"] for c in result.captures][0] == "written"
    for path in Path(vault).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_hand_edited_cost_rollup_cache_is_ignored_and_a_resealed_one_fails_verify(vault):
    # The guardrail check reads the cache: an edited entry must not move its decision.
    import atomic_vault.backends.files as files
    folder = open_agent("atlas", vault)
    log = FileLog()
    day = "2026-11-20"
    for cost in (1.0, 2.0):
        log.append(folder, {"kind": "run", "agent": "atlas", "ts": f"{day}T09:00:00.000+00:00",
                            "cost_usd": cost, "status": "ok"})
    cache_path = folder.state / "cost-rollup.json"
    cache = json.loads(cache_path.read_text())
    entry = cache[f"{day}.jsonl"]
    entry["days"][day][3] = 50.0  # a raised spend would skip the next run on a cap
    cache_path.write_text(json.dumps(cache))
    files._ROLLUPS.clear()  # a new process
    assert log.cost(folder, "day", since=day, until=day)[0].cost_usd == 3.0
    checked = log.verify(folder)
    assert checked.ok and any("not sealed" in w for w in checked.warnings)
    entry["seal"] = files.seal(entry)  # sealed again by someone who read the code
    cache_path.write_text(json.dumps(cache))
    files._ROLLUPS.clear()
    bad = log.verify(folder)
    assert not bad.ok and bad.first_bad["reason"].startswith("tampered: the cost rollup cache")


def test_an_unsealed_cost_rollup_cache_is_saved_sealed_at_the_next_append(vault):
    import atomic_vault.backends.files as files
    folder = open_agent("atlas", vault)
    log = FileLog()
    record = {"kind": "run", "agent": "atlas", "ts": "2026-11-20T09:00:00.000+00:00", "cost_usd": 1.0}
    log.append(folder, record)
    cache_path = folder.state / "cost-rollup.json"
    cache = json.loads(cache_path.read_text())
    for entry in cache.values():
        del entry["seal"]  # as an older atomic-vault wrote it
    cache_path.write_text(json.dumps(cache))
    files._ROLLUPS.clear()
    files._ON_DISK.clear()
    log.append(folder, record)
    saved = json.loads(cache_path.read_text())
    assert all(entry["seal"] == files.seal(entry) for entry in saved.values())
