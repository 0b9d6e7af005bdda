"""The CLI reference in README.md, generated from ``--help`` (a test fails when it is stale).

    python -m node.cli.reference --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

BEGIN = "<!-- BEGIN GENERATED: cli-reference -->"
END = "<!-- END GENERATED: cli-reference -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            if sub is not None and not sub.hidden:
                found += _walk(sub, [*path, name])
    return found


def render() -> str:
    from node.cli import cli

    parts = [BEGIN, ""]
    for path, command in _walk(cli, ["meterline"]):
        name = " ".join(path)
        # the same help option names `meterline` gives every command (-h and --help)
        with click.Context(command, info_name=name, terminal_width=100, max_content_width=100,
                           help_option_names=["-h", "--help"]) as ctx:
            text = command.get_help(ctx)
        parts += [f"### `{name}`", "", "```text", text.rstrip(), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def current(readme: str) -> str:
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[start:end]


def main() -> None:
    text = README.read_text()
    fresh = render()
    if "--write" in sys.argv:
        README.write_text(text.replace(current(text), fresh))
    elif current(text) != fresh:
        sys.exit("README.md's CLI reference is stale: python -m node.cli.reference --write")


if __name__ == "__main__":
    main()
