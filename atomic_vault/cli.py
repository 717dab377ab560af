"""The atomic-vault command line (click). Commands import what they need when they run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_BUSY = 0, 1, 2, 3, 4


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _fail(exc: Exception) -> None:
    from .errors import LockTimeout

    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_BUSY if isinstance(exc, LockTimeout) else EXIT_ERROR)


def _folder(ctx: click.Context, name: str):
    from .vault import open_agent

    return open_agent(name, ctx.obj["root"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="ATOMIC_VAULT_ROOT", type=click.Path(file_okay=False),
              help="Vault folder holding the agents [env ATOMIC_VAULT_ROOT; default ~/agents].")
@click.version_option(package_name="atomic-vault")
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """Run AI agents whose whole state lives in plain Markdown and JSONL files.

    Exit codes: 0 ok, 1 error, 2 usage error, 3 run skipped (cost guardrail),
    4 agent busy (lock not acquired in time).
    """
    ctx.obj = {"root": root}


@cli.command()
@click.argument("name")
@click.option("--model", default="offline", show_default=True,
              help="Model written into model.md (provider:model).")
@click.option("--operator", default="the operator", show_default=True,
              help="Who the agent works for, written into persona/USER.md.")
@click.option("--role", default="a careful personal assistant", show_default=True,
              help="What the agent is, written into persona/IDENTITY.md.")
@click.pass_context
def init(ctx: click.Context, name: str, model: str, operator: str, role: str) -> None:
    """Create agent NAME from the templates (non-interactive; needs no API key)."""
    from .errors import AtomicVaultError
    from .scaffold import create_agent

    try:
        folder = create_agent(ctx.obj["root"], name, model=model, operator=operator, role=role)
    except AtomicVaultError as exc:
        _fail(exc)
    click.echo(f"created {folder.path}")
    click.echo(f"next: atomic-vault --root {folder.root} run {name} \"say hello\"")


@cli.command()
@click.argument("name")
@click.argument("work_item")
@click.option("--model", help="Override model.md for this run, e.g. offline.")
@click.option("--trigger", default="manual", show_default=True,
              help="Recorded as the run's trigger (cron, manual, script...).")
@click.option("--critical", is_flag=True,
              help="Mark the run critical, recorded in the log (cost guardrails, once enforced, let it pass).")
@click.option("--no-wait", is_flag=True, help="Exit 4 at once if another run holds the lock.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the agent's lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the run result as JSON.")
@click.pass_context
def run(ctx: click.Context, name: str, work_item: str, model: str | None, trigger: str,
        critical: bool, no_wait: bool, lock_timeout: float, as_json: bool) -> None:
    """Run agent NAME on WORK_ITEM ('-' reads it from standard input)."""
    from dataclasses import asdict

    from .agent import AtomicAgent
    from .errors import AtomicVaultError

    if work_item == "-":
        work_item = sys.stdin.read()
    try:
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger=trigger, model=model,
                            lock_timeout=0 if no_wait else lock_timeout)
        result = agent.call(work_item, critical=critical)
    except AtomicVaultError as exc:
        _fail(exc)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _dump(asdict(result))
    else:
        click.echo(result.text.rstrip("\n"))
        written = [c["file"] for c in result.captures if c["status"] != "rejected"]
        rejected = [c for c in result.captures if c["status"] == "rejected"]
        cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
        click.echo(f"\n— run {result.run_id} · seq {result.seq} · {result.model} · "
                   f"{result.input_tokens}→{result.output_tokens} tokens · {cost} · "
                   f"captured {len(written)}" + (f", rejected {len(rejected)}" if rejected else ""),
                   err=True)
        for item in rejected:
            click.echo(f"rejected capture {item.get('name') or ''}: {item['reason']}", err=True)
    sys.exit(EXIT_SKIPPED if result.status == "skipped" else EXIT_OK)


@cli.command()
@click.argument("name", required=False)
@click.option("--repair", is_flag=True, help="Fix what is safe to fix and say what was done.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, name: str | None, repair: bool, as_json: bool) -> None:
    """Check one agent (or every agent in the vault): layout, notes, INDEX, log, chain, locks."""
    from . import doctor as checks
    from .errors import AtomicVaultError
    from .vault import list_agents, resolve_root

    names = [name] if name else list_agents(ctx.obj["root"])
    if not names:
        _fail(click.ClickException(f"no agents in {resolve_root(ctx.obj['root'])}"))
    findings, actions = [], {}
    for agent_name in names:
        try:
            folder = _folder(ctx, agent_name)
            if repair:
                actions[agent_name] = checks.repair(folder)
            findings += checks.check(folder)
        except AtomicVaultError as exc:
            findings.append(checks.Finding(agent_name, "agent", "error", exc.message, exc.path, exc.fix))
    errors = sum(f.level == "error" for f in findings)
    if as_json:
        _dump({"ok": errors == 0, "findings": checks.as_dicts(findings), "repairs": actions})
    else:
        for agent_name, done in actions.items():
            for action in done or ["nothing to repair"]:
                click.echo(f"{agent_name}: repaired: {action}")
        marks = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
        for f in findings:
            where = f" [{f.path}]" if f.path and f.level != "ok" else ""
            fix = f"\n        fix: {f.fix}" if f.fix and f.level != "ok" else ""
            click.echo(f"{marks[f.level]} {f.agent}: {f.check}: {f.message}{where}{fix}")
    sys.exit(EXIT_ERROR if errors else EXIT_OK)


@cli.command()
@click.argument("name")
@click.option("--anchor", metavar="SEQ:HASH", help="Also check the log against a HEAD kept elsewhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@click.pass_context
def verify(ctx: click.Context, name: str, anchor: str | None, as_json: bool) -> None:
    """Verify agent NAME's hash-chained log; exit 1 at the first broken record."""
    from . import runlog
    from .errors import AtomicVaultError

    try:
        result = runlog.verify(_folder(ctx, name), anchor)
    except AtomicVaultError as exc:
        _fail(exc)
    if as_json:
        _dump(result.as_dict())
    else:
        legacy = f" ({result.legacy} legacy records before the chain)" if result.legacy else ""
        if result.ok:
            head = result.head or {}
            click.echo(f"ok: {result.records} records verify{legacy}; "
                       f"head {head.get('seq', 0)}:{head.get('hash')}")
        else:
            bad = result.first_bad
            click.echo(f"BROKEN at {bad['file']}:{bad['line']} (seq {bad['seq']}): {bad['reason']}")
        for warning in result.warnings:
            click.echo(f"warning: {warning}")
    sys.exit(EXIT_OK if result.ok else EXIT_ERROR)


@cli.command()
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, help="How many recent records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line (for jq).")
@click.pass_context
def log(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """Show agent NAME's most recent runs, newest last."""
    from collections import deque

    from . import runlog
    from .errors import AtomicVaultError

    try:
        recent = deque((r for _, _, r in runlog.records(_folder(ctx, name))), maxlen=max(limit, 0))
    except AtomicVaultError as exc:
        _fail(exc)
    for record in recent:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        cost = record.get("cost_usd")
        cost_text = f"${cost:.4f}" if isinstance(cost, (int, float)) else "?"
        seq, ts, status, trigger, model, summary = (str(record.get(key, "-")) for key in (
            "seq", "ts", "status", "trigger", "model", "summary"))
        click.echo(f"{seq:>5} {ts[:19]:<19} {status:<7} {trigger:<8} {model:<12} {cost_text:>9}  "
                   f"{' '.join(summary.split())[:60]}")


@cli.command()
@click.argument("name")
@click.argument("action", default="list", type=click.Choice(["list", "show"]))
@click.argument("note", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def notes(ctx: click.Context, name: str, action: str, note: str | None, as_json: bool) -> None:
    """List agent NAME's notes, or `show NOTE` (a file name such as project_x.md)."""
    from . import catalog
    from .errors import AtomicVaultError
    from .notes import FILENAME

    try:
        folder = _folder(ctx, name)
        summaries, broken = catalog.scan(folder, persist=False)
    except AtomicVaultError as exc:
        _fail(exc)
    if action == "show":
        if not note or not FILENAME.match(note) or not (folder.memory / note).is_file():
            _fail(click.ClickException(f"no note {note!r} in {folder.memory}; "
                                       "see `atomic-vault notes NAME list`"))
        click.echo((folder.memory / note).read_text(encoding="utf-8"), nl=False)
        return
    rows = sorted(summaries.values(), key=lambda s: (s["type"], s["file"]))
    if as_json:
        _dump({"notes": rows, "invalid": {file: str(error) for file, error in broken.items()}})
        return
    for s in rows:
        flags = "".join(["P" if s["pinned"] else " ", "S" if s["superseded_by"] else " ",
                         "A" if s["archived"] else " "])
        click.echo(f"{flags} {s['last_seen']}  {s['file']:<48} {s['description'][:70]}")
    for file, error in sorted(broken.items()):
        click.echo(f"!   invalid     {file}: {error}", err=True)


def main() -> None:
    cli(prog_name="atomic-vault")
