"""`atomic-vault dashboard` (spec/10): static pages whose figures match a known log, read
through any log backend, escaped, without scripts, and rendered by a real browser."""

import os
import re
import shutil
import struct
import subprocess
import zlib
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from atomic_vault.backends import open_backend
from atomic_vault.cli import cli
from atomic_vault.dashboard import page_name, render
from atomic_vault.scaffold import create_agent
from atomic_vault.vault import open_agent

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>alert("pwned")</script> & <b>bold</b>'


def run(ts, agent="atlas", **fields):
    record = {"kind": "run", "ts": ts, "run_id": f"{ts[:19]}-{agent}", "agent": agent, "trigger": "cron",
              "model": "anthropic:claude-sonnet-4-5", "status": "ok", "input_tokens": 0, "output_tokens": 0,
              "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0, "summary": "",
              "fallback_from": None, "warnings": []}
    record.update(fields)
    return record


def atlas_records():
    older = run("2025-10-10T09:00:00.000+01:00", cost_usd=7.0, summary="before the 12 months")
    del older["cache_read_tokens"], older["cache_write_tokens"]  # an older record: no cache fields
    return [
        older,
        run("2026-10-15T09:00:00.000+01:00", input_tokens=1000, output_tokens=200, cost_usd=0.25,
            summary="October review"),
        run("2026-11-19T08:00:00.000+01:00", input_tokens=2000, output_tokens=500, cache_read_tokens=3000,
            cache_write_tokens=1000, cost_usd=0.5, summary="Weekly plan"),
        run("2026-11-20T07:30:00.000+01:00", model="anthropic:claude-haiku-4-5", input_tokens=1000,
            output_tokens=100, cache_read_tokens=1000, cost_usd=0.125, summary="Cheap answer",
            fallback_from="anthropic:claude-opus-4-1",
            guardrail={"action": "fallback", "reasons": ["monthly cap 80% reached"]}),
        run("2026-11-20T08:00:00.000+01:00", status="error", summary=""),
        run("2026-11-20T09:00:00.000+01:00", status="skipped",
            guardrail={"action": "skip", "reasons": ["daily cap $1.00 reached"]}),
        # late evening west of UTC: still the operator's 20th, though UTC says the 21st
        run("2026-11-20T23:30:00.000-05:00", input_tokens=500, output_tokens=50, cost_usd=None,
            summary=HOSTILE),
        {"kind": "repair", "ts": "2026-11-20T23:40:00.000+01:00", "agent": "atlas", "trigger": "doctor",
         "status": "ok", "summary": "rewrote HEAD", "actions": ["rewrote HEAD"], "cost_usd": 99.0},
        run("2026-11-21T10:00:00.000+01:00", input_tokens=100, output_tokens=10, cost_usd=3.0,
            summary="After the chosen today"),
    ]


def scout_records():
    return [run("2026-11-01T12:00:00.000+01:00", agent="scout", input_tokens=100, output_tokens=10,
                cost_usd=2.0, summary="Big batch"),
            run("2026-11-20T12:00:00.000+01:00", agent="scout", input_tokens=100, output_tokens=10,
                cost_usd=0.75, summary="Small batch")]


def build(root, log):
    """Two agents: atlas (the sample: caps $1.00 a day, $20.00 a month) and scout, scaffolded,
    with caps lowered to $0.50 and $5.00 in its model.md."""
    scout = create_agent(root, "scout")
    text = scout.model.read_text(encoding="utf-8")
    scout.model.write_text(text.replace("daily_cap_usd: 1.00", "daily_cap_usd: 0.50")
                           .replace("monthly_cap_usd: 20.00", "monthly_cap_usd: 5.00"), encoding="utf-8")
    for name, records in (("atlas", atlas_records()), ("scout", scout_records())):
        folder = open_agent(name, root)
        for record in records:
            log.append(folder, record)


@pytest.fixture
def logged(vault):
    build(vault, open_backend("log", None, vault))
    return vault


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.in_style = [], False

    def handle_starttag(self, tag, attrs):
        self.in_style = tag == "style"

    def handle_endtag(self, tag):
        self.in_style = False

    def handle_data(self, data):
        if not self.in_style:
            self.parts.append(data)


def text(html):
    """What a reader sees (and a screen reader says), SVG titles included, spaces collapsed."""
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def pages(root, out, **kwargs):
    written = render(root, None, out, log_backend=open_backend("log", None, root), **kwargs)
    return {path.name: path.read_text(encoding="utf-8") for path in written}


def test_the_agent_page_shows_the_figures_of_the_log(logged, tmp_path):
    html = pages(logged, tmp_path / "out", today="2026-11-20")["atlas.html"]
    page = text(html)
    assert "6 runs from 2026-10-15 to 2026-11-20 · model" in page  # the runs counted, not the window
    assert "daily cap $1.00 · monthly cap $20.00" in page
    # by day: the 20th holds three runs of known cost, one of unknown cost (its UTC day is the 21st)
    assert "2026-11-20: $0.1250 + 1 unknown · 4 runs" in page
    assert "2026-11-19: $0.5000 · 1 run" in page
    assert "2026-11-20: input 1,500, output 150, cache read 1,000, cache write 0" in page
    # by month: 2025-10 is outside the 12 months, the repair record and the 21st are left out
    assert "2026-11: $0.6250 + 1 unknown · 5 runs" in page and "2026-10: $0.2500 · 1 run" in page
    assert "$7.0000" not in page and "$99" not in page and "$3.0000" not in page
    assert "Spend this month $0.6250 of $20.00 monthly cap; + 1 of unknown cost" in page
    assert "Spend since 2026-10-15 $0.8750 6 runs; + 1 of unknown cost" in page
    assert "Unknown cost 1 run without a price" in page
    # caps: the daily cap is drawn; the monthly one is far above $0.63 and said in words
    assert re.search(r'<line class="cap"[^>]*><title>daily cap \$1\.00</title>', html)
    assert "monthly cap $20.00 is far above these bars" in page
    assert "ok 4 66.7% error 1 16.7% skipped 1 16.7% all runs 6" in page
    # cache hit rate = 4,000 / (4,500 input + 4,000 cache read + 1,000 cache write)
    assert "Cache hit rate 42.1%" in page
    assert "Skips · fallbacks 1 · 1" in page
    assert ("2026-11-20 09:00 skip anthropic:claude-sonnet-4-5 daily cap $1.00 reached" in page)
    assert ("2026-11-20 07:30 fallback anthropic:claude-haiku-4-5 fell back from anthropic:claude-opus-4-1 "
            "monthly cap 80% reached") in page
    expensive = page.split("Most expensive runs", 1)[1]
    assert expensive.startswith(" the 3 costliest of known cost")  # runs that cost $0 are left out
    assert expensive.index("Weekly plan") < expensive.index("October review") < expensive.index("Cheap answer")
    assert ("2026-11-19 08:00 anthropic:claude-sonnet-4-5 2,000 500 3,000 1,000 $0.5000 Weekly plan"
            in expensive)
    assert HOSTILE not in expensive  # a run of unknown cost cannot be ranked


def test_pages_have_no_script_and_need_no_network(logged, tmp_path):
    for name, html in pages(logged, tmp_path / "out").items():
        assert "<script" not in html.lower() and "javascript:" not in html.lower(), name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), name
        assert "http://" not in html and "https://" not in html, name


def test_a_hostile_summary_is_shown_as_text(vault, tmp_path):
    log = open_backend("log", None, vault)
    log.append(open_agent("atlas", vault), run("2026-11-20T10:00:00.000+01:00", cost_usd=0.01, summary=HOSTILE))
    html = pages(vault, tmp_path / "out")["atlas.html"]
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert HOSTILE in text(html) and "<script" not in html


def test_the_vault_page_has_a_row_per_agent_and_the_summed_days(logged, tmp_path):
    out = pages(logged, tmp_path / "out", today="2026-11-20")
    assert sorted(out) == ["atlas.html", "index.html", "scout.html", "trees.html"]
    page = text(out["index.html"])
    assert "2 agents · 8 runs from 2026-10-15 to 2026-11-20" in page
    # agent, spend this month, monthly cap, used, runs, errors, skips, fallbacks, unknown cost, cache
    assert "atlas $0.6250 + 1 unknown $20.00 3.1% 6 1 1 1 1 42.1%" in page
    assert "scout $2.7500 $5.00 55.0% 2 0 0 0 0 0.0%" in page
    assert '<a href="atlas.html">atlas</a>' in out["index.html"]
    assert "2026-11-20: $0.8750 + 1 unknown · 5 runs" in page
    assert "2026-11-20 scout: $0.7500" in page and "2026-11-20 atlas: $0.1250 + 1 unknown" in page
    assert "Spend 2026-11 $3.3750 7 runs this month; + 1 of unknown cost" in page
    assert "Errors 1" in page
    scout = out["scout.html"]
    assert "daily cap $0.50 · monthly cap $5.00" in text(scout)
    assert re.search(r'<rect class="spend over"[^>]*><title>2026-11-01: \$2\.0000 · 1 run</title>', scout)


def test_today_defaults_to_the_newest_record_and_rendering_again_changes_nothing(logged, tmp_path):
    out = tmp_path / "out"
    first = pages(logged, out)
    assert "runs from 2026-10-15 to 2026-11-21" in text(first["index.html"])
    assert "Spend 2026-11-21 $3.0000 of $1.00 daily cap" in text(first["atlas.html"])
    stamps = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert pages(logged, out) == first
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == stamps  # not rewritten


def test_every_log_backend_gives_the_same_pages(tmp_path):
    shutil.copytree(Path(__file__).resolve().parent.parent / "samples", tmp_path / "a")
    shutil.copytree(Path(__file__).resolve().parent.parent / "samples", tmp_path / "b")
    build(tmp_path / "a", open_backend("log", "files", tmp_path / "a"))
    build(tmp_path / "b", open_backend("log", "sqlite", tmp_path / "b"))
    files = render(tmp_path / "a", None, tmp_path / "out-a", log_backend="files", today="2026-11-20")
    sqlite = render(tmp_path / "b", None, tmp_path / "out-b", log_backend="sqlite", today="2026-11-20")
    for a, b in zip(files, sqlite):
        assert a.read_text().replace("(files log backend)", "(sqlite log backend)") == b.read_text()


def test_caps_that_are_switched_off_are_marked_as_not_enforced(vault, tmp_path):
    model = vault / "atlas" / "model.md"
    model.write_text(model.read_text().replace("enabled: true", "enabled: false"))
    page = text(pages(vault, tmp_path / "out")["atlas.html"])
    assert "daily cap $1.00 · monthly cap $20.00 (not enforced: cost_guardrails.enabled is false)" in page


def test_real_runs_show_up(vault, tmp_path):
    assert av(vault, "run", "atlas", "hello").exit_code == 0
    assert av(vault, "run", "atlas", "again").exit_code == 0
    page = text(pages(vault, tmp_path / "out")["index.html"])
    assert "atlas $0.0000 $20.00 0.0% 2 0 0 0 0 0.0%" in page  # offline: no cost, no cache


def test_an_agent_called_index_does_not_overwrite_the_vault_page():
    assert page_name("atlas") == "atlas.html"
    assert page_name("index") == "_index.html" and page_name("Index") == "_Index.html"


def av(vault, *args):
    return CliRunner().invoke(cli, ["--root", str(vault), *args])


def test_the_command_prints_the_pages_it_wrote(logged, tmp_path):
    out = tmp_path / "site"
    done = av(logged, "dashboard", "-o", str(out), "--today", "2026-11-20")
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == [str(out / page) for page in ("index.html", "atlas.html", "scout.html", "trees.html")]
    one = av(logged, "dashboard", "scout", "--out", str(tmp_path / "one"))
    assert one.exit_code == 0
    assert one.stdout.split() == [str(tmp_path / "one" / page) for page in ("index.html", "scout.html", "trees.html")]
    missing = av(logged, "dashboard", "ghost", "-o", str(out))
    assert missing.exit_code == 2 and "no agent 'ghost'" in missing.stderr
    assert av(logged, "dashboard", "-o", str(out), "--today", "20/11/2026").exit_code == 2
    assert av(logged, "dashboard").exit_code == 2  # -o is required
    assert av(tmp_path / "empty", "dashboard", "-o", str(out)).exit_code == 1
    helped = av(logged, "dashboard", "--help")
    assert "atomic-vault dashboard atlas -o /tmp/dash --today 2026-11-30" in helped.output


# ---- a real browser ---------------------------------------------------------------------

def chromium(tmp_path, *args):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser test")
        pytest.skip(message)
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_facts(data):
    """(width, height, distinct filtered scanlines) of a PNG: a blank or one-colour page has
    a handful of distinct scanlines, a page of text and charts has hundreds."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour = header
    raw = zlib.decompress(b"".join(idat))
    stride = 1 + width * {0: 1, 2: 3, 4: 2, 6: 4}[colour] * depth // 8
    assert len(raw) == stride * height
    return width, height, len({raw[i * stride:(i + 1) * stride] for i in range(height)})


def test_a_headless_browser_renders_the_figures(logged, tmp_path):
    out = tmp_path / "out"
    render(logged, None, out, log_backend=open_backend("log", None, logged), today="2026-11-20")
    dom = chromium(tmp_path, "--dump-dom", (out / "atlas.html").as_uri())
    seen = unescape(text(dom))
    for figure in ("2026-11-20: $0.1250 + 1 unknown · 4 runs", "Cache hit rate 42.1%",
                   "Weekly plan", "Spend this month $0.6250 of $20.00 monthly cap", "monthly cap 80% reached"):
        assert figure in seen
    assert "<script" not in dom.lower()
    vault_dom = text(chromium(tmp_path, "--dump-dom", (out / "index.html").as_uri()))
    assert "scout $2.7500 $5.00 55.0% 2 0 0 0 0 0.0%" in unescape(vault_dom)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", (out / "atlas.html").as_uri())
    data = shot.read_bytes()
    width, height, distinct = png_facts(data)
    assert (width, height) == (1200, 2000)
    assert len(data) > 40_000 and distinct > 300, (len(data), distinct)


def test_the_words_follow_the_data(vault, tmp_path):
    """No "the 0 costliest", no "1 runs", and the period named is that of the runs shown."""
    empty = text(pages(vault, tmp_path / "empty", today="2026-11-20")["atlas.html"])
    assert "No runs from 2025-12-01 to 2026-11-20" in empty and "costliest" not in empty
    assert "Runs by status no runs" in empty and "No run of known, non-zero cost." in empty
    log = open_backend("log", None, vault)
    log.append(open_agent("atlas", vault), run("2026-11-20T10:00:00.000+01:00", cost_usd=0.01, summary="One"))
    out = pages(vault, tmp_path / "one", today="2026-11-20")
    page, index = text(out["atlas.html"]), text(out["index.html"])
    assert "1 run on 2026-11-20 · model" in page and "Spend since 2026-11-20 $0.0100 1 run" in page
    assert "Most expensive runs the only run of known, non-zero cost" in page
    assert "No run was skipped or fell back on 2026-11-20." in page
    assert "1 agent · 1 run on 2026-11-20" in index and "1 run this month" in index
    assert not re.search(r"(?<![\d,.$])1 runs", page + index)
    assert (page + index).count("12 months") == (page + index).count("last 12 months")  # the chart's window


def test_each_listed_run_links_to_its_page(vault, tmp_path):
    from atomic_vault import AtomicAgent
    from conftest import ScriptedModel

    agent = AtomicAgent("atlas", root=vault, model=ScriptedModel("An answer <b>with markup</b>."))
    result = agent.call("Plan <i>Monday</i>.")
    written = render(vault, ["atlas"], tmp_path / "dash")
    page = (tmp_path / "dash" / page_name("atlas")).read_text()
    link = f'href="runs/atlas/{result.run_id}.html"'
    assert link in page
    run_page = tmp_path / "dash" / "runs" / "atlas" / f"{result.run_id}.html"
    assert run_page in written
    html = run_page.read_text()
    assert "Plan &lt;i&gt;Monday&lt;/i&gt;." in html and "<b>with" not in html  # texts shown as text
    assert "persona/SOUL.md" in html and f'href="../../{page_name("atlas")}"' in html


# ---- delegation trees and the queue ------------------------------------------------------

@pytest.mark.parametrize("backend", ["files", "sqlite"])
def test_the_trees_page_draws_each_tree_through_the_log_backend_with_every_cost(vault, tmp_path, backend):
    create_agent(vault, "scout")
    log = open_backend("log", backend, vault)
    atlas, scout = open_agent("atlas", vault), open_agent("scout", vault)
    root = "20261120T090000-aaaaaaaa"
    log.append(scout, run("2026-11-20T09:00:01.000+01:00", agent="scout", run_id="20261120T090001-bbbbbbbb",
                          cost_usd=0.25, summary="Found it", parent_run_id=root, root_run_id=root, depth=1))
    log.append(atlas, run("2026-11-20T09:00:00.000+01:00", run_id=root, cost_usd=0.5, root_run_id=root, depth=0,
                          summary="Asked scout", children=[
                              {"agent": "scout", "depth": 1, "run_id": "20261120T090001-bbbbbbbb", "status": "ok",
                               "cost_usd": 0.25},
                              {"agent": "ghost", "depth": 1, "run_id": "20261120T090002-cccccccc", "status": "ok",
                               "cost_usd": 1.0}]))
    out = tmp_path / "out"
    render(vault, None, out, log_backend=log)
    trees = text((out / "trees.html").read_text())
    assert "1 tree begun" in trees and "tree cost $0.7500 over 3 runs (1 of unknown cost)" in trees
    assert "atlas 20261120T090000-aaaaaaaa 0 ok $0.5000 Asked scout" in trees
    assert "└ scout 20261120T090001-bbbbbbbb 1 ok $0.2500 Found it" in trees
    assert "└ ghost 20261120T090002-cccccccc 1 missing unknown" in trees  # its record is nowhere
    html = (out / "trees.html").read_text()
    assert 'href="runs/scout/20261120T090001-bbbbbbbb.html"' in html and "runs/ghost/" not in html
    page = text((out / "runs" / "atlas" / f"{root}.html").read_text())
    assert "Delegation tree this run and every run below it: $0.7500 over 3 runs" in page
    assert (out / "runs" / "scout" / "20261120T090001-bbbbbbbb.html").exists()
    vault_page = text((out / "index.html").read_text())
    assert "Delegation trees 1" in vault_page and "Queue depth 0 ready 0 in flight, 0 done (files queue)" in vault_page


def test_the_queue_depth_counts_ready_in_flight_and_dead_and_an_unreadable_queue_is_said(vault, tmp_path,
                                                                                       monkeypatch):
    from atomic_vault import workqueue
    from atomic_vault.errors import BackendError

    queue = workqueue.open_queue(vault)
    for n in range(3):
        queue.enqueue("atlas", f"item {n}")
    queue.claim("w1", 60)
    render(vault, None, tmp_path / "out")
    page = text((tmp_path / "out" / "index.html").read_text())
    assert "Queue depth 2 ready 1 in flight, 0 done (files queue) Dead items 0" in page

    def down(root):
        raise BackendError("PostgreSQL at postgresql://db/x cannot be reached")

    monkeypatch.setattr(workqueue, "open_queue", down)
    render(vault, None, tmp_path / "down")
    page = text((tmp_path / "down" / "index.html").read_text())
    assert "Queue unreadable PostgreSQL at postgresql://db/x cannot be reached" in page
