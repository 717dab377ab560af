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


def require(provider: str, module: str, extra: str, key: Any = None, key_env: str | None = None) -> Any:
    """The provider's SDK, once both it and the key (when ``key`` is given) are there;
    else one error that names every missing piece, so one fix makes the model work."""
    from .. import keys

    missing, fixes = [], []
    if key is not None and not key.value:
        missing.append(f"{key_env} (not in the environment nor in {keys.keys_file()})")
        fixes.append(f"set {key_env}, or add an {provider!r} entry to {keys.keys_file()} (chmod 600)")
    try:
        sdk = import_sdk(module, extra)
    except ModelError as exc:
        missing.append(f"the {module} SDK ({exc.fix})")
        fixes.append(exc.fix or "")
    if missing:
        raise ModelError(f"{provider}: needs " + " and ".join(missing), field="model", fix="; ".join(fixes))
    return sdk


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


def model_fix(provider: str, fix: str) -> str:
    """``fix`` plus the models this provider is known to serve, when the table knows any."""
    from ..pricing import known_models

    known = known_models(provider)
    return f"{fix}; known {provider} models: {', '.join(known)}" if known else fix


def sdk_error(sdk: Any, exc: Exception, *, provider: str, base_url: Any, timeout_s: float,
              key_source: str, refused: str) -> ModelError:
    """A ModelError for an exception of an official SDK (both name their errors alike):
    what happened, whether another try may help, and what to do; every text redacted."""
    from ..keys import redact

    if isinstance(exc, sdk.APITimeoutError):
        return ModelError(f"{provider}: no answer within {timeout_s:g} s", field="model", retryable=True,
                          fix=f"retry later, or raise timeout_s under providers: {provider}: in model.md "
                              "(local models can be slow)")
    if isinstance(exc, sdk.APIConnectionError):
        return ModelError(redact(f"{provider}: cannot reach {base_url} ({exc})"), field="model",
                          retryable=True, fix="check the network or that the server runs, and "
                                              "base_url under providers: in model.md")
    status = getattr(exc, "status_code", None)
    if status is None:
        return ModelError(redact(f"{provider}: {exc}")[:500], field="model",
                          fix="check the provider's status and the SDK version")
    # {"error": {...}} from the APIs (the openai SDK unwraps it), {"error": "text"} from
    # Ollama, anything at all from a proxy.
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(error, dict):
        error = {"message": error} if isinstance(error, str) else {}
    kind = error.get("type") or error.get("code") or "error"
    detail = f"{kind}: {error.get('message') or exc}"
    return ModelError(redact(f"{provider}: HTTP {status} {detail}")[:500], field="model",
                      status=status, retryable=retryable(status),
                      retry_after=retry_after(exc.response.headers),
                      fix=model_fix(provider, http_fix(status, key_source, refused))
                      if status in (400, 404) else http_fix(status, key_source, refused))
