"""``init``: a new agent folder rendered from the jinja2 templates in templates/agent/."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import date
from pathlib import Path

from .config import MODEL_NAME
from .errors import ConfigError
from .fileio import fsync_dir
from .vault import AgentFolder, check_agent_name, resolve_root

TEMPLATE_PACKAGE = "atomic_vault.templates"


def create_agent(root: str | os.PathLike | None, name: str, *, model: str = "offline",
                 operator: str = "the operator", role: str = "a careful personal assistant") -> AgentFolder:
    """Render every template into a temporary folder, then rename it into place, so a
    half-made agent is never visible."""
    import jinja2

    folder = AgentFolder(resolve_root(root), check_agent_name(name))
    if not MODEL_NAME.match(model):
        raise ConfigError(f"{model!r} is not a model name", field="--model",
                          fix="write provider:model, e.g. offline or anthropic:claude-sonnet-4-5")
    if folder.path.exists():
        raise ConfigError("already exists; init never overwrites an agent", path=folder.path,
                          fix="choose another name or remove the folder")
    env = jinja2.Environment(loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, "agent"),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=False)
    values = {"name": name, "model": model, "operator": operator, "role": role,
              "today": date.today().isoformat()}
    def fill(staging: Path) -> None:
        for template in env.list_templates(extensions=["j2"]):
            target = staging / template.removesuffix(".j2")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(env.get_template(template).render(values), encoding="utf-8")
        for empty in ("journal", "log"):
            (staging / empty).mkdir(exist_ok=True)
    return _publish(folder, fill)


# What a new agent does not inherit from the folder it is copied from: the log records
# name their agent and chain to each other, so a copy starts its own chain; derived state
# is rebuilt. Everything else (persona, config, memory, wiki, journal) is copied as it is.
NOT_COPIED = ("log", ".atomic_vault")


def copy_agent(root: str | os.PathLike | None, name: str, source: str | os.PathLike) -> AgentFolder:
    """A new agent NAME holding a copy of the agent folder at ``source`` without its log
    and derived state, staged and renamed into place like ``create_agent``. Links and
    special files are refused: a copy must not reach outside the source folder."""
    folder = AgentFolder(resolve_root(root), check_agent_name(name))
    origin = Path(source).expanduser().absolute()
    if not (origin / "persona" / "IDENTITY.md").is_file() or origin.is_symlink():
        raise ConfigError("is not an agent folder (no persona/IDENTITY.md)", path=origin,
                          field="--from", fix="name the folder of an existing agent, e.g. samples/atlas")
    if folder.path.exists():
        raise ConfigError("already exists; init never overwrites an agent", path=folder.path,
                          fix="choose another name, remove the folder, or pass --exist-ok to keep it")
    for directory, dirs, files in os.walk(origin):
        if Path(directory) == origin:
            dirs[:] = [d for d in dirs if d not in NOT_COPIED]
        for entry in [*dirs, *files]:
            mode = os.lstat(Path(directory) / entry).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ConfigError("is a link or a special file; init --from copies only plain "
                                  "files and folders", path=Path(directory) / entry,
                                  fix="replace it with a plain file, or copy the agent by hand")
    def fill(staging: Path) -> None:
        shutil.copytree(origin, staging, symlinks=True, ignore=lambda d, _: (
            NOT_COPIED if Path(d) == origin else ()))
        (staging / "log").mkdir()
    return _publish(folder, fill)


def _publish(folder: AgentFolder, fill) -> AgentFolder:
    """Build the agent in a staging folder beside its place, make every file durable, then
    rename it into place: a crash leaves no half-made agent, only a staging folder."""
    folder.root.mkdir(parents=True, exist_ok=True)
    staging = folder.root / f".{folder.name}.init-{os.getpid()}"
    try:
        fill(staging)
        _fsync_tree(staging)
        os.rename(staging, folder.path)
        fsync_dir(folder.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _fsync_tree(top: Path) -> None:
    for directory, _, files in os.walk(top):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))
