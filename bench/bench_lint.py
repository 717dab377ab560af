"""Lint benchmark: how long `lint` takes at 10,000 notes, on files, SQLite and PostgreSQL.

    python bench/bench_lint.py [--notes 10000] [--plant 100] [--postgres URL | --no-postgres]

The generated vault of bench/make_vault.py (bench/out/vaults/<n>, reused) is copied to
bench/out/lint/<n>, and ``--plant`` pairs of duplicates are added to the copy: half exact
copies of a note under another name, half near-duplicates (one word of the body changed).
Then, for each memory backend:

- ``lint.lint`` in this process (the notes are read through the backend; the first pass
  pays the catalog build, the second is warm), with how many findings of each check;
- files only: ``atomic-vault lint NAME --json`` as a new process (what an operator waits for).

PostgreSQL: the notes are loaded with ``put`` into a schema of its own, dropped at the end.
Results go to bench/out/lint.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_call import AGENT, OUT, prepare_vault  # noqa: E402

from atomic_vault import lint  # noqa: E402
from atomic_vault.backends.files import FileMemory  # noqa: E402
from atomic_vault.backends.sqlite import SQLiteMemory  # noqa: E402
from atomic_vault.config import load_model_config  # noqa: E402
from atomic_vault.vault import AgentFolder  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def planted_copy(n: int, plant: int) -> Path:
    source, _, _ = prepare_vault(n)
    root = OUT / "lint" / str(n)
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source, root)
    memory = root / AGENT / "memory"
    notes = sorted(p for p in memory.glob("*.md") if p.name != "INDEX.md")
    for i, path in enumerate(notes[:plant]):
        text = path.read_text(encoding="utf-8")
        if i % 2:  # near-duplicate: one word of the body changed
            head, sep, body = text.rpartition("\n---\n")
            words = body.split(" ")
            words[len(words) // 2] = "changed"
            text = head + sep + " ".join(words)
        (memory / path.name.replace(".md", "_copy.md")).write_text(text, encoding="utf-8")
    return root


def timed(memory, folder: AgentFolder) -> dict:
    config = load_model_config(folder.model)
    out = {}
    for label in ("first", "warm"):
        started = time.perf_counter()
        found = lint.lint(folder, memory, config, date.today())
        out[f"{label}_s"] = round(time.perf_counter() - started, 3)
    out["findings"] = dict(sorted(Counter(f.check for f in found).items()))
    out["pairs_compared"] = dict(lint.COMPARED)  # against n*(n-1)/2 for every pair
    return out


def postgres(folder: AgentFolder, base: str) -> dict:
    """The notes loaded into a schema of their own (dropped after), then timed; the
    server's error instead when it cannot be reached."""
    import psycopg

    from atomic_vault.backends.postgres import PostgresMemory

    schema = f"av_bench_{uuid.uuid4().hex[:12]}"
    try:
        memory = PostgresMemory(f"{base}?schema={schema}")
        files = FileMemory()
        started = time.perf_counter()
        for path in sorted(folder.memory.glob("*.md")):
            if path.name != "INDEX.md":
                memory.put(folder, path.name, files.get(folder, path.name))
        memory.put_index(folder, files.get_index(folder))
        return {"load_s": round(time.perf_counter() - started, 3), **timed(memory, folder)}
    except (psycopg.Error, Exception) as exc:  # a busy or absent server: say so, keep the rest
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except psycopg.Error:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=10_000)
    parser.add_argument("--plant", type=int, default=100)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    root = planted_copy(args.notes, args.plant)
    folder = AgentFolder(root, AGENT)
    results: dict = {"notes": args.notes + args.plant, "planted_pairs": args.plant}
    results["files"] = timed(FileMemory(), folder)
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("atomic-vault")), "--root", str(root), "lint",
                           AGENT, "--json"], capture_output=True, text=True)
    results["files"]["cli_s"] = round(time.perf_counter() - started, 3)
    results["files"]["cli_exit"] = done.returncode
    results["sqlite"] = timed(SQLiteMemory(), folder)
    if not args.no_postgres:
        results["postgres"] = postgres(folder, args.postgres)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lint.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    n = results["notes"]
    print(f"lint at {n:,} notes ({args.plant} planted duplicate pairs); every pair would be {n * (n - 1) // 2:,}")
    print(f"{'backend':<10} {'first s':>8} {'warm s':>8} {'cli s':>7}  findings")
    for name in ("files", "sqlite", "postgres"):
        row = results.get(name)
        if row and "error" in row:
            print(f"{name:<10} not measured: {row['error']}")
        elif row:
            print(f"{name:<10} {row['first_s']:>8} {row['warm_s']:>8} {row.get('cli_s', '-'):>7}  {row['findings']}")
            print(f"{'':<10} candidate pairs compared: {row['pairs_compared']}")


if __name__ == "__main__":
    main()
