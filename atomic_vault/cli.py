"""The atomic-vault command line (click). Commands import what they need when they run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_BUSY = 0, 1, 2, 3, 4


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _fail(exc: Exception, agent: str | None = None) -> None:
    """One line on stderr, naming the file and the fix, and the exit code: never a traceback."""
    from .errors import LockTimeout

    text = _disk_error(exc, agent or "AGENT") if isinstance(exc, OSError) else str(exc)
    click.echo("error: " + " ".join(text.split()), err=True)
    sys.exit(EXIT_BUSY if isinstance(exc, LockTimeout) else EXIT_ERROR)


def _disk_error(exc: OSError, agent: str) -> str:
    """A failed read or write of the disk (full, I/O error, permissions), as the file and the fix."""
    import errno

    where = exc.filename or "a file of the vault"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free space on the disk holding the vault (or raise the quota), then run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the file and its folder writable by the user running atomic-vault"
    elif exc.errno == errno.EIO:
        fix = "the disk reported an I/O error: check it before running again"
    else:
        fix = "check the disk and the file"
    return (f"{where}: {exc.strerror or exc} (fix: {fix}; `atomic-vault doctor {agent}` "
            "then checks the agent)")


# Argument checks. Text that reaches the files must be valid Unicode (an argument holding
# bytes that are not UTF-8 arrives as lone surrogates, which cannot be written), and text
# that lands inside a line of the journal (trigger, operator, role) must be one line.
_BREAKS = set(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]))


def _unicode_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid UTF-8 text (character {exc.start})"
    return None


def _text(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Any text argument: valid Unicode, no NUL."""
    for item in value if isinstance(value, tuple) else [value]:
        problem = _unicode_problem(item) if isinstance(item, str) else None
        if problem:
            raise click.BadParameter(f"{problem}; pass plain UTF-8 text")
    return value


def _line(limit: int):
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        _text(ctx, param, value)
        if not value.strip() or len(value) > limit or _BREAKS.intersection(value):
            raise click.BadParameter(f"must be one line of 1 to {limit} characters without "
                                     "control characters")
        return value
    return check


def _model_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from .config import MODEL_NAME

    if value is not None and not MODEL_NAME.match(value):
        raise click.BadParameter(f"{value!r} is not a model name; write provider:model, e.g. offline")
    return value


def _seconds(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not 0 <= value < float("inf"):  # also refuses nan
        raise click.BadParameter(f"{value} is not a number of seconds (0 or more)")
    return value


class _Path(click.Path):
    """click.Path that reports a NUL byte as a bad value (click's own check crashes on it)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail("contains a NUL byte; pass a folder path", param, ctx)
        return super().convert(value, param, ctx)


def _folder(ctx: click.Context, name: str):
    from .vault import open_agent

    return open_agent(name, ctx.obj["root"])


class _Commands(click.Group):
    """Every command reports a failed read or write of the disk as one error line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            _fail(exc)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="ATOMIC_VAULT_ROOT", type=_Path(file_okay=False),
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
@click.argument("name", callback=_text)
@click.option("--model", default="offline", show_default=True, callback=_text,
              help="Model written into model.md (provider:model).")
@click.option("--operator", default="the operator", show_default=True, callback=_line(200),
              help="Who the agent works for, written into persona/USER.md.")
@click.option("--role", default="a careful personal assistant", show_default=True, callback=_line(200),
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
@click.argument("name", callback=_text)
@click.argument("work_item", callback=_text)
@click.option("--model", callback=_model_name, help="Override model.md for this run, e.g. offline.")
@click.option("--trigger", default="manual", show_default=True, callback=_line(64),
              help="Recorded as the run's trigger (cron, manual, script...).")
@click.option("--critical", is_flag=True,
              help="Let the run pass the cost caps of model.md; recorded in the log.")
@click.option("--no-wait", is_flag=True, help="Exit 4 at once if another run holds the lock.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
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
        work_item = _stdin_text()
    try:
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger=trigger, model=model,
                            lock_timeout=0 if no_wait else lock_timeout)
        result = agent.call(work_item, critical=critical)
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _dump(asdict(result))
    else:
        click.echo(result.text.rstrip("\n"))
        written = [c["file"] for c in result.captures if c["status"] != "rejected"]
        rejected = [c for c in result.captures if c["status"] == "rejected"]
        cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
        cached = (f" (cache read {result.cache_read_tokens}, written {result.cache_write_tokens})"
                  if result.cache_read_tokens or result.cache_write_tokens else "")
        fallback = f" (fallback from {result.fallback_from})" if result.fallback_from else ""
        click.echo(f"\n— run {result.run_id} · seq {result.seq} · {result.status} · {result.model}{fallback} · "
                   f"{result.input_tokens}→{result.output_tokens} tokens{cached} · {cost} · "
                   f"captured {len(written)}" + (f", rejected {len(rejected)}" if rejected else ""),
                   err=True)
        for item in rejected:
            click.echo(f"rejected capture {item.get('name') or ''}: {item['reason']}", err=True)
    sys.exit(EXIT_SKIPPED if result.status == "skipped" else EXIT_OK)


def _stdin_text() -> str:
    """Standard input as UTF-8 text, whatever the locale says (every vault file is UTF-8)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:
        return _text(None, None, sys.stdin.read())  # type: ignore[arg-type]
    data = raw.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"standard input is not valid UTF-8 (byte {exc.start})",
                                 param_hint="WORK_ITEM") from None


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
    findings, actions, backends = [], {}, {}
    for kind in ("memory", "log", "lock", "journal"):
        try:
            backends[kind] = _backend(ctx, kind)
        except AtomicVaultError as exc:
            findings.append(checks.Finding("vault", "backend", "error", f"{kind}: {exc.message}",
                                           exc.path, exc.fix))
    for agent_name in names if len(backends) == 4 else []:
        try:
            folder = _folder(ctx, agent_name)
            if repair:
                actions[agent_name] = checks.repair(folder, backends=backends)
            findings += checks.check(folder, backends)
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
    from .errors import AtomicVaultError

    try:
        result = _backend(ctx, "log").verify(_folder(ctx, name), anchor)
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


def _backend(ctx: click.Context, kind: str, name: str | None = None, url: str | None = None):
    """The backend of ``kind`` for this vault: ``name``/``url`` when given, else the
    environment, the vault's atomic_vault.yaml, or files."""
    from .backends import known, open_backend
    from .errors import BackendError
    from .vault import resolve_root

    root = resolve_root(ctx.obj["root"])
    if name is None:
        return open_backend(kind, None, root)
    if name not in known(kind):
        raise BackendError(f"unknown {kind} backend {name!r}", field=kind,
                           fix=f"use one of: {', '.join(sorted(known(kind)))}")
    return known(kind)[name].load()(url=url, root=root)


def _cost_text(cost: Any) -> str:
    return f"${cost:.4f}" if isinstance(cost, (int, float)) and not isinstance(cost, bool) else "?"


@cli.command()
@click.argument("name")
@click.argument("action", default="runs", type=click.Choice(["runs", "cost"]))
@click.option("-n", "--limit", default=20, show_default=True, help="How many recent records (runs).")
@click.option("--since", metavar="DATE", help="From this ISO date or time on (inclusive).")
@click.option("--until", metavar="DATE", help="Up to this ISO date or time (inclusive).")
@click.option("--status", help="Only runs with this status (ok, error, skipped).")
@click.option("--trigger", help="Only runs with this trigger (cron, manual...).")
@click.option("--by", type=click.Choice(["day", "month"]), default="day", show_default=True,
              help="Group spend by day or month (cost).")
@click.option("--json", "as_json", is_flag=True, help="JSON: one record per line (runs), or a list (cost).")
@click.pass_context
def log(ctx: click.Context, name: str, action: str, limit: int, since: str | None, until: str | None,
        status: str | None, trigger: str | None, by: str, as_json: bool) -> None:
    """Show agent NAME's runs (newest last), or `cost`: spend and tokens by day or month.

    \b
    Examples:
      atomic-vault log atlas --since 2026-11-01 --status error
      atomic-vault log atlas cost --by month --json
    """
    from .errors import AtomicVaultError
    from .protocols import LogQuery

    try:
        folder = _folder(ctx, name)
        store = _backend(ctx, "log")
        if action == "cost":
            rows = store.cost(folder, by, since=since, until=until)
        else:
            found = store.query(folder, LogQuery(since=since, until=until, status=status,
                                                 trigger=trigger, limit=max(limit, 0)))
    except AtomicVaultError as exc:
        _fail(exc)
    if action == "cost":
        _print_cost(folder, store, rows, by, as_json)
        return
    for record in found:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        seq, ts, status_, trigger_, model, summary = (str(record.get(key, "-")) for key in (
            "seq", "ts", "status", "trigger", "model", "summary"))
        click.echo(f"{seq:>5} {ts[:19]:<19} {status_:<7} {trigger_:<8} {model:<12} "
                   f"{_cost_text(record.get('cost_usd')):>9}  {' '.join(summary.split())[:60]}")


def _print_cost(folder: Any, store: Any, rows: list, by: str, as_json: bool) -> None:
    """Spend rows against the cap of their period (model.md), then today's and this
    month's standing, with what runs in flight have reserved."""
    from datetime import datetime, timezone

    from . import guardrails
    from .config import load_model_config
    from .errors import AtomicVaultError

    try:
        config = load_model_config(folder.model)
    except AtomicVaultError as exc:
        _fail(exc)
    rails = config.cost_guardrails
    cap = rails.get("daily_cap_usd" if by == "day" else "monthly_cap_usd")
    if as_json:
        _dump([{**row.as_dict(), "cap_usd": cap} for row in rows])
        return
    click.echo(f"{by:<10} {'runs':>6} {'input':>10} {'output':>10} {'cost':>11} {'of cap':>7}")
    for row in rows:
        unknown = f"  ({row.unknown_cost} of unknown cost)" if row.unknown_cost else ""
        share = f"{row.cost_usd / cap:.0%}" if cap else "-"
        click.echo(f"{row.period:<10} {row.runs:>6} {row.input_tokens:>10} {row.output_tokens:>10} "
                   f"{_cost_text(row.cost_usd):>11} {share:>7}{unknown}")
    click.echo(f"{'total':<10} {sum(r.runs for r in rows):>6} {sum(r.input_tokens for r in rows):>10} "
               f"{sum(r.output_tokens for r in rows):>10} {_cost_text(sum(r.cost_usd for r in rows)):>11}")
    if not rails:
        click.echo("\nno cost_guardrails in model.md: spend is not capped")
        return
    now = datetime.now(config.zone or timezone.utc).astimezone(config.zone)
    try:
        day, month = guardrails.spent(store, folder, now)
    except AtomicVaultError as exc:
        _fail(exc)
    held = sum(guardrails.in_flight(folder, prune=False).values())
    standing = [f"{label} {_cost_text(spent)} of {_cost_text(limit) if limit is not None else 'no cap'}"
                for label, spent, limit in (("today", day, rails.get("daily_cap_usd")),
                                            ("this month", month, rails.get("monthly_cap_usd")))]
    state = "enforced" if guardrails.enabled(config) else "not enforced (enabled: false or no cap)"
    click.echo(f"\n{'; '.join(standing)} [{now.tzinfo}]; reserved by runs in flight "
               f"{_cost_text(held)}; guardrails {state}")


@cli.command()
@click.argument("name")
@click.argument("action", default="list", type=click.Choice(["list", "show", "search"]))
@click.argument("words", nargs=-1)
@click.option("--type", "note_type", help="list: only notes of this type.")
@click.option("--archived/--current", default=None, help="list: only archived or superseded notes / only current ones.")
@click.option("-n", "--limit", type=int, help="list: the most recently seen N; search: at most N results [10].")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def notes(ctx: click.Context, name: str, action: str, words: tuple[str, ...], note_type: str | None,
          archived: bool | None, limit: int | None, as_json: bool) -> None:
    """List agent NAME's notes, `show NOTE` (a file name such as project_x.md), or
    `search WORDS...` (plain words, best match first, with a snippet).

    \b
    Examples:
      atomic-vault notes atlas list --type project
      atomic-vault notes atlas show project_verdemar.md
      atomic-vault notes atlas search verdemar thursday --json
    """
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory")
        if action == "show":
            if len(words) != 1:
                raise click.UsageError("show takes one note file name, e.g. project_x.md")
            text = memory.get(folder, words[0])
            if text is None:
                raise click.ClickException(f"no note {words[0]!r}; see `atomic-vault notes {name} list`")
            click.echo(text, nl=False)
            return
        if action == "search":
            query = " ".join(words)
            if not query.strip():
                raise click.UsageError("search needs words, e.g. notes NAME search verdemar launch")
            hits = memory.search(folder, query, limit=10 if limit is None else limit)
            if as_json:
                _dump({"query": query, "results": [hit.as_dict() for hit in hits]})
            elif not hits:
                click.echo(f"no note matches {query!r}", err=True)
            for rank, hit in enumerate(hits if not as_json else [], start=1):
                click.echo(f"{rank:>3}. {hit.file}  ({hit.type}, score {hit.score:.3g})\n     {hit.snippet}")
            return
        if words:
            raise click.UsageError("list takes no arguments; use --type, --archived or -n")
        rows = memory.list(folder, type=note_type, archived=archived, recent=limit)
        _, broken = memory.scan(folder)
    except click.ClickException:
        raise
    except AtomicVaultError as exc:
        _fail(exc)
    if as_json:
        _dump({"notes": rows, "invalid": {file: str(error) for file, error in broken.items()}})
        return
    for s in rows:
        flags = "".join(["P" if s["pinned"] else " ", "S" if s["superseded_by"] else " ",
                         "A" if s["archived"] else " "])
        click.echo(f"{flags} {s['last_seen']}  {s['file']:<48} {s['description'][:70]}")
    for file, error in sorted(broken.items()):
        click.echo(f"!   invalid     {file}: {error}", err=True)


@cli.command()
@click.argument("name")
@click.pass_context
def reindex(ctx: click.Context, name: str) -> None:
    """Rebuild agent NAME's derived memory state (search index, caches) from its notes."""
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory")
        notes_now, broken = memory.scan(folder)
        with click.progressbar(length=len(notes_now) + len(broken), label=f"indexing {name}",
                               file=sys.stderr) as bar:
            count = memory.reindex(folder, bar.update)
    except AtomicVaultError as exc:
        _fail(exc)
    click.echo(f"indexed {count} notes of {name} ({memory.name} backend)")


@cli.command()
@click.argument("name")
@click.option("--what", type=click.Choice(["log", "memory", "all"]), default="log", show_default=True,
              help="What to copy.")
@click.option("--from", "source", metavar="BACKEND", help="Source backend [the configured one].")
@click.option("--from-url", metavar="URL", help="Source URL, when the backend needs one.")
@click.option("--to", "target", metavar="BACKEND", required=True, help="Target backend (files to export).")
@click.option("--to-url", metavar="URL", help="Target URL, when the backend needs one.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def migrate(ctx: click.Context, name: str, what: str, source: str | None, from_url: str | None,
            target: str, to_url: str | None, as_json: bool) -> None:
    """Copy agent NAME's log (and/or memory) to another backend and verify it there.

    The chain arrives identical (same seq, prev and hash); an interrupted copy resumes.
    Nothing is removed from the source. Afterwards, select the target for the agent
    (ATOMIC_VAULT_<KIND>_BACKEND or atomic_vault.yaml).

    \b
    Examples:
      atomic-vault migrate atlas --to sqlite
      atomic-vault migrate atlas --what all --to postgres --to-url postgresql://host/db
      atomic-vault migrate atlas --from postgres --from-url postgresql://host/db --to files
    """
    from . import migrate as moves
    from .errors import AtomicVaultError

    kinds = ["log", "memory"] if what == "all" else [what]
    outcomes = []
    try:
        folder = _folder(ctx, name)
        for kind in kinds:
            src = _backend(ctx, kind, source, from_url) if source else _backend(ctx, kind)
            dst = _backend(ctx, kind, target, to_url)
            if src.name == dst.name and (from_url or None) == (to_url or None) and src.name != "files":
                raise click.UsageError(f"source and target are the same {kind} store")
            total = (moves.count_records(src, folder) if kind == "log"
                     else sum(map(len, src.scan(folder))))
            with click.progressbar(length=total, label=f"{kind} {src.name} → {dst.name}",
                                   file=sys.stderr) as bar:
                mover = moves.migrate_log if kind == "log" else moves.migrate_memory
                outcomes.append(mover(folder, src, dst, bar.update))
    except click.ClickException:
        raise
    except AtomicVaultError as exc:
        _fail(exc)
    if as_json:
        _dump([o.as_dict() for o in outcomes])
        return
    for o in outcomes:
        head = f"; chain verified, head {o.head['seq']}:{o.head['hash']}" if o.head else ""
        click.echo(f"{o.kind}: {o.copied} copied, {o.already} already there ({o.source} → {o.target}){head}")
        for item in o.skipped:
            click.echo(f"skipped {item}", err=True)


@cli.command()
@click.argument("name", required=False)
@click.option("-o", "--out", "out_dir", required=True, metavar="DIR", type=_Path(file_okay=False),
              help="Folder to write the pages into (created when missing).")
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Last day shown [the day of the newest log record].")
@click.pass_context
def dashboard(ctx: click.Context, name: str | None, out_dir: str, today: Any) -> None:
    """Write static HTML pages of agent NAME's spend and runs (every agent without NAME).

    DIR/index.html lists the agents (month-to-date spend against the monthly cap, runs,
    errors, skips, cache hit rate) with their spend by day; DIR/<agent>.html shows spend
    by day and month against the caps of model.md, tokens, runs by status, skips and
    fallbacks, and the most expensive runs. Pages have no scripts and need no network.
    Prints the paths written.

    \b
    Examples:
      atomic-vault dashboard -o ~/agents-dashboard
      atomic-vault dashboard atlas -o /tmp/dash --today 2026-11-30
    """
    from .dashboard import render
    from .errors import AtomicVaultError
    from .vault import list_agents, resolve_root

    names = [name] if name else list_agents(ctx.obj["root"])
    if not names:
        _fail(click.ClickException(f"no agents in {resolve_root(ctx.obj['root'])}"))
    try:
        written = render(ctx.obj["root"], names, out_dir, log_backend=_backend(ctx, "log"),
                         today=today.date() if today else None)
    except (AtomicVaultError, OSError) as exc:
        _fail(exc)
    for path in written:
        click.echo(path)


def main() -> None:
    cli(prog_name="atomic-vault")
