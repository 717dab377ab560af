"""Delegation: the built-in ``delegate`` tool runs another agent of the vault on a sub-task.

The child is a run of its own, in its own folder (its lock, its log, its notes), made in
the parent's process while the parent's tool loop waits; its answer is the tool's result.
The runs of one tree share a ``Tree``: the cost cap the root set, checked before every
model call of every run in it (the sum of what the tree spent and holds, plus the call's
most expensive outcome, must fit), the depth limit, and the path from the root, so that an
agent already on it (the parent itself included) is refused: a cycle. Records carry
``parent_run_id``, ``root_run_id`` and ``depth``, and a parent's lists its ``children``,
so the tree and its spend can be read back from the logs (spec/18).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import AtomicVaultError, ConfigError
from .tools import Result, Toolbox

NAME = "delegate"


class Tree:
    """The shared budget of one tree of runs, in memory: every child runs in the process
    of its root, so one lock guards it. ``held`` is each run's reservation (what it spent
    so far plus its next call's ceiling), ``spent`` the settled cost of finished runs."""

    def __init__(self, root_run_id: str, cap_usd: float | None, max_depth: int):
        self.root_run_id, self.cap_usd, self.max_depth = root_run_id, cap_usd, max_depth
        self._lock = threading.Lock()
        self.held: dict[str, float] = {}
        self.spent = 0.0

    def reserve(self, run_id: str, usd: float | None, model: str) -> str | None:
        """Hold ``usd`` for run ``run_id`` (replacing what it held), or say why it may not."""
        if self.cap_usd is None:
            return None
        if usd is None:
            return (f"no price is known for {model}, so the tree cap ${self.cap_usd:.4f} of root run "
                    f"{self.root_run_id} cannot bound this call (add it under prices: in model.md)")
        with self._lock:
            others = sum(v for k, v in self.held.items() if k != run_id)
            if self.spent + others + usd > self.cap_usd:
                return (f"tree cap ${self.cap_usd:.4f} of root run {self.root_run_id}: "
                        f"${self.spent + others:.4f} spent or reserved + up to ${usd:.4f} for this call")
            self.held[run_id] = usd
        return None

    def settle(self, run_id: str, cost: float | None) -> None:
        """A run's cost replaces its reservation (an unknown cost counts as the reservation)."""
        with self._lock:
            held = self.held.pop(run_id, None)
            if cost is not None:
                self.spent += cost
            elif held is not None:
                self.spent += held

    def release(self, run_id: str) -> None:
        with self._lock:
            self.held.pop(run_id, None)


@dataclass(frozen=True)
class Node:
    """Where one run sits in its tree."""

    tree: Tree
    depth: int = 0
    parent_run_id: str | None = None
    path: tuple[str, ...] = ()  # the agents from the root to this run's
    runs: list[str] = field(default_factory=list)  # the run id the child's run takes, once known

    def record(self, run_id: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        """The tree fields of a run's record: a lone run with no cap has none."""
        tree = self.tree
        if self.depth == 0 and tree.cap_usd is None and not children:
            return {}
        out: dict[str, Any] = {"root_run_id": tree.root_run_id, "depth": self.depth}
        if self.parent_run_id is not None:
            out["parent_run_id"] = self.parent_run_id
        if self.depth == 0 and tree.cap_usd is not None:
            out["tree_cap_usd"] = tree.cap_usd
        if children:
            out["children"] = children
        return out


def root(run_id: str, agent: str, cap_usd: float | None, max_depth: int) -> Node:
    return Node(Tree(run_id, cap_usd, max_depth), 0, None, (agent,))


def check_cap(cap_usd: Any) -> None:
    """``tree_cap_usd`` as a caller passes it: None or a non-negative amount."""
    if cap_usd is not None and (isinstance(cap_usd, bool) or not isinstance(cap_usd, (int, float))
                                or not cap_usd >= 0):
        raise ConfigError(f"tree_cap_usd {cap_usd!r} is not a non-negative amount",
                          field="tree_cap_usd", fix="pass an amount in USD such as 0.50")


def node_for(agent: Any, run_id: str, cap_usd: float | None, max_depth: int) -> Node | None:
    """Where run ``run_id`` of ``agent`` stands in a tree: a child's place in the tree that
    delegated to it, a new capped root when the call gives a cap, else None (the run's
    own uncapped root, from model.md)."""
    if agent._node is not None:
        agent._node.runs.append(run_id)
        return agent._node
    if cap_usd is not None:
        return root(run_id, agent.name, float(cap_usd), max_depth)
    return None


def bind(box: Toolbox, run: Any) -> Toolbox:
    """The toolbox with the built-in tools bound to this run (they act in its name)."""
    if not any(tool.kind == "builtin" for tool in box.tools.values()):
        return box
    bound = {name: replace(tool, bound=lambda arguments, _run=run: run_child(_run, arguments))
             if tool.kind == "builtin" else tool for name, tool in box.tools.items()}
    return Toolbox(bound, box.warnings)


def run_child(parent: Any, arguments: dict[str, Any]) -> Result:
    """Run the sub-task as a child run; every refusal and failure is the model's to read."""
    name, task = arguments["agent"], arguments["task"]
    node: Node = parent.node
    tree = node.tree
    if name in node.path:
        return Result("error", f"delegation refused: {name} is already on the path from the root run "
                               f"({' > '.join(node.path)}), so this would be a cycle")
    if node.depth + 1 > tree.max_depth:
        return Result("error", f"delegation refused: the tree of root run {tree.root_run_id} may be "
                               f"{tree.max_depth} deep (max_depth in the root agent's model.md)")
    agent_type = type(parent.agent)
    try:
        child = agent_type(name, root=parent.agent.folder.root, trigger="delegate",
                           lock_timeout=parent.agent.lock_timeout)
    except AtomicVaultError as exc:
        return Result("error", f"delegation refused: {exc.message}")
    child._node = Node(tree, node.depth + 1, parent.id, (*node.path, name))
    entry: dict[str, Any] = {"agent": name, "depth": node.depth + 1}
    try:
        result = child.call(task)
    except AtomicVaultError as exc:
        parent.children.append({**entry, "run_id": next(iter(child._node.runs), None), "status": "error",
                                "cost_usd": None, "error": exc.message[:300]})
        return Result("error", f"{name}'s run failed: {exc.message}")
    parent.children.append({**entry, "run_id": result.run_id, "status": result.status,
                            "cost_usd": result.cost_usd})
    if result.status != "ok":
        why = "; ".join(result.warnings[-2:]) or result.error or result.status
        return Result("error", f"{name}'s run {result.run_id} ended {result.status}: {why}"[:2000])
    return Result("ok", result.text)
