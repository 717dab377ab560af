"""Health checks for agent folders, and the safe repairs of ``doctor --repair``.

Checks never write. Repairs only restore invariants that the files themselves define:
INDEX from the notes, HEAD from a verified log, torn lines moved aside (never deleted),
leftover temp files and the cost reservations of dead runs removed. A note's content and
the chain are never rewritten.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import index, runlog
from . import guardrails, journal as journals, pricing
from .config import load_model_config, load_tools_config, load_vault_prices
from .errors import AtomicVaultError, LockTimeout
from .fileio import TEMP_SUFFIX, ends_torn, fsync_dir, move_torn_tail
from .backends.files import FileLog
from .locks import holder_pid, os_locks, pid_alive
from .models import load_model
from .notes import FILENAME, every_problem, is_current
from .protocols import LogQuery
from .vault import MONTH, PERSONA_FILES, AgentFolder


@dataclass
class Finding:
    agent: str
    check: str
    level: str  # ok | warn | error
    message: str
    path: str | None = None
    fix: str | None = None


def check(folder: AgentFolder, backends: dict[str, Any] | None = None) -> list[Finding]:
    """Every check for one agent; nothing changes. ``backends`` maps kind to the backend
    the agent runs with (default: files for every kind)."""
    out: list[Finding] = []
    backends = _with_defaults(backends)

    def add(check_name: str, level: str, message: str, path: Path | str | None = None,
            fix: str | None = None) -> None:
        out.append(Finding(folder.name, check_name, level, message,
                           str(path) if path is not None else None, fix))

    _check_layout(folder, add)
    _check_links(folder, add)
    memory, log = backends["memory"], backends["log"]
    _check_models_and_costs(folder, log, add)
    if memory.name != "files":
        _check_backend(folder, "memory", memory, add)
        if memory.name != "sqlite":
            _check_memory_disagreement(folder, memory, add)
    notes = _check_notes(folder, memory, add)
    if notes is not None:
        _check_index(folder, memory, notes, add)
    if log.name == "files":
        _check_log(folder, add)
    else:
        _check_backend(folder, "log", log, add)
        _check_disagreement(folder, log, add)
    if backends["journal"].name == "files":
        _check_journal(folder, add)
    if backends["lock"].name == "files":
        _check_lock(folder, add)
    else:
        _check_backend(folder, "lock", backends["lock"], add)
    _check_reservations(folder, add)
    _check_snapshots(folder, log, add)
    _check_approvals(folder, log, add)
    _check_journal_sections(folder, log, backends["journal"], add)
    temps = _temp_files(folder)
    if temps:
        add("temp files", "warn", f"{len(temps)} leftover temp file(s) from an interrupted write",
            temps[0], "`doctor --repair` removes them")
    return out


def _check_layout(folder: AgentFolder, add) -> None:
    identity = folder.persona / "IDENTITY.md"
    if not identity.is_file():
        add("layout", "error", "persona/IDENTITY.md is missing", identity, "write who the agent is")
    for name in PERSONA_FILES[1:]:
        if not (folder.persona / name).is_file():
            add("layout", "warn", f"persona/{name} is missing (skipped in prompts)", folder.persona / name)
    for path, loader in ((folder.model, load_model_config), (folder.tools, load_tools_config)):
        try:
            config = loader(path)
        except AtomicVaultError as exc:
            add("config", "error", exc.message, exc.path, exc.fix)
            continue
        if config.unknown_keys:
            add("config", "warn", f"unknown keys ignored: {', '.join(config.unknown_keys)}", path,
                "check their spelling against spec/06-config.md")
    _check_tools(folder, add)
    _check_membership(folder, add)
    if not folder.memory.is_dir():
        add("layout", "warn", "memory/ is missing (created by the first capture)", folder.memory)
    else:
        add("layout", "ok", "agent folder layout is valid")


def _check_membership(folder: AgentFolder, add) -> None:
    """The projects model.md names: each must exist and list the agent (a run refuses otherwise)."""
    from . import projects

    try:
        config = load_model_config(folder.model)
    except AtomicVaultError:  # reported as a config error above
        return
    try:
        joined = projects.for_agent(folder, config)
    except AtomicVaultError as exc:
        add("projects", "error", exc.message, exc.path, exc.fix)
        return
    if joined:
        add("projects", "ok", f"a member of {', '.join(p.name for p in joined)}")


def check_project(root: Path, name: str) -> list[Finding]:
    """Every check for one project folder (spec/18): project.md, its members, its policy
    floor, its notes and INDEX. Nothing changes."""
    from . import policy, projects
    from .backends.files import FileMemory

    label = f"{projects.PROJECTS}/{name}"
    out: list[Finding] = []

    def add(check_name: str, level: str, message: str, path: Path | str | None = None,
            fix: str | None = None) -> None:
        out.append(Finding(label, check_name, level, message, str(path) if path is not None else None, fix))

    problems = [exc for project, exc in projects.problems(root) if project == name]
    for exc in problems:
        add("project", "error", (f"{exc.field}: " if exc.field else "") + exc.message, exc.path, exc.fix)
    if not problems:
        add("project", "ok", "project.md is valid and every member is an agent")
        unknown = projects.load(root, name).unknown_keys
        if unknown:
            add("project", "warn", f"unknown keys ignored: {', '.join(unknown)}", projects.load(root, name).file,
                "project.md takes members: and budget: (spec/18)")
    folder = projects.folder_of(root, name)
    loaded = policy.load(folder.path / "policy.md")
    if loaded is not None and loaded.error is not None:
        add("config", "error", f"the floor fails closed, every member's tool call is blocked: {loaded.error.message}",
            folder.path / "policy.md", loaded.error.fix)
    memory = FileMemory()
    try:
        notes = _check_notes(folder, memory, add) if folder.memory.is_dir() else None
        if notes is not None:
            _check_index(folder, memory, notes, add)
    except AtomicVaultError as exc:
        add("notes", "error", exc.message, exc.path, exc.fix)
    return out


def _check_tools(folder: AgentFolder, add) -> None:
    """Tool declarations and the policies that gate them: what a run would refuse or
    block, named before it runs (no server is started here)."""
    from . import policy, tools

    try:
        for warning in tools.load(load_tools_config(folder.tools), folder.tools).warnings:
            add("config", "warn", warning, folder.tools)
    except AtomicVaultError as exc:  # tools.md's own errors are reported above
        if exc.path == str(folder.tools) and exc.field and exc.field.startswith("tools["):
            add("config", "error", f"{exc.field}: {exc.message}", exc.path, exc.fix)
    for path in (folder.path / "policy.md", folder.root / "policy.md"):
        loaded = policy.load(path)
        if loaded is not None and loaded.error is not None:
            add("config", "error", f"fails closed, every tool call is blocked: {loaded.error.message}"
                + (f" ({loaded.error.field})" if loaded.error.field else ""), path, loaded.error.fix)


def _check_links(folder: AgentFolder, add) -> None:
    """Every link and every special file in the agent folder (derived state and .git
    aside): runs refuse them on reads and writes, so each is named here with its fix."""
    base = os.path.realpath(folder.path)
    shared = {folder.model, folder.tools}  # config files may link to a shared one (spec/06)
    for directory, dirs, files in os.walk(folder.path):
        dirs[:] = [d for d in dirs if d not in (".atomic_vault", ".git")]
        for name in sorted(dirs + files):
            path = Path(directory) / name
            st = os.lstat(path)
            what = folder.relative(path)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                inside = real == base or real.startswith(base.rstrip(os.sep) + os.sep)
                if path in shared:
                    add("links", "warn", f"{what} is a link to {real}, read as a shared config file",
                        path, "keep it only if that file is meant to be shared")
                elif what == "memory" or what.startswith("memory/"):
                    add("links", "error", f"{what} is a link; notes are read and written only as plain "
                        "files in memory/", path, "replace the link with the file or folder it points to")
                elif not inside:
                    add("links", "error", f"{what} is a link out of the agent folder (to {real}); runs "
                        "refuse it", path, "replace the link with a copy inside the agent folder")
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                add("links", "error", f"{what} is not a regular file (a FIFO, a device or a socket); "
                    "runs refuse it", path, "remove it, or replace it with a plain file")


def _check_models_and_costs(folder: AgentFolder, log: Any, add) -> None:
    """Each model model.md names: can it be built here, where its key comes from (never
    the key), what it costs; then whether the guardrails can work as written."""
    try:
        config = load_model_config(folder.model)
        vault_prices = load_vault_prices(folder.root)
    except AtomicVaultError as exc:
        if exc.path != str(folder.model):  # model.md's own errors are reported above
            add("prices", "error", exc.message, exc.path, exc.fix)
        return
    for mapped in config.mapped:
        add("model", "ok", f"{mapped} (a bare name of a well-known family)", folder.model,
            "write provider:model to say so explicitly")
    broken: dict[str, AtomicVaultError] = {}
    for role, name in (("model", config.model), ("fallback", config.fallback)):
        if not name:
            continue
        try:
            model = load_model(name, config.options_for(name))
        except AtomicVaultError as exc:
            broken[role] = exc
        else:
            source = getattr(model, "key_source", None)
            add("model", "ok", f"{role} {name!r} is available" + (f"; API key from {source}" if source else ""))
    for role, exc in broken.items():
        # Runs fail when model.md's model cannot be built and no fallback can answer.
        fails = role == "model" and (not config.fallback or "fallback" in broken)
        instead = ("; its runs fail" if fails else f"; runs use the fallback {config.fallback}"
                   if role == "model" else "; a failing model has no fallback")
        name = config.model if role == "model" else config.fallback
        add("model", "error" if fails else "warn", f"{role} {name!r} cannot be built here ({exc.message})"
            f"{instead}", folder.model, exc.fix)
    for name in filter(None, (config.model, config.fallback)):
        price = pricing.price_for(name, vault_prices, config.prices)
        if price is None:
            add("prices", "warn", f"no price is known for {name}: its runs' cost is recorded as unknown "
                "and the guardrails cannot bound it", folder.model,
                "add it under prices: in model.md or in atomic_vault.yaml (USD per million tokens)")
        else:
            add("prices", "ok", f"{name}: ${price.input:g} in / ${price.output:g} out per million "
                f"tokens ({price.source})")
    _check_guardrails(folder, config, log, add)


def _check_guardrails(folder: AgentFolder, config: Any, log: Any, add) -> None:
    rails = config.cost_guardrails
    if not rails:
        return
    if not guardrails.enabled(config):
        add("guardrails", "warn", "cost_guardrails are not enforced (enabled is false, or no cap is set)",
            folder.model, "set enabled: true and daily_cap_usd / monthly_cap_usd")
        return
    if "fallback" in (rails.get("daily_cap_action"), rails.get("monthly_cap_action")) and not config.fallback:
        add("guardrails", "warn", "a cap's action is fallback but model.md names no fallback model: "
            "such runs are skipped", folder.model, "set fallback: to a cheaper model")
    daily, monthly = rails.get("daily_cap_usd"), rails.get("monthly_cap_usd")
    if daily is not None and monthly is not None and daily > monthly:
        add("guardrails", "warn", f"the daily cap ${daily:.2f} is above the monthly cap ${monthly:.2f}",
            folder.model, "lower daily_cap_usd or raise monthly_cap_usd")
    now = datetime.now(config.zone or timezone.utc).astimezone(config.zone)
    try:
        day, month = guardrails.spent(log, folder, now)
        unknown = sum(row.unknown_cost for row in log.cost(folder, "month", since=f"{now:%Y-%m}-01"))
    except AtomicVaultError as exc:
        add("guardrails", "error", f"spend so far cannot be read ({exc.message})", exc.path, exc.fix)
        return
    parts = [f"${spent:.4f} of ${cap:.2f} {period}" for spent, cap, period in
             ((day, daily, "today"), (month, monthly, "this month")) if cap is not None]
    over = any(cap is not None and spent >= cap for spent, cap in ((day, daily), (month, monthly)))
    add("guardrails", "warn" if over else "ok", "spent " + ", ".join(parts) + (
        " (a cap is reached)" if over else "") + f" [{now.tzinfo}]")
    if unknown:
        add("guardrails", "warn", f"{unknown} run(s) this month have an unknown cost and are not counted "
            "against the caps", folder.model, "add the missing prices under prices: in model.md")


def _with_defaults(backends: dict[str, Any] | None) -> dict[str, Any]:
    from .backends.files import FileJournal, FileMemory
    from .locks import FileLock

    chosen = {"memory": FileMemory(), "log": FileLog(), "lock": FileLock(), "journal": FileJournal()}
    chosen.update(backends or {})
    return chosen


def _check_backend(folder: AgentFolder, kind: str, backend: Any, add) -> None:
    """Reachable, consistent with itself, and (for derived stores) with the files."""
    try:
        if kind == "memory":
            backend.scan(folder)
        elif kind == "log":
            backend.ready(folder)
            result = backend.verify(folder)
            if not result.ok:
                bad = result.first_bad
                add("chain", "error", f"{backend.name} log: seq {bad['seq']}: {bad['reason']}", bad["file"],
                    "restore the log from a backup; `atomic-vault verify` shows details")
            else:
                add("chain", "ok", f"{result.records} chained records verify in the {backend.name} log")
        elif kind == "lock":
            with backend.hold(folder, 0):
                pass
    except LockTimeout:
        add("lock", "warn", f"the agent is locked in {backend.name} (a run is in progress?)")
        return
    except AtomicVaultError as exc:
        add("backend", "error", f"{kind} backend {backend.name}: {exc.message}", exc.path, exc.fix)
        return
    problems = backend.check(folder) if callable(getattr(backend, "check", None)) else []
    for problem in problems:
        add("backend", "warn", f"{kind} backend {backend.name}: {problem}", None,
            f"`atomic-vault reindex {folder.name}` rebuilds derived state")
    if not problems:
        add("backend", "ok", f"{kind} backend {backend.name} is reachable and consistent")


def _check_disagreement(folder: AgentFolder, log: Any, add) -> None:
    """A files log left beside another log backend must be a prefix of it (a migration's
    source); otherwise runs went to both and the two disagree."""
    files_head = runlog.tail(folder)[:2] if runlog.day_files(folder) else (0, None)
    if not files_head[0]:
        return
    seq, digest = files_head
    for record in log.records(folder):
        if record.get("seq") == seq:
            if record.get("hash") == digest:
                add("backend", "ok", f"the files log (to seq {seq}) is an older copy of the {log.name} log")
                return
            break
    add("backend", "warn", f"the files log (seq {seq}) and the {log.name} log disagree: "
        f"its records are not all in the {log.name} log", folder.log,
        f"`atomic-vault migrate {folder.name} --from files --to {log.name}` if the files log is the "
        "newer one; otherwise move log/ aside")


def _check_snapshots(folder: AgentFolder, log: Any, add) -> None:
    """Snapshots no record names: a run cut off between its snapshots and its record
    (harmless; `prune` removes them). Whether each named one is intact is `verify`'s job."""
    from .snapshots import named

    try:
        stored = set(log.snapshot_hashes(folder))
        if not stored:
            return
        for record in log.records(folder):
            stored.difference_update(named(record))
    except AtomicVaultError:
        return  # the log check reports an unreadable log
    if stored:
        add("snapshots", "warn", f"{len(stored)} snapshot(s) that no record names (a run cut off "
            "before its record?); harmless", folder.log,
            f"`atomic-vault prune {folder.name}` removes them (with retention: set)")


ORPHAN_AFTER_S = guardrails.STALE_AFTER_S  # a run this long without its record is surely gone


def _approval_states(folder: AgentFolder, log: Any) -> list[tuple[str, Any, str]]:
    """Each approval file as (id, the approval or its ConfigError, state): ``invalid``,
    ``taken`` or ``edited after taken`` (the log holds its decision), ``decided`` (the
    next resume takes it), ``orphan`` (pending, and its run has no record though it
    started long ago: killed before its commit point), ``young`` (pending, its run may
    still be going), ``expired`` or ``pending``."""
    from . import approvals
    from .errors import ConfigError

    ids = approvals.listing(folder.path)
    if not ids:
        return []
    taken, runs = {}, set()
    for record in log.records(folder):
        if record.get("kind") == "approval":
            taken[record.get("approval")] = record
        elif record.get("kind", "run") == "run":
            runs.add(record.get("run_id"))
    now = datetime.now(timezone.utc)
    out: list[tuple[str, Any, str]] = []
    for one in ids:
        try:
            approval = approvals.read(folder.path, one)
        except ConfigError as exc:
            out.append((one, exc, "invalid"))
            continue
        record = taken.get(one)
        if record is not None:
            edited = record.get("file_sha256") != approval.file_sha256
            out.append((one, approval, "edited after taken" if edited else "taken"))
        elif approval.decision != "pending":
            out.append((one, approval, "decided"))
        elif approval.fields.get("run") not in runs and approval.fields.get("kind") is None:  # a call's
            try:
                asked = datetime.fromisoformat(str(approval.fields.get("requested_at")))
                old = asked.tzinfo is None or (now - asked).total_seconds() > ORPHAN_AFTER_S
            except ValueError:
                old = True  # an unreadable time cannot keep it alive
            out.append((one, approval, "orphan" if old else "young"))
        else:
            out.append((one, approval, "expired" if approval.expired(now) else "pending"))
    return out


def _check_approvals(folder: AgentFolder, log: Any, add) -> None:
    """approvals/: files a resume would refuse, orphans of killed runs, expired and
    pending ones. A pending approval's run must have logged its record (awaiting_approval)."""
    try:
        states = _approval_states(folder, log)
    except AtomicVaultError:
        return  # the log check reports an unreadable log
    counts: dict[str, int] = {}
    for one, item, state in states:
        counts[state] = counts.get(state, 0) + 1
        where = folder.path / "approvals" / f"{one}.md"
        if state == "invalid":
            field = f"{item.field}: " if item.field else ""
            add("approvals", "error", f"approvals/{one}.md: {field}{item.message}; a resume refuses it",
                item.path or where, item.fix)
        elif state == "edited after taken":
            add("approvals", "warn", f"approvals/{one}.md changed after its decision was taken; the "
                "edit is not applied", where, "restore the file, or leave it: the log holds the decision")
        elif state == "orphan":
            add("approvals", "warn", f"approvals/{one}.md waits for run {item.fields.get('run')}, which "
                "has no record in the log (killed before its commit point): resume cannot take it", where,
                "`doctor --repair` moves it aside to approvals/<id>.md.orphan")
        elif state == "expired" and item.fields.get("kind") == "consolidation":
            add("approvals", "warn", f"approvals/{one}.md, a consolidation proposal, expired at "
                f"{item.fields.get('expires_at')} undecided: it is never applied", where,
                f"`atomic-vault consolidate {folder.name}` makes a new one")
        elif state == "decided" and item.fields.get("kind") == "consolidation":
            add("approvals", "warn", f"approvals/{one}.md, a consolidation proposal, says decision: "
                f"{item.decision} but no record took it (edited by hand, or the apply was cut off)", where,
                f"`atomic-vault approvals {folder.name} {item.decision} {one} --by NAME` takes it (refused, "
                "naming the note, when a note changed since)")
        elif state == "expired":
            add("approvals", "warn", f"approvals/{one}.md expired at {item.fields.get('expires_at')} "
                "undecided: it counts as denied", where,
                f"`atomic-vault resume {folder.name} {item.fields.get('run')}` tells the model it was denied")
    pending, young = counts.get("pending", 0), counts.get("young", 0)
    if states:
        add("approvals", "ok", f"{pending} approval(s) pending"
            + (f", {young} more whose run has not logged its record yet (still running?)" if young else ""))


def _repair_orphans(folder: AgentFolder, log: Any) -> list[str]:
    """Orphan approvals moved aside (never deleted): no run will ever take them."""
    actions = []
    for one, _, state in _approval_states(folder, log):
        if state == "orphan":
            path = folder.path / "approvals" / f"{one}.md"
            os.replace(path, path.with_name(path.name + ".orphan"))
            fsync_dir(path.parent)
            actions.append(f"moved approvals/{one}.md aside to approvals/{one}.md.orphan (its run has "
                           "no record in the log)")
    return actions


def _check_memory_disagreement(folder: AgentFolder, memory: Any, add) -> None:
    """Note files left in memory/ beside a memory backend that stores notes elsewhere must
    be copies of the stored notes; otherwise someone edited the files after a migration."""
    from .backends.files import FileMemory

    files = FileMemory()
    if not folder.memory.is_dir():
        return
    try:
        notes, broken = files.scan(folder)
        differ = [f for f in sorted({*notes, *broken}) if files.get(folder, f) != memory.get(folder, f)]
    except AtomicVaultError as exc:
        add("backend", "error", f"memory backend {memory.name}: {exc.message}", exc.path, exc.fix)
        return
    if differ:
        add("backend", "warn", f"{len(differ)} note file(s) in memory/ differ from the {memory.name} notes "
            f"(e.g. {differ[0]}): edits to the files are not seen by runs", folder.memory,
            f"`atomic-vault migrate {folder.name} --what memory --from files --to {memory.name}` if the "
            "files are newer; otherwise move memory/ aside")


def _check_notes(folder: AgentFolder, memory: Any, add) -> dict[str, dict[str, Any]] | None:
    if memory.name in ("files", "sqlite") and (folder.memory.is_symlink() or not folder.memory.is_dir()):
        return None  # a linked memory/ is reported by the links check
    notes, broken = memory.scan(folder)
    for name, error in sorted(broken.items()):
        for problem in every_problem(error):  # all of them at once, not one per fix
            field = f"{problem.field}: " if problem.field else ""
            add("notes", "error", f"{name}: {field}{problem.message}", problem.path or folder.memory / name,
                problem.fix)
    if not broken:
        add("notes", "ok", f"{len(notes)} notes have valid frontmatter")
    return notes


def index_changes(folder: AgentFolder, memory: Any,
                  notes: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str] | None]:
    """What INDEX.md needs so that it lists exactly the notes (live ones under their type)."""
    listed = index.listed(memory.get_index(folder) or "")
    changes: dict[str, tuple[str, str] | None] = {}
    for name, summary in notes.items():
        section = index.section_for(summary, is_current(summary))
        if listed.get(name) != section:
            changes[name] = (section, index.entry_line(summary))
    for name in listed:
        if name not in notes and not (FILENAME.match(name) and memory.get(folder, name) is not None):
            changes[name] = None
    return changes


def _check_index(folder: AgentFolder, memory: Any, notes: dict[str, dict[str, Any]], add) -> None:
    changes = index_changes(folder, memory, notes)
    if memory.get_index(folder) is None:
        add("index", "error", "memory/INDEX.md is missing", folder.index, "`doctor --repair` rebuilds it from the notes")
    elif changes:
        missing = sorted(name for name, change in changes.items() if change is not None)
        dangling = sorted(name for name, change in changes.items() if change is None)
        detail = []
        if missing:
            detail.append(f"{len(missing)} note(s) missing or in the wrong section (e.g. {missing[0]})")
        if dangling:
            detail.append(f"{len(dangling)} line(s) for notes that do not exist (e.g. {dangling[0]})")
        add("index", "error", "INDEX.md does not match the notes: " + "; ".join(detail), folder.index,
            "`doctor --repair` updates INDEX.md from the notes")
    else:
        add("index", "ok", "INDEX.md lists exactly the notes")


def _check_log(folder: AgentFolder, add) -> None:
    files = runlog.day_files(folder)
    if files and ends_torn(files[-1]):
        add("log", "warn", "the last log line is torn (a crash during a write)", files[-1],
            "`doctor --repair` moves it aside into a .torn file")
    result = FileLog().verify(folder)  # the chain, and the cost rollup cache against it
    for warning in result.warnings:
        if "torn" not in warning:
            add("chain", "warn", warning, folder.head, "`doctor --repair`")
    if result.ok:
        legacy = f" after {result.legacy} legacy records" if result.legacy else ""
        add("chain", "ok", f"{result.records} chained records verify{legacy}")
    else:
        bad = result.first_bad
        source = runlog.copied_from(bad)
        fix = ("`doctor --repair` rebuilds HEAD from the verified log"
               if bad["reason"].startswith("log/HEAD") else
               runlog.copied_remedy(folder.name, source) if source else
               "delete the cache file: it is derived, and rebuilt from the log"
               if bad["reason"].startswith("tampered: the cost rollup cache") else
               "restore the log from git or a backup; `atomic-vault verify` shows details")
        add("chain", "error", f"seq {bad['seq']} at line {bad['line']}: {bad['reason']}", bad["file"], fix)


def _check_lock(folder: AgentFolder, add) -> None:
    path = folder.state / "lock"
    if not path.exists():
        return
    portalocker = os_locks()  # imported here: only writers need it

    with open(path, encoding="utf-8") as handle:
        try:
            portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
            portalocker.unlock(handle)
            add("lock", "ok", "the agent is not locked")
        except portalocker.LockException:
            pid = holder_pid(folder)
            alive = pid is not None and pid_alive(pid)
            add("lock", "warn" if alive else "error",
                f"locked by pid {pid} ({'running' if alive else 'not running on this host'})", path,
                None if alive else "if no run is in progress on another host, delete the lock file")


def _journal_days(folder: AgentFolder) -> list[Path]:
    if not folder.journal.is_dir():
        return []
    return [path for month in sorted(folder.journal.iterdir()) if month.is_dir() and MONTH.match(month.name)
            for path in sorted(month.glob("????-??-??.md"))
            if path.is_file() and not path.is_symlink()]  # the others: the links check


def _cut_mid_character(raw: bytes) -> bool | None:
    """None when ``raw`` is UTF-8; True when only its torn tail (the bytes after the last
    newline: a crash inside a long write) is not; False when earlier bytes are not."""
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        return exc.start >= raw.rfind(b"\n") + 1


def _check_journal(folder: AgentFolder, add) -> None:
    """Journal days must be UTF-8: a run reads the recent ones and stops on bad bytes. A
    torn section that is valid text is harmless (the next one starts on its own line)."""
    for path in _journal_days(folder):
        raw = path.read_bytes()
        torn = _cut_mid_character(raw)
        if torn:
            add("journal", "error", f"{folder.relative(path)} ends with a section torn inside a character "
                "(a crash during a write?): runs that read it stop", path,
                "`doctor --repair` moves the torn bytes aside into a .torn file")
        elif torn is False:
            add("journal", "error", f"{folder.relative(path)} is not valid UTF-8", path, "re-save it as UTF-8")


JOURNAL_DAYS_CHECKED = 7  # the journal days whose runs doctor matches with the log


def _unjournaled(folder: AgentFolder, log: Any, journal: Any) -> list[dict[str, Any]]:
    """Run records of the newest journal days (and any later day) that have no journal
    section: a run cut off between its record, the commit point, and its journal append."""
    days = {Path(source).stem: text for source, text in journal.recent(folder, JOURNAL_DAYS_CHECKED)}
    oldest = min(days) if days else None
    query = LogQuery(since=oldest) if oldest else LogQuery(limit=50)
    return [record for record in log.query(folder, query)
            if record.get("kind", "run") == "run" and isinstance(record.get("run_id"), str)
            and isinstance(record.get("ts"), str)
            and f" · run {record['run_id']}" not in days.get(record["ts"][:10], "")]


def _check_journal_sections(folder: AgentFolder, log: Any, journal: Any, add) -> None:
    try:
        missing = _unjournaled(folder, log, journal)
    except AtomicVaultError:
        return  # the log or the journal is unreadable: their own checks say so
    if missing:
        first = missing[0]
        add("journal", "warn", f"{len(missing)} logged run(s) have no journal section, first run "
            f"{first['run_id']} (seq {first.get('seq')}): a run cut off after its log record",
            folder.journal, "`doctor --repair` writes each section from its record")


def _restore_sections(folder: AgentFolder, log: Any, journal: Any) -> list[str]:
    """A journal section for each logged run that lacks one, written from its record (the
    work item from its snapshot when there is one, else the summary) and marked as restored."""
    actions = []
    for record in _unjournaled(folder, log, journal):
        work = record.get("summary") or ""
        sha = (record.get("snapshots") or {}).get("work_item")
        if isinstance(sha, str):
            work = log.get_snapshot(folder, sha) or work
        when = datetime.fromisoformat(record["ts"])
        journal.append(folder, when, journals.section(
            when, trigger=str(record.get("trigger") or "?"), run_id=record["run_id"], work_item=work or "?",
            answer=f"(restored by doctor --repair from log record seq {record.get('seq')}) "
                   f"{record.get('error') or record.get('summary') or ''}",
            outcomes=[o for o in record.get("captures") or [] if isinstance(o, dict) and (
                "file" in o and "status" in o or o.get("status") == "rejected" and "reason" in o)],
            status=str(record.get("status") or "ok")))
        actions.append(f"wrote the missing journal section of run {record['run_id']} (seq {record.get('seq')}) "
                       "from its log record")
    return actions


def _stale_reservations(folder: AgentFolder) -> list[str]:
    """Cost reservations of runs that are gone (dead processes on this host, or too old):
    the caps already ignore them; they are clutter left by a killed run."""
    try:
        names = os.listdir(folder.state / guardrails.RESERVATIONS)
    except (FileNotFoundError, NotADirectoryError):
        return []
    live = guardrails.in_flight(folder, prune=False)
    return sorted(name for name in names if name not in live)


def _check_reservations(folder: AgentFolder, add) -> None:
    stale = _stale_reservations(folder)
    if stale:
        add("lock", "warn", f"{len(stale)} cost reservation(s) left by runs that are no longer running "
            "(not counted against the caps)", folder.state / guardrails.RESERVATIONS / stale[0],
            "`doctor --repair` removes them (so does the next run with cost guardrails)")


def _temp_files(folder: AgentFolder) -> list[Path]:
    found = []
    for directory, _, files in os.walk(folder.path):
        found.extend(Path(directory) / f for f in files if f.endswith(TEMP_SUFFIX))
    return sorted(found)


def repair(folder: AgentFolder, timeout: float | None = 60.0,
           backends: dict[str, Any] | None = None) -> list[str]:
    """Fix what is safe to fix, holding the agent's lock; returns one line per action taken."""
    backends = _with_defaults(backends)
    lock = backends["lock"]
    try:
        with lock.hold(folder, timeout):
            return _repair(folder, backends["memory"], backends["log"], backends["journal"])
    except LockTimeout as exc:
        pid = holder_pid(folder) if lock.name == "files" else None
        if pid is None or pid_alive(pid):
            raise
        raise LockTimeout(f"{exc.message}; pid {pid} is not running on this host, so the lock is held "
                          "from another host or container; nothing was repaired", path=exc.path,
                          fix="stop the run holding it there; if there is none, delete the lock file "
                              "and repair again") from None


def _repair(folder: AgentFolder, memory: Any, log: Any, journal: Any) -> list[str]:
    actions: list[str] = []
    for temp in _temp_files(folder):
        temp.unlink(missing_ok=True)
        actions.append(f"removed leftover temp file {folder.relative(temp)}")
    reservations = folder.state / guardrails.RESERVATIONS
    for name in _stale_reservations(folder):  # the caps ignore them already: only clutter
        (reservations / name).unlink(missing_ok=True)
        actions.append(f"removed a stale cost reservation {folder.relative(reservations / name)} "
                       "(its run is no longer running)")
    if memory.name not in ("files", "sqlite") or folder.memory.is_dir():
        notes, _ = memory.scan(folder)
        changes = index_changes(folder, memory, notes)
        current = memory.get_index(folder)
        if changes or current is None:
            # expected: a hand edit landing during the repair is not overwritten
            memory.put_index(folder, index.upsert(current or "", changes), expected=current)
            actions.append(f"updated memory/INDEX.md ({len(changes)} line(s) added, moved or removed)")
    if log.name == "files":
        actions += _repair_files_log(folder)
    if journal.name == "files":
        for path in _journal_days(folder):
            if _cut_mid_character(path.read_bytes()):
                count, torn = move_torn_tail(path)
                actions.append(f"moved a torn journal tail ({count} bytes) from {folder.relative(path)} "
                               f"to {folder.relative(torn)}")
    try:
        actions += _restore_sections(folder, log, journal)
    except AtomicVaultError:
        pass  # an unreadable log or journal is reported by check(); nothing to restore from
    try:
        actions += _repair_orphans(folder, log)
    except AtomicVaultError:
        pass  # an unreadable log is reported by check()
    if actions and log.verify(folder).ok:
        now = datetime.now(timezone.utc).astimezone()
        log.append(folder, {"kind": "repair", "ts": now.isoformat(timespec="milliseconds"),
                            "agent": folder.name, "trigger": "doctor", "status": "ok",
                            "summary": "; ".join(actions), "actions": actions})
    return actions


def _repair_files_log(folder: AgentFolder) -> list[str]:
    """Torn last line moved aside; HEAD advanced to (or rebuilt from) the verified tail."""
    actions = []
    files = runlog.day_files(folder)
    if files and ends_torn(files[-1]):
        count, torn = move_torn_tail(files[-1])
        actions.append(f"moved a torn line ({count} bytes) from {folder.relative(files[-1])} "
                       f"to {folder.relative(torn)}")
    result = runlog.verify(folder)
    reason = (result.first_bad or {}).get("reason", "")
    head_unusable = reason.startswith("log/HEAD")
    head_behind = result.ok and any("HEAD is behind" in w for w in result.warnings)
    seq, digest, _ = runlog.tail(folder) if (head_unusable or head_behind) else (0, None, None)
    if seq:
        fence = None
        try:
            fence = (runlog.read_head(folder) or {}).get("fence")
        except AtomicVaultError:
            pass  # an unreadable HEAD keeps no fence
        runlog.write_head(folder, seq, digest, fence)
        actions.append(f"set log/HEAD to the verified tail (seq {seq})")
    return actions


def as_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]
