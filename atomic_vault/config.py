"""The agent's settings, read from the YAML blocks of model.md and tools.md.

Only a fenced ```yaml block is parsed as configuration; the prose around it is for
people. For vaults in the older convention, model.md's "## Default model" and
"## Fallback" sections are read when the YAML block does not name the models, and a
tools.md of prose under "## Read paths" / "## Write paths" means the defaults. A file
that is there but holds no configuration is an error, never silent defaults.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from datetime import tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import keys
from .errors import ConfigError
from .models import qualify
from .notes import StrictLoader
from .pricing import parse_prices

_LOADER = StrictLoader
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})\s*(yaml|yml)\s*$")
_ANY_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)\s*$")
# \Z, not $: "$" also matches before a final newline, and "offline\n" is not a model name.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Where a path leaves the agent folder on some system: /x, ~, \\server, C:, or a .. part.
_ABSOLUTE = re.compile(r"^([/\\~]|[A-Za-z]:)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CAP_ACTIONS = ("skip", "fallback", "alert")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient model failure is retried, and how long to wait between tries
    (exponential backoff with jitter, or the provider's retry-after, capped)."""

    attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0


@dataclass(frozen=True)
class Relevance:
    """The relevant-notes layer (spec/04): up to ``count`` notes ranked by full-text
    relevance to the work item, together at most ``share`` of ``max_input_tokens``."""

    count: int = 3
    share: float = 0.2


@dataclass(frozen=True)
class ModelConfig:
    """model.md: which model to call and the limits around the call."""

    model: str = "offline"
    fallback: str | None = None
    max_input_tokens: int = 12_000
    max_output_tokens: int = 4_000
    recent_notes: int = 5
    journal_days: int = 2
    cost_guardrails: dict[str, Any] = field(default_factory=dict)
    unknown_keys: tuple[str, ...] = ()
    mapped: tuple[str, ...] = ()  # bare model names read as provider:model, for doctor
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: RetryPolicy = RetryPolicy()
    prices: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    max_steps: int = 8  # model calls of one run's tool loop (spec/06)
    retention: int | None = None  # days a run's snapshots are kept (None: model.md is silent)
    approval_hours: int = 72  # how long an approval file waits for a decision (spec/06)
    projects: tuple[str, ...] = ()  # the projects (<root>/_projects/NAME) this agent joins
    tree_cap_usd: float | None = None  # a delegation tree's cost cap, when this agent is its root
    max_depth: int = 3  # how deep a delegation tree this agent roots may grow
    stale_days: int = 90  # a note not seen for longer is stale (lint, consolidate; spec/17)
    relevant: Relevance = Relevance()
    helper: str | None = None  # helpers: the cheap model of one-shot helper calls (helpers.py)
    helper_max_output_tokens: int = 1_000

    @property
    def zone(self) -> tzinfo | None:
        """The operator's time zone for days and months (None: the machine's local zone)."""
        return ZoneInfo(self.timezone) if self.timezone else None

    def options_for(self, model: str) -> dict[str, Any]:
        """model.md's settings for the provider of ``provider:model``."""
        return dict(self.providers.get(model.partition(":")[0], {}))


@dataclass(frozen=True)
class ToolsConfig:
    """tools.md: which paths the agent may read and write, and which tools it may call."""

    read: tuple[str, ...] = ("persona/", "memory/", "wiki/", "journal/")
    write: tuple[str, ...] = ("memory/",)
    tools: tuple[str, ...] = ()  # names in the older list form: declared nowhere, offered never
    unknown_keys: tuple[str, ...] = ()
    declared: tuple[dict[str, Any], ...] = ()  # tool mappings, checked by tools.py

    def may_write(self, relative_dir: str) -> bool:
        wanted = relative_dir.strip("/")
        for allowed in self.write:
            allowed = allowed.strip().removeprefix("./").strip("/")
            if allowed in ("", ".", "*") or wanted == allowed or wanted.startswith(allowed + "/"):
                return True
        return False


def _fences(lines: list[str]) -> Iterator[tuple[int, int | None, bool]]:
    """(opening line index, closing line index or None, tagged yaml) of each fenced block:
    the one reading of Markdown fences that both the settings and the prose checks use."""
    i = 0
    while i < len(lines):
        opened = _ANY_FENCE.match(lines[i].strip())
        if not opened:
            i += 1
            continue
        fence = opened.group(1)
        close = next((j for j in range(i + 1, len(lines))
                      if lines[j].strip().startswith(fence[0] * len(fence))
                      and not lines[j].strip().strip(fence[0])), None)
        yield i, close, bool(_FENCE_OPEN.match(lines[i].strip()))
        i = len(lines) if close is None else close + 1


def yaml_blocks(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every fenced yaml block as (first line number, mapping); malformed ones raise."""
    blocks: list[tuple[int, dict[str, Any]]] = []
    lines = text.split("\n")
    for i, close, tagged in _fences(lines):
        if not tagged:
            continue
        start = i + 2
        if close is None:
            raise ConfigError("the ```yaml block is never closed", path=path, field=f"line {i + 1}",
                              fix="end the block with a line of three backticks")
        source = "\n".join(lines[i + 1:close])
        try:
            value = yaml.load(source, Loader=_LOADER)  # noqa: S506 - safe loader
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply", path=path, field=f"line {start}",
                              fix="correct the YAML block (indentation, colons, quotes)") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = start + mark.line if mark is not None else start
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"invalid YAML: {problem}", path=path, field=f"line {line}",
                              fix="correct the YAML block (indentation, colons, quotes)") from None
        if value is not None and not isinstance(value, dict):
            raise ConfigError("the YAML block is not a mapping of keys", path=path,
                              field=f"line {start}", fix="write one 'key: value' per line")
        blocks.append((start, value or {}))
    return blocks


def _mistagged(text: str, known: set[str]) -> tuple[int, str] | None:
    """(line, opening) of the first fenced block that is not tagged yaml but holds a
    mapping with a known key: settings that would otherwise be read as prose."""
    lines = text.split("\n")
    for i, close, tagged in _fences(lines):
        if tagged:
            continue
        try:
            value = yaml.load("\n".join(lines[i + 1:close]), Loader=_LOADER)  # noqa: S506 - safe loader
        except (yaml.YAMLError, RecursionError):
            value = None
        if isinstance(value, dict) and {str(key) for key in value} & known:
            return i + 1, lines[i].strip()
    return None


def _settings(text: str, path: Path, known: set[str], older: bool) -> dict[str, Any]:
    """The one ```yaml block's mapping. No block is an error unless the file is in the
    older convention (``older``); so are two blocks and settings fenced without the tag."""
    wrong = _mistagged(text, known)
    if wrong:
        raise ConfigError(f"the block opened by {wrong[1]!r} holds settings but is not tagged yaml, "
                          "so it would be ignored", path=path, field=f"line {wrong[0]}",
                          fix="open the block with ```yaml")
    blocks = yaml_blocks(text, path)
    if len(blocks) > 1:
        raise ConfigError(f"has {len(blocks)} ```yaml blocks (the second at line {blocks[1][0] - 1}); "
                          "only one is read", path=path, field=f"line {blocks[1][0] - 1}",
                          fix="merge them into one ```yaml block")
    if not blocks and not older:
        raise ConfigError("has no ```yaml block, so none of its settings would be read", path=path,
                          fix="put the settings in one block opened by ```yaml and closed by ``` "
                              "(spec/06-config.md), or delete the file to use the defaults")
    return blocks[0][1] if blocks else {}


def _unknown(data: dict[str, Any], known: set[str], path: Path, within: str = "") -> tuple[str, ...]:
    """Keys not in ``known``: one close to a known key is a typo (an error naming the
    key it resembles); any other is kept, to be reported as a warning."""
    out = []
    for key in map(str, data):
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"unknown key {key!r}: did you mean {close[0]!r}?", path=path,
                              field=within + key, fix=f"write {close[0]}: (spec/06-config.md lists every key)")
        out.append(within + key)
    return tuple(sorted(out))


def _has_heading(text: str, *headings: str) -> bool:
    return any(line.startswith("## ") and line[3:].strip().lower().startswith(headings)
               for line in text.split("\n"))


def _section_value(text: str, heading: str) -> str | None:
    """First non-empty line under a '## heading' (older vault convention), unformatted."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("## ") and line[3:].strip().lower().startswith(heading):
            for follow in lines[i + 1:]:
                if follow.startswith("#"):
                    return None
                if follow.strip().startswith(("```", "~~~")):
                    continue  # a fence line; the model id is on the line inside it
                value = follow.strip().strip("`*").strip()
                if value:
                    value = value.split()[0].strip("`*")
                    return value if MODEL_NAME.match(value) else None
    return None


def _int(data: dict[str, Any], key: str, default: int, low: int, high: int, path: Path,
         within: str = "") -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{value!r} is not a whole number from {low} to {high}", path=path,
                          field=within + key, fix=f"set {key}: {default}")
    return value


def _guardrails(value: Any, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("must be a mapping", path=path, field="cost_guardrails",
                          fix="indent enabled/daily_cap_usd/... under cost_guardrails:")
    out = dict(value)
    if "enabled" in out and not isinstance(out["enabled"], bool):
        raise ConfigError(f"{out['enabled']!r} is not true or false", path=path,
                          field="cost_guardrails.enabled", fix="write true or false")
    for key in ("daily_cap_usd", "monthly_cap_usd", "max_run_usd"):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], (int, float))
                           or out[key] < 0):
            raise ConfigError(f"{out[key]!r} is not a non-negative amount", path=path,
                              field=f"cost_guardrails.{key}", fix="write a number such as 5.00")
    for key in ("daily_cap_action", "monthly_cap_action"):
        if key in out and out[key] not in CAP_ACTIONS:
            raise ConfigError(f"{out[key]!r} is not an action", path=path,
                              field=f"cost_guardrails.{key}", fix=f"use one of {', '.join(CAP_ACTIONS)}")
    thresholds = out.get("warning_thresholds", [])
    if not isinstance(thresholds, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in thresholds):
        raise ConfigError(f"{thresholds!r} is not a list of fractions", path=path,
                          field="cost_guardrails.warning_thresholds", fix="write e.g. [0.5, 0.8]")
    return out


def _providers(value: Any, path: Path) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and MODEL_NAME.match(k) and ":" not in k and isinstance(v, (dict, type(None)))
            for k, v in value.items()):
        raise ConfigError("must map provider names to their settings", path=path, field="providers",
                          fix="write e.g.  providers: {ollama: {base_url: 'http://127.0.0.1:11434/v1'}}")
    for name, settings in value.items():
        env = (settings or {}).get("api_key_env")
        if env is None:
            continue
        if not isinstance(env, str) or not ENV_NAME.match(env):
            raise ConfigError(f"{env!r} is not an environment variable name", path=path,
                              field=f"providers.{name}.api_key_env",
                              fix="name the variable that holds the key, e.g. api_key_env: CORP_LLM_KEY")
        keys.watch(env)  # its value is a key: redacted from whatever is written, from now on
    return {name: dict(settings or {}) for name, settings in value.items()}


def _retries(value: Any, path: Path) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if not isinstance(value, dict) or set(value) - {"attempts", "base_delay_s", "max_delay_s"}:
        raise ConfigError("must be a mapping of attempts, base_delay_s, max_delay_s", path=path,
                          field="retries", fix="write e.g.  retries: {attempts: 3, base_delay_s: 1, max_delay_s: 30}")
    attempts = _int(value, "attempts", 3, 1, 10, path, within="retries.")
    delays = {}
    for key, default in (("base_delay_s", 1.0), ("max_delay_s", 30.0)):
        number = value.get(key, default)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 600:
            raise ConfigError(f"{number!r} is not a number of seconds from 0 to 600", path=path,
                              field=f"retries.{key}", fix=f"write e.g. {key}: {default}")
        delays[key] = float(number)
    return RetryPolicy(attempts, **delays)


def _relevance(value: Any, path: Path) -> Relevance:
    if value is None:
        return Relevance()
    if not isinstance(value, dict):
        raise ConfigError("must be a mapping of count and share", path=path, field="relevant",
                          fix="write e.g.  relevant: {count: 3, share: 0.2}  (count: 0 turns the layer off)")
    unknown = _unknown(value, {"count", "share"}, path, within="relevant.")
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}", path=path, field=unknown[0],
                          fix="relevant takes only count and share (spec/06-config.md)")
    count = _int(value, "count", 3, 0, 50, path, within="relevant.")
    share = value.get("share", 0.2)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError(f"{share!r} is not a fraction above 0 and at most 1", path=path,
                          field="relevant.share", fix="write e.g. share: 0.2 (a fifth of max_input_tokens)")
    return Relevance(count, float(share))


def _timezone(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value if isinstance(value, str) else "")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{value!r} is not a known time zone", path=path, field="timezone",
                          fix="use an IANA name such as Europe/Berlin or UTC, or remove the key "
                              "to use the machine's local zone") from None
    return value


_MODEL_KEYS = {"model", "provider", "fallback", "max_input_tokens", "max_output_tokens",
               "recent_notes", "journal_days", "cost_guardrails", "providers", "retries",
               "prices", "timezone", "max_steps", "retention", "approval_hours", "projects",
               "tree_cap_usd", "max_depth", "stale_days",
               "relevant", "helpers"}
_GUARDRAIL_KEYS = {"enabled", "daily_cap_usd", "monthly_cap_usd", "max_run_usd", "daily_cap_action",
                   "monthly_cap_action", "warning_thresholds"}
_TOOLS_KEYS = {"read", "write", "tools"}
# (path, reader) -> (the file's stat signature, what the reader made of it): one file may
# have several readers (atomic_vault.yaml: prices, backends, telemetry), each cached apart.
_CACHE: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}


def cached_file(path: Path, parse):
    """``parse(text)`` of a config file (``parse(None)`` when it is absent), parsed again only
    when the file's size or modification time changed: configuration is read on every run."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return parse(None)
    if not stat.S_ISREG(st.st_mode):  # a folder, or a FIFO that would block the run forever
        raise ConfigError("is not a regular file", path=path,
                          fix="replace it with a Markdown file (or remove it to use the defaults)")
    key = (st.st_mtime_ns, st.st_size)
    slot = (path, getattr(parse, "__qualname__", ""))
    hit = _CACHE.get(slot)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not valid UTF-8 (byte {exc.start})", path=path,
                          fix="re-save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", path=path,
                          fix="check the file's permissions") from None
    value = parse(text)
    _CACHE[slot] = (key, value)
    return value


def load_model_config(path: Path) -> ModelConfig:
    """Parse model.md (absent: the defaults, which use the offline model)."""
    def parse(text: str | None) -> ModelConfig:
        if text is None:
            return ModelConfig()
        older = _has_heading(text, "default model")
        data = _settings(text, path, _MODEL_KEYS, older)
        model = data.get("model") or _section_value(text, "default model")
        if not model and older:
            raise ConfigError("the '## Default model' section names no model", path=path,
                              field="Default model", fix="write the model as provider:model on the line "
                                                         "under the heading, e.g. `anthropic:claude-sonnet-4-6`")
        model = model or "offline"
        fallback = data.get("fallback", _section_value(text, "fallback"))
        provider = data.get("provider")
        for key, value in (("model", model), ("fallback", fallback), ("provider", provider)):
            if value is not None and (not isinstance(value, str) or not MODEL_NAME.match(value)):
                raise ConfigError(f"{value!r} is not a model name", path=path, field=key,
                                  fix="write provider:model, e.g. offline or anthropic:claude-sonnet-4-5")
        if provider and ":" not in model:
            model = f"{provider}:{model}"
        rails = data.get("cost_guardrails")
        unknown = _unknown(data, _MODEL_KEYS, path) + (  # a typo'd cap must not vanish silently
            _unknown(rails, _GUARDRAIL_KEYS, path, within="cost_guardrails.") if isinstance(rails, dict) else ())
        mapped = []
        for role, name in (("model", model), ("fallback", fallback)):
            if name and qualify(name) != name:
                mapped.append(f"{role} {name!r} is read as {qualify(name)!r}")
        return ModelConfig(
            model=qualify(model),
            fallback=qualify(fallback) if fallback else fallback,
            mapped=tuple(mapped),
            max_input_tokens=_int(data, "max_input_tokens", 12_000, 256, 10_000_000, path),
            max_output_tokens=_int(data, "max_output_tokens", 4_000, 1, 1_000_000, path),
            recent_notes=_int(data, "recent_notes", 5, 0, 100, path),
            journal_days=_int(data, "journal_days", 2, 0, 3, path),
            cost_guardrails=_guardrails(data.get("cost_guardrails"), path),
            unknown_keys=unknown,
            providers=_providers(data.get("providers"), path),
            retries=_retries(data.get("retries"), path),
            prices=parse_prices(data.get("prices"), path),
            timezone=_timezone(data.get("timezone"), path),
            max_steps=_int(data, "max_steps", 8, 1, 100, path),
            retention=retention_days(data, path),
            approval_hours=_int(data, "approval_hours", 72, 1, 8_760, path),
            projects=_project_names(data.get("projects"), path),
            tree_cap_usd=_amount(data, "tree_cap_usd", path),
            max_depth=_int(data, "max_depth", 3, 0, 16, path),
            stale_days=_int(data, "stale_days", 90, 1, 36_500, path),
            relevant=_relevance(data.get("relevant"), path),
            **_helpers(data.get("helpers"), path),
        )
    return cached_file(path, parse)


def _project_names(value: Any, path: Path) -> tuple[str, ...]:
    """``projects:``: a list of project names, each a folder name under _projects/."""
    from .vault import AGENT_NAME  # the same rule as agent names: no path escapes

    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError("must be a list of project names", path=path, field="projects",
                          fix="write e.g. projects: [launch]")
    for name in value:
        if not AGENT_NAME.match(name) or name.endswith(".") or ".." in name:
            raise ConfigError(f"{name!r} is not a project name", path=path, field="projects",
                              fix="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
    if len(set(value)) != len(value):
        raise ConfigError("names a project twice", path=path, field="projects", fix="list each project once")
    return tuple(value)


def _amount(data: dict[str, Any], key: str, path: Path) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{value!r} is not a non-negative amount", path=path, field=key,
                          fix=f"write e.g. {key}: 0.50")
    return float(value)


def _helpers(value: Any, path: Path) -> dict[str, Any]:
    """``helpers: provider:model`` or ``helpers: {model: provider:model, max_output_tokens: N}``."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"model": value}
    if not isinstance(value, dict) or set(value) - {"model", "max_output_tokens"} or "model" not in value:
        raise ConfigError("must be a model name or {model: NAME, max_output_tokens: N}", path=path,
                          field="helpers", fix="write e.g.  helpers: anthropic:claude-haiku-4-5")
    model = value["model"]
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        raise ConfigError(f"{model!r} is not a model name", path=path, field="helpers.model",
                          fix="write provider:model, e.g. offline or anthropic:claude-haiku-4-5")
    return {"helper": qualify(model),
            "helper_max_output_tokens": _int(value, "max_output_tokens", 1_000, 1, 1_000_000, path,
                                             within="helpers.")}


def load_tools_config(path: Path) -> ToolsConfig:
    """Parse tools.md (absent: read persona, memory, wiki, journal; write memory only)."""
    def parse(text: str | None) -> ToolsConfig:
        if text is None:
            return ToolsConfig()
        data = _settings(text, path, _TOOLS_KEYS, _has_heading(text, "read paths", "write paths"))
        values: dict[str, tuple[str, ...]] = {}
        declared: tuple[dict[str, Any], ...] = ()
        for key in ("read", "write", "tools"):
            if key not in data:
                continue
            items = data[key] or []
            if key == "tools" and isinstance(items, list):
                declared = tuple(x for x in items if isinstance(x, dict))
                items = [x for x in items if not isinstance(x, dict)]
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                if key == "tools":
                    raise ConfigError("must be a list of tool declarations", path=path, field=key,
                                      fix="declare each tool as a mapping with name, kind and description "
                                          "(spec/06), or write tools: []")
                raise ConfigError("must be a list of strings", path=path, field=key,
                                  fix=f"write e.g. {key}: [memory/]")
            if key != "tools":
                for item in items:
                    # Judged as on any system: a vault may be synced to Windows, where
                    # '\\' separates folders and 'C:' starts an absolute path.
                    if _ABSOLUTE.match(item.strip()) or ".." in re.split(r"[/\\]", item):
                        raise ConfigError(f"{item!r} leaves the agent folder", path=path, field=key,
                                          fix="use paths relative to the agent folder, e.g. memory/")
                    if _CONTROL.search(item):
                        raise ConfigError(f"{item!r} holds a control character", path=path, field=key,
                                          fix="write plain folder names, e.g. memory/")
            values[key] = tuple(items)
        return ToolsConfig(**values, unknown_keys=_unknown(data, _TOOLS_KEYS, path), declared=declared)
    return cached_file(path, parse)


def retention_days(data: dict[str, Any], path: Path) -> int | None:
    """``retention:`` in days (1 to 100,000), or None when it is not set."""
    if data.get("retention") is None:
        return None
    return _int(data, "retention", 90, 1, 100_000, path)


def load_vault_prices(root: Path) -> dict[str, Any]:
    """The ``prices:`` block of ``<root>/atomic_vault.yaml`` (absent: none)."""
    path = root / "atomic_vault.yaml"

    def parse(text: str | None) -> dict[str, Any]:
        if text is None:
            return {}
        try:
            data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - safe loader
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply", path=path,
                              fix="correct the YAML syntax") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                              fix="correct the YAML syntax") from None
        return parse_prices(data.get("prices") if isinstance(data, dict) else None, path)
    return cached_file(path, parse)
