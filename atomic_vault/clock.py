"""The time a run reads: one function, so that tests can set the day a run falls on
(month boundaries, caps by period) instead of depending on the real date."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo


def now(zone: tzinfo | None) -> datetime:
    """The current time, aware, in ``zone`` (None: the system's local time zone)."""
    return datetime.now(zone or timezone.utc).astimezone(zone)
