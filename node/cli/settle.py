"""`meterline channel settle|schedule|topup`: long-lived channels (specs/0003 §9).

Registered on the `channel` group by node.cli.channel; the admin routes are node.api.settle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option
from node.cli.render import amount, wait_until


def describe_longlived(c: dict[str, Any]) -> list[str]:
    """The lines `channel show` adds: schedule, next checkpoint, top-ups, settlements."""
    lines = []
    schedule = c.get("schedule")
    if schedule and (schedule["every_ms"] or schedule["threshold"]):
        parts = []
        if schedule["every_ms"]:
            parts.append(f"every {_duration(schedule['every_ms'])}")
        if schedule["threshold"]:
            parts.append(f"when {amount(schedule['threshold'])} is owed")
        nxt = schedule.get("next_checkpoint")
        lines.append("schedule  " + ", ".join(parts)
                     + (f"; next checkpoint {nxt}" if nxt else ""))
    if c.get("unpaid") is not None and c["phase"] == "open" and (lines or c.get("settlements")):
        lines.append(f"unpaid    {amount(c['unpaid'])} (what a checkpoint would pay now)")
    topped = c.get("topped_up")
    if topped and (topped["ours"]["amount"].strip("0.") or topped["peer"]["amount"].strip("0.")):
        lines.append(f"top-ups   ours {amount(topped['ours'])}, peer {amount(topped['peer'])} "
                     "(confirmed by the arbiter)")
    if c.get("settlements"):
        lines.append("settlements (checkpoints; close: the final payout)")
        for s in c["settlements"]:
            lines.append(f"  {checkpoint_label(s):<6} {s['party']:<7} "
                         f"{amount(s['amount']):>16}  {s['reference']}  {outcome(s)}  "
                         f"{s['signed']}")
    return lines


def checkpoint_label(s: dict[str, Any]) -> str:
    return f"#{s['checkpoint']}" if s["checkpoint"] else "close"


def outcome(s: dict[str, Any]) -> str:
    """A settlement's status as the arbiter told it: ``booked``, ``returned AC04``,
    ``rejected AM04 (attempt 2)``; ``submitted`` until it said."""
    text = str(s["status"]) + (f" {s['reason']}" if s.get("reason") else "")
    return text + (f" (attempt {s['attempt'] + 1})" if s.get("attempt") else "")


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@click.command("settle")
@channel_id_argument
@click.option("--wait", is_flag=True,
              help="Wait until the peer has co-signed the checkpoint (the arbiter then pays).")
@data_dir_option
@json_option
def settle(channel_id: str, wait: bool, data_dir: Path | None, as_json: bool) -> None:
    """Settle now without closing: propose a checkpoint of what both sides have receipted.

    The arbiter pays the net owed since the previous checkpoint out of escrow; amounts below
    a cent carry forward; the channel stays open. Refused (exit 3, NOTHING_TO_SETTLE) when
    nothing is new since the last checkpoint.

    \b
    Example:
      meterline channel settle 3f9a --wait
    """
    admin = Admin(data_dir)
    data = admin.call("POST", f"/api/channels/{channel_id}/settle", {})
    cid = data["id"]
    before = (data.get("checkpoint") or {}).get("seq", 0)
    if wait:
        def signed() -> tuple[bool, str]:
            nonlocal data
            data = admin.call("GET", f"/api/channels/{cid}")
            seq = (data.get("checkpoint") or {}).get("seq", 0)
            return seq > before, "waiting for the peer to co-sign the checkpoint…"
        wait_until("settling:", signed, timeout_s=300)
    seq = (data.get("checkpoint") or {}).get("seq")
    emit(data, as_json, f"checkpoint {seq} signed by both; the arbiter pays it"
         if wait else f"checkpoint proposed on channel {cid}")


@click.command("schedule")
@channel_id_argument
@click.option("--every", default=None,
              help="Propose a checkpoint this long after the last (1d, 12h); 0 turns it off.")
@click.option("--threshold", default=None,
              help='Propose one once this much is owed, e.g. "500.00 EUR"; "off" turns it off.')
@data_dir_option
@json_option
def schedule(channel_id: str, every: str | None, threshold: str | None, data_dir: Path | None,
             as_json: bool) -> None:
    """Settle a channel on a schedule: by time, by amount owed, or both (this node's policy;
    the peer co-signs any valid checkpoint whatever its own schedule).

    \b
    Example:
      meterline channel schedule 3f9a --every 1d --threshold "500.00 EUR"
    """
    if every is None and threshold is None:
        raise click.UsageError("give --every, --threshold or both")
    body: dict[str, Any] = {}
    if every is not None:
        body["every"] = None if every.strip() in ("0", "off") else every.strip()
    if threshold is not None:
        body["threshold"] = None if threshold.strip() in ("0", "off") else threshold.strip()
    data = Admin(data_dir).call("POST", f"/api/channels/{channel_id}/schedule", body)
    lines = describe_longlived(data) or ["no schedule: settles only by hand or at close"]
    emit(data, as_json, "\n".join(line for line in lines if line.startswith("schedule"))
         or lines[0])


@click.command("topup")
@channel_id_argument
@click.argument("amount_text", metavar="AMOUNT")
@click.option("--wait", is_flag=True,
              help="Wait until the arbiter confirms the credit (capacity grows only then).")
@data_dir_option
@json_option
def topup(channel_id: str, amount_text: str, wait: bool, data_dir: Path | None,
          as_json: bool) -> None:
    """Pay AMOUNT more into the channel's escrow through this node's bank, e.g. "250.00 EUR".

    Capacity grows on both sides only when the arbiter has seen the credit and confirmed it.

    \b
    Example:
      meterline channel topup 3f9a "250.00 EUR" --wait
    """
    admin = Admin(data_dir)
    data = admin.call("POST", f"/api/channels/{channel_id}/topup", {"amount": amount_text})
    cid = data["id"]
    before = data["topped_up"]["ours"]["amount"]
    if wait:
        def confirmed() -> tuple[bool, str]:
            nonlocal data
            data = admin.call("GET", f"/api/channels/{cid}")
            now = data["topped_up"]["ours"]["amount"]
            return now != before, "waiting for the arbiter to confirm the top-up…"
        wait_until("topping up:", confirmed, timeout_s=300)
    emit(data, as_json, f"top-ups confirmed: {amount(data['topped_up']['ours'])}" if wait
         else f"top-up of {amount_text} paid into escrow; capacity grows once the arbiter "
              "confirms it")


def register(group: click.Group) -> None:
    for command in (settle, schedule, topup):
        group.add_command(command)


__all__ = ["describe_longlived", "register"]
