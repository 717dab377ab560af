"""Model providers beyond the offline model, each registered in the ``atomic_vault.models``
entry-point group exactly like a third-party provider, each importing its SDK lazily."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelError


def import_sdk(module: str, extra: str) -> Any:
    """The provider's SDK, imported only when a model of it is built."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"the {module} SDK is not installed", field="model",
                         fix=f"pip install 'atomic-vault[{extra}]'") from None


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``retry-after``), if any."""
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:  # absent, or an HTTP date: the runtime's backoff applies
            continue
        if math.isfinite(value) and value >= 0:
            return value / per_second
    return None


def retryable(status: int) -> bool:
    """Timeouts, conflicts, rate limits and server errors may pass; other 4xx will not."""
    return status in (408, 409, 429) or status >= 500


def positive_seconds(value: Any, provider: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelError(f"timeout_s must be a positive number of seconds, not {value!r}",
                         field=f"providers.{provider}.timeout_s", fix="write e.g. timeout_s: 120")
    return float(value)


def http_fix(status: int, key_source: str, refused: str) -> str:
    """What the operator should do about an HTTP error; ``refused`` is the advice for
    other 4xx answers, which differ per provider."""
    if status in (401, 403):
        return f"check the API key (read from {key_source}) and its permissions"
    if status == 429:
        return "wait and retry (the runtime does), or lower the request rate"
    if status >= 500:
        return "the server is failing or overloaded: retry later"
    if status == 404:
        return "check the model name (is it served?) and base_url under providers: in model.md"
    return refused
