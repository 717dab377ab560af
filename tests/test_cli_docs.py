"""spec/10 documents every command and every option of the CLI, so the docs cannot drift."""

import re
from pathlib import Path

import click

from atomic_vault.cli import cli

SPEC = (Path(__file__).resolve().parent.parent / "spec" / "10-cli.md").read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """Heading's first word -> the section's text (the part before the first ## is 'atomic-vault')."""
    parts = re.split(r"^## ", SPEC, flags=re.M)
    out = {"atomic-vault": parts[0]}
    for part in parts[1:]:
        out[part.split()[0]] = part
    return out


def spelled(param: click.Parameter) -> list[str]:
    return [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]


def test_every_command_and_option_is_in_spec_10():
    docs = sections()
    missing = []
    for opt in (o for p in cli.params for o in spelled(p)):
        if f"`{opt}" not in docs["atomic-vault"]:
            missing.append(f"atomic-vault {opt}")
    for name, command in sorted(cli.commands.items()):
        if name not in docs:
            missing.append(f"section ## {name}")
            continue
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in spelled(param):
                    if opt not in ("--root", "-h", "--help") and f"`{opt}" not in docs[name]:
                        missing.append(f"{name} {opt}")
            if isinstance(param.type, click.Choice):
                for choice in param.type.choices:
                    if choice not in docs[name]:
                        missing.append(f"{name} {param.name}={choice}")
    assert missing == [], "not documented in spec/10: " + ", ".join(missing)


def test_every_command_has_help_with_a_summary():
    for name, command in cli.commands.items():
        assert command.get_short_help_str().strip(), name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def test_the_log_kinds_the_cli_offers_are_those_the_servers_take():
    """cli.py keeps its own list (it imports nothing of the package at start); the MCP and
    HTTP filters must offer the very same kinds."""
    from atomic_vault import cli, mcp_server

    assert cli._LOG_KINDS == mcp_server.KINDS
