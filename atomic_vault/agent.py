"""AtomicAgent: one work item in, one model call, everything written back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import captures, journal
from .backends import open_backend
from .assembly import Prompt, assemble
from .config import ModelConfig, load_model_config, load_tools_config
from .errors import ConfigError, LogError, ModelError, NoteError
from .models import Model, ModelRequest, ModelResponse, load_model
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
        self.trigger = trigger
        self.model = model
        self.memory: MemoryBackend = open_backend("memory", memory, self.folder.root)
        self.log: LogBackend = open_backend("log", log, self.folder.root)
        self.lock: LockBackend = open_backend("lock", lock, self.folder.root)
        self.journal: JournalBackend = open_backend("journal", journal, self.folder.root)
        self.lock_timeout = lock_timeout

    def call(self, work_item: str, *, critical: bool = False) -> RunResult:
        """Run one work item: assemble, call the model (unlocked), then write back locked."""
        work_item = _check_work_item(work_item)
        started = datetime.now(timezone.utc).astimezone()
        config = load_model_config(self.folder.model)
        tools = load_tools_config(self.folder.tools)
        prompt = self._assemble(config, work_item, started)
        self._check_log()
        model, warnings = self._choose_model(config)
        response, error = _complete(model, prompt, config, self.name)
        found, rejected = captures.extract(response.text) if response else ([], [])
        with self.lock.hold(self.folder, self.lock_timeout) as lease:
            self.log.ready(self.folder)  # checked again under the lock, before any note is written
            outcomes = captures.write(self.folder, self.memory, tools, found, started.date(),
                                      lease) + rejected
            run_id = f"{started:%Y%m%dT%H%M%S}-{os.urandom(4).hex()}"
            status = "error" if error else "ok"
            lease.check()
            self.journal.append(self.folder, started, journal.section(
                started, trigger=self.trigger, run_id=run_id, work_item=work_item,
                answer=response.text if response else error, outcomes=outcomes, status=status))
            record = self.log.append(self.folder, _record(
                self, run_id, started, model, response, status, error, outcomes, prompt,
                critical, warnings), fence=_fence(self.lock, lease))
        result = _result(record, response, outcomes, prompt, warnings)
        if error:
            raise ModelError(f"the model call failed: {error} (logged as run {run_id}, seq {record['seq']})",
                             field="model", fix="check the provider, or run with --model offline")
        return result

    def _check_log(self) -> None:
        """Fail before the model is paid for when the log cannot take a record. Unlocked
        reads may catch another run's append half-done, so a failure is confirmed locked."""
        try:
            self.log.ready(self.folder)
        except LogError:
            with self.lock.hold(self.folder, self.lock_timeout):
                self.log.ready(self.folder)

    def _assemble(self, config: ModelConfig, work_item: str, started: datetime) -> Prompt:
        notes, broken = self.memory.scan(self.folder)
        if broken:
            first = broken[sorted(broken)[0]]  # shared with the catalog: copied, not changed
            more = f"; {len(broken) - 1} more notes are broken: `atomic-vault doctor` lists them"
            raise NoteError(first.message, path=first.path, field=first.field,
                            fix=first.fix + (more if len(broken) > 1 else ""))
        return assemble(self.folder, config, notes, work_item, started.date().isoformat(),
                        self.memory, self.journal)

    def _choose_model(self, config: ModelConfig) -> tuple[Model, list[str]]:
        """The model to call, and a warning when model.md's choice cannot be used."""
        if self.model is not None and not isinstance(self.model, str):
            return self.model, []
        if self.model:
            return load_model(self.model), []
        try:
            return load_model(config.model), []
        except ModelError as exc:
            if config.model == "offline":
                raise
            return load_model("offline"), [f"model.md names {config.model!r} but it cannot be "
                                           f"used here ({exc.message}); the offline model answered"]


def _fence(lock: LockBackend, lease: Any) -> tuple[str, int] | None:
    """The log's fence for leases that can expire (an OS lock cannot: no fence, so a
    deleted lock file, which restarts its counter, never locks the agent out)."""
    return (lock.name, lease.token) if getattr(lease, "fenced", True) else None


def _check_work_item(work_item: Any) -> str:
    if not isinstance(work_item, str) or not work_item.strip():
        raise ConfigError("the work item is empty", field="work item",
                          fix="say what the agent should do, e.g. run NAME \"summarise today\"")
    if "\x00" in work_item or len(work_item) > MAX_WORK_ITEM:
        raise ConfigError(f"the work item is binary or longer than {MAX_WORK_ITEM} characters",
                          field="work item", fix="pass plain text, or put large material in wiki/")
    return work_item


def _complete(model: Model, prompt: Prompt, config: ModelConfig,
              agent: str) -> tuple[ModelResponse | None, str | None]:
    request = ModelRequest(model=getattr(model, "name", "custom"), system=prompt.system,
                           messages=prompt.messages, max_output_tokens=config.max_output_tokens,
                           agent=agent)
    try:
        response = model.complete(request)
    except Exception as exc:  # any provider failure becomes a logged error run
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(getattr(response, "text", None), str):
        return None, f"the model returned {type(response).__name__}, not a ModelResponse"
    return response, None


def _record(agent: AtomicAgent, run_id: str, started: datetime, model: Model,
            response: ModelResponse | None, status: str, error: str | None,
            outcomes: list[dict[str, Any]], prompt: Prompt, critical: bool,
            warnings: list[str]) -> dict[str, Any]:
    return {
        "kind": "run",
        "ts": started.isoformat(timespec="milliseconds"),
        "finished": datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds"),
        "run_id": run_id,
        "agent": agent.name,
        "trigger": agent.trigger,
        "model": (response.model if response and response.model else getattr(model, "name", "custom")),
        "input_tokens": response.input_tokens if response else 0,
        "output_tokens": response.output_tokens if response else 0,
        "cost_usd": response.cost_usd if response else 0.0,
        "status": status,
        "critical": critical,
        "summary": journal.shorten(response.text, 200) if response else "",
        "captures": outcomes,
        "manifest": prompt.manifest,
        "warnings": warnings,
        "error": error,
    }


def _result(record: dict[str, Any], response: ModelResponse | None, outcomes: list[dict[str, Any]],
            prompt: Prompt, warnings: list[str]) -> RunResult:
    return RunResult(text=response.text if response else "", status=record["status"],
                     run_id=record["run_id"], model=record["model"],
                     input_tokens=record["input_tokens"], output_tokens=record["output_tokens"],
                     cost_usd=record["cost_usd"], captures=outcomes, manifest=prompt.manifest,
                     seq=record["seq"], warnings=warnings, error=record["error"])
