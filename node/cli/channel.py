"""`meterline channel open|list|show|accept|reject|close`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.render import amount, balance, short, table, wait_until

precise_option = click.option("--precise", is_flag=True,
                              help="Show amounts at the channel's full scale.")


@click.group()
def channel() -> None:
    """Open, inspect and close payment channels. A channel id may be any unique prefix.

    \b
    Example:
      meterline channel open carrier --arbiter escrow --deposit "5000.00 EUR" --tariff km=0.0123
    """


def describe(c: dict[str, Any], precise: bool) -> str:
    lines = [
        f"channel   {c['id']}",
        f"phase     {c['phase']}",
        f"peer      {c['peer']}",
        f"arbiter   {c['arbiter']}",
        f"deposit   ours {amount(c['deposit']['ours'])}, peer {amount(c['deposit']['peer'])}",
        f"sent      {amount(c['sent'], precise=precise)} (nonce {c['nonce_sent']}, "
        f"acknowledged {c['acked_nonce_sent']})",
        f"received  {amount(c['received'], precise=precise)} (nonce {c['nonce_received']})",
        f"balance   {balance(c['balance'], precise=precise)}",
        "tariff    " + ", ".join(
            f"{t['unit']}=" + ",".join(
                t2["price"] + (f":{t2['up_to']}" if t2["up_to"] else "") for t2 in t["tiers"])
            for t in c["tariff"]),
        "units     sent " + ", ".join(f"{u} {q}" for u, q in c["units"]["sent"].items())
        + "; received " + ", ".join(f"{u} {q}" for u, q in c["units"]["received"].items()),
    ]
    if c.get("dispute_deadline"):
        lines.append(f"dispute   {c['dispute_deadline']}")
    if c["settlement"]:
        lines.append("transfers")
        for t in c["settlement"]:
            lines.append(f"  {t['purpose']:<8} {t['party']:<7} {amount(t.get('amount')):>16}  "
                         f"{t['reference']}  {t['status']}"
                         + (f": {t['reason']}" if t.get("reason") else ""))
    return "\n".join(lines)


@channel.command("open")
@click.argument("peer")
@click.option("--arbiter", required=True, help="The arbiter's node id, id prefix or name.")
@click.option("--deposit", required=True, help='Our deposit, e.g. "5000.00 EUR".')
@click.option("--peer-deposit", default=None, help='The peer\'s deposit, e.g. "100.00 EUR".')
@click.option("--tariff", "tariffs", multiple=True, required=True,
              help="UNIT=PRICE (or graduated UNIT=PRICE:UPTO,PRICE); repeat per unit.")
@click.option("--dispute-window", default="24h", show_default=True,
              help="How long a unilateral close stays open for evidence (30s, 90m, 24h, 7d).")
@click.option("--wait", is_flag=True, help="Wait until the arbiter confirms the deposits.")
@data_dir_option
@json_option
def open_(peer: str, arbiter: str, deposit: str, peer_deposit: str | None,
          tariffs: tuple[str, ...], dispute_window: str, wait: bool, data_dir: Path | None,
          as_json: bool) -> None:
    """Propose a channel to PEER (node id, id prefix or name) through an arbiter.

    \b
    Example:
      meterline channel open carrier --arbiter escrow --deposit "5000.00 EUR" \\
          --tariff km=0.0123 --tariff container-hour=1.75 --dispute-window 24h --wait
    """
    admin = Admin(data_dir)
    body: dict[str, Any] = {"peer": peer, "arbiter": arbiter, "deposit": deposit,
                            "tariff": list(tariffs), "dispute_window": dispute_window}
    if peer_deposit:
        body["peer_deposit"] = peer_deposit
    data = admin.call("POST", "/api/channels", body)
    cid = data["id"]
    if wait:
        def opened() -> tuple[bool, str]:
            nonlocal data
            data = admin.call("GET", f"/api/channels/{cid}")
            steps = {"proposed": "waiting for the peer to accept…",
                     "accepted": "waiting for the arbiter to see the deposits at the bank…"}
            return data["phase"] == "open", steps.get(data["phase"], data["phase"])
        wait_until("opening the channel:", opened, timeout_s=300)
    emit(data, as_json, f"channel {cid} is {data['phase']}")


@channel.command("list")
@data_dir_option
@json_option
@precise_option
def list_(data_dir: Path | None, as_json: bool, precise: bool) -> None:
    """List channels and proposals waiting for acceptance.

    \b
    Example:
      meterline channel list
    """
    data = Admin(data_dir).call("GET", "/api/channels")
    rows = [(short(c["id"]), c["phase"], short(c["peer"]), c["role"],
             amount(c["sent"], precise=precise), amount(c["received"], precise=precise),
             amount(c["balance"], precise=precise)) for c in data["channels"]]
    rows += [(short(p["id"]), p["phase"], short(p["peer"]), "peer", "", "", "")
             for p in data["proposals"]]
    human = table(["CHANNEL", "PHASE", "PEER", "ROLE", "SENT", "RECEIVED", "BALANCE"],
                  rows) if rows else "no channels yet: open one with `meterline channel open`"
    if data["proposals"]:
        human += "\n\nwaiting for you (`meterline channel accept ID` or `reject ID`):\n" + (
            "\n".join(f"  {short(p['id'])}  asks us to deposit {amount(p['deposit']['ours'])}: "
                      f"{p['reason']}" for p in data["proposals"]))
    emit(data, as_json, human)


@channel.command("show")
@click.argument("channel_id")
@data_dir_option
@json_option
@precise_option
def show(channel_id: str, data_dir: Path | None, as_json: bool, precise: bool) -> None:
    """Everything about one channel: balances, nonces, units, transfers.

    \b
    Example:
      meterline channel show 3f9a --precise
    """
    data = Admin(data_dir).call("GET", f"/api/channels/{channel_id}")
    emit(data, as_json, describe(data, precise))


@channel.command("accept")
@click.argument("channel_id")
@data_dir_option
@json_option
def accept(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Accept a proposal that is waiting for the operator (see `channel list` for why).

    \b
    Example:
      meterline channel accept 3f9a
    """
    data = Admin(data_dir).call("POST", f"/api/channels/{channel_id}/accept")
    emit(data, as_json, f"accepted channel {data['id']}; it is {data['phase']}")


@channel.command("reject")
@click.argument("channel_id")
@data_dir_option
@json_option
def reject(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """Refuse a proposal that is waiting for the operator: it is deleted, nothing is signed.

    \b
    Example:
      meterline channel reject 3f9a
    """
    data = Admin(data_dir).call("POST", f"/api/channels/{channel_id}/reject")
    emit(data, as_json, f"rejected the proposal {data['id']} from {short(data['peer'])}")


@channel.command("close")
@click.argument("channel_id")
@click.option("--force", is_flag=True,
              help="Close without the peer: the arbiter opens the dispute window.")
@click.option("--wait", is_flag=True, help="Wait until the bank has booked the payouts.")
@data_dir_option
@json_option
def close(channel_id: str, force: bool, wait: bool, data_dir: Path | None,
          as_json: bool) -> None:
    """Close a channel; the arbiter pays each side deposit − sent + received.

    \b
    Example:
      meterline channel close 3f9a --wait
    """
    admin = Admin(data_dir)
    data = admin.call("POST", f"/api/channels/{channel_id}/close", {"force": force})
    cid = data["id"]
    if wait:
        def settled() -> tuple[bool, str]:
            nonlocal data
            data = admin.call("GET", f"/api/channels/{cid}")
            steps = {"closing": "waiting for the peer to sign the final state…",
                     "closed": "waiting for the bank to book the payouts…",
                     "disputed": "dispute window open at the arbiter…"}
            return data["phase"] == "settled", steps.get(data["phase"], data["phase"])
        wait_until("settling:", settled, timeout_s=300)
    emit(data, as_json, describe(data, False))
