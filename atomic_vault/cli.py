"""The atomic-vault command line (click). Commands import what they need when they run."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_BUSY, EXIT_AWAITING = 0, 1, 2, 3, 4, 5


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _fail(exc: Exception, agent: str | None = None) -> None:
    """One line on stderr, naming the file and the fix, and the exit code: never a traceback."""
    from .errors import AwaitingApproval, LockTimeout

    text = _disk_error(exc, agent or "AGENT") if isinstance(exc, OSError) else str(exc)
    click.echo("error: " + " ".join(text.split()), err=True)
    sys.exit(EXIT_BUSY if isinstance(exc, LockTimeout) else
             EXIT_AWAITING if isinstance(exc, AwaitingApproval) else EXIT_ERROR)


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


def _conversation(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from .conversations import CONVERSATION_ID

    if value is not None and not CONVERSATION_ID.match(value):
        raise click.BadParameter(f"{value[:80]!r} is not a conversation id (1-100 letters, digits, "
                                 "'.', '_', ':', '-'); --continue alone takes the newest conversation: "
                                 "put it after WORK_ITEM, e.g. run NAME \"...\" --continue")
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


def _show_build_progress(label: str) -> None:
    """A progress bar on stderr, when it is a terminal, for a first catalog build that runs
    over a second (a fresh clone, a new machine, a deleted .atomic_vault/)."""
    if not sys.stderr.isatty():
        return
    from . import catalog

    def start(total: int):
        bar = click.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()
        return bar.update, lambda: bar.__exit__(None, None, None)
    catalog.progress = start


def _folder(ctx: click.Context, name: str):
    """Agent NAME of the vault; a name that is no agent is a usage error naming close ones."""
    from .vault import AgentFolder, check_agent_name, open_agent, resolve_root, similar_agents

    root = resolve_root(ctx.obj["root"])
    if not AgentFolder(root, check_agent_name(name)).path.is_dir():
        close = similar_agents(name, root)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else \
            "`atomic-vault agents` lists them; `init NAME` creates one"
        raise click.UsageError(f"no agent {name!r} in {root}; {hint}")
    return open_agent(name, root)


def _set_root(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.ensure_object(dict)["root"] = value
    return value


def _root_option(command: Any) -> Any:
    """`--root` after the command name too (`atomic-vault run atlas x --root R`); it wins
    over the one before the command."""
    return click.option("--root", type=_Path(file_okay=False), expose_value=False,
                        callback=_set_root, is_eager=True,
                        help="Vault folder holding the agents (as before the command).")(command)


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
    4 agent busy (lock not acquired in time), 5 awaiting approval (resume after the decision).
    """
    ctx.obj = {"root": root}


_LOG_KINDS = ("run", "verdict", "approval", "effect", "repair", "note_edit", "upgrade")


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.option("--model", default="offline", show_default=True, callback=_text,
              help="Model written into model.md (provider:model).")
@click.option("--operator", default="the operator", show_default=True, callback=_line(200),
              help="Who the agent works for, written into persona/USER.md.")
@click.option("--role", default="a careful personal assistant", show_default=True, callback=_line(200),
              help="What the agent is, written into persona/IDENTITY.md.")
@click.option("--from", "source", metavar="PATH", type=_Path(file_okay=False),
              help="Copy the agent folder at PATH (persona, config, memory, wiki, journal; not its log).")
@click.option("--exist-ok", is_flag=True, help="An existing agent NAME is left as it is (exit 0).")
@click.pass_context
def init(ctx: click.Context, name: str, model: str, operator: str, role: str, source: str | None,
         exist_ok: bool) -> None:
    """Create agent NAME from the templates, or as a copy of another agent (--from PATH).

    Non-interactive; needs no API key. A copy starts its own log.

    \b
    Examples:
      atomic-vault --root demo init atlas --from samples/atlas --exist-ok
      atomic-vault init scout --model anthropic:claude-sonnet-4-5 --operator Sam
    """
    from .errors import AtomicVaultError
    from .scaffold import copy_agent, create_agent
    from .vault import AgentFolder, check_agent_name, resolve_root

    if source is not None and any(ctx.get_parameter_source(option) != click.core.ParameterSource.DEFAULT
                                  for option in ("model", "operator", "role")):
        raise click.UsageError("--from copies the agent as it is; --model, --operator and --role "
                               "apply only to a new agent from the templates")
    try:
        existing = AgentFolder(resolve_root(ctx.obj["root"]), check_agent_name(name))
        if exist_ok and (existing.persona / "IDENTITY.md").is_file():
            click.echo(f"exists {existing.path}: left as it is")
            return
        if existing.path.exists() or existing.path.is_symlink():
            click.echo(f"error: {existing.path}: already exists; init never overwrites an agent "
                       "(fix: choose another name, remove the folder, or pass --exist-ok to keep it)",
                       err=True)
            sys.exit(EXIT_USAGE)
        if source is not None:
            folder = copy_agent(ctx.obj["root"], name, source)
        else:
            folder = create_agent(ctx.obj["root"], name, model=model, operator=operator, role=role)
    except AtomicVaultError as exc:
        _fail(exc)
    click.echo(f"created {folder.path}" + (f" (a copy of {source}, with a new log)" if source else ""))
    click.echo(f"next: atomic-vault --root {folder.root} run {name} \"say hello\"")


@cli.command()
@_root_option
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
@click.option("--idempotency-key", metavar="KEY", callback=_line(200),
              help="Run at most once per KEY: again, it prints the first run's result without calling the model.")
@click.option("--tree-cap-usd", type=click.FloatRange(min=0), metavar="USD",
              help="Cap the cost of this run and every run it delegates to (default: model.md's tree_cap_usd).")
@click.option("--continue", "conversation", is_flag=False, flag_value="latest", default=None,
              metavar="[ID|new]", callback=_conversation,
              help="Continue a conversation: its earlier turns go in before the work item. Alone "
                   "(after WORK_ITEM): the newest conversation; 'new': start one; ID: that one "
                   "(an unknown ID starts it).")
@click.option("--json", "as_json", is_flag=True, help="Print the run result as JSON.")
@click.pass_context
def run(ctx: click.Context, name: str, work_item: str, model: str | None, trigger: str,
        critical: bool, no_wait: bool, lock_timeout: float, idempotency_key: str | None,
        tree_cap_usd: float | None, conversation: str | None, as_json: bool) -> None:
    """Run agent NAME on WORK_ITEM ('-' reads it from standard input). Without --continue
    the run is a one-shot."""
    from .agent import AtomicAgent
    from .errors import AtomicVaultError

    if work_item == "-":
        work_item = _stdin_text()
    if not work_item.strip():
        raise click.UsageError("the work item is empty; pass the text to work on, or '-' to "
                               "read it from standard input")
    _show_build_progress(f"reading the notes of {name} (first run here)")
    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger=trigger, model=model,
                            lock_timeout=0 if no_wait else lock_timeout)
        result = agent.call(work_item, critical=critical, idempotency_key=idempotency_key,
                            tree_cap_usd=tree_cap_usd, conversation_id=conversation)
    except (AtomicVaultError, OSError) as exc:
        if type(exc).__name__ == "NoConversation":  # a usage error, as an unknown agent is
            raise click.UsageError(str(exc)) from None
        _fail(exc, name)
    _print_result(result, as_json)


def _print_result(result: Any, as_json: bool) -> None:
    """A run's answer on stdout, its summary line and warnings on stderr, and its exit code."""
    from dataclasses import asdict

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
        talk = f" · conversation {result.conversation_id}" if result.conversation_id else ""
        estimated = " (estimated)" if result.tokens_estimated else ""
        click.echo(f"\n— run {result.run_id} · seq {result.seq} · {result.status} · {result.model}{fallback} · "
                   f"{result.input_tokens}→{result.output_tokens} tokens{estimated}{cached} · {cost} · "
                   f"captured {len(written)}" + (f", rejected {len(rejected)}" if rejected else "") + talk,
                   err=True)  # each rejection is one of the warnings above
    sys.exit(EXIT_SKIPPED if result.status == "skipped" else
             EXIT_AWAITING if result.status == "awaiting_approval" else EXIT_OK)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("run_id", callback=_line(80))
@click.option("--model", callback=_model_name, help="Override model.md for the resumed run.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Seconds to wait for the agent's lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the run result as JSON.")
@click.pass_context
def resume(ctx: click.Context, name: str, run_id: str, model: str | None, lock_timeout: float,
           as_json: bool) -> None:
    """Continue run RUN_ID of agent NAME, which ended awaiting approval (exit 5), once its
    approvals are decided; exit 5 again while one is still pending."""
    from .agent import AtomicAgent
    from .errors import AtomicVaultError

    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger="resume", model=model, lock_timeout=lock_timeout)
        result = agent.resume(run_id)
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    _print_result(result, as_json)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("action", default="list", type=click.Choice(["list", "show", "approve", "deny"]))
@click.argument("approval_id", required=False, metavar="[ID]")
@click.option("--by", "by", callback=_line(200), help="Who decides (approve, deny); recorded as decided_by.")
@click.option("--note", callback=_line(500), help="A note kept with the decision.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines (list) or one JSON object.")
@click.pass_context
def approvals(ctx: click.Context, name: str, action: str, approval_id: str | None, by: str | None,
              note: str | None, as_json: bool) -> None:
    """List, show, approve or deny agent NAME's approvals (files in approvals/). A tool
    call's decision is taken by `resume`; a consolidation proposal is applied at once.

    \b
    Examples:
      atomic-vault approvals atlas
      atomic-vault approvals atlas approve 20261201T090000-1a2b3c4d-1-1 --by maria
    """
    from . import approvals as files
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        store = _backend(ctx, "log", agent=name)
        if action == "list":
            rows = files.status(folder, store)
        elif approval_id is None:
            raise click.UsageError(f"{action} needs the approval's ID (`atomic-vault approvals {name}` lists them)")
        elif action == "show":
            rows = [files.status(folder, store, approval_id)[0]]
        else:
            if not by:
                raise click.UsageError(f"{action} needs --by NAME: a decision names who took it")
            taken = _decide(ctx, folder, store, name, approval_id, action, by, note)
            if taken is not None and taken.get("proposal") == "promotion":
                _print_promotion(taken, as_json)
                return
            rows = [files.status(folder, store, approval_id)[0]]
            if taken is not None:
                rows[0]["applied"] = taken.get("applied", [])
    except AtomicVaultError as exc:
        _fail(exc, name)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    if action == "show":
        row = rows[0]
        for key in ("id", "state", "tool", "arguments", "run", "step", "rule", "reason", "expires_at",
                    "decision", "decided_by", "note", "amended_args", "problem"):
            if row.get(key) is not None:
                click.echo(f"{key + ':':<13} {json.dumps(row[key], ensure_ascii=False) if isinstance(row[key], (dict, list)) else row[key]}")
        return
    if action in ("approve", "deny") and "applied" in rows[0]:
        click.echo(f"{rows[0]['id']}: {action} by {by}; {len(rows[0]['applied'])} note file(s) written"
                   + "".join(f"\n  {item['file']}" for item in rows[0]["applied"]))
        return
    if action in ("approve", "deny"):
        click.echo(f"{rows[0]['id']}: {action} by {by}; next: atomic-vault resume {name} {rows[0]['run']}")
        return
    if not rows:
        click.echo(f"no approvals: {name}'s approvals/ is empty", err=True)
        return
    click.echo(f"{'id':<34} {'state':<16} {'tool':<16} {'expires':<19}")
    for row in rows:
        click.echo(f"{row['id']:<34} {row['state']:<16} {str(row.get('tool') or row.get('kind'))[:16]:<16} "
                   f"{str(row.get('expires_at') or '-')[:19]:<19}")


def _print_promotion(record: dict, as_json: bool) -> None:
    """A taken promotion: its record; exit 1 when an approved one was refused."""
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, default=str))
    else:
        click.echo(f"{record['approval']}: {record['decision']}; {record['summary']} (logged as seq {record.get('seq')})")
    if record.get("refused"):
        sys.exit(EXIT_ERROR)


def _decide(ctx: click.Context, folder: Any, log: Any, name: str, approval_id: str, action: str, by: str,
            note: str | None) -> dict[str, Any] | None:
    from . import consolidate

    return consolidate.decide(folder, lambda kind: _backend(ctx, kind, agent=name), log, approval_id, action,
                              by, note)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("note", required=False, callback=_text)
@click.option("--to", "to", callback=_line(80), help="The persona file to promote into: persona/USER.md, "
              "persona/SOUL.md or persona/IDENTITY.md (USER, SOUL, IDENTITY for short).")
@click.option("--apply", "apply_id", callback=_line(140), help="Take promotion ID's decision (e.g. made in "
              "an editor) and, when approved, apply it.")
@click.option("--json", "as_json", is_flag=True, help="Print the proposal or the approval record as JSON.")
@click.pass_context
def promote(ctx: click.Context, name: str, note: str | None, to: str | None, apply_id: str | None,
            as_json: bool) -> None:
    """Propose note NOTE of agent NAME as a new section of a persona file: an approval file
    with the diff; the file changes only once the proposal is approved (`approvals NAME
    approve ID --by NAME`, or a decision edited into the file, then `promote NAME --apply ID`).

    \b
    Examples:
      atomic-vault promote atlas user_working_hours --to persona/USER.md
      atomic-vault approvals atlas approve promote-20261201T090000-1a2b3c4d --by mira
    """
    from . import promotion
    from .agent import AtomicAgent
    from .errors import AtomicVaultError

    if (apply_id is None) == (note is None) or (note is not None) != (to is not None):
        raise click.UsageError("give NOTE --to persona/FILE to propose, or --apply ID to take a decision")
    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"])
        if apply_id is not None:
            _print_promotion(promotion.take(agent, apply_id), as_json)
            return
        proposal = promotion.propose(agent, note, to)
    except AtomicVaultError as exc:
        _fail(exc, name)
    if as_json:
        click.echo(json.dumps(proposal, ensure_ascii=False))
        return
    click.echo(proposal["diff"], nl=False)
    click.echo(f"proposed as approvals/{proposal['id']}.md; nothing is changed until it is approved: "
               f"atomic-vault approvals {name} approve {proposal['id']} --by NAME")


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.option("--model", callback=_model_name, help="Override model.md for this call (offline merges exact duplicates).")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Seconds to wait for the agent's lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_context
def consolidate(ctx: click.Context, name: str, model: str | None, lock_timeout: float, as_json: bool) -> None:
    """Ask the model to merge duplicate notes, retire stale ones and distil old journal
    days into notes, as a proposal: an approval file with the full diff, applied only by
    `atomic-vault approvals NAME approve ID --by NAME`. The call runs under the cost
    guardrails and is logged. Exit 0: proposed (or nothing to do), 1: error or invalid
    proposal, 3: skipped by the cost guardrails."""
    from . import consolidate as consolidating
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        done = consolidating.propose(folder, _backend(ctx, "memory", agent=name), _backend(ctx, "log", agent=name),
                                     _backend(ctx, "lock", agent=name), _backend(ctx, "journal", agent=name),
                                     model=model, lock_timeout=lock_timeout)
    except AtomicVaultError as exc:
        _fail(exc, name)
    if as_json:
        _dump({"status": done.status, "approval": done.approval, "message": done.message,
               "run_id": (done.record or {}).get("run_id"), "seq": (done.record or {}).get("seq"),
               "cost_usd": (done.record or {}).get("cost_usd"), "proposal": done.proposal,
               "warnings": done.warnings})
    else:
        for warning in done.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(done.message)
        if done.approval:
            click.echo(f"review approvals/{done.approval}.md, then: atomic-vault approvals {name} approve "
                       f"{done.approval} --by NAME")
    sys.exit(EXIT_SKIPPED if done.status == "skipped" else EXIT_OK)


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
@_root_option
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one agent per line.")
@click.pass_context
def agents(ctx: click.Context, as_json: bool) -> None:
    """List the vault's agents: last run, its status, and today's spend.

    "Today" is the day in the agent's model.md time zone, as for its caps. An agent
    whose model.md or log cannot be read is listed with `?` and its error, and the
    command exits 1.
    """
    from .vault import list_agents, resolve_root

    names = list_agents(ctx.obj["root"])
    if not names:
        click.echo(f"no agents in {resolve_root(ctx.obj['root'])}; create one with "
                   "`atomic-vault init NAME`", err=True)
        return
    rows = [_agent_row(ctx, agent_name) for agent_name in names]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    else:
        click.echo(f"{'agent':<20} {'last run':<19} {'status':<7} {'spent today':>11} {'runs today':>10}")
        for row in rows:
            today = "?" if row["error"] else _cost_text(row["today_usd"])
            unknown = f" + {row['today_unknown']} unknown" if row["today_unknown"] else ""
            click.echo(f"{row['agent']:<20} {(row['last_run'] or '-')[:19]:<19} "
                       f"{row['status'] or ('?' if row['error'] else '-'):<7} {today:>11} "
                       f"{'?' if row['error'] else row['today_runs']:>10}{unknown}")
        for row in rows:
            if row["error"]:
                click.echo(f"error: {row['agent']}: {row['error']}", err=True)
    sys.exit(EXIT_ERROR if any(row["error"] for row in rows) else EXIT_OK)


def _agent_row(ctx: click.Context, agent_name: str) -> dict[str, Any]:
    """One line of `agents`: the newest run record and today's spend in the agent's zone."""
    from datetime import datetime, timezone

    from .config import load_model_config
    from .errors import AtomicVaultError
    from .protocols import LogQuery

    row: dict[str, Any] = {"agent": agent_name, "last_run": None, "run_id": None, "status": None,
                           "model": None, "today_usd": None, "today_runs": None,
                           "today_unknown": None, "projects": [], "error": None}
    try:
        folder = _folder(ctx, agent_name)
        store = _backend(ctx, "log", agent=agent_name)
        config = load_model_config(folder.model)
        row["projects"] = list(config.projects)
        runs = [r for r in store.query(folder, LogQuery(limit=50)) if r.get("kind", "run") == "run"]
        if runs:
            last = runs[-1]
            row.update(last_run=last.get("ts"), run_id=last.get("run_id"), status=last.get("status"),
                       model=last.get("model"))
        day = datetime.now(config.zone or timezone.utc).date().isoformat()
        today = [r for r in store.cost(folder, "day", since=day, until=day) if r.period == day]
        row.update(today_usd=sum(r.cost_usd for r in today), today_runs=sum(r.runs for r in today),
                   today_unknown=sum(r.unknown_cost for r in today))
    except (AtomicVaultError, click.UsageError) as exc:
        row["error"] = str(exc)
    return row


@cli.command()
@_root_option
@click.argument("name", required=False)
@click.option("--repair", is_flag=True, help="Fix what is safe to fix and say what was done.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one finding (or repair) per line.")
@click.pass_context
def doctor(ctx: click.Context, name: str | None, repair: bool, as_json: bool) -> None:
    """Check one agent (or every agent and project in the vault): layout, notes, INDEX, log,
    chain, locks; for a project, project.md, its members, its policy floor, notes and INDEX."""
    from . import doctor as checks
    from .errors import AtomicVaultError
    from .vault import list_agents, resolve_root

    names = [name] if name else list_agents(ctx.obj["root"])
    if not names:
        _fail(click.ClickException(f"no agents in {resolve_root(ctx.obj['root'])}"))
    _show_build_progress("reading the notes")
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
            own = {kind: _backend(ctx, kind, agent=agent_name) for kind in backends}
            if repair:
                actions[agent_name] = checks.repair(folder, backends=own)
            findings += checks.check(folder, own)
        except AtomicVaultError as exc:
            findings.append(checks.Finding(agent_name, "agent", "error", exc.message, exc.path, exc.fix))
    if not name:  # the vault's projects too (spec/18)
        from .projects import names as project_names

        for project in project_names(resolve_root(ctx.obj["root"])):
            findings += checks.check_project(resolve_root(ctx.obj["root"]), project)
    errors = sum(f.level == "error" for f in findings)
    if as_json:  # JSON Lines: what --repair did, then one finding a line
        done = [checks.Finding(agent_name, "repair", "ok", action, None, None)
                for agent_name, acts in actions.items() for action in acts]
        for item in checks.as_dicts(done + findings):
            click.echo(json.dumps(item, ensure_ascii=False, default=str))
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
@_root_option
@click.argument("name", callback=_text)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one finding per line (check, file, message, fix).")
@click.pass_context
def lint(ctx: click.Context, name: str, as_json: bool) -> None:
    """Check agent NAME's memory for what makes it worse over time: duplicate and
    near-duplicate notes, stale notes (model.md stale_days), expired notes still listed,
    INDEX lines without a note and notes without a line, one-sided supersession links,
    unknown frontmatter keys, old schema versions, oversized notes, an INDEX over its
    share of the prompt budget. Changes nothing. Exit 0: no findings, 1: findings."""
    from . import clock, lint as linting
    from .config import load_model_config
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory", agent=name)
        config = load_model_config(folder.model)
        _show_build_progress("reading the notes")
        found = linting.lint(folder, memory, config, clock.now(config.zone).date())
    except AtomicVaultError as exc:
        _fail(exc, name)
    for finding in found:
        if as_json:
            click.echo(json.dumps(finding.as_dict(), ensure_ascii=False))
        else:
            click.echo(f"{finding.check}: {finding.file}: {finding.message}\n    fix: {finding.fix}")
    if not as_json:
        click.echo(f"{name}: {len(found)} finding(s)" if found else f"{name}: memory is clean", err=True)
    sys.exit(EXIT_ERROR if found else EXIT_OK)


@cli.command()
@_root_option
@click.argument("name")
@click.option("--anchor", metavar="SEQ:HASH", help="Also check the log against a HEAD kept elsewhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@click.pass_context
def verify(ctx: click.Context, name: str, anchor: str | None, as_json: bool) -> None:
    """Verify agent NAME's hash-chained log; exit 1 at the first broken record."""
    from .errors import AtomicVaultError

    from .snapshots import verify_snapshots

    try:
        folder, store = _folder(ctx, name), _backend(ctx, "log", agent=name)
        result = store.verify(folder, anchor)
        if result.ok:  # the texts the records name re-hash to their names (spec/07)
            verify_snapshots(store, folder, result)
    except AtomicVaultError as exc:
        _fail(exc)
    from .runlog import copied_from, copied_remedy

    source = copied_from(result.first_bad)
    remedy = copied_remedy(name, source) if source else None
    if as_json:
        _dump({**result.as_dict(), **({"fix": remedy} if remedy else {})})
    else:
        legacy = f" ({result.legacy} legacy records before the chain)" if result.legacy else ""
        if result.ok:
            head = result.head or {}
            click.echo(f"ok: {result.records} records verify{legacy}; "
                       f"head {head.get('seq', 0)}:{head.get('hash')}")
        else:
            bad = result.first_bad
            click.echo(f"BROKEN at {bad['file']}:{bad['line']} (seq {bad['seq']}): {bad['reason']}")
            if remedy:
                click.echo(f"fix: {remedy}")
        for warning in result.warnings:
            click.echo(f"warning: {warning}")
    sys.exit(EXIT_OK if result.ok else EXIT_ERROR)


def _backend(ctx: click.Context, kind: str, name: str | None = None, url: str | None = None, *,
             agent: str | None = None):
    """The backend of ``kind`` for this vault: ``name``/``url`` when given, else the
    environment, the vault's atomic_vault.yaml (``agent``'s own entry first), or files."""
    from .backends import known, open_backend
    from .errors import BackendError
    from .vault import resolve_root

    root = resolve_root(ctx.obj["root"])
    if name is None:
        return open_backend(kind, None, root, agent)
    if name not in known(kind):
        raise BackendError(f"unknown {kind} backend {name!r}", field=kind,
                           fix=f"use one of: {', '.join(sorted(known(kind)))}")
    return known(kind)[name].load()(url=url, root=root)


def _cost_text(cost: Any) -> str:
    return f"${cost:.4f}" if isinstance(cost, (int, float)) and not isinstance(cost, bool) else "?"


def _when(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A --since/--until value: an ISO date or a date and time with `T`, which the log
    compares as a prefix of each record's `ts`."""
    from datetime import datetime

    if value is None:
        return value
    if WHEN.match(value):
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise click.BadParameter(f"{value!r} is not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], "
                             "e.g. 2026-11-01")


WHEN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?\Z")


def _gist(record: dict, width: int = 60) -> str:
    """The summary column: the start of the answer (or of the error) on one line; for a
    verdict, the tool, the outcome, the rule and the reason; for an approval, the decision
    and who took it; for an effect, its phase and key."""
    if record.get("kind") == "verdict":
        text = (f"{record.get('tool')} → {record.get('outcome')} ({record.get('rule')}): "
                f"{record.get('reason')}")
    elif record.get("kind") == "approval":
        text = f"{record.get('tool') or record.get('target')} → {record.get('decision')} by {record.get('decided_by')} ({record.get('approval')})"
    elif record.get("kind") == "effect":
        text = f"{record.get('tool')} {record.get('phase')} {record.get('key')}" + (
            f" → {record.get('status')}" if record.get("phase") == "commit" else "")
    else:
        text = record.get("summary") or record.get("error") or ""
    if not isinstance(text, str):
        text = str(text)
    flat = " ".join(text.replace("```atomic_capture", " ").split())
    return flat if len(flat) <= width else flat[:width - 1].rstrip() + "…"


@cli.command()
@_root_option
@click.argument("name")
@click.argument("action", default="runs", type=click.Choice(["runs", "cost"]))
@click.option("-n", "--limit", default=20, show_default=True, help="How many recent records (runs).")
@click.option("--since", metavar="DATE", callback=_when, help="From this ISO date or time on (inclusive).")
@click.option("--until", metavar="DATE", callback=_when, help="Up to this ISO date or time (inclusive).")
@click.option("--status", type=click.Choice(["ok", "error", "skipped", "awaiting_approval"]),
              help="Only runs with this status.")
@click.option("--trigger", callback=_line(64), help="Only runs with this trigger (cron, manual...).")
@click.option("--kind", type=click.Choice(list(_LOG_KINDS)),
              help="Only records of this kind (verdict: the gate's decisions; approval: a person's; "
                   "effect: the ledger's begin and commit; note_edit: the notes commands' changes).")
@click.option("--by", type=click.Choice(["day", "month"]), default="day", show_default=True,
              help="Group spend by day or month (cost).")
@click.option("--tree", "tree_of", metavar="RUN_ID", callback=_line(80),
              help="Draw the delegation tree below run RUN_ID: each run with its status and cost.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one record (runs) or row (cost) per line.")
@click.pass_context
def log(ctx: click.Context, name: str, action: str, limit: int, since: str | None, until: str | None,
        status: str | None, trigger: str | None, kind: str | None, by: str, tree_of: str | None,
        as_json: bool) -> None:
    """Show agent NAME's runs (newest last), or `cost`: spend and tokens by day or month.

    \b
    Examples:
      atomic-vault log atlas --since 2026-11-01 --status error
      atomic-vault log atlas cost --by month --json
      atomic-vault log atlas --kind verdict
      atomic-vault log atlas --tree 20261201T090000-1a2b3c4d
    """
    from .errors import AtomicVaultError
    from .protocols import LogQuery

    if tree_of is not None:
        _print_tree(ctx, name, tree_of, as_json)
        return
    try:
        folder = _folder(ctx, name)
        store = _backend(ctx, "log", agent=name)
        if action == "cost":
            rows = store.cost(folder, by, since=since, until=until)
        else:
            found = store.query(folder, LogQuery(since=since, until=until, status=status,
                                                 trigger=trigger, kind=kind, limit=max(limit, 0)))
    except AtomicVaultError as exc:
        _fail(exc)
    if action == "cost":
        _print_cost(folder, store, rows, by, as_json, filtered=since is not None or until is not None)
        return
    if not found:
        filtered = any(v is not None for v in (since, until, status, trigger, kind)) or limit <= 0
        click.echo("no runs match" if filtered else f"no runs yet: {name}'s log is empty", err=True)
        return
    if not as_json:
        click.echo(f"{'seq':>5} {'time':<19} {'status':<7} {'trigger':<8} {'model':<12} {'cost':>9}  summary")
    for record in found:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        seq, ts, status_, trigger_, model = (str(record.get(key, "-")) for key in (
            "seq", "ts", "status", "trigger", "model"))
        cost = _cost_text(record.get("cost_usd"))
        if record.get("kind", "run") != "run":  # its kind in the status column, no model or cost
            status_, model, cost = str(record.get("kind")), "-", "-"
        click.echo(f"{seq:>5} {ts[:19]:<19} {status_:<7} {trigger_:<8} {model:<12} "
                   f"{cost:>9}  {_gist(record)}")


def _print_tree(ctx: click.Context, name: str, run_id: str, as_json: bool) -> None:
    """``log NAME --tree RUN_ID``: the tree as text, or one JSON line per run (with depth)."""
    from . import evidence
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        top = evidence.tree(folder.root, name, run_id)
    except evidence.UnknownRun as exc:
        raise click.UsageError(str(exc)) from None
    except AtomicVaultError as exc:
        _fail(exc, name)
    if not as_json:
        click.echo(evidence.render_tree(top))
        return
    for node in evidence.walk(top):
        click.echo(json.dumps({k: v for k, v in node.items() if k != "children"}, ensure_ascii=False))


def _print_cost(folder: Any, store: Any, rows: list, by: str, as_json: bool, filtered: bool) -> None:
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
        for row in rows:
            click.echo(json.dumps({**row.as_dict(), "cap_usd": cap}, ensure_ascii=False))
        return
    if not rows:
        click.echo("no runs match" if filtered else f"no runs yet: {folder.name}'s log is empty", err=True)
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


def _note_file(memory: Any, folder: Any, word: str) -> str | None:
    """The note file that `notes NAME show WORD` means: a file name, the same without
    `.md`, or a note's name when exactly one current or archived note has it."""
    from .notes import files_named

    matches = files_named(memory, folder, word)
    if len(matches) > 1:
        raise click.UsageError(f"{word!r} names {len(matches)} notes: {', '.join(matches)}; "
                               "show one by its file name")
    return matches[0] if matches else None


@cli.command()
@_root_option
@click.argument("name")
@click.argument("action", default="list", type=click.Choice(
    ["list", "show", "search", "archive", "unarchive", "pin", "unpin", "supersede", "rename", "write",
     "edit", "history", "restore"]))
@click.argument("words", nargs=-1, callback=_text)
@click.option("--type", "note_type", help="list: only notes of this type.")
@click.option("--archived/--current", default=None, help="list: only archived or superseded notes / only current ones.")
@click.option("-n", "--limit", type=int, help="list: the most recently seen N; search: at most N results [10].")
@click.option("--to", "to_run", callback=_line(80), help="restore: the run id (or note edit id) whose version "
              "of the note to bring back, as `history` lists them.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Changes: seconds to wait for the agent's lock.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one note (list), result (search) or "
              "change (history) per line; a change's log record.")
@click.pass_context
def notes(ctx: click.Context, name: str, action: str, words: tuple[str, ...], note_type: str | None,
          archived: bool | None, limit: int | None, to_run: str | None, lock_timeout: float,
          as_json: bool) -> None:
    """List agent NAME's notes, `show NOTE` (a file name such as project_x.md, with or
    without .md, or a note's name), `search WORDS...` (plain words, best match first,
    with a snippet), or change one: `archive|unarchive|pin|unpin NOTE`, `supersede OLD
    NEW`, `rename NOTE NEW_FILE`, `write` (a capture's JSON object on stdin), `edit
    NOTE` (in $VISUAL or $EDITOR), `history NOTE`, `restore NOTE --to RUN_ID`. Every
    change is one log record naming the note's text before and after.

    \b
    Examples:
      atomic-vault notes atlas list --type project
      atomic-vault notes atlas show project_verdemar.md
      atomic-vault notes atlas search verdemar thursday --json
      atomic-vault notes atlas archive project_meetup_talk
      atomic-vault notes atlas supersede decision_invoice_monthly.md decision_invoice_per_milestone.md
      atomic-vault notes atlas history project_verdemar_migration.md
      atomic-vault notes atlas restore project_verdemar_migration.md --to 20261201T090000-1a2b3c4d
    """
    from .errors import AtomicVaultError
    from .notes import FILENAME

    if action not in ("list", "show", "search"):
        _change_note(ctx, name, action, words, to_run, lock_timeout, as_json)
        return
    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory", agent=name)
        if action == "show":
            if len(words) != 1:
                raise click.UsageError("show takes one note file name (project_x.md, with or without "
                                       ".md) or one note's name")
            file = _note_file(memory, folder, words[0])
            text = memory.get(folder, file) if file else None
            if text is None:
                shaped = next((f for f in (words[0], words[0] + ".md") if FILENAME.match(f)), None)
                raise click.ClickException(
                    (f"no note {shaped!r}" if shaped else f"{words[0]!r} is not a note file name, nor "
                     "the name of a note") + f"; see `atomic-vault notes {name} list`")
            click.echo(text, nl=False)
            return
        if action == "search":
            query = " ".join(words)
            if not query.strip():
                raise click.UsageError("search needs words, e.g. notes NAME search verdemar launch")
            hits = memory.search(folder, query, limit=10 if limit is None else limit)
            if not hits:
                click.echo(f"no note matches {query!r}", err=True)
            for rank, hit in enumerate(hits, start=1):
                if as_json:
                    click.echo(json.dumps(hit.as_dict(), ensure_ascii=False))
                else:
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
    if not rows:
        click.echo("no notes match" if note_type or archived is not None else f"no notes yet: {name}'s "
                   "memory is empty", err=True)
    for s in rows if not as_json else []:
        flags = "".join(["P" if s["pinned"] else " ", "S" if s["superseded_by"] else " ",
                         "A" if s["archived"] else " "])
        click.echo(f"{flags} {s['last_seen']}  {s['file']:<48} {s['description'][:70]}")
    for s in rows if as_json else []:
        click.echo(json.dumps(s, ensure_ascii=False, default=str))
    for file, error in sorted(broken.items()):
        click.echo(f"!   invalid     {file}: {error}", err=True)


_NOTE_ARGS = {"archive": ("NOTE",), "unarchive": ("NOTE",), "pin": ("NOTE",), "unpin": ("NOTE",),
              "supersede": ("OLD", "NEW"), "rename": ("NOTE", "NEW_FILE"), "write": (), "edit": ("NOTE",),
              "history": ("NOTE",), "restore": ("NOTE",)}


def _change_note(ctx: click.Context, name: str, action: str, words: tuple[str, ...], to_run: str | None,
                 lock_timeout: float, as_json: bool) -> None:
    """The note changes of `notes` (noteedit.py), and `history`."""
    from . import history, noteedit
    from .agent import AtomicAgent
    from .errors import AtomicVaultError

    wanted = _NOTE_ARGS[action]
    if len(words) != len(wanted):
        raise click.UsageError(f"{action} takes {' '.join(wanted) or 'no arguments (the note comes on stdin)'}")
    if (action == "restore") != (to_run is not None):
        raise click.UsageError("restore needs --to RUN_ID (`notes NAME history NOTE` lists them)"
                               if action == "restore" else "--to is for restore only")
    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"], lock_timeout=lock_timeout)
        if action == "history":
            file = noteedit.note_file(agent.memory, agent.folder, words[0], may_be_gone=True)
            rows = history.entries(agent.log, agent.folder, file)
            if not rows:
                click.echo(f"no recorded changes of {file}", err=True)
            for row in rows:
                click.echo(json.dumps(row, ensure_ascii=False) if as_json else
                           f"{row['seq']:>5}  {str(row['ts'])[:19]}  {str(row['run_id']):<26} {row['op']:<22} "
                           f"{(row['before'] or '-')[:12]:<12} -> {(row['after'] or '-')[:12]}")
            return
        if action in noteedit.FLAGS:
            done = noteedit.set_flag(agent, action, words[0])
        elif action == "supersede":
            done = noteedit.supersede(agent, *words)
        elif action == "rename":
            done = noteedit.rename(agent, *words)
        elif action == "write":
            done = noteedit.write(agent, _stdin_text())
        elif action == "edit":
            done = noteedit.edit(agent, words[0])
        else:
            done = noteedit.restore(agent, words[0], to_run)
    except AtomicVaultError as exc:
        _fail(exc, name)
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(done.record if done.record is not None else
                              {"op": done.op, "file": done.file, "changed": False, "message": done.message},
                              ensure_ascii=False, default=str))
    else:
        click.echo(done.message)


@cli.command()
@_root_option
@click.argument("name")
@click.pass_context
def reindex(ctx: click.Context, name: str) -> None:
    """Rebuild agent NAME's derived memory state (search index, caches) from its notes."""
    from .errors import AtomicVaultError

    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory", agent=name)
        _show_build_progress(f"reading the notes of {name}")
        notes_now, broken = memory.scan(folder)
        from . import catalog
        catalog.progress = None  # the rebuild below has its own bar
        with click.progressbar(length=len(notes_now) + len(broken), label=f"indexing {name}",
                               file=sys.stderr) as bar:
            count = memory.reindex(folder, bar.update)
    except AtomicVaultError as exc:
        _fail(exc)
    click.echo(f"indexed {count} notes of {name} ({memory.name} backend)")


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.option("--dry-run", "dry_run", is_flag=True,
              help="Print the diff of every file the upgrade would change, and change nothing (the default).")
@click.option("--apply", "apply_", is_flag=True,
              help="Write the upgraded files (each atomically) and log the upgrade.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Seconds to wait for the agent's lock (--apply).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one file per line.")
@click.pass_context
def upgrade(ctx: click.Context, name: str, dry_run: bool, apply_: bool, lock_timeout: float,
            as_json: bool) -> None:
    """Upgrade agent NAME's notes and config files written in an older format, step by
    step (spec/03 "Schema upgrades"); without --apply, only show the diffs.

    \b
      atomic-vault upgrade atlas            # what would change, as diffs
      atomic-vault upgrade atlas --apply
    """
    from . import upgrades
    from .errors import AtomicVaultError

    if dry_run and apply_:
        raise click.UsageError("pass --dry-run or --apply, not both")
    try:
        folder = _folder(ctx, name)
        memory = _backend(ctx, "memory", agent=name)
        if apply_:
            plan, records = upgrades.apply(folder, memory, _backend(ctx, "log", agent=name),
                                           _backend(ctx, "lock", agent=name), lock_timeout)
        else:
            plan, records = upgrades.plan(folder, memory), []
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    for skipped in plan.skipped:
        if as_json:
            click.echo(json.dumps({**skipped, "action": "skipped"}, ensure_ascii=False))
        else:
            click.echo(f"skipped {skipped['source']}: {skipped['reason']}", err=True)
    for change in plan.changes:
        if as_json:
            click.echo(json.dumps({**change.as_dict(), "action": "upgraded" if apply_ else "would upgrade",
                                   "diff": change.diff()}, ensure_ascii=False))
        elif apply_:
            click.echo(f"upgraded {change.source}: {', '.join(change.steps)}")
        else:
            click.echo("\n".join(change.diff()))
    if not as_json:
        count = len(plan.changes)
        click.echo(f"{count} files upgraded (log records seq {records[0]['seq']}, {records[1]['seq']})" if apply_ and count
                   else f"{count} files would change; `atomic-vault upgrade {name} --apply` writes them" if count
                   else f"nothing to upgrade in {name}", err=True)


@cli.command(name="eval")
@_root_option
@click.argument("name", callback=_text)
@click.argument("cases", nargs=-1, callback=_text)
@click.option("--model", callback=_model_name, help="Run the cases on this model instead of model.md's.")
@click.option("--replay", "replay_last", type=click.IntRange(min=1), metavar="LAST_N",
              help="Instead of the cases, replay the newest LAST_N recorded runs with --model.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one case's outcome per line.")
@click.pass_context
def eval_(ctx: click.Context, name: str, cases: tuple[str, ...], model: str | None, replay_last: int | None,
          as_json: bool) -> None:
    """Run agent NAME's golden cases (evals/*.md; only CASES when named), each on a
    scratch copy of the agent: its notes, journal and log are never written.

    Exit 0 every case passed, 1 a case failed, 2 an eval file is invalid (nothing run),
    3 none failed but the cost guardrails skipped one. Each case is a real model call.

    \b
    Examples:
      atomic-vault eval atlas
      atomic-vault eval atlas remember_a_project --model offline --json
      atomic-vault eval atlas --replay 20 --model anthropic:claude-haiku-4-5

    With --replay, each run is replayed from its snapshots (as `replay` does) and logged as
    a replay record; exit 1 a run could not be replayed or its replay failed, 3 the cost
    guardrails skipped one.
    """
    from .errors import AtomicVaultError
    from .evals import load_cases, run_cases

    if replay_last is not None:
        if cases or not model:
            raise click.UsageError("--replay LAST_N needs --model M and no CASES")
        _eval_replay(ctx, name, replay_last, model, as_json)

    try:
        folder = _folder(ctx, name)
        chosen, invalid = load_cases(folder, cases)
    except AtomicVaultError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for exc in invalid:
        click.echo(f"error: {exc}", err=True)
    if invalid:
        click.echo(f"{len(invalid)} invalid eval file(s): no case was run", err=True)
        sys.exit(EXIT_USAGE)
    if not chosen:
        click.echo(f"error: {folder.path / 'evals'}: no eval cases (fix: add evals/CASE.md with one "
                   "```yaml block of work: and expect:, spec/14-evals.md)", err=True)
        sys.exit(EXIT_USAGE)
    outcomes = []
    try:
        running = run_cases(folder, chosen, _backend(ctx, "log", agent=name),
                            _backend(ctx, "memory", agent=name), model=model)
        if not as_json:
            click.echo(f"{'case':<28} {'result':<7} {'status':<7} {'cost':>9}  what failed")
        for outcome in running:
            outcomes.append(outcome)
            for warning in outcome.warnings:
                click.echo(f"warning: {outcome.case}: {warning}", err=True)
            if as_json:
                from dataclasses import asdict
                click.echo(json.dumps(asdict(outcome), ensure_ascii=False, default=str))
                continue
            failed = "; ".join(outcome.failures) or "-"
            click.echo(f"{outcome.case[:28]:<28} {outcome.verdict.upper():<7} {outcome.status:<7} "
                       f"{_cost_text(outcome.cost_usd):>9}  {failed}")
    except AtomicVaultError as exc:
        _fail(exc)
    counts = {verdict: sum(o.verdict == verdict for o in outcomes) for verdict in ("pass", "fail", "skipped")}
    known = [o.cost_usd for o in outcomes if o.cost_usd is not None]
    unknown = f" + {len(outcomes) - len(known)} of unknown cost" if len(known) < len(outcomes) else ""
    click.echo(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped; "
               f"cost {_cost_text(sum(known))}{unknown}", err=True)
    sys.exit(EXIT_ERROR if counts["fail"] else EXIT_SKIPPED if counts["skipped"] else EXIT_OK)


def _eval_replay(ctx: click.Context, name: str, last_n: int, model: str, as_json: bool) -> None:
    """`eval NAME --replay LAST_N --model M`: one line per run, newest first, then totals."""
    from dataclasses import asdict

    from .agent import AtomicAgent
    from .errors import AtomicVaultError
    from .evals import replay_runs

    outcomes = []
    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger="eval-replay")
        if not as_json:
            click.echo(f"{'run':<26} {'replay':<12} {'answer':<14} {'captures':<22} {'cost':>9} {'replayed':>9}")
        for outcome in replay_runs(agent, last_n, model):
            outcomes.append(outcome)
            for warning in outcome.warnings:
                click.echo(f"warning: {outcome.run_id}: {warning}", err=True)
            if as_json:
                click.echo(json.dumps(asdict(outcome), ensure_ascii=False, default=str))
                continue
            if outcome.status == "unreplayable":
                click.echo(f"{outcome.run_id:<26} {'-':<12} error: {outcome.error}")
                continue
            answer = "same" if outcome.answer_same else f"{outcome.answer_changed_lines} lines differ" \
                if outcome.answer_same is False else "?"
            caps = "same" if outcome.captures_same else ", ".join(
                [f"+{c}" for c in outcome.captures_added] + [f"-{c}" for c in outcome.captures_removed]) or "statuses differ"
            click.echo(f"{outcome.run_id:<26} {outcome.status:<12} {answer:<14} {caps[:22]:<22} "
                       f"{_cost_text(outcome.cost_usd):>9} {_cost_text(outcome.replay_cost_usd):>9}")
    except AtomicVaultError as exc:
        _fail(exc, name)
    before = [o.cost_usd for o in outcomes if o.cost_usd is not None and o.status != "unreplayable"]
    after = [o.replay_cost_usd for o in outcomes if o.replay_cost_usd is not None]
    failed = sum(o.status in ("unreplayable", "error") for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    click.echo(f"{len(outcomes)} runs replayed with {model}: {sum(o.answer_same is True for o in outcomes)} same answer, "
               f"{sum(o.captures_same is True for o in outcomes)} same captures, {failed} failed, {skipped} skipped; "
               f"cost {_cost_text(sum(before))} → {_cost_text(sum(after))}", err=True)
    sys.exit(EXIT_ERROR if failed else EXIT_SKIPPED if skipped else EXIT_OK)


@cli.command()
@_root_option
@click.argument("name")
@click.option("--what", type=click.Choice(["log", "memory", "all"]), default="log", show_default=True,
              help="What to copy.")
@click.option("--from", "source", metavar="BACKEND", help="Source backend [the configured one].")
@click.option("--from-url", metavar="URL", help="Source URL, when the backend needs one.")
@click.option("--to", "target", metavar="BACKEND", required=True, help="Target backend (files to export).")
@click.option("--to-url", metavar="URL", help="Target URL, when the backend needs one.")
@click.option("--no-switch", is_flag=True, help="Only copy: the agent keeps its backend.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def migrate(ctx: click.Context, name: str, what: str, source: str | None, from_url: str | None,
            target: str, to_url: str | None, no_switch: bool, as_json: bool) -> None:
    """Copy agent NAME's log (and/or memory) to another backend, verify it there, and
    switch the agent to it.

    The chain arrives identical (same seq, prev and hash); an interrupted copy resumes,
    and going back copies the records written since. Nothing is removed from the source.
    The switch is written for NAME alone under `agents:` in the vault's atomic_vault.yaml;
    when ATOMIC_VAULT_<KIND>_BACKEND decides instead, the setting to make is printed.

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
            src = _backend(ctx, kind, source, from_url) if source else _backend(ctx, kind, agent=name)
            dst = _backend(ctx, kind, target, to_url)
            if src.name == dst.name and (from_url or None) == (to_url or None) and src.name != "files":
                raise click.UsageError(f"source and target are the same {kind} store" + (
                    "" if source else f" ({name} already uses {dst.name}; --from names another source)"))
            total = (moves.count_records(src, folder) if kind == "log"
                     else sum(map(len, src.scan(folder))))
            with click.progressbar(length=total, label=f"{kind} {src.name} → {dst.name}",
                                   file=sys.stderr) as bar:
                mover = moves.migrate_log if kind == "log" else moves.migrate_memory
                outcomes.append(mover(folder, src, dst, bar.update))
        for outcome in outcomes if not no_switch else []:  # only once every copy verified
            outcome.switched, outcome.note = moves.switch_backend(
                folder.root, folder.name, outcome.kind, target, to_url)
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
        if o.note:
            click.echo(o.note if o.switched else f"not switched: {o.note}")


@cli.command()
@_root_option
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
    fallbacks, and the most expensive runs. The vault page also shows the work queue's
    depth (ready, in flight, dead); DIR/trees.html draws each delegation tree with the
    cost of every run in it. Pages have no scripts and need no network. Prints the
    paths written.

    \b
    Examples:
      atomic-vault dashboard -o ~/agents-dashboard
      atomic-vault dashboard atlas -o /tmp/dash --today 2026-11-30
      atomic-vault --root samples/fleet dashboard -o /tmp/fleet-dashboard
    """
    from .dashboard import render
    from .errors import AtomicVaultError
    from .vault import list_agents, resolve_root

    names = [name] if name else list_agents(ctx.obj["root"])
    if not names:
        _fail(click.ClickException(f"no agents in {resolve_root(ctx.obj['root'])}"))
    _show_build_progress("reading the notes")
    try:
        if name:
            _folder(ctx, name)
        written = render(ctx.obj["root"], names, out_dir, log_backend=_backend(ctx, "log", agent=name),
                         today=today.date() if today else None)
    except (AtomicVaultError, OSError) as exc:
        _fail(exc)
    for path in written:
        click.echo(path)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed as JSON.")
@click.pass_context
def prune(ctx: click.Context, name: str, dry_run: bool, as_json: bool) -> None:
    """Remove agent NAME's run snapshots that no record inside `retention:` days names.

    Records are never removed (the chain still verifies); the prune is itself logged as a
    `prune` record listing each removed snapshot.
    """
    from .agent import AtomicAgent
    from .errors import AtomicVaultError
    from .retention import prune as run_prune

    try:
        _folder(ctx, name)
        plan = run_prune(AtomicAgent(name, root=ctx.obj["root"], trigger="prune"), dry_run=dry_run)
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    if as_json:
        _dump(plan.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(plan.removed)} snapshots ({plan.bytes} bytes; {plan.orphans} named by no record) "
               f"of {len(plan.runs)} runs older than {plan.retention_days} days (before {plan.cutoff}); "
               f"kept {plan.kept}" + (f"; logged as seq {plan.seq}" if plan.seq else ""))


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("run_id", required=False, callback=_text)
@click.option("--last", is_flag=True, help="Show the newest run.")
@click.option("--full", is_flag=True, help="Also print each prompt layer's text as sent.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (texts included).")
@click.pass_context
def show(ctx: click.Context, name: str, run_id: str | None, last: bool, full: bool, as_json: bool) -> None:
    """Show one run of agent NAME as the model saw it: the work item, each layer with its
    source, tokens and cuts, the answer, captures, attempts, cost and guardrail decision;
    each tool step with its calls, verdicts, effects and approvals, what a resumed run
    resumes, and what a suspended run awaits.

    Exit 1 when a snapshot of the run was altered or is missing unexplained; a pruned
    snapshot is named as pruned (exit 0). An unknown RUN_ID is a usage error (exit 2).
    """
    from . import evidence
    from .errors import AtomicVaultError

    if (run_id is None) == (not last):
        raise click.UsageError("pass a RUN_ID or --last (one of them)")
    try:
        folder, store = _folder(ctx, name), _backend(ctx, "log", agent=name)
        record = evidence.find_run(store, folder, None if last else run_id)
        about = evidence.related(store, folder, record) if record.get("steps") else None
        shown = evidence.view(record, evidence.load_texts(store, folder, record), about)
    except evidence.UnknownRun as exc:
        raise click.UsageError(str(exc)) from None
    except AtomicVaultError as exc:
        _fail(exc, name)
    click.echo(evidence.as_json(shown) if as_json else evidence.render(shown, full=full))
    sys.exit(EXIT_ERROR if evidence.tampered(shown) else EXIT_OK)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("run_id", required=False, callback=_text)
@click.option("--last", is_flag=True, help="Export the newest run.")
@click.option("-o", "--output", "out", required=True, type=_Path(), metavar="FILE.tar.gz|FILE.tar|DIR",
              help="A new .tar.gz file, a new .tar file (not compressed: faster for a run far back), "
                   "or a new folder.")
@click.pass_context
def export(ctx: click.Context, name: str, run_id: str | None, last: bool, out: str) -> None:
    """Write the evidence bundle of one run: its record, every snapshot it names, the
    chain from it to HEAD, HEAD and a README. `verify-bundle` checks it with no vault."""
    from pathlib import Path

    from . import bundle, evidence
    from .errors import AtomicVaultError

    if (run_id is None) == (not last):
        raise click.UsageError("pass a RUN_ID or --last (one of them)")
    try:
        folder, store = _folder(ctx, name), _backend(ctx, "log", agent=name)
        record = evidence.find_run(store, folder, None if last else run_id)
        files, manifest = bundle.build(store, folder, record)
        kind = bundle.write(files, Path(out))
    except evidence.UnknownRun as exc:
        raise click.UsageError(str(exc)) from None
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    pruned = f"; {len(manifest['pruned'])} snapshots already pruned" if manifest["pruned"] else ""
    click.echo(f"{out}: {kind} bundle of run {record['run_id']} (seq {record['seq']}), "
               f"{len(files)} files, chain to HEAD seq {json.loads(files['HEAD.json'])['seq']}{pruned}")


def _with_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    _text(ctx, param, value)
    out = []
    for item in value:
        source, sep, path = item.partition("=")
        if not sep or not source.strip() or not path.strip():
            raise click.BadParameter(f"{item!r} is not SOURCE=PATH, e.g. persona/SOUL.md=drafts/SOUL.md")
        out.append((source.strip(), path.strip()))
    return tuple(out)


def _replay_exit(record: dict) -> None:
    sys.exit(EXIT_SKIPPED if record["status"] == "skipped" else EXIT_ERROR if record["status"] == "error" else EXIT_OK)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("run_id", callback=_text)
@click.option("--without", "without", multiple=True, metavar="SOURCE", callback=_text,
              help="Leave this layer out (a note, a journal day, any layer of the run); repeatable.")
@click.option("--model", callback=_model_name, help="Replay with this model instead of the run's.")
@click.option("--max-input-tokens", type=click.IntRange(min=1), metavar="N",
              help="Re-trim the recorded layers to this budget, by assembly's rules.")
@click.option("--with-file", "with_files", multiple=True, metavar="SOURCE=PATH", callback=_with_file,
              help="Replace the layer SOURCE by the file PATH (inside the agent folder); repeatable.")
@click.option("--policy", "policy", metavar="FILE", callback=_text,
              help="Judge the recorded tool calls again by this policy.md (inside the agent folder).")
@click.option("--apply", is_flag=True, help="Write the replay's captures and journal section as a run does.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Seconds to wait for the agent's lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def replay(ctx: click.Context, name: str, run_id: str, without: tuple[str, ...], model: str | None,
           max_input_tokens: int | None, with_files: tuple, policy: str | None, apply: bool,
           lock_timeout: float, as_json: bool) -> None:
    """Re-execute run RUN_ID of agent NAME from its snapshots (not today's files) with
    exactly the changes asked for, and print what changed: layers in and out, the answer
    (a text diff), captures, tokens and cost.

    Logged as a `replay` record of its own; writes no notes and no journal unless
    --apply. Exit 0 done, 1 the model call failed or bad input, 2 an unknown RUN_ID,
    3 skipped by the cost guardrails.

    \b
    Examples:
      atomic-vault replay atlas 20261130T090000-1a2b3c4d --without memory/old-plan.md
      atomic-vault replay atlas 20261130T090000-1a2b3c4d --model offline --json
    """
    from . import evidence
    from .agent import AtomicAgent
    from .errors import AtomicVaultError
    from .replay import Changes, as_json as dumps, render, replay as run_replay

    changes = Changes(tuple(without), model, max_input_tokens, with_files, policy)
    try:
        _folder(ctx, name)
        agent = AtomicAgent(name, root=ctx.obj["root"], trigger="replay", lock_timeout=lock_timeout)
        done = run_replay(agent, run_id, changes, apply=apply)
    except evidence.UnknownRun as exc:
        raise click.UsageError(str(exc)) from None
    except (AtomicVaultError, OSError) as exc:
        _fail(exc, name)
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(dumps(done.compared) if as_json else render(done.compared))
    if not as_json:
        click.echo(f"\n— replay {done.record['run_id']} · seq {done.record['seq']} · {done.status}"
                   + (" · applied" if apply else " · nothing written but the record"), err=True)
    _replay_exit(done.record)


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("run_a", callback=_text)
@click.argument("run_b", callback=_text)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def diff(ctx: click.Context, name: str, run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two recorded runs (or replays) of agent NAME as `replay` does: layers in
    and out, the answer, captures, tokens and cost. No model is called, nothing written.

    Exit 1 when a snapshot of either run was altered; 2 for an unknown run id.
    """
    from . import evidence
    from .errors import AtomicVaultError
    from .replay import as_json as dumps, compare, find_record, render

    try:
        folder, store = _folder(ctx, name), _backend(ctx, "log", agent=name)
        a, b = find_record(store, folder, run_a), find_record(store, folder, run_b)
        compared = compare(store, folder, a, b)
    except evidence.UnknownRun as exc:
        raise click.UsageError(str(exc)) from None
    except AtomicVaultError as exc:
        _fail(exc, name)
    click.echo(dumps(compared) if as_json else render(compared))
    sys.exit(EXIT_ERROR if any(g["state"] in ("tampered", "missing") for g in compared["gone"]) else EXIT_OK)


@cli.command("verify-bundle")
@_root_option  # accepted like everywhere, and unused: a bundle is checked with no vault
@click.argument("path", type=_Path(exists=True))
@click.option("--anchor", metavar="SEQ:HASH", help="Also check the chain against a HEAD kept elsewhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
def verify_bundle(path: str, anchor: str | None, as_json: bool) -> None:
    """Check an evidence bundle standalone (no vault): exit 1 naming every altered,
    missing or added file."""
    from pathlib import Path

    from . import bundle
    from .errors import AtomicVaultError

    try:
        checked = bundle.verify(Path(path), anchor)
    except AtomicVaultError as exc:
        _fail(exc)
    if as_json:
        _dump(checked.as_dict())
    else:
        record = checked.record or {}
        if checked.ok:
            click.echo(f"ok: run {record.get('run_id')} (seq {record.get('seq')}) of {record.get('agent')} "
                       f"is in its chain up to HEAD seq {(checked.head or {}).get('seq')}")
        for problem in checked.problems:
            click.echo(f"BAD: {problem}")
        for note in checked.notes:
            click.echo(f"note: {note}")
    sys.exit(EXIT_OK if checked.ok else EXIT_ERROR)


@cli.command(name="mcp")
@_root_option
@click.option("--agents", metavar="A,B", callback=_line(2000),
              help="Serve only these agents (comma-separated) [all of the vault].")
@click.option("--read-only", is_flag=True, help="Refuse run_agent, write_note and decide_approval.")
@click.option("--http", metavar="HOST:PORT", callback=_line(300),
              help="Serve streamable HTTP on HOST:PORT instead of stdio.")
@click.pass_context
def mcp_(ctx: click.Context, agents: str | None, read_only: bool, http: str | None) -> None:
    """Serve the vault to MCP clients (Claude Desktop, Claude Code, ...) over stdio, or
    over streamable HTTP with --http: its agents, notes, runs, log, costs and approvals
    as tools, notes and runs as resources. Needs the [mcp] extra.

    \b
    Examples:
      atomic-vault --root ~/agents mcp --read-only
      atomic-vault mcp --agents atlas --http 127.0.0.1:8765
    """
    from .errors import AtomicVaultError

    names = None if agents is None else [a.strip() for a in agents.split(",") if a.strip()]
    if names is not None and not names:
        raise click.BadParameter("name at least one agent, e.g. --agents atlas,mira", param_hint="--agents")
    if http is not None and not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}\Z", http):
        raise click.BadParameter(f"{http!r} is not HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--http")
    if http is not None and not _loopback(http.rpartition(":")[0].strip("[]")):
        # The MCP endpoint has no authentication of its own: anyone who reaches it could
        # run agents and write notes, so it listens on this machine only.
        raise click.BadParameter(f"{http!r} is not a loopback address; the MCP HTTP endpoint has no "
                                 "authentication, so it listens on this machine only (e.g. 127.0.0.1:8765; "
                                 "put an authenticating proxy in front to reach it from elsewhere)",
                                 param_hint="--http")
    try:
        from . import mcp_server
        import mcp  # noqa: F401  (the [mcp] extra)
    except ImportError:
        _fail(RuntimeError("the mcp SDK is not installed (fix: pip install 'atomic-vault[mcp]')"))
    try:
        mcp_server.serve(ctx.obj["root"], names, read_only, http)
    except AtomicVaultError as exc:
        _fail(exc)


@cli.command()
@_root_option
@click.option("--host", default="127.0.0.1", show_default=True, callback=_line(255),
              help="Address to listen on; other than loopback it needs ATOMIC_VAULT_TOKEN.")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one).")
@click.option("--agents", metavar="A,B", callback=_line(2000),
              help="Serve only these agents (comma-separated) [all of the vault].")
@click.option("--max-body", default=1024 * 1024, show_default=True, type=click.IntRange(min=1),
              metavar="BYTES", help="Largest request body taken; a larger one is refused (413).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, agents: str | None, max_body: int) -> None:
    """Serve the vault as a JSON HTTP API: runs, log, evidence, note search and
    approvals (routes in GET /openapi.json). Needs the [serve] extra.

    Requests need `Authorization: Bearer $ATOMIC_VAULT_TOKEN` when the variable is set;
    without it the server listens on loopback addresses only. SIGTERM lets the runs in
    flight finish, then exits 0.

    \b
    Examples:
      atomic-vault serve --agents atlas
      ATOMIC_VAULT_TOKEN=s3cret atomic-vault serve --host 0.0.0.0 --port 8080
    """
    import os

    from .errors import AtomicVaultError

    names = None if agents is None else [a.strip() for a in agents.split(",") if a.strip()]
    if names is not None and not names:
        raise click.BadParameter("name at least one agent, e.g. --agents atlas,mira", param_hint="--agents")
    token = os.environ.get("ATOMIC_VAULT_TOKEN") or None
    if token is None and not _loopback(host.strip("[]")):
        raise click.BadParameter(f"{host!r} is not a loopback address and ATOMIC_VAULT_TOKEN is not set; "
                                 "anyone who reaches the server could run agents: set ATOMIC_VAULT_TOKEN "
                                 "to a long random secret, or listen on 127.0.0.1", param_hint="--host")
    try:
        from . import http_api
        import starlette, uvicorn  # noqa: F401, E401  (the [serve] extra)
    except ImportError:
        _fail(RuntimeError("starlette and uvicorn are not installed (fix: pip install 'atomic-vault[serve]')"))
    try:
        http_api.serve(ctx.obj["root"], names, host.strip("[]"), port, token, max_body)
    except AtomicVaultError as exc:
        _fail(exc)


def _queue_backend(ctx: click.Context):
    from .workqueue import open_queue

    return open_queue(ctx.obj["root"])


@cli.command()
@_root_option
@click.argument("name", callback=_text)
@click.argument("work_item", callback=_text)
@click.option("--at", "at", metavar="TIME", callback=_line(64),
              help="Not before TIME: an ISO date and time (local unless it names its zone) or +30s, +10m, +2h, +1d.")
@click.option("--key", metavar="KEY", callback=_line(200),
              help="The run's idempotency key (default: a new unique one): the item runs at most once per KEY.")
@click.option("--priority", type=int, default=0, show_default=True,
              help="-499 to 499; higher runs first, then the oldest.")
@click.option("--max-attempts", type=int, default=5, show_default=True,
              help="Tries before the item is dead-lettered (a lease that runs out counts as a try).")
@click.option("--json", "as_json", is_flag=True, help="Print the stored item as JSON.")
@click.pass_context
def enqueue(ctx: click.Context, name: str, work_item: str, at: str | None, key: str | None,
            priority: int, max_attempts: int, as_json: bool) -> None:
    """Put WORK_ITEM for agent NAME on the vault's work queue ('-' reads it from standard input)."""
    from .errors import AtomicVaultError
    from .workqueue import due_time

    if work_item == "-":
        work_item = _stdin_text()
    if not work_item.strip():
        raise click.UsageError("the work item is empty; pass the text to work on, or '-' to "
                               "read it from standard input")
    _folder(ctx, name)
    try:
        due = due_time(at)
    except AtomicVaultError as exc:
        raise click.BadParameter(exc.message + f" ({exc.fix})", param_hint="--at") from None
    try:
        item = _queue_backend(ctx).enqueue(name, work_item, key=key, priority=priority, due=due,
                                           max_attempts=max_attempts)
    except AtomicVaultError as exc:
        _fail(exc, name)
    if as_json:
        _dump(item.as_dict())
    else:
        click.echo(f"queued item {item.id} for {name} (key {item.key})")


@cli.command()
@_root_option
@click.option("--agents", metavar="A,B", callback=_text,
              help="Work only on the items of these agents (comma-separated); default: every agent.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Items run at once (threads of this process).")
@click.option("--lease", type=float, default=60.0, show_default=True, callback=_seconds,
              help="Seconds a claim lasts unless renewed (renewed every third of it while an item runs).")
@click.option("--backoff", type=float, default=5.0, show_default=True, callback=_seconds,
              help="Seconds before the first retry of a failed item; doubled each try, at most 300.")
@click.option("--poll", type=float, default=1.0, show_default=True, callback=_seconds,
              help="Seconds between looks at an empty queue (PostgreSQL also wakes on each enqueue).")
@click.option("--until-empty", is_flag=True,
              help="Exit once nothing is ready, claimed or scheduled, instead of waiting for more.")
@click.pass_context
def worker(ctx: click.Context, agents: str | None, concurrency: int, lease: float, backoff: float,
           poll: float, until_empty: bool) -> None:
    """Run the queue's items: claim, run as a keyed run, acknowledge; SIGTERM stops cleanly."""
    from .config import RetryPolicy
    from .errors import AtomicVaultError
    from .workqueue import Worker

    names = [a.strip() for a in agents.split(",") if a.strip()] if agents else None
    if agents is not None and not names:
        raise click.BadParameter("name at least one agent, e.g. --agents atlas,iris", param_hint="--agents")
    if lease <= 0:
        raise click.BadParameter("the lease must be over 0 seconds", param_hint="--lease")
    try:
        runner = Worker(ctx.obj["root"], agents=names, concurrency=concurrency, lease=lease,
                        retry=RetryPolicy(base_delay_s=backoff, max_delay_s=max(backoff, 300.0)),
                        poll=max(poll, 0.01), until_empty=until_empty)
    except AtomicVaultError as exc:
        _fail(exc)
    runner.run()
    sys.exit(EXIT_OK)


@cli.command()
@_root_option
@click.argument("name", required=False, callback=_text)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the counts, then the in-flight and dead items.")
@click.pass_context
def queue(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """The work queue's depth, in-flight and dead items (of agent NAME, or of every agent)."""
    from .errors import AtomicVaultError
    from .vault import check_agent_name

    try:
        if name is not None:
            check_agent_name(name)
        backend = _queue_backend(ctx)
        counts = backend.stats(name)
        flying = backend.list("claimed", name)
        dead = backend.list("dead", name)
    except AtomicVaultError as exc:
        _fail(exc, name)
    if as_json:
        _dump({"backend": backend.name, **counts, "in_flight": [i.as_dict() for i in flying],
               "dead_items": [i.as_dict() for i in dead]})
        return
    click.echo(f"{counts['ready']} ready, {counts['scheduled']} scheduled, {counts['claimed']} in flight, "
               f"{counts['done']} done, {counts['dead']} dead ({backend.name} queue)")
    for item in flying:
        click.echo(f"in flight {item.id:>6}  {item.agent}  attempt {item.attempts}/{item.max_attempts}  "
                   f"token {item.token}  {_gist({'summary': item.work}, 50)}")
    for item in dead:
        click.echo(f"dead      {item.id:>6}  {item.agent}  {_gist({'summary': item.work}, 40)}  "
                   f"— {_gist({'summary': item.error or ''}, 100)}")


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    cli(prog_name="atomic-vault")
