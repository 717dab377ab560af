"""``init``: a new agent folder rendered from the jinja2 templates in templates/agent/."""

from __future__ import annotations

import os
import shutil
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
    folder.root.mkdir(parents=True, exist_ok=True)
    staging = folder.root / f".{name}.init-{os.getpid()}"
    try:
        for template in env.list_templates(extensions=["j2"]):
            target = staging / template.removesuffix(".j2")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(env.get_template(template).render(values), encoding="utf-8")
        for empty in ("journal", "log"):
            (staging / empty).mkdir(exist_ok=True)
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
