"""Where a vault lives and what an agent folder holds."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property
from datetime import date
from pathlib import Path

from .errors import AgentNotFound, ConfigError

ROOT_ENV = "ATOMIC_VAULT_ROOT"
DEFAULT_ROOT = "~/agents"
# \Z, not $ ("$" also matches before a final newline); [0-9], not \d (any script's digits).
MONTH = re.compile(r"^[0-9]{4}-[0-9]{2}\Z")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
PERSONA_FILES = ("IDENTITY.md", "SOUL.md", "USER.md")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The vault root: the argument, else ``$ATOMIC_VAULT_ROOT``, else ``~/agents``."""
    chosen = root if root not in (None, "") else os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    if "\x00" in os.fspath(chosen):
        raise ConfigError("the vault root contains a NUL byte", field="root",
                          fix="pass the vault folder's path (--root, ATOMIC_VAULT_ROOT or root=)")
    return Path(chosen).expanduser().absolute()


def check_agent_name(name: str) -> str:
    if not isinstance(name, str) or not AGENT_NAME.match(name) or name.endswith(".") or ".." in name:
        raise ConfigError(f"invalid agent name {name!r}", field="agent name",
                          fix="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class AgentFolder:
    """The paths of one agent folder; creating it does not touch the disk. Paths are
    computed once per instance (cached_property writes past the frozen guard)."""

    root: Path
    name: str

    @cached_property
    def path(self) -> Path:
        return self.root / self.name

    @cached_property
    def persona(self) -> Path:
        return self.path / "persona"

    @cached_property
    def memory(self) -> Path:
        return self.path / "memory"

    @cached_property
    def index(self) -> Path:
        return self.path / "memory" / "INDEX.md"

    @cached_property
    def wiki_index(self) -> Path:
        return self.path / "wiki" / "INDEX.md"

    @cached_property
    def goal(self) -> Path:
        return self.path / "goal.md"

    @cached_property
    def tools(self) -> Path:
        return self.path / "tools.md"

    @cached_property
    def model(self) -> Path:
        return self.path / "model.md"

    @cached_property
    def journal(self) -> Path:
        return self.path / "journal"

    @cached_property
    def log(self) -> Path:
        return self.path / "log"

    @cached_property
    def head(self) -> Path:
        return self.path / "log" / "HEAD"

    @cached_property
    def state(self) -> Path:
        """Derived, git-ignored runtime state (lock file, caches): safe to delete."""
        return self.path / ".atomic_vault"

    def journal_file(self, day: date) -> Path:
        return self.journal / f"{day:%Y-%m}" / f"{day:%Y-%m-%d}.md"

    def log_file(self, day: date) -> Path:
        return self.log / f"{day:%Y-%m}" / f"{day:%Y-%m-%d}.jsonl"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()

    def ensure_state_dir(self) -> Path:
        """Create ``.atomic_vault/`` with a .gitignore so derived state never shows in git.
        A link there is refused: the lock, caches and reservations must not be written
        outside the agent folder."""
        if self.state.is_symlink() or (self.state.exists() and not self.state.is_dir()):
            raise ConfigError(".atomic_vault is a link or not a folder; derived state is kept "
                              "only inside the agent folder", path=self.state,
                              fix="remove it: it holds only derived state, rebuilt on the next run")
        if not self.state.is_dir():
            self.state.mkdir(parents=True, exist_ok=True)
        ignore = self.state / ".gitignore"
        if not ignore.exists():  # also when a crash came between the mkdir and this write
            from .fileio import atomic_write
            atomic_write(ignore, "*\n", durable=False)
        return self.state


def readable_inside(folder: AgentFolder, path: Path, *, shared: bool = False) -> Path | None:
    """Where to read ``path`` from: its real path when that is a regular file inside the
    agent folder, None when it is missing. A link (the file's, or a folder's on the way)
    that leads out of the agent folder, or a FIFO, device or folder where a file belongs,
    is an error naming the file: never silently followed, never silently dropped.
    ``shared``: a config file (model.md, tools.md), which may be a link to a shared one."""
    base = os.path.realpath(folder.path)
    real = os.path.realpath(path)
    if not shared and real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise ConfigError(f"is a link out of the agent folder (to {real}); files outside it are "
                          "never read", path=path,
                          fix="replace the link with a copy of the file inside the agent folder")
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("is not a regular file (a FIFO, a device or a folder)", path=path,
                          fix="replace it with a plain Markdown file, or remove it")
    return Path(real)


def open_agent(name: str, root: str | os.PathLike | None = None) -> AgentFolder:
    """Find an existing agent folder, refusing clearly when it is missing or malformed."""
    folder = AgentFolder(resolve_root(root), check_agent_name(name))
    if not folder.path.is_dir():
        close = similar_agents(name, folder.root)
        raise AgentNotFound(f"no agent folder {name!r} in the vault", path=folder.path,
                            fix=(f"did you mean {' or '.join(map(repr, close))}? " if close else "")
                                + f"create it with `atomic-vault --root {folder.root} init {name}`"
                                " or check --root / ATOMIC_VAULT_ROOT")
    identity = folder.persona / "IDENTITY.md"
    if not identity.is_file():
        raise AgentNotFound("the agent has no persona/IDENTITY.md", path=identity,
                            fix="write who the agent is into persona/IDENTITY.md")
    return folder


def list_agents(root: str | os.PathLike | None = None) -> list[str]:
    base = resolve_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and AGENT_NAME.match(p.name) and (p / "persona").is_dir())


def similar_agents(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Agents of the vault whose names are close to ``name`` (for "did you mean")."""
    import difflib

    agents = list_agents(root)
    folded = {agent.lower(): agent for agent in agents}
    return [folded[m] for m in difflib.get_close_matches(name.lower(), list(folded), n=3, cutoff=0.6)]
