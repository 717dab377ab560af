"""Retention: how long a run's snapshots are kept, and ``prune``, which removes the rest.

Records are never removed: they hold the hashes, so the chain still verifies. A snapshot
stays while any record inside the window names it (a persona file that recent runs still
used stays however old its first run). Each prune is itself a chained record listing what
it removed, written before anything is deleted: a crash between leaves snapshots a prune
record calls removed (harmless), never missing ones no record explains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import clock, snapshots
from .backends import CONFIG_NAME, vault_file
from .config import load_model_config, retention_days
from .errors import ConfigError


@dataclass
class Plan:
    """What a prune removes (or, with ``dry_run``, would remove)."""

    retention_days: int
    cutoff: str
    removed: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # runs that lose snapshots
    orphans: int = 0  # removed snapshots no record names (a crash before a record)
    bytes: int = 0
    kept: int = 0
    dry_run: bool = False
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def configured(agent: Any) -> tuple[int, str]:
    """(days, where it was set): model.md's ``retention:`` first, then the vault's."""
    days = load_model_config(agent.folder.model).retention
    if days is not None:
        return days, agent.folder.relative(agent.folder.model)
    path = agent.folder.root / CONFIG_NAME
    days = retention_days(vault_file(agent.folder.root) or {}, path)
    if days is None:
        raise ConfigError("no retention is set, so nothing may be pruned", path=agent.folder.model,
                          field="retention", fix="add `retention: 90` (days) to model.md's settings "
                                                 f"or to {CONFIG_NAME}")
    return days, CONFIG_NAME


def prune(agent: Any, *, dry_run: bool = False, now: datetime | None = None) -> Plan:
    """Remove, under the agent's lock, every snapshot no record inside the window names;
    log it as a ``prune`` record (not with ``dry_run``: then nothing is written)."""
    from .agent import _fence

    days, _ = configured(agent)
    config = load_model_config(agent.folder.model)
    now = now or clock.now(config.zone)
    cutoff = now - timedelta(days=days)
    with agent.lock.hold(agent.folder, agent.lock_timeout) as lease:
        plan = _plan(agent, days, cutoff)
        plan.dry_run = dry_run
        if dry_run or not plan.removed:
            return plan
        lease.check()
        record = agent.log.append(agent.folder, {
            "kind": "prune", "ts": now.isoformat(timespec="milliseconds"), "agent": agent.name,
            "trigger": "prune", "status": "ok", "retention_days": days, "cutoff": plan.cutoff,
            "removed": plan.removed, "runs": plan.runs, "orphans": plan.orphans,
            "summary": f"pruned {len(plan.removed)} snapshots ({plan.bytes} bytes) of "
                       f"{len(plan.runs)} runs older than {days} days"}, fence=_fence(agent.lock, lease))
        plan.seq = record["seq"]
        agent.log.delete_snapshots(agent.folder, plan.removed)
    return plan


def _plan(agent: Any, days: int, cutoff: datetime) -> Plan:
    plan = Plan(retention_days=days, cutoff=cutoff.isoformat(timespec="milliseconds"))
    keep: set[str] = set()
    old: list[tuple[str, list[str]]] = []
    for record in agent.log.records(agent.folder):
        names = snapshots.named(record)
        if not names:
            continue
        if _inside(record.get("ts"), cutoff):
            keep.update(names)
        else:
            old.append((str(record.get("run_id")), names))
    named_old = {sha for _, names in old for sha in names}
    stored = agent.log.snapshot_hashes(agent.folder)
    plan.removed = [sha for sha in stored if sha not in keep]
    gone = set(plan.removed)
    plan.kept = len(stored) - len(gone)
    plan.orphans = sum(1 for sha in plan.removed if sha not in named_old)
    plan.runs = [run_id for run_id, names in old if gone.intersection(names)]
    plan.bytes = sum(len((agent.log.get_snapshot(agent.folder, sha) or "").encode("utf-8"))
                     for sha in plan.removed)
    return plan


def _inside(ts: Any, cutoff: datetime) -> bool:
    """A record whose time cannot be read counts as recent: nothing it names is removed."""
    try:
        when = datetime.fromisoformat(str(ts))
        if when.tzinfo is None:
            when = when.astimezone()
        return when >= cutoff
    except (TypeError, ValueError):
        return True
