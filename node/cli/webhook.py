"""`meterline webhook add|list|remove|test`: the node's events POSTed, signed, to your receivers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.exits import refused
from node.cli.group import Group
from node.cli.render import table


@click.group(cls=Group)
def webhook() -> None:
    """Send the node's events (channel opened, payment received, payout booked…) to a URL.

    Every request is signed: the header Meterline-Signature: t=TIMESTAMP,v1=HMAC carries
    HMAC-SHA256(secret, "TIMESTAMP.BODY"); docs/webhooks.md shows how a receiver checks it.
    Delivery is at least once, in order, retried with backoff until the receiver answers 2xx
    (also across restarts): deduplicate by the Meterline-Event-Id header.

    \b
    Example:
      meterline webhook add https://erp.example.com/meterline --events 'channel.*,payout.*'
      meterline webhook list
      meterline webhook test 1
    """


@webhook.command("add")
@click.argument("url")
@click.option("--events", "events", default="*", show_default=True,
              help="Comma-separated event types to send (channel.opened, payment.received…), "
                   "a prefix like channel.*, or * for all. See `GET /api/events/types`.")
@data_dir_option
@json_option
def add(url: str, events: str, data_dir: Path | None, as_json: bool) -> None:
    """Add a receiver URL; prints its signing secret, shown this once only.

    https:// anywhere; http:// only for a receiver on this machine (localhost). The receiver
    gets every matching event from now on.

    \b
    Example:
      meterline webhook add https://erp.example.com/meterline --events payment.received
    """
    patterns = [p.strip() for p in events.split(",") if p.strip()]
    if not patterns:
        raise click.BadParameter("give at least one event type, or *", param_hint="--events")
    data = Admin(data_dir).call("POST", "/api/webhooks", {"url": url, "events": patterns})
    emit(data, as_json, f"webhook {data['id']} → {data['url']} ({', '.join(data['events'])})\n"
                        f"signing secret (shown once, keep it in the receiver): {data['secret']}")


def _state(row: dict[str, Any], now_ms: int) -> str:
    if row["next_attempt_ms"]:
        wait = max(0, int(row["next_attempt_ms"]) - now_ms)
        return f"failing, retry in {wait / 1000:.0f} s"
    return "up to date" if not row["pending"] else "delivering"


@webhook.command("list")
@data_dir_option
@json_option
def list_(data_dir: Path | None, as_json: bool) -> None:
    """List the receivers: what each was sent, what it is owed, and its last error.

    \b
    Example:
      meterline webhook list --json
    """
    data = Admin(data_dir).call("GET", "/api/webhooks")
    now_ms = time.time_ns() // 1_000_000
    rows = [(r["id"], r["url"], ",".join(r["events"]), r["delivered"], r["pending"],
             _state(r, now_ms), (r["last_error"] or "")[:50]) for r in data["webhooks"]]
    human = table(["ID", "URL", "EVENTS", "SENT", "OWED", "STATE", "LAST ERROR"], rows) \
        if rows else "no webhooks: add one with `meterline webhook add URL`"
    emit(data, as_json, human)


def _id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise click.BadParameter(f"{text!r} is not a webhook id (see `meterline webhook list`)",
                                 param_hint="ID")
    return int(text)


@webhook.command("remove")
@click.argument("webhook_id", metavar="ID")
@data_dir_option
@json_option
def remove(webhook_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Stop sending to a receiver (its secret is deleted).

    \b
    Example:
      meterline webhook remove 1
    """
    data = Admin(data_dir).call("DELETE", f"/api/webhooks/{_id(webhook_id)}")
    emit(data, as_json, f"webhook {data['removed']} removed")


@webhook.command("test")
@click.argument("webhook_id", metavar="ID")
@data_dir_option
@json_option
def test(webhook_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Send a signed webhook.test event now; exit 3 when the receiver does not answer 2xx.

    \b
    Example:
      meterline webhook test 1
    """
    data = Admin(data_dir).call("POST", f"/api/webhooks/{_id(webhook_id)}/test")
    if not data["delivered"]:
        raise refused(f"the receiver did not take the test event: {data['error']}",
                      "WEBHOOK_NOT_DELIVERED")
    emit(data, as_json, f"delivered: the receiver answered HTTP {data['status']}")


__all__ = ["webhook"]
