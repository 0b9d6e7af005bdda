"""The `meterline` command: a thin client of the admin API, one module per noun.

Each noun module exposes a click command or group named in :data:`_COMMANDS`; this package only
assembles them (hatch's ``cli/`` layout).
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
    ("node.cli.demo", "demo"),
    ("node.cli.bank", "bank"),
    ("node.cli.rails_cmd", "rails"),
    ("node.cli.bench", "bench"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meterline")
def cli() -> None:
    """meterline: pay per unit over signed payment channels, settle net at the bank.

    \b
    Example:
      meterline demo
    """


for _module, _attr in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    cli()
