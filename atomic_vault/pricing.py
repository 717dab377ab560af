"""What tokens cost: a built-in table of list prices, extended or overridden per vault
(``prices:`` in ``<root>/atomic_vault.yaml``) and per agent (``prices:`` in model.md).

Prices are US dollars per million tokens: ``input`` (uncached), ``output``,
``cache_read`` and ``cache_write``. A key is ``provider:model``, or ``provider:*`` for
every model of a provider; a dated snapshot (``claude-sonnet-4-5-20250929``) takes the
price of its undated name. A model with no price has an unknown cost: the run still
works, its cost is recorded as unknown (null) and doctor warns. No number is invented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

BUILTIN_AS_OF = "2026-11"
# USD per million tokens: (input, output, cache read, cache write). List prices of the
# providers' standard tiers; a vault overrides any of them without touching this file.
BUILTIN: dict[str, tuple[float, float, float, float]] = {
    "offline:*": (0.0, 0.0, 0.0, 0.0),
    "ollama:*": (0.0, 0.0, 0.0, 0.0),  # local servers: no per-token charge
    "llamacpp:*": (0.0, 0.0, 0.0, 0.0),
    "vllm:*": (0.0, 0.0, 0.0, 0.0),
    "anthropic:claude-opus-4-1": (15.0, 75.0, 1.50, 18.75),
    "anthropic:claude-opus-4": (15.0, 75.0, 1.50, 18.75),
    "anthropic:claude-opus-4-6": (5.0, 25.0, 0.50, 6.25),
    "anthropic:claude-opus-4-5": (5.0, 25.0, 0.50, 6.25),
    "anthropic:claude-sonnet-4-6": (3.0, 15.0, 0.30, 3.75),
    "anthropic:claude-sonnet-4-5": (3.0, 15.0, 0.30, 3.75),
    "anthropic:claude-sonnet-4": (3.0, 15.0, 0.30, 3.75),
    "anthropic:claude-3-7-sonnet": (3.0, 15.0, 0.30, 3.75),
    "anthropic:claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25),
    "anthropic:claude-3-5-haiku": (0.80, 4.0, 0.08, 1.0),
    "openai:gpt-5": (1.25, 10.0, 0.125, 1.25),
    "openai:gpt-5-mini": (0.25, 2.0, 0.025, 0.25),
    "openai:gpt-5-nano": (0.05, 0.40, 0.005, 0.05),
    "openai:gpt-4.1": (2.0, 8.0, 0.50, 2.0),
    "openai:gpt-4.1-mini": (0.40, 1.60, 0.10, 0.40),
    "openai:gpt-4.1-nano": (0.10, 0.40, 0.025, 0.10),
    "openai:gpt-4o": (2.50, 10.0, 1.25, 2.50),
    "openai:gpt-4o-mini": (0.15, 0.60, 0.075, 0.15),
    "openai:o3": (2.0, 8.0, 0.50, 2.0),
    "openai:o4-mini": (1.10, 4.40, 0.275, 1.10),
}
FIELDS = ("input", "output", "cache_read", "cache_write")
_SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


@dataclass(frozen=True)
class Price:
    """USD per million tokens, and the table entry it came from."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    source: str = "built-in"

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int = 0,
             cache_write: int = 0) -> float:
        total = (input_tokens * self.input + output_tokens * self.output
                 + cache_read * self.cache_read + cache_write * self.cache_write)
        return round(total / 1_000_000, 10)

    def ceiling(self, input_tokens: int, output_tokens: int) -> float:
        """The most a call can cost: every input token written to the cache (when that is
        dearer than plain input) and every allowed output token spent."""
        return self.cost(0, output_tokens, 0, 0) + round(
            input_tokens * max(self.input, self.cache_write) / 1_000_000, 10)


def parse_prices(value: Any, path: Path | str, field: str = "prices") -> dict[str, Price]:
    """A ``prices:`` mapping from a config file, checked: every key a model name, every
    value a mapping of the four fields to non-negative numbers (input and output needed)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("must map provider:model to prices", path=path, field=field,
                          fix="write e.g.  prices: {'openai:gpt-4o': {input: 2.5, output: 10}}")
    out: dict[str, Price] = {}
    for key, entry in value.items():
        where = f"{field}.{key}"
        if not isinstance(key, str) or ":" not in key:
            raise ConfigError(f"{key!r} is not provider:model (or provider:*)", path=path,
                              field=where, fix="name the model as provider:model")
        if not isinstance(entry, dict) or set(entry) - set(FIELDS) or not {"input", "output"} <= set(entry):
            raise ConfigError("needs input and output (and optionally cache_read, cache_write)",
                              path=path, field=where,
                              fix="write {input: 3.0, output: 15.0}: USD per million tokens")
        numbers = {}
        for name in FIELDS:
            number = entry.get(name, entry["input"] if name == "cache_write" else 0.0)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                raise ConfigError(f"{number!r} is not a non-negative price", path=path,
                                  field=f"{where}.{name}", fix="write USD per million tokens, e.g. 3.0")
            numbers[name] = float(number)
        out[key] = Price(**numbers, source=f"{path}")
    return out


def builtin_prices() -> dict[str, Price]:
    return {key: Price(*value, source=f"built-in table ({BUILTIN_AS_OF})")
            for key, value in BUILTIN.items()}


def lookup(model: str, *tables: Mapping[str, Price]) -> Price | None:
    """The price of ``provider:model``: the last table that knows it wins (pass the
    built-in table first, then the vault's, then the agent's)."""
    provider, _, name = model.partition(":")
    candidates = [model]
    snapshot = _SNAPSHOT.match(name)
    if snapshot:
        candidates.append(f"{provider}:{snapshot.group('base')}")
    candidates.append(f"{provider}:*")
    for table in reversed(tables):
        for key in candidates:
            if key in table:
                return table[key]
    return None


_BUILTIN: dict[str, Price] | None = None


def price_for(model: str, vault: Mapping[str, Price], agent: Mapping[str, Price]) -> Price | None:
    """The price of ``model``: model.md's table, then the vault's, then the built-in one."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = builtin_prices()
    return lookup(model, _BUILTIN, vault, agent)


def run_cost(price: Price | None, response: Any) -> float | None:
    """What a response cost: its tokens at ``price``; without a price, the cost the
    provider itself reported, if any; else None (unknown)."""
    if price is None:
        reported = getattr(response, "cost_usd", None)
        return float(reported) if isinstance(reported, (int, float)) and not isinstance(reported, bool) else None
    return price.cost(response.input_tokens, response.output_tokens,
                      getattr(response, "cache_read_tokens", 0), getattr(response, "cache_write_tokens", 0))


def known_models(provider: str) -> list[str]:
    """The models of ``provider`` the built-in table prices (for "did you mean" fixes)."""
    return sorted(key.partition(":")[2] for key in BUILTIN
                  if key.startswith(provider + ":") and not key.endswith(":*"))
