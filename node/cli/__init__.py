"""The `meterline` command: a thin client of the admin API, one module per noun.

Each noun module exposes a click command or group named in :data:`_COMMANDS`; this package only
assembles them (hatch's ``cli/`` layout). Modules are imported when their command runs (or when
the top-level help lists them), so `meterline bank start` does not load the rails validators and
a command starts quickly.
"""

from __future__ import annotations

import importlib
import os
import sys

if "--json-logs" in sys.argv[1:]:
    # A daemon that logs JSON (every detached one) never renders a pretty traceback, yet
    # `import structlog` imports structlog.dev, which imports rich when it is installed: about
    # 0.1-1.3 s of CPU at each start (issue 13). Without it structlog.dev simply has no rich.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

import click

from node.cli.exits import TABLE, report
from node.cli.group import Group

# (module, attribute) for each top-level command, in help order.
_COMMANDS: list[tuple[str, str]] = [
    ("node.cli.node_cmd", "init"),
    ("node.cli.node_cmd", "node"),
    ("node.cli.peer", "peer"),
    ("node.cli.channel", "channel"),
    ("node.cli.pay", "pay"),
    ("node.cli.statement", "statement"),
    ("node.cli.payments", "payments"),
    ("node.cli.config_cmd", "config"),
    ("node.cli.outbox", "outbox"),
    ("node.cli.webhook", "webhook"),
    ("node.cli.escrow", "escrow"),
    ("node.cli.demo", "demo"),
    ("node.cli.bank", "bank"),
    ("node.cli.rails_cmd", "rails"),
    ("node.cli.bench", "bench"),
]


class LazyGroup(Group):
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


LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=TABLE)
@click.version_option(package_name="meterline")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None,
              help="Log level of the daemons this command runs [default: "
                   "$METERLINE_LOG_LEVEL or info].")
def cli(log_level: str | None) -> None:
    """meterline: pay per unit over signed payment channels, settle net at the bank.

    Shell completion: eval "$(_METERLINE_COMPLETE=bash_source meterline)" in ~/.bashrc
    (zsh_source in ~/.zshrc, fish_source for fish).

    \b
    Example:
      meterline demo
      meterline --log-level debug node start --detach
    """
    if log_level is not None:
        os.environ["METERLINE_LOG_LEVEL"] = log_level  # a detached daemon inherits it


def main(args: list[str] | None = None) -> None:
    """Run the CLI; an error is a sentence (or JSON with --json) on stderr and an exit status
    from node.cli.exits."""
    argv = sys.argv[1:] if args is None else args
    try:
        cli.main(args=argv, prog_name="meterline", standalone_mode=False)
    except click.ClickException as exc:
        sys.exit(report(exc, "--json" in argv or "--format=json" in argv))
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
