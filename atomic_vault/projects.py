"""Projects: what several agents share, in ``<root>/_projects/<name>/`` (spec/18).

A project folder holds ``project.md`` (the goal, in prose, and one YAML block: ``members``
and an optional token ``budget`` for its layers), shared notes in ``memory/`` (the agent
note format, with their own INDEX.md) and an optional ``policy.md``, a floor under each
member's own policy. An agent joins by naming the project in its model.md
(``projects: [name]``) and by being listed among the members: both sides agree, or the
run is refused. The folder is opened as an AgentFolder whose name is ``_projects/<name>``,
so notes, INDEX and the lock go through the same backends as an agent's.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from .config import ModelConfig, ToolsConfig, _settings, _unknown, cached_file
from .errors import ConfigError
from .vault import AGENT_NAME, AgentFolder, check_agent_name

PROJECTS = "_projects"  # a name no agent can have: agent names start with a letter or digit
_KEYS = {"members", "budget"}


@dataclass(frozen=True)
class Project:
    name: str
    folder: AgentFolder  # root / _projects / name: memory/, memory/INDEX.md, .atomic_vault/
    members: tuple[str, ...]
    budget: int | None = None  # the most tokens the project's layers take in a member's prompt
    unknown_keys: tuple[str, ...] = ()

    @property
    def file(self) -> Path:
        return self.folder.path / "project.md"

    @property
    def policy(self) -> Path:
        return self.folder.path / "policy.md"

    def source(self, relative: str) -> str:
        """A manifest source: the path relative to the vault root."""
        return f"{PROJECTS}/{self.name}/{relative}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not AGENT_NAME.match(name) or name.endswith(".") or ".." in name:
        raise ConfigError(f"invalid project name {name!r}", field="project",
                          fix="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
    return name


def folder_of(root: Path, name: str) -> AgentFolder:
    return AgentFolder(root, f"{PROJECTS}/{check_name(name)}")


def names(root: Path) -> list[str]:
    """The projects of the vault: folders under _projects/ with a valid name."""
    base = root / PROJECTS
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and AGENT_NAME.match(p.name))


def load(root: Path, name: str) -> Project:
    """project.md of project ``name``, parsed strictly; a missing project is an error."""
    folder = folder_of(root, name)
    path = folder.path / "project.md"
    if folder.path.is_symlink() or not folder.path.is_dir():
        known = names(root)
        raise ConfigError(f"there is no project {name!r}", path=folder.path, field="projects",
                          fix=(f"the projects are: {', '.join(known)}" if known else
                               f"create {PROJECTS}/{name}/project.md") + " (spec/18)")

    def parse(text: str | None) -> Project:
        if text is None:
            raise ConfigError("is missing: a project folder needs its project.md", path=path,
                              fix="write the goal and a ```yaml block with members: [AGENT, ...]")
        data = _settings(text, path, _KEYS, older=False)
        unknown = _unknown(data, _KEYS, path)
        members = data.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise ConfigError("names no members", path=path, field="members",
                              fix="write members: [AGENT, ...], the agents that share this project")
        for member in members:
            try:
                check_agent_name(member)
            except ConfigError:
                raise ConfigError(f"{member!r} is not an agent name", path=path, field="members",
                                  fix="list agent folder names, e.g. members: [atlas]") from None
        budget = data.get("budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                                   or not 64 <= budget <= 10_000_000):
            raise ConfigError(f"{budget!r} is not a whole number of tokens from 64 to 10000000",
                              path=path, field="budget", fix="write e.g. budget: 2000, or remove it")
        return Project(name, folder, tuple(members), budget, unknown)
    return cached_file(path, parse)


def for_agent(folder: AgentFolder, config: ModelConfig) -> list[Project]:
    """The projects an agent is a member of, in model.md's order; a project it names that
    does not exist, or does not list it, refuses the run (model.md names the project)."""
    out = []
    for name in config.projects:
        try:
            project = load(folder.root, name)
        except ConfigError as exc:
            if str(exc.path) == str(folder.root / PROJECTS / name):
                raise ConfigError(f"names project {name!r}: {exc.message}", path=folder.model,
                                  field="projects", fix=exc.fix) from None
            raise
        if folder.name not in project.members:
            raise ConfigError(f"names project {name!r}, but {PROJECTS}/{name}/project.md does not list "
                              f"{folder.name!r} among its members", path=folder.model, field="projects",
                              fix=f"add {folder.name} to members: in {PROJECTS}/{name}/project.md, "
                                  "or remove the project from model.md")
        out.append(project)
    return out


def floors(root: Path, config: ModelConfig) -> list[Path]:
    """The policy floors of an agent's projects (each applies when the file exists)."""
    return [folder_of(root, name).path / "policy.md" for name in config.projects]


def target(capture: Any, projects: list[Project]) -> Project | str:
    """The project a ``scope: project`` capture goes to, or why it cannot go anywhere."""
    if not projects:
        return "scope is project, but this agent is a member of no project (projects: in model.md)"
    if capture.project is None:
        if len(projects) > 1:
            return (f"scope is project, but the agent is a member of {len(projects)} projects: name one "
                    f"with \"project\" ({', '.join(p.name for p in projects)})")
        return projects[0]
    found = next((p for p in projects if p.name == capture.project), None)
    return found or (f"the agent is not a member of project {capture.project!r} (its projects: "
                     f"{', '.join(p.name for p in projects)})")


class Shared:
    """The write-back of a run's ``scope: project`` captures: each project's notes and
    INDEX through the file memory, under the project's own lock (taken after the agent's
    lock, never before: one order, so two members cannot deadlock), every write
    remembered so that a run failing before its commit point takes it back."""

    def __init__(self, agent: Any, projects: list[Project], found: list[Any]):
        from .backends.files import FileMemory

        self.agent, self.memory = agent, FileMemory()
        self.rejected: list[dict[str, Any]] = []
        self.by_project: dict[str, tuple[Project, list[Any]]] = {}
        for capture in found:
            chosen = target(capture, projects)
            if isinstance(chosen, str):
                self.rejected.append({"name": capture.name, "type": capture.type, "status": "rejected",
                                      "scope": "project", "reason": chosen,
                                      **({"project": capture.project} if capture.project else {})})
            else:
                self.by_project.setdefault(chosen.name, (chosen, []))[1].append(capture)
        self.notes: list[tuple[AgentFolder, Any, Any]] = []  # (folder, writeback.Notes, lease)

    @contextmanager
    def held(self, day: date) -> Iterator["Shared"]:
        """Hold the lock of every project written to, in name order."""
        from . import writeback

        with ExitStack() as stack:
            for name in sorted(self.by_project):
                project = self.by_project[name][0]
                lease = stack.enter_context(self.agent.lock.hold(project.folder, self.agent.lock_timeout))
                writeback.preflight(project.folder, day, self.memory)
                self.notes.append((project.folder, writeback.Notes(self.memory, lease), lease))
            yield self

    def write(self, today: date) -> list[dict[str, Any]]:
        from . import captures

        outcomes = list(self.rejected)
        for folder, notes, lease in self.notes:
            project, found = self.by_project[folder.name.partition("/")[2]]
            for outcome in captures.write(folder, notes, ToolsConfig(), found, today, lease):
                outcome = {**outcome, "scope": "project", "project": project.name}
                if outcome.get("file"):
                    outcome["source"] = project.source(f"memory/{outcome['file']}")
                outcomes.append(outcome)
        return outcomes

    def take_back(self) -> list[str]:
        left = []
        for folder, notes, _ in self.notes:
            left += [f"{folder.name}/{file}" for file in notes.take_back(folder)]
        return left


def problems(root: Path) -> list[tuple[str, ConfigError]]:
    """(project, error) for every project whose project.md does not load or lists an
    agent that does not exist (doctor)."""
    from .vault import list_agents

    agents = set(list_agents(root))
    out = []
    for name in names(root):
        try:
            project = load(root, name)
        except ConfigError as exc:
            out.append((name, exc))
            continue
        for member in project.members:
            if member not in agents:
                out.append((name, ConfigError(f"member {member!r} is not an agent of this vault",
                                              path=project.file, field="members",
                                              fix=f"create the agent or remove {member} from members:")))
    return out
