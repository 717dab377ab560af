"""The authority gate: before any tool runs, policy.md decides.

policy.md's YAML block holds ordered rules; the first whose tool name and argument
matchers all match gives the verdict: ``allow``, ``block`` (the reason goes to the
model), ``revise`` (the arguments rewritten, then allowed) or ``escalate`` (a person
decides; nothing runs). No match: the policy's ``default:``, else ``escalate``. An
optional ``<root>/policy.md`` is a floor: its block or escalate wins over the agent's
allow. A policy that cannot be loaded blocks every call (fail closed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import _settings, yaml_blocks
from .errors import ConfigError

VERDICTS = ("allow", "block", "revise", "escalate")
_STRICTNESS = {"allow": 0, "revise": 1, "escalate": 2, "block": 3}
_RULE_KEYS = {"tool", "args", "verdict", "reason", "set", "drop", "clamp", "name"}
_MATCH_KEYS = {"equals", "glob", "regex", "min", "max"}
_KEYS = {"default", "rules"}


@dataclass(frozen=True)
class Verdict:
    """The gate's decision about one call, as recorded (``kind: verdict``)."""

    outcome: str
    reason: str
    rule: str | None  # "policy.md line 12", or None for the default
    arguments: dict[str, Any]  # what runs: revised when the outcome is revise
    policy_sha256: str | None
    floor_sha256: str | None = None


@dataclass(frozen=True)
class _Matcher:
    key: str
    exact: Any = None
    has_exact: bool = False
    pattern: re.Pattern[str] | None = None
    low: float | None = None
    high: float | None = None

    def matches(self, arguments: dict[str, Any]) -> bool:
        if self.key not in arguments:
            return False
        value = arguments[self.key]
        if self.has_exact and value != self.exact:
            return False
        if self.pattern is not None and not (isinstance(value, str) and self.pattern.search(value)):
            return False
        if self.low is not None or self.high is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                return False
        return True


@dataclass(frozen=True)
class Rule:
    line: int
    tool: re.Pattern[str]
    matchers: tuple[_Matcher, ...]
    verdict: str
    reason: str
    set: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    clamp: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def matches(self, tool: str, arguments: dict[str, Any]) -> bool:
        return bool(self.tool.match(tool)) and all(m.matches(arguments) for m in self.matchers)

    def revise(self, arguments: dict[str, Any]) -> dict[str, Any]:
        out = {key: value for key, value in arguments.items() if key not in self.drop}
        out.update(self.set)
        for key, (low, high) in self.clamp.items():
            value = out.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if low is not None and value < low:
                    out[key] = type(value)(low) if isinstance(value, int) and float(low).is_integer() else low
                if high is not None and value > high:
                    out[key] = type(value)(high) if isinstance(value, int) and float(high).is_integer() else high
        return out


@dataclass(frozen=True)
class Policy:
    """One policy.md: its rules in order, its default, and its SHA-256 (its version).
    ``error`` set: it could not be loaded, and every call is blocked with that reason."""

    path: Path
    rules: tuple[Rule, ...] = ()
    default: str | None = None
    sha256: str | None = None
    error: ConfigError | None = None

    def decide(self, tool: str, arguments: dict[str, Any]) -> tuple[str, str, str | None, dict[str, Any]] | None:
        """(outcome, reason, rule, arguments) of the first matching rule, else of the
        default, else None (no opinion)."""
        if self.error is not None:
            return "block", f"the policy cannot be loaded, so every tool is blocked: {self.error}", \
                f"{self.path.name} (unloadable)", arguments
        for rule in self.rules:
            if rule.matches(tool, arguments):
                revised = rule.revise(arguments) if rule.verdict == "revise" else arguments
                return rule.verdict, rule.reason, f"{self.path.name} line {rule.line}", revised
        if self.default is not None:
            return self.default, f"no rule matches; the policy's default is {self.default}", \
                f"{self.path.name} default", arguments
        return None


_CACHE: dict[Path, tuple[tuple[int, int], Policy]] = {}


def load(path: Path) -> Policy | None:
    """policy.md at ``path`` (None when there is none). Never raises: a policy that
    cannot be read or has an invalid rule is returned with ``error`` set (fail closed)."""
    import os
    import stat as stat_

    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return Policy(path, error=ConfigError(f"cannot be read ({exc.strerror})", path=path,
                                              fix="check the file's permissions"))
    key = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        if not stat_.S_ISREG(st.st_mode):
            raise ConfigError("is not a regular file", path=path, fix="replace it with a Markdown file")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"is not valid UTF-8 (byte {exc.start})", path=path, fix="re-save it as UTF-8") from None
        policy = _parse(text, path, digest)
    except ConfigError as exc:
        policy = Policy(path, error=exc, sha256=locals().get("digest"))
    except OSError as exc:
        policy = Policy(path, error=ConfigError(f"cannot be read ({exc.strerror})", path=path,
                                                fix="check the file's permissions"))
    _CACHE[path] = (key, policy)
    return policy


def _parse(text: str, path: Path, digest: str) -> Policy:
    data = _settings(text, path, _KEYS, older=False)
    lines = _rule_lines(text, path)
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}", path=path, field=unknown[0],
                          fix="write only default: and rules: (spec/06)")
    default = data.get("default")
    if default is not None and default not in VERDICTS or default == "revise":
        raise ConfigError(f"default {default!r} is not allow, block or escalate", path=path, field="default",
                          fix="write default: escalate (or block, or allow)")
    rules_raw = data.get("rules") or []
    if not isinstance(rules_raw, list):
        raise ConfigError("rules must be a list of rules", path=path, field="rules",
                          fix="write rules: then one '- tool: NAME' entry per rule")
    rules = tuple(_rule(raw, path, lines[i] if i < len(lines) else 0, i) for i, raw in enumerate(rules_raw))
    return Policy(path, rules, default, digest)


def _rule_lines(text: str, path: Path) -> list[int]:
    """The file line of each rule, from the YAML nodes' positions."""
    blocks = yaml_blocks(text, path)
    if not blocks:
        return []
    start = blocks[0][0]
    body = text.split("\n")[start - 1:]
    end = next((i for i, line in enumerate(body) if line.strip().startswith("```")), len(body))
    try:
        node = yaml.compose("\n".join(body[:end]))
    except yaml.YAMLError:
        return []
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            return [start + item.start_mark.line for item in value.value]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rule(raw: Any, path: Path, line: int, index: int) -> Rule:
    where = f"rules[{index}] (line {line})"

    def bad(message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=path, field=where, fix=fix)

    if not isinstance(raw, dict):
        raise bad("a rule must be a mapping", "write e.g. - {tool: date, verdict: allow}")
    unknown = sorted(set(map(str, raw)) - _RULE_KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}", f"use only {', '.join(sorted(_RULE_KEYS))}")
    tool = raw.get("tool")
    if not isinstance(tool, str) or not tool:
        raise bad("a rule needs tool: a name or glob (e.g. send_*)", "write tool: NAME")
    verdict = raw.get("verdict")
    if verdict not in VERDICTS:
        raise bad(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}", "write verdict: allow")
    reason = raw.get("reason", raw.get("name", f"rule at line {line}"))
    if not isinstance(reason, str):
        raise bad("reason must be text", "write reason: why, in words the model can act on")
    matchers = []
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise bad("args must map argument names to matchers", "write args: {amount: {max: 100}}")
    for key, spec in args.items():
        if not isinstance(spec, dict):
            matchers.append(_Matcher(str(key), exact=spec, has_exact=True))
            continue
        unknown = sorted(set(map(str, spec)) - _MATCH_KEYS)
        if unknown:
            raise bad(f"args.{key}: unknown matcher {unknown[0]!r}", f"use {', '.join(sorted(_MATCH_KEYS))}")
        pattern = None
        if "glob" in spec:
            pattern = re.compile(fnmatch.translate(str(spec["glob"])), re.DOTALL)
        if "regex" in spec:
            try:
                pattern = re.compile(str(spec["regex"]))
            except re.error as exc:
                raise bad(f"args.{key}: regex is invalid ({exc})", "correct the regular expression") from None
        for bound in ("min", "max"):
            if bound in spec and not _number(spec[bound]):
                raise bad(f"args.{key}: {bound} must be a number", f"write {bound}: 100")
        matchers.append(_Matcher(str(key), exact=spec.get("equals"), has_exact="equals" in spec, pattern=pattern,
                                 low=spec.get("min"), high=spec.get("max")))
    rewrite = {name: raw.get(name) for name in ("set", "drop", "clamp") if raw.get(name) is not None}
    if rewrite and verdict != "revise":
        raise bad(f"{', '.join(rewrite)} rewrite arguments, so the verdict must be revise", "write verdict: revise")
    if verdict == "revise" and not rewrite:
        raise bad("a revise rule must say how: set:, drop: or clamp:", "write e.g. clamp: {amount: {max: 100}}")
    values = rewrite.get("set", {})
    drop = rewrite.get("drop", [])
    clamp_raw = rewrite.get("clamp", {})
    if not isinstance(values, dict) or not isinstance(drop, list) or not isinstance(clamp_raw, dict):
        raise bad("set: is a mapping, drop: a list of names, clamp: a mapping of bounds",
                  "write set: {currency: EUR}, drop: [force], clamp: {amount: {max: 100}}")
    clamp = {}
    for key, spec in clamp_raw.items():
        if not isinstance(spec, dict) or set(spec) - {"min", "max"} or not all(_number(v) for v in spec.values()):
            raise bad(f"clamp.{key} must be {{min: N, max: N}}", f"write clamp: {{{key}: {{max: 100}}}}")
        clamp[str(key)] = (spec.get("min"), spec.get("max"))
    return Rule(line, re.compile(fnmatch.translate(tool)), tuple(matchers), verdict, reason,
                dict(values), tuple(map(str, drop)), clamp)


class Gate:
    """The agent's policy with the vault's floor under it, and the floors of the agent's
    projects (``_projects/NAME/policy.md``): the strictest floor verdict wins."""

    def __init__(self, agent_policy: Path, floor: Path, project_floors: tuple[tuple[str, Path], ...] = ()):
        self.policy = load(agent_policy)
        self.floor = load(floor)
        self.project_floors = [(label, load(path)) for label, path in project_floors]
        self.agent_path = agent_policy

    @property
    def problems(self) -> list[str]:
        every = (self.policy, self.floor, *(p for _, p in self.project_floors))
        return [str(p.error) for p in every if p is not None and p.error is not None]

    def decide(self, tool: str, arguments: dict[str, Any]) -> Verdict:
        agent = self.policy.decide(tool, arguments) if self.policy else None
        if agent is None:
            agent = ("escalate", "no rule matches and the policy sets no default, so a person decides"
                     if self.policy else "the agent has no policy.md, so a person decides",
                     f"{self.agent_path.name} default", arguments)
        outcome, reason, rule, args = agent
        floors = [(None, self.floor), *self.project_floors]
        for label, floor in floors:
            decided = floor.decide(tool, args) if floor else None
            if decided is not None and _STRICTNESS[decided[0]] > _STRICTNESS[outcome]:
                where = decided[2] if label is None else f"{label}/{decided[2]}"
                outcome, reason, rule, args = decided[0], decided[1], f"floor {where}", decided[3]
        return Verdict(outcome, reason, rule, args, self.policy.sha256 if self.policy else None,
                       self.floor.sha256 if self.floor else None)
