"""Recall of the prompt: is the note that answers the work item in the prompt, in full?

    python bench/bench_recall.py [--sizes 1000,10000,100000] [--questions 200]
                                 [--backends files,sqlite,postgres] [--no-postgres]

A generated vault of N notes (offline, no model): each note states one distinct fact, "The
door code of the Korvath office is 4417.", inside a paragraph of filler, under a name and
description that do not give the fact away (random topic words). Facts share their words
on purpose: the same place has many facts, the same kind of fact exists for many places,
so only the right combination of words finds the note. The questions ask as a person
would, with the fact's key terms: "What is the door code of the Korvath office?".

For each size and backend, every question's prompt is assembled twice, as a run does it
(assembly.assemble, the agent's real configuration), and the answering note is looked up
among the layers sent (whole, not truncated):

- "recent only": the relevant layer off (``relevant: {count: 0}``), 5 recent notes.
- "relevant": the relevant layer on (``relevant: {count: 5, share: 0.2}``), 5 recent notes.

recall@1: the note is the first relevant note (recent only: the newest recent note);
recall@5: it is among the first five relevant (recent only: recent) notes. Added time per
call: the median (and p95) time of the layer's own work in a call (the search, the hits'
texts, the choice), warm (the process has assembled once; the files backend's word index
and SQLite's FTS5 index are built by then); the medians of whole assemblies with and
without the layer are printed too (on a loaded machine their difference is mostly noise).
The layer's CPU time (this process only) is printed beside its wall time: on a shared
machine it is the closer estimate of the unloaded cost for files and SQLite.

Vaults are written under bench/out/recall/ (reused when present); PostgreSQL loads the
notes into a schema of its own, dropped at the end. Results: bench/out/recall.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
sys.path.insert(0, str(ROOT.parent))

from atomic_vault import catalog  # noqa: E402
from atomic_vault.assembly import assemble  # noqa: E402
from atomic_vault.backends.files import FileJournal, FileMemory  # noqa: E402
from atomic_vault.config import ModelConfig, Relevance  # noqa: E402
from atomic_vault.notes import render_note  # noqa: E402
from atomic_vault.relevance import relevant_notes  # noqa: E402
from atomic_vault.vault import AgentFolder  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
AGENT = "recall"
TODAY = "2026-11-22"
SYLLABLES = "ka lo mi ren tor vash bel dru fen gal hor isk jun kel mar nol pra quin sel tav".split()
PLACES = "office warehouse lab store depot studio clinic school library garage hangar kitchen".split()
# (fact words, a question asking for them, how a value looks)
FACTS = [
    ("door code", "What is the door code of the {place}?", "{n4}"),
    ("wifi password", "What is the wifi password at the {place}?", "{word}-{n3}"),
    ("parking spot", "Which parking spot belongs to the {place}?", "P{n3}"),
    ("alarm pin", "What is the alarm pin for the {place}?", "{n4}"),
    ("landlord phone", "What is the landlord phone number of the {place}?", "+351 {n3} {n4}"),
    ("opening hour", "At what opening hour does the {place} start?", "{hour}:00"),
    ("closing hour", "What is the closing hour of the {place}?", "{hour}:30"),
    ("floor number", "On which floor number is the {place}?", "floor {n1}"),
    ("mailbox key", "Where is the mailbox key of the {place} kept?", "{word} drawer"),
    ("fire exit", "Where is the fire exit of the {place}?", "behind the {word}"),
    ("cleaning day", "Which cleaning day does the {place} have?", "{day}"),
    ("delivery gate", "Which delivery gate serves the {place}?", "gate {n1}"),
    ("printer model", "What printer model does the {place} use?", "{word} {n3}"),
    ("insurance policy", "What is the insurance policy number of the {place}?", "IP-{n4}{n3}"),
    ("water meter", "What does the water meter of the {place} read?", "{n4} m3"),
    ("manager name", "Who is the manager name on file for the {place}?", "{name}"),
    ("safe combination", "What is the safe combination in the {place}?", "{n3}-{n3}"),
    ("lease end", "When does the lease end for the {place}?", "{day} {hour} May"),
    ("bike rack", "Where is the bike rack of the {place}?", "next to the {word}"),
    ("recycling bin", "Which colour is the recycling bin at the {place}?", "{word}"),
]
FILLER = ("we noted this during the review and kept it for later reference the team agreed "
          "it matters for planning next quarter budget visits and the usual weekly checks "
          "someone should confirm it again after the next update").split()
TOPICS = ("account agenda audit backlog budget calendar client contract dashboard deadline "
          "delivery design draft event expense feature finance forecast handover invoice "
          "kickoff launch ledger meeting memo metric milestone newsletter onboarding payment "
          "pipeline plan policy portal pricing proposal quarter receipt report review "
          "roadmap rollout runbook schedule sprint standup status strategy summary survey "
          "ticket timeline training travel update vendor webinar workflow workshop").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday".split()


def entity_names(count: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize())
    return sorted(names)


def value(pattern: str, rng: random.Random) -> str:
    return pattern.format(n1=rng.randint(1, 9), n3=rng.randint(100, 999), n4=rng.randint(1000, 9999),
                          hour=rng.randint(6, 11), word=rng.choice(TOPICS), day=rng.choice(WEEKDAYS),
                          name=rng.choice(SYLLABLES).capitalize() + rng.choice(SYLLABLES))


def make_vault(root: Path, n: int, seed: int = 0) -> list[dict]:
    """N notes, one fact each; returns the facts (file, question). Reused when present."""
    done = root / "facts.json"
    if done.exists():
        return json.loads(done.read_text())
    rng = random.Random(seed)
    entities = entity_names(max(20, n // (len(PLACES) * len(FACTS)) * 2 + 10), rng)
    triples = set()
    while len(triples) < n:
        triples.add((rng.choice(entities), rng.choice(PLACES), rng.randrange(len(FACTS))))
    folder = root / AGENT
    (folder / "persona").mkdir(parents=True, exist_ok=True)
    (folder / "memory").mkdir(exist_ok=True)
    (folder / "persona" / "IDENTITY.md").write_text("# Recall\n\nI keep facts about our sites.\n")
    facts = []
    for i, (entity, place, k) in enumerate(sorted(triples)):
        words, question, pattern = FACTS[k]
        where = f"{entity} {place}"
        topic = " ".join(rng.sample(TOPICS, 2))
        filler = " ".join(rng.choice(FILLER) for _ in range(rng.randint(25, 60)))
        cut = rng.randint(0, len(filler))
        cut = filler.rfind(" ", 0, cut) + 1
        body = (f"{filler[:cut]}The {words} of the {where} is {value(pattern, rng)}. "
                f"{filler[cut:]}").strip()
        file = f"reference_{topic.replace(' ', '_')}_{i}.md"
        seen = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"
        text = render_note({"schema_version": 1, "name": f"{topic} {i}",
                            "description": f"notes from the {topic} work", "type": "reference",
                            "captured": "2026-01-01", "last_seen": seen, "sources": ["bench"],
                            "confidence": "high"}, body)
        (folder / "memory" / file).write_text(text)
        facts.append({"file": file, "question": question.format(place=where)})
    done.write_text(json.dumps(facts))
    return facts


def open_memory(kind: str, folder: AgentFolder, postgres: str | None):
    if kind == "files":
        return FileMemory(), None
    if kind == "sqlite":
        from atomic_vault.backends.sqlite import SQLiteMemory

        memory = SQLiteMemory()
        memory.reindex(folder)
        return memory, None
    from atomic_vault.backends.postgres import PostgresMemory

    schema = f"bench_recall_{uuid.uuid4().hex[:8]}"
    memory = PostgresMemory(f"{postgres}?schema={schema}")
    files = FileMemory()
    for file in catalog.scan(folder)[0]:
        memory.put(folder, file, files.get(folder, file))
    return memory, schema


def prompt(memory, folder: AgentFolder, config: ModelConfig, work: str):
    if callable(getattr(memory, "selection", None)):
        pinned, recent, broken = memory.selection(folder, TODAY, config.recent_notes)
        notes, chosen = {}, (pinned, recent)
    else:
        (notes, broken), chosen = memory.scan(folder), None
    return assemble(folder, config, notes, work, TODAY, memory, FileJournal(), broken, chosen)


def measure(memory, folder: AgentFolder, facts: list[dict], questions: int) -> dict:
    base = ModelConfig(recent_notes=5, journal_days=0)
    configs = {"recent only": replace(base, relevant=Relevance(0, 0.2)),
               "relevant": replace(base, relevant=Relevance(5, 0.2))}
    asked = random.Random(1).sample(facts, min(questions, len(facts)))
    out: dict = {}
    for label, config in configs.items():
        prompt(memory, folder, config, asked[0]["question"])  # warm
        at1 = at5 = 0
        times = []
        for fact in asked:
            started = time.perf_counter()
            made = prompt(memory, folder, config, fact["question"])
            times.append((time.perf_counter() - started) * 1000)
            kind = "relevant note" if config.relevant.count else "recent note"
            sent = [layer.source for layer in made.layers if layer.layer == kind and not layer.truncated]
            if kind == "recent note":
                sent.reverse()  # newest first
            target = f"memory/{fact['file']}"
            at1 += sent[:1] == [target]
            at5 += target in sent[:5]
        out[label] = {"recall@1": round(at1 / len(asked), 3), "recall@5": round(at5 / len(asked), 3),
                      "assemble_p50_ms": round(statistics.median(times), 3)}
    # The layer's own work (search, the hits' texts, the choice), timed apart: on a loaded
    # machine the difference of two assembly medians is mostly the noise of the scan.
    layer, cpu = [], []
    for fact in asked:
        if callable(getattr(memory, "selection", None)):
            pinned, _, broken = memory.selection(folder, TODAY, 5)
            notes = {}
        else:
            notes, broken = memory.scan(folder)
            pinned = [f for f, s in notes.items() if s["pinned"]]
        started, started_cpu = time.perf_counter(), time.process_time()
        relevant_notes(folder, memory, notes, fact["question"], TODAY, 5, {*pinned, *broken})
        layer.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    out["added_ms"] = round(statistics.median(layer), 3)
    out["added_p95_ms"] = round(sorted(layer)[int(0.95 * (len(layer) - 1))], 3)
    # CPU time of this process: what the layer costs when the machine is not shared (a
    # database server's own work on another process is not in it: PostgreSQL's is wall only).
    out["added_cpu_ms"] = round(statistics.median(cpu), 3)
    out["questions"] = len(asked)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--backends", default="files,sqlite,postgres")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for the PostgreSQL runs")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    kinds = [k for k in args.backends.split(",") if k and not (k == "postgres" and args.no_postgres)]
    if "postgres" in kinds:
        try:
            import psycopg

            psycopg.connect(args.postgres, connect_timeout=3).close()
        except Exception as exc:  # noqa: BLE001 - any reason means: not reachable
            print(f"PostgreSQL not reachable ({exc.__class__.__name__}); skipped", file=sys.stderr)
            kinds.remove("postgres")
    results = json.loads((OUT / "recall.json").read_text()) if (OUT / "recall.json").exists() else {}
    for size in [int(s) for s in args.sizes.split(",")]:
        root = OUT / "recall" / f"v{size}"
        started = time.perf_counter()
        facts = make_vault(root, size)
        folder = AgentFolder(root, AGENT)
        catalog.scan(folder)
        print(f"{size} notes: vault ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for kind in kinds:
            started = time.perf_counter()
            schema = None
            try:
                memory, schema = open_memory(kind, folder, args.postgres)
                results[f"{kind}/{size}"] = measure(memory, folder, facts, args.questions)
            except Exception as exc:  # noqa: BLE001 - a server that went away: say so, go on
                if kind != "postgres":
                    raise
                print(f"  postgres failed: {exc}", file=sys.stderr)
                continue
            finally:
                if schema:
                    import psycopg

                    with psycopg.connect(args.postgres, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            print(f"  {kind}: {time.perf_counter() - started:.1f} s {results[f'{kind}/{size}']}",
                  file=sys.stderr)
            OUT.mkdir(exist_ok=True)
            (OUT / "recall.json").write_text(json.dumps(results, indent=2))
    print("| backend | notes | recent only r@1 | r@5 | relevant r@1 | r@5 | assemble ms (without → with) "
          "| added ms p50 / p95 (CPU p50) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, r in sorted(results.items(), key=lambda kv: (kv[0].split("/")[0], int(kv[0].split("/")[1]))):
        kind, size = key.split("/")
        print(f"| {kind} | {int(size):,} | {r['recent only']['recall@1']} | {r['recent only']['recall@5']} | "
              f"{r['relevant']['recall@1']} | {r['relevant']['recall@5']} | "
              f"{r['recent only']['assemble_p50_ms']} → {r['relevant']['assemble_p50_ms']} | "
              f"{r['added_ms']} / {r.get('added_p95_ms', '-')} ({r.get('added_cpu_ms', '-')}) |")


if __name__ == "__main__":
    main()
