"""The `meterline` command: a thin client of the admin API, one module per noun.

Each noun module exposes a click command or group named in :data:`_COMMANDS`; this package only
assembles them (hatch's ``cli/`` layout). Modules are imported when their command runs (or when
the top-level help lists them), so `meterline bank start` does not load the rails validators and
a command starts quickly.
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) for each top-level command, in help order.
_COMMANDS: list[tuple[str, str]] = [
    ("node.cli.node_cmd", "init"),
    ("node.cli.node_cmd", "node"),
    ("node.cli.peer", "peer"),
    ("node.cli.channel", "channel"),
    ("node.cli.pay", "pay"),
    ("node.cli.statement", "statement"),
    ("node.cli.outbox", "outbox"),
    ("node.cli.demo", "demo"),
    ("node.cli.bank", "bank"),
    ("node.cli.rails_cmd", "rails"),
    ("node.cli.bench", "bench"),
]


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(attr for _, attr in _COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module, attr in _COMMANDS:
            if attr == cmd_name:
                command = getattr(importlib.import_module(module), attr)
                assert isinstance(command, click.Command)
                return command
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meterline")
def cli() -> None:
    """meterline: pay per unit over signed payment channels, settle net at the bank.

    \b
    Example:
      meterline demo
    """


def main() -> None:
    cli()
