"""Benchmarks of one agent call at several vault sizes, plus start-up costs.

    /path/to/venv/bin/python bench/bench_call.py                 # 10, 1000, 10000, 100000 notes
    /path/to/venv/bin/python bench/bench_call.py --quick         # 10 and 1000 notes
    /path/to/venv/bin/python bench/bench_call.py --sizes 10,10000

For each size a vault is generated under bench/out/vaults/<n> (reused, after a reset of
what earlier runs wrote, when it is already there). Measured per size:

  a. warm call: ``AtomicAgent(...).call()`` repeated in one process with an instant fake
     model (one untimed warm-up call first); median and p95 in ms
  b. fsync calls of one run without captures, and of one run that captures one note
  c. cold CLI: ``atomic-vault --root R run AGENT "..." --model offline`` as a new process
     (one untimed run first); median wall time of 5 runs and their max peak RSS

and once: ``import atomic_vault`` (-X importtime), ``import atomic_vault.agent`` and
``atomic-vault --help`` wall times. Results are printed as Markdown and written to
bench/out/results.json. Nothing outside bench/out is written or removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
VAULTS = OUT / "vaults"
RESULTS = OUT / "results.json"
sys.path.insert(0, str(HERE))

from make_vault import MANIFEST, make_vault, read_manifest, reset_vault  # noqa: E402

AGENT = "bench"
ALL_SIZES = (10, 1000, 10_000, 100_000)
QUICK_SIZES = (10, 1000)
WORK_ITEM = "Summarise what is due this week and flag anything that looks stale."
CAPTURE_WORK_ITEM = "Note that the bench client moved the review to Thursday."
CLI_RUNS = 5
STARTUP_RUNS = 5
# A note changed less than this long before a scan is re-read on the next scan
# (catalog.RACY_NS is 2 s); benchmarks wait this long after writing notes so that
# the catalog cache is stable, as it is for a vault that is not being edited.
SETTLE_SECONDS = 2.2

TARGETS = [  # (label, size, result key, limit, unit) from the project issue; ratios: floor_table
    ("cold CLI run, 10 notes", 10, "cli_median_s", 0.12, "s"),
    ("cold CLI peak RSS, 100,000 notes", 100_000, "cli_peak_rss_mb", 150.0, "MB"),
    ("warm worker peak RSS, 100,000 notes", 100_000, "worker_peak_rss_mb", 150.0, "MB"),
]


# --------------------------------------------------------------------------- helpers

def _inside_out(path: Path) -> Path:
    """Refuse to touch anything that is not under bench/out."""
    resolved = path.resolve()
    if not resolved.is_relative_to(OUT.resolve()):
        raise RuntimeError(f"refusing to modify {resolved}: not under {OUT}")
    return resolved


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


_CHILD_ENV: dict[str, str] | None = None


def _child_env() -> dict[str, str]:
    """Environment of every measured child process.

    By default bytecode is cached, as for an installed package, but under bench/out/pycache
    (PYTHONPYCACHEPREFIX) so nothing is written outside bench/out; PYTHONDONTWRITEBYTECODE
    would otherwise make every cold run recompile atomic_vault from source.
    """
    return dict(os.environ) if _CHILD_ENV is None else _CHILD_ENV


def _set_child_env(pyc_cache: bool) -> None:
    global _CHILD_ENV
    env = dict(os.environ)
    if pyc_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    env.pop("ATOMIC_VAULT_ROOT", None)
    _CHILD_ENV = env


def _code_fingerprint() -> dict:
    """Which library code was measured (the files may change between runs)."""
    import hashlib
    import atomic_vault

    package = Path(atomic_vault.__file__).resolve().parent
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {"package": str(package), "sha256": digest.hexdigest()[:16],
            "newest_file": datetime.fromtimestamp(newest, timezone.utc).isoformat(timespec="seconds")}


def _cli_path() -> str:
    beside = Path(sys.executable).parent / "atomic-vault"
    if beside.exists():
        return str(beside)
    found = shutil.which("atomic-vault")
    if not found:
        raise SystemExit("atomic-vault is not installed next to this Python; "
                         "run with the virtualenv's python")
    return found


def _timed_child(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit code, stderr) of one child process.

    os.wait4 gives the rusage of exactly this child, so one large run does not
    hide the peak RSS of the next (RUSAGE_CHILDREN would report the maximum so far).
    """
    with tempfile.TemporaryFile(dir=OUT) as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=_child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    peak_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return wall, peak_mb, proc.returncode, stderr


def _settle(since: float) -> None:
    wait = SETTLE_SECONDS - (time.time() - since)
    if wait > 0:
        time.sleep(wait)


# --------------------------------------------------------------------------- vaults

def prepare_vault(n: int, log=print) -> tuple[Path, bool | None, float | None]:
    """bench/out/vaults/<n>, generated (into a temporary folder, then renamed) or reset.
    Returns the vault root, True when it was generated now (None when reused), and how
    long generating it took (recorded in the vault's manifest, so also when reused)."""
    VAULTS.mkdir(parents=True, exist_ok=True)
    root = _inside_out(VAULTS / str(n))
    manifest = read_manifest(root)
    if manifest and manifest.get("n_notes") == n and manifest.get("agent") == AGENT:
        reset_vault(root)
        log(f"[{n}] reusing {root}")
        return root, None, manifest.get("generate_s")
    if root.exists():
        shutil.rmtree(root)
    temp = _inside_out(VAULTS / f".{n}.tmp-{os.getpid()}")
    if temp.exists():
        shutil.rmtree(temp)
    log(f"[{n}] generating {n} notes ...")
    started = time.perf_counter()
    make_vault(temp, AGENT, n)
    os.replace(temp, root)
    took = time.perf_counter() - started
    if hasattr(os, "sync"):
        os.sync()  # write the new notes back now, not during the timed fsyncs
    manifest = read_manifest(root)
    manifest["generate_s"] = round(took, 2)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"[{n}] generated in {took:.1f} s")
    return root, True, took


def load_postgres(root: Path, url: str) -> None:
    """The vault's notes and INDEX.md in PostgreSQL (schema kept between runs: loading
    100,000 notes one ``put`` each takes minutes), and the URL for the child processes."""
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.backends.postgres import PostgresMemory
    from atomic_vault.vault import open_agent

    for env in (os.environ, _child_env()):
        env["ATOMIC_VAULT_MEMORY_URL"] = env["ATOMIC_VAULT_LOG_URL"] = url
    folder = open_agent(AGENT, root)
    target = PostgresMemory(url)
    stored = len(target.scan(folder)[0])
    files = FileMemory()
    notes, broken = files.scan(folder)
    if stored >= len(notes):
        print(f"[{root.name}] reusing {stored} notes in PostgreSQL", flush=True)
        return
    print(f"[{root.name}] loading {len(notes)} notes into PostgreSQL ...", flush=True)
    started = time.perf_counter()
    with target.db.transaction() as conn:
        conn.execute("DELETE FROM notes WHERE agent=%s", (folder.name,))
    for file in sorted({*notes, *broken}):
        target.put(folder, file, files.get(folder, file))
    target.put_index(folder, files.get_index(folder) or "")
    target.db.connection().execute("ANALYZE notes")  # an autocommit connection
    print(f"[{root.name}] loaded in {time.perf_counter() - started:.0f} s", flush=True)


# --------------------------------------------------------------------------- warm worker

def fsync_floor(scratch: Path, rounds: int = 15) -> dict:
    """The durable-write floor of this disk, now: median ms of one atomic replace (temp,
    fsync, rename, folder fsync) and of one fsync'd append, through atomic_vault.fileio."""
    from atomic_vault import fileio

    scratch = _inside_out(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    replaces, appends = [], []
    for i in range(rounds):
        started = time.perf_counter()
        fileio.atomic_write(scratch / "replace.md", f"replace {i}\n" * 40)
        replaces.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        fileio.append_text(scratch / "append.jsonl", f'{{"line": {i}}}\n')
        appends.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(scratch)
    return {"replace_ms": statistics.median(replaces), "append_ms": statistics.median(appends)}


def snapshot_pairs(one_call, model, pairs: int) -> dict:
    """What a run's snapshots cost: ``pairs`` warm calls with them, alternated with as
    many whose run stores none (``_Run.snapshots`` answering None, so nothing is hashed,
    stored or named), so that both see the same load and the same growing journal."""
    from atomic_vault import agent as agent_module

    real = agent_module._Run.snapshots
    on, off, on_fsyncs, off_fsyncs = [], [], [], []
    try:
        for _ in range(pairs):
            took, synced, _, _ = one_call(model)
            on.append(took * 1000)
            on_fsyncs.append(synced)
            agent_module._Run.snapshots = lambda self, done, *_: None
            took, synced, _, result = one_call(model)
            agent_module._Run.snapshots = real
            assert "snapshots" not in (result.manifest or {})
            off.append(took * 1000)
            off_fsyncs.append(synced)
    finally:
        agent_module._Run.snapshots = real
    return {"snapshots_on_median_ms": statistics.median(on), "snapshots_off_median_ms": statistics.median(off),
            "snapshots_ratio": statistics.median(on) / statistics.median(off),
            "snapshots_on_fsyncs": max(on_fsyncs), "snapshots_off_fsyncs": max(off_fsyncs)}


def warm_worker(root: str, calls: int, capture_calls: int, guardrails: bool = True,
                loop_calls: int = 0, build: bool = False) -> dict:
    """Runs in its own process: warm per-call time and fsync counts. The sample's model.md
    enforces cost guardrails; ``guardrails=False`` turns them off to measure what they cost.
    ``build`` first times a catalog build with no cache (notes/s); ``loop_calls`` capturing
    calls on one instance are compared with as many on a fresh instance each."""
    import re
    import resource

    model_md = Path(root) / AGENT / "model.md"
    model_md.write_text(re.sub(r"enabled: (true|false)", f"enabled: {'true' if guardrails else 'false'}",
                               model_md.read_text(encoding="utf-8")), encoding="utf-8")
    from atomic_vault import AtomicAgent
    from atomic_vault import catalog, fileio
    print(f"memory backend: {AtomicAgent(AGENT, root=root).memory.name}", file=sys.stderr)
    from atomic_vault.models import ModelResponse
    from atomic_vault.vault import open_agent

    class InstantModel:
        name = "offline:instant"  # priced (offline:* costs 0), as a real provider would be

        def __init__(self, text: str = "ok"):
            self.text = text

        def complete(self, request):
            return ModelResponse(text=self.text, input_tokens=1, output_tokens=1,
                                 cost_usd=0.0, model=self.name)

    class CaptureModel(InstantModel):
        """Answers with one valid capture block with a new name every call."""
        count = 0

        def complete(self, request):
            CaptureModel.count += 1
            capture = {"type": "project",
                       "name": f"Bench note {os.getpid()} {time.time_ns()} {CaptureModel.count}",
                       "description": "d", "confidence": "high", "sources": ["bench"],
                       "body": "b"}
            self.text = "ok\n\n```atomic_capture\n" + json.dumps(capture) + "\n```\n"
            return super().complete(request)

    instant = InstantModel()
    build_result = {}
    if build:
        folder = open_agent(AGENT, root)
        catalog.forget(folder)
        started = time.perf_counter()
        notes, broken = catalog.scan(folder)
        took = time.perf_counter() - started
        build_result = {"build_s": took, "build_notes_per_s": (len(notes) + len(broken)) / took}

    def one_call(model, agent=None) -> tuple[float, int, int, object]:
        before, before_dir = fileio.FSYNCS, fileio.DIR_FSYNCS
        started = time.perf_counter()
        agent = agent or AtomicAgent(AGENT, root=root, trigger="bench", model=model)
        agent.model = model
        result = agent.call(WORK_ITEM if model is instant else CAPTURE_WORK_ITEM)
        took = time.perf_counter() - started
        return took, fileio.FSYNCS - before, fileio.DIR_FSYNCS - before_dir, result

    first, first_fsyncs, _, result = one_call(instant)  # warm-up: loads the catalog, imports
    assert not result.captures, "the warm-call work item must not capture notes"
    memory = Path(root) / AGENT / "memory"

    def stat_floor() -> float:
        """What merely noticing every hand edit costs: lstat of every file in memory/."""
        started = time.perf_counter()
        with os.scandir(memory) as listing:
            for entry in listing:
                entry.stat(follow_symlinks=False)
        return (time.perf_counter() - started) * 1000

    floors_fsync = [fsync_floor(OUT / f"fsync-floor-{os.getpid()}")]
    times, fsyncs, floors = [], [], []
    for _ in range(calls):
        took, synced, _, result = one_call(instant)
        assert result.status == "ok" and not result.captures
        times.append(took * 1000)
        fsyncs.append(synced)
        floors.append(stat_floor())  # interleaved, so both see the same machine load

    capture_times, capture_fsyncs, capture_dirs = [], [], []
    for _ in range(capture_calls):
        took, synced, dirs, result = one_call(CaptureModel())
        written = [c for c in result.captures if c["status"] == "written"]
        assert len(written) == 1, result.captures
        capture_times.append(took * 1000)
        capture_fsyncs.append(synced)
        capture_dirs.append(dirs)
        floors.append(stat_floor())

    loop = {}
    if loop_calls:
        reused, fresh = [], []
        agent = AtomicAgent(AGENT, root=root, trigger="bench", model=instant)
        for _ in range(loop_calls):  # alternated, so both see the same load and vault size
            reused.append(one_call(CaptureModel(), agent)[0] * 1000)
            fresh.append(one_call(CaptureModel())[0] * 1000)
        loop = {"loop_calls": loop_calls, "loop_reused_median_ms": statistics.median(reused),
                "loop_reused_max_ms": max(reused), "loop_fresh_median_ms": statistics.median(fresh),
                "loop_fresh_max_ms": max(fresh),
                "loop_worse_than_fresh": sum(r > f for r, f in zip(reused, fresh))}
    snaps = snapshot_pairs(one_call, instant, calls)
    floors_fsync.append(fsync_floor(OUT / f"fsync-floor-{os.getpid()}"))
    replace_ms = statistics.median(f["replace_ms"] for f in floors_fsync)
    append_ms = statistics.median(f["append_ms"] for f in floors_fsync)

    def durable_floor(total: int, dirs: int) -> tuple[int, int, float]:
        """(replaces, appends, ms): a replace costs two fsyncs (file, folder), an append one."""
        replaces, appends = dirs, max(0, total - 2 * dirs)
        return replaces, appends, replaces * replace_ms + appends * append_ms

    capture_replaces, capture_appends, capture_floor = durable_floor(
        max(capture_fsyncs) if capture_fsyncs else 0, max(capture_dirs) if capture_dirs else 0)
    return {
        **build_result,
        **loop,
        **snaps,
        "warmup_ms": first * 1000,
        "warm_calls": calls,
        "warm_median_ms": statistics.median(times),
        "warm_p95_ms": _p95(times),
        "warm_min_ms": min(times),
        "warm_max_ms": max(times),
        "stat_floor_median_ms": statistics.median(floors),
        "fsyncs_per_call": max(fsyncs),
        "fsyncs_per_call_all": sorted(set(fsyncs)),
        "capture_calls": capture_calls,
        "capture_median_ms": statistics.median(capture_times) if capture_times else None,
        "fsyncs_per_capture_call": max(capture_fsyncs) if capture_fsyncs else None,
        "fsyncs_per_capture_call_all": sorted(set(capture_fsyncs)),
        "replace_floor_ms": replace_ms,
        "append_floor_ms": append_ms,
        "capture_replaces": capture_replaces,
        "capture_appends": capture_appends,
        "capture_fsync_floor_ms": capture_floor,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prompt_tokens": result.manifest["tokens"],
        "prompt_cuts": len(result.manifest["cuts"]),
    }


GUARDRAILS = True
BACKEND = "files"


def run_warm(root: Path, calls: int, capture_calls: int, loop_calls: int = 0,
             build: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(root),
           "--calls", str(calls), "--capture-calls", str(capture_calls),
           "--loop-calls", str(loop_calls), "--backend", BACKEND]  # else the worker would reset it to files
    if not build:
        cmd.append("--no-build")
    if not GUARDRAILS:
        cmd.append("--no-guardrails")
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if done.returncode != 0:
        raise SystemExit(f"warm worker failed for {root}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- cold CLI

def run_cli(root: Path, runs: int = CLI_RUNS) -> dict:
    cmd = [_cli_path(), "--root", str(root), "run", AGENT, WORK_ITEM, "--model", "offline"]
    wall, peak, code, err = _timed_child(cmd)  # untimed: (re)builds the catalog cache
    if code != 0:
        raise SystemExit(f"CLI run failed ({code}): {' '.join(cmd)}\n{err}")
    walls, peaks = [], []
    for _ in range(runs):
        wall, peak, code, err = _timed_child(cmd)
        if code != 0:
            raise SystemExit(f"CLI run failed ({code}): {' '.join(cmd)}\n{err}")
        walls.append(wall)
        peaks.append(peak)
    return {"cli_runs": runs, "cli_median_s": statistics.median(walls), "cli_min_s": min(walls),
            "cli_max_s": max(walls), "cli_peak_rss_mb": max(peaks)}


# --------------------------------------------------------------------------- start-up

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def _importtime(module: str) -> tuple[float, float]:
    """(cumulative ms of ``module``, sum of all self times in ms) from -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True, env=_child_env())
    cumulative, total = None, 0
    for line in done.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if not match:
            continue
        total += int(match.group(1))
        if match.group(4) == module:
            cumulative = int(match.group(2))
    if cumulative is None:
        raise RuntimeError(f"-X importtime did not report {module}")
    return cumulative / 1000, total / 1000


def run_cli_importtime(root: Path, top: int = 15) -> dict:
    """-X importtime of one cold ``atomic-vault run`` (python -m atomic_vault): the total and
    the modules with the largest cumulative times, atomic_vault's own and the rest."""
    cmd = [sys.executable, "-X", "importtime", "-m", "atomic_vault", "--root", str(root), "run", AGENT,
           WORK_ITEM, "--model", "offline"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if done.returncode != 0:
        raise SystemExit(f"CLI run failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    rows, total = [], 0
    for line in done.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            total += int(match.group(1))
            rows.append((match.group(4), int(match.group(1)) / 1000, int(match.group(2)) / 1000,
                         len(match.group(3)) // 2))
    outer = [r for r in rows if r[3] == 0]  # top-level imports: their cumulative times add up
    return {"imports_total_ms": total / 1000, "modules": len(rows),
            "top_level": [list(r[:3]) for r in sorted(outer, key=lambda r: -r[2])[:top]],
            "atomic_vault": [list(r[:3]) for r in sorted((r for r in rows if r[0].startswith("atomic_vault")),
                                                         key=lambda r: -r[1])[:top]]}


def _wall(cmd: list[str], runs: int) -> float:
    walls = []
    for _ in range(runs):
        wall, _, code, err = _timed_child(cmd)
        if code != 0:
            raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{err}")
        walls.append(wall)
    return statistics.median(walls)


def run_startup(runs: int = STARTUP_RUNS) -> dict:
    _importtime("atomic_vault")  # warm the OS file cache and .pyc files
    _importtime("atomic_vault.agent")
    package = [_importtime("atomic_vault") for _ in range(runs)]
    agent = [_importtime("atomic_vault.agent") for _ in range(runs)]
    return {
        "import_atomic_vault_cumulative_ms": statistics.median(p[0] for p in package),
        "import_atomic_vault_total_ms": statistics.median(p[1] for p in package),
        "import_agent_cumulative_ms": statistics.median(a[0] for a in agent),
        "python_startup_s": _wall([sys.executable, "-c", "pass"], runs),
        "import_agent_wall_s": _wall([sys.executable, "-c", "import atomic_vault.agent"], runs),
        "cli_help_wall_s": _wall([_cli_path(), "--help"], runs),
    }


# --------------------------------------------------------------------------- report

def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict) -> str:
    lines = [
        "| notes | generate s | warm median ms | warm p95 ms | stat floor ms | warm calls | fsync / call "
        "| fsync / capture call | capture call ms | CLI median s | CLI min s | CLI peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(results["sizes"], key=int):
        r = results["sizes"][n]
        lines.append(
            f"| {int(n):,} | {_fmt(r.get('generate_s'), 1)} | {_fmt(r['warm_median_ms'])} "
            f"| {_fmt(r['warm_p95_ms'])} | {_fmt(r.get('stat_floor_median_ms'))} "
            f"| {r['warm_calls']} | {r['fsyncs_per_call']} "
            f"| {_fmt(r['fsyncs_per_capture_call'])} | {_fmt(r['capture_median_ms'], 1)} "
            f"| {_fmt(r.get('cli_median_s'), 3)} | {_fmt(r.get('cli_min_s'), 3)} "
            f"| {_fmt(r.get('cli_peak_rss_mb'), 1)} |")
    s = results.get("startup")
    if s:
        lines += [
            "",
            "| start-up | value |",
            "|---|---:|",
            f"| `import atomic_vault` (-X importtime, cumulative) | {s['import_atomic_vault_cumulative_ms']:.2f} ms |",
            f"| `import atomic_vault` (-X importtime, all imports incl. interpreter start) | {s['import_atomic_vault_total_ms']:.2f} ms |",
            f"| `import atomic_vault.agent` (-X importtime, cumulative) | {s['import_agent_cumulative_ms']:.1f} ms |",
            f"| `python -c pass` wall (baseline) | {s['python_startup_s'] * 1000:.1f} ms |",
            f"| `python -c \"import atomic_vault.agent\"` wall | {s['import_agent_wall_s'] * 1000:.1f} ms |",
            f"| `atomic-vault --help` wall | {s['cli_help_wall_s'] * 1000:.1f} ms |",
        ]
    for n in sorted(results["sizes"], key=int):
        lines += ["", *floor_table(int(n), results["sizes"][n], s)]
    imports = results.get("cli_imports")
    if imports:
        lines += ["", f"Cold `atomic-vault run` at 10 notes, -X importtime: {imports['imports_total_ms']:.1f} ms "
                  f"of imports in {imports['modules']} modules. Top-level imports (cumulative ms):",
                  "", "| module | self ms | cumulative ms |", "|---|---:|---:|"]
        lines += [f"| {m} | {a:.1f} | {b:.1f} |" for m, a, b in imports["top_level"]]
        lines += ["", "| atomic_vault module | self ms | cumulative ms |", "|---|---:|---:|"]
        lines += [f"| {m} | {a:.1f} | {b:.1f} |" for m, a, b in imports["atomic_vault"]]
    meta = results.get("meta") or {}
    if meta:
        lines += ["", f"Python {meta.get('python')} on {meta.get('platform')}, {meta.get('cpus')} CPUs; "
                  f"code {meta.get('code', {}).get('sha256')}; child processes "
                  + ("cache bytecode (bench/out/pycache)" if meta.get("pyc_cache")
                     else "use the inherited bytecode settings")]
    checks = []
    for label, n, key, limit, unit in TARGETS:
        r = results["sizes"].get(str(n))
        if not r or r.get(key) is None:
            continue
        value = r[key]
        shown = {"ms": f"{value:.2f} ms", "MB": f"{value:.1f} MB"}.get(unit, f"{value:.3f} s")
        checks.append(f"| {label} | ≤ {limit:g} {unit} | {shown} | "
                      f"{'pass' if value <= limit else 'FAIL'} |")
    if checks:
        lines += ["", "| target (project issue) | limit | measured | |", "|---|---:|---:|---|", *checks]
    return "\n".join(lines)


def floor_table(n: int, r: dict, startup: dict | None) -> list[str]:
    """Each figure of one size next to its floor, as a ratio, with the issue's target."""
    rows = [f"**{n:,} notes** (figures in ms unless said; floors measured in the same worker)", "",
            "| figure | measured | floor | ratio | target |", "|---|---:|---:|---:|---|"]

    def row(label, value, floor, target, fmt="{:.2f}"):
        ratio = f"{value / floor:.2f}" if value is not None and floor else "–"
        rows.append(f"| {label} | {fmt.format(value) if value is not None else '–'} "
                    f"| {fmt.format(floor) if floor is not None else '–'} | {ratio} | {target} |")

    if r.get("capture_fsync_floor_ms") is not None:
        floor = r["stat_floor_median_ms"] + r["capture_fsync_floor_ms"]
        row(f"warm call, one capture (floor: stat + {r['capture_replaces']} replaces × "
            f"{r['replace_floor_ms']:.2f} + {r['capture_appends']} appends × {r['append_floor_ms']:.2f}; "
            f"{r['fsyncs_per_capture_call']} fsyncs)", r["capture_median_ms"], floor, "ratio ≤ 1.5")
    row("warm call, no capture (floor: stat only)", r["warm_median_ms"], r["stat_floor_median_ms"], "–")
    if r.get("loop_calls"):
        row(f"{r['loop_calls']} capturing calls on one instance, slowest (floor: fresh instance, median)",
            r["loop_reused_max_ms"], r["loop_fresh_median_ms"], "every call ≤ fresh")
        rows.append(f"| … reused median / fresh median; calls slower than their fresh twin "
                    f"| {r['loop_reused_median_ms']:.2f} | {r['loop_fresh_median_ms']:.2f} "
                    f"| {r['loop_reused_median_ms'] / r['loop_fresh_median_ms']:.2f} "
                    f"| {r['loop_worse_than_fresh']} of {r['loop_calls']} |")
    if r.get("snapshots_off_median_ms"):
        row(f"warm call with snapshots (floor: the same call storing none, alternated; fsyncs "
            f"{r['snapshots_on_fsyncs']} against {r['snapshots_off_fsyncs']})", r["snapshots_on_median_ms"],
            r["snapshots_off_median_ms"], "ratio ≤ 1.10")
    if r.get("build_notes_per_s"):
        row("first catalog build, notes/s (floor: the target)", r["build_notes_per_s"], 15000.0,
            "≥ 15,000/s", "{:,.0f}")
    if r.get("cli_median_s") is not None:
        python = (startup or {}).get("python_startup_s")
        row("cold CLI run, s (floor: `python -c pass`)", r["cli_median_s"], python,
            "≤ 0.12 s at 10 notes" if n == 10 else "–", "{:.3f}")
        row("cold CLI run, peak RSS MB (floor: the target)", r.get("cli_peak_rss_mb"), 150.0,
            "≤ 150 MB at 100,000" if n == 100_000 else "–", "{:.1f}")
    if r.get("worker_peak_rss_mb"):
        row("warm worker peak RSS MB (floor: the target)", r["worker_peak_rss_mb"], 150.0, "–", "{:.1f}")
    return rows


def _load_previous() -> dict:
    try:
        data = json.loads(RESULTS.read_text(encoding="utf-8"))
        if isinstance(data.get("sizes"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"sizes": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="atomic_vault call benchmarks")
    parser.add_argument("--sizes", help="comma-separated note counts [10,1000,10000,100000]")
    parser.add_argument("--quick", action="store_true", help="only 10 and 1000 notes")
    parser.add_argument("--calls", type=int, help="timed warm calls per size "
                        "[30; 10 from 50,000 notes]")
    parser.add_argument("--capture-calls", type=int, default=9,
                        help="calls that capture one note each [9]")
    parser.add_argument("--cli-runs", type=int, default=CLI_RUNS, help="timed CLI runs [5]")
    parser.add_argument("--no-cli", action="store_true", help="skip the cold CLI runs")
    parser.add_argument("--no-startup", action="store_true", help="skip the import timings")
    parser.add_argument("--no-pyc-cache", action="store_true",
                        help="run child processes with the inherited bytecode settings "
                        "(by default .pyc files are cached under bench/out/pycache)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="server for --backend postgres (a schema per vault size, kept for reuse)")
    parser.add_argument("--backend", choices=["files", "sqlite", "postgres"], default="files",
                        help="memory and log backend of the runs (results-<backend>.json "
                        "for anything but files) [files]")
    parser.add_argument("--no-guardrails", action="store_true",
                        help="turn the sample's cost guardrails off (results-*-noguard.json)")
    parser.add_argument("--loop-calls", type=int, default=50,
                        help="capturing calls on one instance vs a fresh one each [50; 10 from 50,000 notes]")
    parser.add_argument("--no-build", dest="build", action="store_false",
                        help="skip timing a first catalog build with no cache")
    parser.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    global RESULTS, GUARDRAILS, BACKEND
    GUARDRAILS = not args.no_guardrails
    BACKEND = args.backend
    for kind in ("MEMORY", "LOG"):
        os.environ[f"ATOMIC_VAULT_{kind}_BACKEND"] = args.backend  # children inherit it
    if args.backend != "files" or not GUARDRAILS:
        RESULTS = OUT / f"results-{args.backend}{'' if GUARDRAILS else '-noguard'}.json"

    if args.worker:
        print(json.dumps(warm_worker(args.worker, args.calls or 30, args.capture_calls, GUARDRAILS,
                                     args.loop_calls, args.build)))
        return 0

    if args.quick:
        sizes = list(QUICK_SIZES)
    elif args.sizes:
        sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    else:
        sizes = list(ALL_SIZES)

    OUT.mkdir(parents=True, exist_ok=True)
    _set_child_env(pyc_cache=not args.no_pyc_cache)
    results = _load_previous()
    results["meta"] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pyc_cache": not args.no_pyc_cache,
        "code": _code_fingerprint(),
        "finished": None,
    }
    for n in sizes:
        root, generated, generate_s = prepare_vault(n)
        if args.backend == "postgres":
            load_postgres(root, f"{args.postgres}?schema=av_bench_call_{n}")
        _settle(time.time() if generated else 0)
        calls = args.calls or (30 if n < 50_000 else 10)
        print(f"[{n}] warm calls ({calls} timed) ...", flush=True)
        entry = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "code": results["meta"]["code"]["sha256"],
                 "pyc_cache": not args.no_pyc_cache, "generate_s": generate_s,
                 "vault_reused": not generated}
        loops = args.loop_calls if n < 50_000 else min(args.loop_calls, 10)
        entry.update(run_warm(root, calls, args.capture_calls, loops, args.build))
        if not args.no_cli:
            _settle(time.time())  # the captured notes must age before the cache trusts them
            print(f"[{n}] cold CLI runs ({args.cli_runs} timed) ...", flush=True)
            entry.update(run_cli(root, args.cli_runs))
        results["sizes"][str(n)] = entry
        print(f"[{n}] warm median {entry['warm_median_ms']:.2f} ms, "
              f"CLI median {entry.get('cli_median_s') or 0:.3f} s", flush=True)
    if not args.no_startup:
        print("start-up timings ...", flush=True)
        results["startup"] = run_startup()
        if 10 in sizes and not args.no_cli:
            results["cli_imports"] = run_cli_importtime(VAULTS / "10")
    results["meta"]["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(markdown(results))
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
