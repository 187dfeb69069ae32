"""Every ``lokal`` command and subcommand has help text with an example (like sqlite-utils'
test_docs.py): a new command without one fails here."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from lokal.agent.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


COMMANDS = _commands(cli)


def test_the_walk_finds_the_commands() -> None:
    for path in [("models", "pack"), ("index",), ("agent", "status"), ("serve",), ("bench",)]:
        assert path in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="lokal")
    assert result.exit_code == 0, result.output
    _, _, rest = result.output.partition("\n\n")
    description = rest.split("\nOptions:")[0]
    assert description.strip(), f"lokal {' '.join(path)} has no help text"
    assert "Example" in description, f"lokal {' '.join(path)}'s help shows no example"
    assert f"lokal {' '.join(path)}" in description, (
        f"lokal {' '.join(path)}'s example does not show the command itself"
    )
