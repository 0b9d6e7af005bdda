"""Human output: tables on a TTY, amounts with their currency, a spinner for waits."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from node.cli.exits import timed_out

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def amount(value: dict[str, str] | None, *, precise: bool = False) -> str:
    if not value:
        return "-"
    number = value.get("precise") if precise and value.get("precise") else value["amount"]
    return f"{number} {value['currency']}"


def balance(value: dict[str, str], *, precise: bool = False) -> str:
    """``82.93 EUR to spend (exactly 82.9325 EUR); 82.94 EUR paid out if closed now``: what
    `pay` accepts, never rounded up, and what the payout rule pays (ADR 0151)."""
    currency = value["currency"]
    text = f"{amount(value, precise=precise)} to spend"
    if value.get("precise") and value["precise"] != value["amount"] and not precise:
        text += f" (exactly {value['precise']} {currency})"
    if value.get("payout") is not None:
        text += f"; {value['payout']} {currency} paid out if closed now"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[("-" if c is None else str(c)) for c in r]
                                          for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def short(node_or_channel_id: str, n: int = 16) -> str:
    return node_or_channel_id[:n]


def wait_until(step: str, check: Callable[[], tuple[bool, str]], *, timeout_s: float,
               interval_s: float = 0.25) -> None:
    """Poll `check` with a spinner naming the step; Ctrl-C stops waiting, nothing else."""
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout_s
    frames = itertools.cycle(SPINNER)
    detail = ""
    try:
        while True:
            done, detail = check()
            if done:
                if tty:
                    click.echo(f"\r\x1b[2K✓ {step} {detail}".rstrip(), err=True)
                return
            if time.monotonic() > deadline:
                raise timed_out(f"gave up after {timeout_s:.0f} s {step} ({detail}); the node "
                                "carries on — look again with `meterline channel show`")
            if tty:
                click.echo(f"\r\x1b[2K{next(frames)} {step} {detail}".rstrip(), nl=False,
                           err=True)
            time.sleep(interval_s)
    except KeyboardInterrupt:
        if tty:
            click.echo("", err=True)
        raise click.ClickException(
            f"stopped waiting {step}; the node carries on — check with `meterline channel show`"
        ) from None
