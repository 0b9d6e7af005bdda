"""Command groups that answer a mistyped command with the one meant (`chanel` → `channel`)."""

from __future__ import annotations

import difflib

import click


class Group(click.Group):
    """A click group whose unknown-command error suggests the closest command names."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            hint = (f" Did you mean {' or '.join(close)}?" if close
                    else f" Commands: {', '.join(self.list_commands(ctx))}.")
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)
