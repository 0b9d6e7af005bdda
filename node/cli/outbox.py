"""`meterline outbox list`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.group import Group
from node.cli.render import short, table


@click.group(cls=Group)
def outbox() -> None:
    """Deliveries still owed to peers, the arbiter and the bank (and refused ones).

    \b
    Example:
      meterline outbox list
    """


def _state(row: dict[str, Any], now_ms: int) -> str:
    if row["refused"]:
        return "refused"
    wait_ms = max(0, int(row["next_attempt_ms"]) - now_ms)
    return "due" if not wait_ms else f"retry in {wait_ms / 1000:.1f} s"


@outbox.command("list")
@data_dir_option
@json_option
def list_(data_dir: Path | None, as_json: bool) -> None:
    """List pending and refused deliveries, oldest first.

    A pending one is retried until its recipient takes it; a refused one was ended by a refusal
    the recipient signed (LAST ERROR says why) and stays listed.

    \b
    Example:
      meterline outbox list --json
    """
    data = Admin(data_dir).call("GET", "/api/outbox")
    now_ms = time.time_ns() // 1_000_000
    rows = [(r["id"], short(r["channel"], 12), r["purpose"],
             short(r["recipient"], 12) if r["recipient"] else "bank",
             "yes" if r["urgent"] else "", r["attempts"], _state(r, now_ms),
             (r["last_error"] or "")[:60])
            for r in data["outbox"]]
    human = table(["ID", "CHANNEL", "PURPOSE", "RECIPIENT", "URGENT", "ATTEMPTS", "STATE",
                   "LAST ERROR"], rows) if rows else "nothing waiting to be delivered"
    emit(data, as_json, human)
