"""AtomicAgent: one work item in, one model call, everything written back."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Callable

from . import (captures, clock, delegation, guardrails, helpers, history, hooks, journal, keys, pricing,
               projects, retries, snapshots, telemetry, toolloop, tools, writeback)
from .backends import open_backend
from .assembly import Prompt, assemble
from .config import ModelConfig, load_model_config, load_tools_config, load_vault_prices
from .errors import AtomicVaultError, ConfigError, HeadBehind, LogError, ModelError
from .models import Model, ModelRequest, ModelResponse, UnavailableModel, load_model, token_ceiling
from .policy import Gate
from .protocols import JournalBackend, LockBackend, LogBackend, MemoryBackend
from .vault import open_agent

MAX_WORK_ITEM = 200_000
DEFAULT_LOCK_TIMEOUT = 60.0


@dataclass
class RunResult:
    """What one call produced; ``manifest`` answers "what did the model see"."""

    text: str
    status: str
    run_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    captures: list[dict[str, Any]]
    manifest: dict[str, Any]
    seq: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    fallback_from: str | None = None
    guardrail: dict[str, Any] | None = None
    tokens_estimated: bool = False
    conversation_id: str | None = None


class AtomicAgent:
    """An agent folder in a vault, callable from scripts, cron and the CLI.

    ``model`` may be a ``provider:model`` name or any object with ``complete(request)``;
    by default model.md decides. ``memory``, ``log``, ``lock`` and ``journal`` choose the
    storage backends: a backend name (``files``, ``sqlite``, ``postgres``, ``redis``), an
    object implementing the Protocol, or None to follow ``ATOMIC_VAULT_<KIND>_BACKEND``,
    then the vault's atomic_vault.yaml, then plain files.
    """

    def __init__(self, name: str, root: str | None = None, trigger: str = "manual",
                 model: str | Model | None = None, *, memory: str | MemoryBackend | None = None,
                 log: str | LogBackend | None = None, lock: str | LockBackend | None = None,
                 journal: str | JournalBackend | None = None,
                 lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT):
        self.folder = open_agent(name, root)
        self.name = name
        self.trigger = _check_trigger(trigger)
        self.model = model
        self.memory: MemoryBackend = open_backend("memory", memory, self.folder.root, self.folder.name)
        self.log: LogBackend = open_backend("log", log, self.folder.root, self.folder.name)
        self.lock: LockBackend = open_backend("lock", lock, self.folder.root, self.folder.name)
        self.journal: JournalBackend = open_backend("journal", journal, self.folder.root, self.folder.name)
        self.lock_timeout = lock_timeout
        self._node: delegation.Node | None = None  # set on a child run's agent (delegation.py)

    def call(self, work_item: str, *, critical: bool = False,
             model: str | Model | None = None, idempotency_key: str | None = None,
             tree_cap_usd: float | None = None, conversation_id: str | None = None) -> RunResult:
        """Run one work item: assemble, reserve its cost, call the model (unlocked), then
        write back locked. ``critical=True`` passes the cost caps and is recorded;
        ``model`` overrides the agent's model for this call only. ``idempotency_key``: a
        second call with the key returns the first run's result, without calling the model.
        ``tree_cap_usd`` caps the cost of this run and every run it delegates to (spec/18).
        ``conversation_id``: the earlier turns of that conversation go in before the work
        item (an id no run has yet starts it; ``"new"`` starts one with a fresh id,
        ``"latest"`` continues the newest); None: a one-shot run."""
        work_item = _check_work_item(work_item)
        delegation.check_cap(tree_cap_usd)
        if conversation_id is not None:
            from .conversations import check_id

            check_id(conversation_id)
        if idempotency_key is not None:
            from . import runkeys

            with runkeys.claimed(self, runkeys.check(idempotency_key), work_item, self.lock_timeout) as earlier:
                if earlier is not None:
                    return _replayed(earlier)
                return self._call(work_item, critical, model, idempotency_key, tree_cap_usd, conversation_id)
        return self._call(work_item, critical, model, None, tree_cap_usd, conversation_id)

    def _call(self, work_item: str, critical: bool, model: str | Model | None,
              idempotency_key: str | None, tree_cap_usd: float | None = None,
              conversation_id: str | None = None) -> RunResult:
        config = load_model_config(self.folder.model)
        started = clock.now(config.zone)
        tools = load_tools_config(self.folder.tools)  # read (or refused) before anything else
        shared = projects.for_agent(self.folder, config)  # a project it names must list it
        model, warnings, replaced = self._choose_model(config, self.model if model is None else model)
        earlier = None
        if conversation_id is not None:  # the earlier turns, read back from the log's snapshots
            from . import conversations

            earlier = conversations.prior(self.log, self.folder, conversation_id, started,
                                          config.max_input_tokens)
            warnings += earlier.warnings()
        prompt = self._assemble(config, work_item, started, model, warnings, shared, earlier)
        self._check_log()
        run = _Run(self, config, prompt, started, critical, warnings, replaced)
        run.projects = shared
        run.node = delegation.node_for(self, run.id, tree_cap_usd, config.max_depth) or run.node
        if idempotency_key is not None:  # a retry of a keyed run finds its committed effects
            from . import runkeys

            run.idempotency = {"key": idempotency_key, "work_sha256": runkeys.work_sha256(work_item)}
            run.run_key = "key:" + idempotency_key
        if run.guarded and not run.reserve(model):
            return run.skipped(model)
        return self._loop(run, config, model, tools)

    def resume(self, run_id: str, *, model: str | Model | None = None) -> RunResult:
        """Continue run ``run_id``, which ended awaiting approval, once every decision it
        waits for is taken: approved calls run, denied (or expired) ones are told to the
        model as their result, and the loop goes on from the recorded state (the model is
        not asked again for what it already decided). A new run, linked by ``resumes``."""
        from . import resume as resuming

        config = load_model_config(self.folder.model)
        started = clock.now(config.zone)
        tools = load_tools_config(self.folder.tools)
        chosen, warnings, replaced = self._choose_model(config, self.model if model is None else model)
        self._check_log()
        suspended, state, results, decisions = resuming.prepare(self, run_id, started)
        prompt = resuming.Resumed(state, results, suspended, decisions)
        run = _Run(self, config, prompt, started, bool(suspended.get("critical")), warnings, replaced)
        run.projects = projects.for_agent(self.folder, config)
        run.resumes, run.run_key = run_id, state["run_key"]
        run.idempotency = suspended.get("idempotency")  # the key now answers with the resumed run
        if run.guarded and not run.reserve(chosen):
            return run.skipped(chosen)
        return self._loop(run, config, chosen, tools, first_step=int(state["step"]) + 1)

    def _loop(self, run: "_Run", config: ModelConfig, model: Model, tools: Any,
              first_step: int = 1) -> RunResult:
        """The tool loop, then the write-back, locked: notes, verdicts, the run's record, journal."""
        started, work_item, prompt = run.started, run.prompt.work_item, run.prompt
        try:
            with helpers.Current(run):  # a Python tool's agent.helper calls are this run's steps
                done = toolloop.complete(run, run.candidates(model), config.retries, config.max_steps,
                                         self.folder.path, first_step)
            response = done.response
            found, rejected = captures.extract(response.text, response.tool_captures) if response else ([], [])
            found = [captures.Capture(**run.redact.all(asdict(c))) for c in found]  # keys spelled in JSON escapes
            shared = projects.Shared(self, run.projects, [c for c in found if c.scope == "project"])
            # The project locks are taken after the agent's, never before (one order: no deadlock).
            with self.lock.hold(self.folder, self.lock_timeout) as lease, shared.held(started.date()):
                self.log.ready(self.folder)  # checked again under the lock, before any note is written
                writeback.preflight(self.folder, started.date(), self.memory, self.log, self.journal)
                notes = writeback.Notes(self.memory, lease)  # checks the lease before each write
                try:
                    run.hand_edits, hand_texts = history.outside(self.folder, self.memory, self.log)
                    outcomes = captures.write(self.folder, notes, tools, [c for c in found if c.scope == "agent"],
                                              started.date(), lease) + shared.write(started.date()) + rejected
                    cost = run.settle(done)
                    lease.check()
                    taken = run.snapshots(done, notes, hand_texts)  # durable before the record, the commit point
                    late = _log_verdicts(self, done.verdicts, run, lease)
                    record = self.log.append(self.folder, run.record(done, cost, outcomes, taken),
                                             fence=_fence(self.lock, lease))
                except HeadBehind as exc:  # the record is durable: the run is logged (spec/02)
                    late, record = [*late, str(exc)], exc.record
                except BaseException as exc:  # before the commit point: take back, leave nothing
                    left = notes.take_back(self.folder) + shared.take_back()
                    if left:
                        raise writeback.failed(exc, left, self.name) from exc
                    raise
                history.recorded(self.folder, self.memory, self.log, record)
                late += _journal_after(self, started, record, run.redact(journal.section(
                    started, trigger=self.trigger, run_id=run.id, work_item=work_item,
                    answer=done.error or _awaiting(done) or (response.text if response else ""), outcomes=outcomes,
                    status=run.status(done))))
        finally:
            run.release()
        if run.idempotency:
            from . import runkeys

            runkeys.remember(self, record)
        telemetry.export(run.telemetry, record, run.request, response.text if response else None)
        hooks.committed(self.folder, record)  # the doorbell: after the commit, never failing the run
        if done.error:
            raise ModelError(f"the model call failed: {done.error} (logged as run {run.id}, seq {record['seq']})",
                             field="model", fix=done.fix or "check the provider, or run with --model offline")
        return _result(record, response, outcomes, prompt, run.redact.all(run.warnings + late))

    def helper(self, instruction: str, text: str = "") -> str:
        """From a Python tool while this agent runs: a one-shot transformation of ``text``
        by model.md's ``helpers:`` model (no persona, no memory), recorded in the run's
        current step and paid from its reservation. Outside a run: ConfigError."""
        return helpers.ask(instruction, text, agent=self)

    def _check_log(self) -> None:
        """Fail before the model is paid for when the log cannot take a record. Unlocked
        reads may catch another run's append half-done, so a failure is confirmed locked."""
        try:
            self.log.ready(self.folder)
        except LogError:
            with self.lock.hold(self.folder, self.lock_timeout):
                self.log.ready(self.folder)

    def _assemble(self, config: ModelConfig, work_item: str, started: datetime, model: Model,
                  warnings: list[str], shared: list[projects.Project] = (), earlier: Any = None) -> Prompt:
        """The prompt within the budget. A provider that counts tokens itself has the last
        word: when its count is over the budget, the prompt is cut again to a budget scaled
        by how much denser its count is than the estimate. A broken note is left out (and
        said so): one bad hand edit must not stop the agent."""
        day = started.date().isoformat()
        chosen = None
        if callable(getattr(self.memory, "selection", None)):  # a database picks the notes itself
            pinned, recent, broken = self.memory.selection(self.folder, day, config.recent_notes)
            notes, chosen = {}, (pinned, recent)
        else:
            notes, broken = self.memory.scan(self.folder)
        prompt = assemble(self.folder, config, notes, work_item, day, self.memory, self.journal, broken,
                          chosen, shared, earlier)
        for entry in prompt.skipped:
            warnings.append(f"{entry['source']} is broken and was left out of this run: {entry['reason']} " + (
                f"(fix: {entry['fix']})" if entry.get("fix")  # a newer note: the runtime is behind
                else f"(`atomic-vault doctor {self.name}` lists every problem with its fix)"))
        prompt.counted = _count(model, prompt, config, self.name, warnings)
        if prompt.counted is not None and prompt.counted > config.max_input_tokens:
            scaled = max(256, config.max_input_tokens * prompt.tokens // prompt.counted)
            prompt = assemble(self.folder, replace(config, max_input_tokens=scaled), notes, work_item,
                              day, self.memory, self.journal, broken, chosen, shared, earlier)
            prompt.counted = _count(model, prompt, config, self.name, warnings)
        return prompt

    def _choose_model(self, config: ModelConfig, chosen: str | Model | None
                      ) -> tuple[Model, list[str], str | None]:
        """The model to call, warnings, and the model it replaces. A model that cannot be
        built is never replaced silently: model.md's fallback answers with a warning, and
        with no usable fallback (or for a model the caller chose) the run fails on the
        record. The offline model answers only when it is named."""
        if chosen is not None and not isinstance(chosen, str):
            return chosen, [], None
        if chosen:
            return _build(chosen, config), [], None
        model = _build(config.model, config)
        if not isinstance(model, UnavailableModel) or not config.fallback:
            return model, [], None
        fallback = _build(config.fallback, config)
        if isinstance(fallback, UnavailableModel):
            return UnavailableModel(config.model, ModelError(
                f"{model.error.message}; its fallback {fallback.error.message}", field="model",
                fix=model.error.fix if fallback.error.fix == model.error.fix
                else f"{model.error.fix}; for the fallback: {fallback.error.fix}")), [], None
        return fallback, [f"model.md names {config.model!r} but it cannot be used here "
                          f"({model.error.message}); the fallback {config.fallback} answers"], config.model


def _build(name: str, config: ModelConfig) -> Model:
    """The model ``name``, or a stand-in that fails the run with the reason it cannot be built."""
    try:
        return load_model(name, config.options_for(name))
    except ModelError as exc:
        return UnavailableModel(name, ModelError(f"{name} cannot be built here: {exc.message}",
                                                 field="model", fix=exc.fix))


def _count(model: Model, prompt: Prompt, config: ModelConfig, agent: str,
           warnings: list[str]) -> int | None:
    """The provider's own count of the prompt's input tokens, if it offers one."""
    count = getattr(model, "count_tokens", None)
    if not callable(count):
        return None
    request = ModelRequest(model=getattr(model, "name", "custom"), system=prompt.system,
                           messages=prompt.messages, max_output_tokens=config.max_output_tokens,
                           agent=agent)
    try:
        return int(count(request))
    except Exception as exc:  # the estimate still applies; say why it was used
        warnings.append(f"the provider could not count the prompt's tokens ({type(exc).__name__}: "
                        f"{keys.redact(str(exc))[:200]}); the estimate was used")
        return None


def _awaiting(done: retries.Completion) -> str:
    """A suspended run's journal answer: what it waits for, and how it goes on."""
    if not done.suspended:
        return ""
    waiting = [r["pending"] for r in done.suspended["results"] if r.get("pending")]
    return (f"awaiting approval: {', '.join(f'approvals/{w}.md' for w in waiting)}; decide there, "
            "then resume the run") + (f"\n\n{done.response.text}" if done.response and done.response.text.strip() else "")


def _journal_after(agent: AtomicAgent, started: datetime, record: dict[str, Any], section: str) -> list[str]:
    """Append the run's journal section once its record is durable, so that a run refused
    or failed before its commit point leaves none; a failure now is a warning: the run is
    logged, only its journal section is missing."""
    try:
        agent.journal.append(agent.folder, started, section)
    except (AtomicVaultError, OSError) as exc:
        return [f"the run is logged as seq {record['seq']}, but its journal section was not written "
                f"({exc}); fix the cause (a full disk?): the log record holds the run"]
    return []


def _log_verdicts(agent: AtomicAgent, verdicts: list[dict[str, Any]], run: _Run, lease: Any) -> list[str]:
    """Log the gate's verdicts (``kind: verdict``), before the run's record and under the
    same lock hold, so that the chain shows each decision ahead of the run it served."""
    late: list[str] = []
    for verdict in verdicts:
        try:
            agent.log.append(agent.folder, run.redact.all(verdict), fence=_fence(agent.lock, lease))
        except HeadBehind as exc:  # durable; only the head marker lags
            late.append(str(exc))
    return late


def _fence(lock: LockBackend, lease: Any) -> tuple[str, int] | None:
    """The log's fence for leases that can expire (an OS lock cannot: no fence, so a
    deleted lock file, which restarts its counter, never locks the agent out)."""
    return (lock.name, lease.token) if getattr(lease, "fenced", True) else None


TRIGGER = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,64}\Z")  # as the CLI's --trigger check


def _check_trigger(trigger: Any) -> str:
    """The trigger is a label in journal headings and log queries: one short line."""
    if not isinstance(trigger, str) or not TRIGGER.match(trigger):
        raise ConfigError(f"trigger {str(trigger)[:80]!r} is not one line of 1 to 64 characters",
                          field="trigger", fix="use a short label such as cron, manual or script")
    return trigger


def _check_work_item(work_item: Any) -> str:
    if not isinstance(work_item, str):
        raise ConfigError(f"the work item is a {type(work_item).__name__}, not text", field="work item",
                          fix="pass the work item as a string")
    if not work_item.strip():
        raise ConfigError("the work item is empty", field="work item",
                          fix="say what the agent should do, e.g. run NAME \"summarise today\"")
    try:
        work_item.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"the work item is not valid Unicode text (a lone surrogate at character {exc.start})",
                          field="work item", fix="pass text decoded from UTF-8") from None
    if "\x00" in work_item or len(work_item) > MAX_WORK_ITEM:
        raise ConfigError(f"the work item is binary or longer than {MAX_WORK_ITEM} characters",
                          field="work item", fix="pass plain text, or put large material in wiki/")
    return work_item


class _Run:
    """One run's request, its cost reservation and its log record: the parts of ``call``
    that follow the money (guardrails.py, pricing.py) kept out of the method's way."""

    def __init__(self, agent: AtomicAgent, config: ModelConfig, prompt: Prompt, started: datetime,
                 critical: bool, warnings: list[str], replaced: str | None = None):
        self.agent, self.config, self.prompt, self.started = agent, config, prompt, started
        self.critical, self.warnings, self.replaced = critical, warnings, replaced
        unknown = [("model.md", key) for key in config.unknown_keys] + [
            ("tools.md", key) for key in load_tools_config(agent.folder.tools).unknown_keys]
        self.warnings += [f"{name}: unknown key {key!r} ignored (spec/06-config.md lists every key)"
                          for name, key in unknown]
        self.id = f"{started:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}"
        self.toolbox = delegation.bind(tools.discover(
            tools.load(load_tools_config(agent.folder.tools), agent.folder.tools), agent.folder.path,
            self.warnings), self)
        # The gate is read only when there is a tool to gate: a run with none pays nothing.
        self.gate = Gate(agent.folder.path / "policy.md", agent.folder.root / "policy.md",
                         tuple((f"{projects.PROJECTS}/{name}", path.parent / "policy.md") for name, path in
                               zip(config.projects, projects.floors(agent.folder.root, config)))) \
            if self.toolbox.tools else None
        self.warnings += [*self.toolbox.warnings, *(self.gate.problems if self.gate else [])]
        self.request = ModelRequest(model="", system=prompt.system, messages=list(prompt.messages),
                                    max_output_tokens=config.max_output_tokens, agent=agent.name,
                                    tools=(captures.TOOL, *(t.spec() for t in self.toolbox.tools.values()),
                                           *((helpers.SPEC,) if helpers.offered(self) else ())))
        if config.helper and helpers.TOOL_NAME in self.toolbox.tools:
            self.warnings.append("tools.md declares a tool named 'helper': it is offered instead of the "
                                 "built-in helper of model.md's helpers:")
        self.budget: guardrails.Budget | None = None
        self.redact = keys.Redactor()  # what this run writes is redacted with one key scan
        self.vault_prices = load_vault_prices(agent.folder.root)
        self.telemetry = telemetry.for_run(agent.folder.root, self.warnings)
        self.work_item = prompt.work_item
        self.conversation_id: str | None = getattr(prompt, "conversation_id", None)
        self.resumes: str | None = None  # the suspended run this one continues
        self.run_key = self.id  # what effect keys are made of: a resumed chain shares its first run's
        self.decisions: list[dict[str, Any]] = getattr(prompt, "decisions", [])
        self.idempotency: dict[str, Any] | None = None  # {key, work_sha256} of a keyed run
        self.hand_edits: list[dict[str, Any]] = []  # notes found changed outside atomic_vault
        self.projects: list[projects.Project] = []  # the agent's, for scope: project captures
        self.node = delegation.root(self.id, agent.name, config.tree_cap_usd, config.max_depth)
        self.children: list[dict[str, Any]] = []  # the runs this one delegated to

    @property
    def guarded(self) -> bool:
        """Whether a model call must be reserved first: caps in model.md, or a tree cap."""
        return guardrails.enabled(self.config) or self.node.tree.cap_usd is not None

    @staticmethod
    def status(done: retries.Completion) -> str:
        return "error" if done.error else "awaiting_approval" if done.suspended else "ok"

    @property
    def input_tokens(self) -> int:
        """The provider's count of the prompt when it gave one, else the estimate."""
        return self.prompt.counted if self.prompt.counted is not None else self.prompt.tokens

    def price(self, model_name: str):
        return pricing.price_for(model_name, self.vault_prices, self.config.prices)

    def input_bound(self, model: Model | None) -> int:
        """The most input tokens the provider can bill for this request: its own count
        when it gave one, else the byte ceiling (models.token_ceiling), never the estimate."""
        if model is not None and self.prompt.counted is not None:
            return self.prompt.counted
        return token_ceiling(self.request)

    def reserve(self, model: Model) -> bool:
        """Hold this run's most expensive outcome against the caps; False: skip the run.
        A model that cannot be built costs nothing: its run fails on the record."""
        if isinstance(model, UnavailableModel):
            return True
        name = getattr(model, "name", "custom")
        fallback = self.config.fallback
        if guardrails.enabled(self.config):
            with self.agent.lock.hold(self.agent.folder, self.agent.lock_timeout):
                self.budget = guardrails.reserve(
                    self.agent.folder, self.agent.log, self.config, self.started, model=name,
                    price=self.price(name), input_tokens=self.input_bound(model), critical=self.critical,
                    fallback=fallback, fallback_price=self.price(fallback) if fallback else None,
                    fallback_input_tokens=self.input_bound(None))
            if self.budget.action in ("alert", "bypassed") or (self.budget.action == "pass" and self.budget.reasons):
                self.warnings += self.budget.reasons
            if self.budget.action == "skip":
                return False
        return self._reserve_tree(model, name)

    def _reserve_tree(self, model: Model, name: str) -> bool:
        """Hold the first call's most expensive outcome against the tree's cap (a critical
        run too: no tree passes its cap). Refused: the run is skipped, its agent
        reservation given back."""
        tree = self.node.tree
        if tree.cap_usd is None:
            return True
        if self.budget is not None and self.budget.action == "fallback":
            name, estimate = self.config.fallback, self.budget.estimate_usd
        else:
            price = self.price(name)
            estimate = price.ceiling(self.input_bound(model), self.config.max_output_tokens) if price else None
        refused = tree.reserve(self.id, estimate, name)
        if refused is None:
            return True
        self.release()
        self.budget = guardrails.Budget(action="skip", reasons=[refused], estimate_usd=estimate)
        return False

    def reserve_next(self, model: Model | None, request: ModelRequest, spent_usd: float) -> str | None:
        """Check a tool loop's next model call against the caps before it is made; the
        reason it may not be made, or None. The run's reservation then holds what the run
        cost so far plus the next call's most expensive outcome; so does its tree's."""
        refused = self._reserve_next_capped(model, request, spent_usd)
        if refused or self.node.tree.cap_usd is None:
            return refused
        name = getattr(model, "name", "custom")
        price = self.price(name)
        estimate = price.ceiling(token_ceiling(request), self.config.max_output_tokens) + spent_usd if price else None
        return self.node.tree.reserve(self.id, estimate, name)

    def _reserve_next_capped(self, model: Model | None, request: ModelRequest, spent_usd: float) -> str | None:
        if self.budget is None or self.budget.action in ("bypassed", "skip"):
            return None
        name = getattr(model, "name", "custom")
        with self.agent.lock.hold(self.agent.folder, self.agent.lock_timeout):
            following = guardrails.reserve(
                self.agent.folder, self.agent.log, self.config, self.started, model=name,
                price=self.price(name), input_tokens=token_ceiling(request), critical=self.critical,
                already_usd=spent_usd, replaces=self.budget.reservation)
        if following.action != "skip":
            self.budget.reservation = following.reservation
        if following.action in ("skip", "fallback"):  # a loop does not change model midway
            return "; ".join(following.reasons)
        self.warnings += [r for r in following.reasons if r not in self.warnings]
        return None

    def candidates(self, model: Model) -> list[Callable[[], Model]]:
        """The model to call, then the fallback after failures, if it fits the reservation."""
        config = self.config
        if self.budget is not None and self.budget.action == "fallback":
            return [lambda: load_model(config.fallback, config.options_for(config.fallback))]
        if isinstance(model, UnavailableModel):  # its fallback was tried when it was chosen
            return [lambda: model]
        out: list[Callable[[], Model]] = [lambda: model]
        if config.fallback and config.fallback != getattr(model, "name", None) and self._fallback_fits():
            out.append(lambda: load_model(config.fallback, config.options_for(config.fallback)))
        return out

    def _fallback_fits(self) -> bool:
        if self.budget is None or self.budget.action == "bypassed":
            return True
        price = self.price(self.config.fallback)
        return price is not None and (self.budget.estimate_usd is None or price.ceiling(
            self.input_bound(None), self.config.max_output_tokens) <= self.budget.estimate_usd)

    def skipped(self, model: Model) -> RunResult:
        """Log (and journal) a run the guardrails stopped before any model was paid for."""
        agent, reason = self.agent, "; ".join(self.budget.reasons)
        with agent.lock.hold(agent.folder, agent.lock_timeout) as lease:
            writeback.preflight(agent.folder, self.started.date(), agent.log, agent.journal)
            done = retries.Completion(None, None, model)
            try:
                taken = self.snapshots(done)
                late, record = [], agent.log.append(
                    agent.folder, {**self.record(done, 0.0, [], taken), "status": "skipped",
                                   "summary": self.redact(f"skipped: {journal.shorten(reason, 180)}")},
                    fence=_fence(agent.lock, lease))
            except HeadBehind as exc:
                late, record = [str(exc)], exc.record
            late += _journal_after(agent, self.started, record, self.redact(journal.section(
                self.started, trigger=agent.trigger, run_id=self.id, work_item=self.prompt.work_item,
                answer=f"skipped by the cost guardrails: {reason}", outcomes=[], status="skipped")))
        telemetry.export(self.telemetry, record)
        hooks.committed(agent.folder, record)
        self.warnings.append(f"skipped by the cost guardrails: {reason}")
        return _result(record, None, [], self.prompt, self.redact.all(self.warnings + late))

    def settle(self, done: retries.Completion) -> float | None:
        """The run's cost; under the lock, drop its reservation and note thresholds crossed."""
        response = done.response
        if response is None:
            cost = 0.0
        else:
            name = response.model or getattr(done.model, "name", "custom")
            cost = pricing.run_cost(self.price(name), response)
            if cost is None:
                self.warnings.append(f"no price is known for {name}: its cost is recorded as unknown "
                                     "(add it under prices: in model.md)")
        extra = [h.get("cost_usd") for h in done.helper_calls]
        if cost is not None and extra:
            cost = None if None in extra else cost + sum(extra)
            if cost is None:
                self.warnings.append(f"no price is known for the helper model {self.config.helper}: "
                                     "the run's cost is recorded as unknown (add it under prices: in model.md)")
        if self.budget is not None:
            self.warnings += guardrails.settle(self.agent.folder, self.agent.log, self.config,
                                               self.budget, self.started, cost)
            self.budget.reservation = None
        self.node.tree.settle(self.id, cost)
        return cost

    def release(self) -> None:
        """A run that ended early gives its reservation back (best effort: a dead process's
        reservation is dropped by the next check anyway)."""
        self.node.tree.release(self.id)
        if self.budget is None or self.budget.reservation is None:
            return
        try:
            with self.agent.lock.hold(self.agent.folder, 5.0):
                guardrails.release(self.agent.folder, self.budget.reservation)
        except AtomicVaultError:
            pass

    def snapshots(self, done: retries.Completion, notes: writeback.Notes | None = None,
                  outside: dict[str, str] | None = None) -> snapshots.Taken:
        """Store the run's texts (layers as sent, work item, answer, errors, raw captures,
        the notes it changed before and after, those changed outside) in the log backend;
        the record then names them by hash (spec/07)."""
        response = done.response
        taken = snapshots.take(
            self.redact, self.prompt.system, self.prompt.work_item, response.text if response else None,
            [attempt["error"] for attempt in done.attempts if attempt.get("error")],
            captures.raw_texts(response.text, response.tool_captures) if response else [],
            done.tool_texts)
        if notes is not None:  # note texts as they are on disk: their hashes are the notes'
            taken.texts.update(history.hashed(notes.changes())[1])
        taken.texts.update(outside or {})
        for turn in getattr(self.prompt, "turns", ()):  # stored again: a prune meanwhile loses nothing sent
            taken.texts.setdefault(turn.work_sha, turn.work_item)
            taken.texts.setdefault(turn.answer_sha, turn.answer)
        self.agent.log.put_snapshots(self.agent.folder, taken.texts)
        return taken

    def record(self, done: retries.Completion, cost: float | None,
               outcomes: list[dict[str, Any]], taken: snapshots.Taken | None = None) -> dict[str, Any]:
        """The run's log record, with every key that could have slipped into it redacted."""
        response, agent = done.response, self.agent
        manifest = self.prompt.manifest
        if taken is not None:  # each file's snapshot beside its source's sha256
            manifest["files"] = [{**entry, "snapshot": sha} for entry, sha in zip(manifest["files"], taken.layers)]
        self.warnings += [f"capture {item.get('name') or '(unnamed)'!r} rejected: {item['reason']}"
                          for item in outcomes if item.get("status") == "rejected"]
        return self.redact.all({
            "kind": "run",
            "ts": self.started.isoformat(timespec="milliseconds"),
            "finished": clock.now(self.started.tzinfo).isoformat(timespec="milliseconds"),
            "run_id": self.id,
            "agent": agent.name,
            "trigger": agent.trigger,
            "model": (response.model if response and response.model else getattr(done.model, "name", "custom")),
            "input_tokens": response.input_tokens if response else 0,
            "output_tokens": response.output_tokens if response else 0,
            "cache_read_tokens": response.cache_read_tokens if response else 0,
            "cache_write_tokens": response.cache_write_tokens if response else 0,
            "tokens_estimated": bool(response and response.tokens_estimated),
            "cost_usd": cost,
            "status": self.status(done),
            "critical": self.critical,
            "summary": journal.shorten(_awaiting(done) or response.text, 200) if response else "",
            "captures": outcomes,
            **({"hand_edits": self.hand_edits} if self.hand_edits else {}),
            "manifest": manifest,
            **({"conversation_id": self.conversation_id} if self.conversation_id else {}),
            **({"snapshots": taken.refs} if taken is not None else {}),
            "attempts": done.attempts,
            **({"steps": done.steps} if done.steps else {}),
            **({"suspended": done.suspended} if done.suspended and not done.error else {}),
            **({"resumes": self.resumes, "decisions": self.decisions} if self.resumes else {}),
            # A keyed run keeps its whole answer: a second call with the key returns it.
            **({"idempotency": self.idempotency, "answer": response.text if response else ""}
               if self.idempotency else {}),
            "fallback_from": done.fallback_from or self.replaced or (
                self.config.model if self.budget and self.budget.action == "fallback" else None),
            **({"guardrail": self.budget.as_record()} if self.budget else {}),
            **self.node.record(self.id, self.children),
            "warnings": self.warnings,
            "error": done.error,
        })


def _replayed(record: dict[str, Any]) -> RunResult:
    """The result of an earlier run with the same idempotency key, from its record."""
    key = record["idempotency"]["key"]
    return RunResult(text=record.get("answer", ""), status=record["status"], run_id=record["run_id"],
                     model=record.get("model", ""), input_tokens=record.get("input_tokens", 0),
                     output_tokens=record.get("output_tokens", 0), cost_usd=record.get("cost_usd"),
                     captures=record.get("captures", []), manifest=record.get("manifest", {}),
                     seq=record.get("seq"), error=record.get("error"),
                     warnings=[f"idempotency key {key!r}: the result of run {record['run_id']} (seq "
                               f"{record.get('seq')}); the model was not called again"],
                     cache_read_tokens=record.get("cache_read_tokens", 0),
                     cache_write_tokens=record.get("cache_write_tokens", 0),
                     fallback_from=record.get("fallback_from"), guardrail=record.get("guardrail"),
                     tokens_estimated=bool(record.get("tokens_estimated")),
                     conversation_id=record.get("conversation_id"))


def _result(record: dict[str, Any], response: ModelResponse | None, outcomes: list[dict[str, Any]],
            prompt: Prompt, warnings: list[str]) -> RunResult:
    return RunResult(text=response.text if response else "", status=record["status"],
                     run_id=record["run_id"], model=record["model"],
                     input_tokens=record["input_tokens"], output_tokens=record["output_tokens"],
                     cost_usd=record["cost_usd"], captures=outcomes, manifest=record.get("manifest", prompt.manifest),
                     seq=record["seq"], warnings=warnings, error=record["error"],
                     cache_read_tokens=record["cache_read_tokens"],
                     cache_write_tokens=record["cache_write_tokens"],
                     fallback_from=record["fallback_from"], guardrail=record.get("guardrail"),
                     tokens_estimated=bool(record.get("tokens_estimated")),
                     conversation_id=record.get("conversation_id"))
