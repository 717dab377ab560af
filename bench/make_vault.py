"""Generate a benchmark vault: one agent holding N valid, realistic memory notes.

    python bench/make_vault.py ROOT N [--name bench] [--seed 0]

or, from Python, ``make_vault(root, name, n_notes, seed=0)``.

The persona, tools.md and model.md are copied from samples/atlas at run time. Notes follow
the note schema (spec/03): ``memory/<type>_<topic>.md`` with the frontmatter fields in
schema order, and memory/INDEX.md lists every note under its type's section. Three past
journal days of about 2 KB each are written too. Files are written plainly (no fsync), so
100,000 notes take seconds, not minutes.

A file ``bench_vault.json`` at the vault root records what was generated; it is written
last, so its presence means the vault is complete. ``reset_vault`` puts a reused vault
back into its generated state (drops the run log, new journal days and benchmark
captures, restores INDEX.md) so repeated benchmark runs start from the same files.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "atlas"
MANIFEST = "bench_vault.json"
PRISTINE_INDEX = "bench_index_pristine.md"
CAPTURE_PREFIX = "project_bench_note_"  # notes written by the capture benchmark

from atomic_vault.index import SECTIONS  # noqa: E402 - the generator writes the real format
from atomic_vault.notes import CONFIDENCES, NOTE_TYPES  # noqa: E402
MAX_PINNED = 5
DAYS_BACK = 400

# Plain lowercase English words: safe as unquoted YAML scalars and as snake_case topics.
WORDS = """
account action address agenda agreement alert analysis answer approval archive asset audit
backlog balance batch benchmark billing board branch brief budget bug build bundle
calendar call campaign capacity catalog change channel chart check client cluster code
comment commit community company contact contract cost country coverage customer cycle
dashboard data database deadline debt decision delivery demo deploy design detail device
dinner document domain draft driver editor email estimate event evidence expense export
feature feedback figure file filter finance fix folder forecast format forum friday
funding gateway goal grant graph guide habit handover health hiring holiday hosting idea
incident index inbox invoice issue item journal kickoff label launch lead ledger license
limit list loan lunch machine mailbox manual margin market meeting memo metric migration
milestone mobile model module monday month network newsletter note notice offer office
onboarding order outline owner package page partner payment payroll people period permit
pipeline plan platform policy portal pricing priority process product profile project
proposal purchase quarter query quote rate readme receipt record refund region release
renewal report request research review risk roadmap rollout route runbook salary sample
schedule schema scope script season security server service session setup signal sketch
slide sprint staff standup status storage story strategy subscription summary supplier
support survey system table talk target task tax team template tenant test ticket timeline
topic training transfer travel trial update upgrade usage vendor version visit warehouse
webinar website week window workflow workshop
""".split()

ADJECTIVES = """
annual urgent careful quiet monthly weekly early late small large shared private public
internal external final draft open closed steady rough clear brief detailed formal casual
fixed flexible remote local secure fragile stable careful simple complex direct gentle
""".split()

VERBS = """
agreed asked booked checked chose confirmed cut delayed drafted dropped escalated fixed
flagged planned moved noted paid raised reviewed sent shipped signed skipped split started
tested tracked updated wanted wrote prefers expects needs keeps avoids follows measures
""".split()

FILLER = """
the a an this that every each some our their its for with without before after during
about into onto from over under by on at to of and but so then because while when
""".split()

NAMES = "Mira Jonas Ana Pedro Lena Omar Sofia Tomas Ines Ravi Clara Hugo".split()
SOURCE_KINDS = ("journal", "wiki", "email", "meeting", "call")


def _sentence(rng: random.Random, low: int = 6, high: int = 16) -> str:
    words = []
    for _ in range(rng.randint(low, high)):
        roll = rng.random()
        if roll < 0.45:
            words.append(rng.choice(WORDS))
        elif roll < 0.6:
            words.append(rng.choice(ADJECTIVES))
        elif roll < 0.72:
            words.append(rng.choice(VERBS))
        elif roll < 0.75:
            words.append(rng.choice(NAMES))
        else:
            words.append(rng.choice(FILLER))
    if rng.random() < 0.25:
        words.insert(rng.randint(1, len(words) - 1), f"{rng.randint(2, 90)}")
    text = " ".join(words)
    if rng.random() < 0.2:
        cut = text.find(" ", len(text) // 2)
        if cut > 0:
            text = text[:cut] + "," + text[cut:]
    return text[0].upper() + text[1:] + "."


def _body(rng: random.Random) -> str:
    """300-1200 characters: a paragraph or two, sometimes a bullet list."""
    target = rng.randint(300, 1200)
    parts: list[str] = []
    size = -2  # the first block has no separator before it
    while size < target:
        if parts and rng.random() < 0.3:
            block = "\n".join(f"- {_sentence(rng, 4, 10)}" for _ in range(rng.randint(2, 4)))
        else:
            block = " ".join(_sentence(rng) for _ in range(rng.randint(2, 4)))
        parts.append(block)
        size += len(block) + 2
    text = "\n\n".join(parts)
    if len(text) > 1200:
        cut = text.rfind(" ", 0, 1199)
        text = text[:cut].rstrip(",") + "."
    return text


def _description(rng: random.Random) -> str:
    text = _sentence(rng, 6, 14).rstrip(".")
    if len(text) >= 120:
        text = text[:text.rfind(" ", 0, 118)]
    return text.rstrip(",")


def _sources(rng: random.Random, captured: date) -> list[str]:
    found = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(SOURCE_KINDS)
        if kind == "journal":
            found.append(f"journal/{captured:%Y-%m}/{captured:%Y-%m-%d}.md")
        elif kind == "wiki":
            found.append(f"wiki/{rng.choice(WORDS)}-{rng.choice(WORDS)}.md")
        elif kind == "email":
            found.append(f"email from {rng.choice(NAMES)} about the {rng.choice(WORDS)}")
        else:
            found.append(f"{kind} with {rng.choice(NAMES)} on {captured.isoformat()}")
    return list(dict.fromkeys(found))


def _note(rng: random.Random, i: int, width: int, today: date, pinned: bool
          ) -> tuple[str, str, str, str, str]:
    """(file name, type, name, description, file text) of note number ``i``."""
    note_type = NOTE_TYPES[i % len(NOTE_TYPES)]
    first, second = rng.choice(WORDS), rng.choice(WORDS)
    topic = f"topic_{i:0{width}d}_{first}_{second}"
    filename = f"{note_type}_{topic}.md"
    name = f"{first.capitalize()} {second} {i}"
    description = _description(rng)
    captured = today - timedelta(days=rng.randint(0, DAYS_BACK - 1))
    last_seen = captured + timedelta(days=rng.randint(0, (today - captured).days))
    lines = [
        "---",
        "schema_version: 1",
        f"name: {name}",
        f"description: {description}",
        f"type: {note_type}",
        f"captured: {captured.isoformat()}",
        f"last_seen: {last_seen.isoformat()}",
        "sources:",
        *(f"- {source}" for source in _sources(rng, captured)),
        f"confidence: {rng.choice(CONFIDENCES)}",
    ]
    if pinned:
        lines.append("pinned: true")
    lines += ["---", _body(rng), ""]
    return filename, note_type, name, description, "\n".join(lines)


def _index(entries: list[tuple[str, str, str, str]]) -> str:
    by_type: dict[str, list[str]] = {t: [] for t in NOTE_TYPES}
    for filename, note_type, name, description in entries:
        by_type[note_type].append(f"- [{name}]({filename}) — {description}")
    parts = ["# Memory Index", ""]
    for note_type in NOTE_TYPES:
        parts.append(f"## {SECTIONS[note_type]}")
        parts.extend(sorted(by_type[note_type], key=str.casefold))
        parts.append("")
    parts += ["## Archive", ""]
    return "\n".join(parts)


def _journal_day(rng: random.Random, day: date, target: int = 1800) -> str:
    parts = [f"# {day.isoformat()}\n"]
    size = len(parts[0])
    hour = 8
    while size < target:
        hour = min(hour + rng.randint(0, 2), 22)
        stamp = f"{hour:02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        trigger = rng.choice(("cron", "manual", "script"))
        run_id = f"{day:%Y%m%d}T{stamp.replace(':', '')}-{rng.getrandbits(32):08x}"
        work = " ".join(_sentence(rng, 8, 18) for _ in range(rng.randint(1, 2)))
        answer = " ".join(_sentence(rng) for _ in range(rng.randint(2, 3)))
        section = (f"\n## {stamp} · {trigger} · run {run_id}\n\n**Work item:** {work}\n\n"
                   f"**Answer:** {answer}\n\n**Captures:** none\n")
        parts.append(section)
        size += len(section.encode("utf-8"))
    return "".join(parts)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def make_vault(root: str | Path, name: str, n_notes: int, seed: int = 0) -> Path:
    """Write a vault at ``root`` with agent ``name`` holding ``n_notes`` notes; returns the
    agent folder. An agent folder of that name generated earlier by this function is
    replaced; any other existing folder is refused, never deleted."""
    if n_notes < 0:
        raise ValueError("n_notes must be >= 0")
    root = Path(root)
    agent = root / name
    if agent.exists():
        previous = read_manifest(root)
        if not previous or previous.get("agent") != name:
            raise FileExistsError(f"{agent} exists and was not generated by make_vault; "
                                  "pick another root or name")
        shutil.rmtree(agent)
    (root / MANIFEST).unlink(missing_ok=True)
    rng = random.Random(seed)
    today = date.today()

    shutil.copytree(SAMPLE / "persona", agent / "persona")
    for extra in ("tools.md", "model.md"):
        shutil.copyfile(SAMPLE / extra, agent / extra)

    memory = agent / "memory"
    memory.mkdir()
    width = max(5, len(str(max(n_notes - 1, 0))))
    pinned_left = MAX_PINNED
    entries: list[tuple[str, str, str, str]] = []
    for i in range(n_notes):
        pinned = pinned_left > 0 and rng.random() < 1 / 200
        pinned_left -= pinned
        filename, note_type, title, description, text = _note(rng, i, width, today, pinned)
        _write(memory / filename, text)
        entries.append((filename, note_type, title, description))
    index_text = _index(entries)
    _write(memory / "INDEX.md", index_text)
    _write(root / PRISTINE_INDEX, index_text)

    journal_files = []
    for back in (3, 2, 1):
        day = today - timedelta(days=back)
        path = agent / "journal" / f"{day:%Y-%m}" / f"{day:%Y-%m-%d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, _journal_day(rng, day))
        journal_files.append(path.relative_to(agent).as_posix())

    manifest = {"agent": name, "n_notes": n_notes, "seed": seed,
                "pinned": MAX_PINNED - pinned_left, "generated": today.isoformat(),
                "journal": journal_files}
    _write(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return agent


def read_manifest(root: str | Path) -> dict | None:
    try:
        return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def reset_vault(root: str | Path) -> None:
    """Undo what benchmark runs wrote into a generated vault (log, new journal days,
    captured notes, INDEX changes). The derived catalog cache is kept on purpose."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{root} holds no generated vault ({MANIFEST} is missing)")
    agent = root / manifest["agent"]
    shutil.rmtree(agent / "log", ignore_errors=True)
    keep = set(manifest["journal"])
    journal = agent / "journal"
    for path in sorted(journal.rglob("*"), reverse=True):
        rel = path.relative_to(agent).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for path in (agent / "memory").glob(f"{CAPTURE_PREFIX}*.md"):
        path.unlink()
    pristine = (root / PRISTINE_INDEX).read_bytes()
    index = agent / "memory" / "INDEX.md"
    if index.read_bytes() != pristine:
        index.write_bytes(pristine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="vault folder to write (created if missing)")
    parser.add_argument("n_notes", type=int, help="how many notes the agent holds")
    parser.add_argument("--name", default="bench", help="agent name [bench]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        agent = make_vault(args.root, args.name, args.n_notes, seed=args.seed)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.n_notes} notes to {agent} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
