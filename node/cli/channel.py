"""`meterline channel open|list|show|accept|reject|close` (settle, schedule, topup: settle.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option
from node.cli.exits import USAGE, CliError
from node.cli.group import Group
from node.cli.render import amount, balance, short, table, wait_until
from node.cli.settle import describe_longlived, register

precise_option = click.option("--precise", is_flag=True,
                              help="Show amounts at the channel's full scale.")


@click.group(cls=Group)
def channel() -> None:
    """Open, inspect and close payment channels. A channel id may be any unique prefix.

    \b
    Example:
      meterline channel open carrier --arbiter escrow --deposit "5000.00 EUR" --tariff km=0.0123
    """


def balance_note(phase: str) -> str:
    if phase == "settled":
        return "paid out at close: the payout under transfers"
    if phase in ("closed", "disputed"):
        return "what the arbiter pays us"
    return "what we would be paid at close"


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
        f"balance   {balance(c['balance'], precise=precise)} ({balance_note(c['phase'])})",
        "tariff    " + tariff_text(c["tariff"], c["currency"]),
        "units     sent " + ", ".join(f"{u} {q}" for u, q in c["units"]["sent"].items())
        + "; received " + ", ".join(f"{u} {q}" for u, q in c["units"]["received"].items()),
    ]
    if c.get("dispute_deadline"):
        lines.append(f"dispute   {c['dispute_deadline']}")
    lines += describe_longlived(c)
    if c["settlement"]:
        lines.append("transfers")
        for t in c["settlement"]:
            lines.append(f"  {t['purpose']:<8} {t['party']:<7} {amount(t.get('amount')):>16}  "
                         f"{t['reference']}  {t['status']}"
                         + (f": {t['reason']}" if t.get("reason") else ""))
    for r in c.get("returned_payouts") or []:
        lines.append(f"returned  {r['party']} payout {amount(r['amount'])} {r['reference']}: "
                     f"{r['reason']}"
                     + ("  (name a corrected account: meterline channel payout-account)"
                        if r["party"] == "ours" else ""))
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


PHASES = ("proposed", "accepted", "open", "closing", "closed", "disputed", "settled",
          "awaiting-acceptance")


def names(admin: Admin) -> dict[str, str]:
    """Node id → the name the peer gave itself (for peers and arbiters this node knows)."""
    return {p["node_id"]: p["name"] or short(p["node_id"])
            for p in admin.call("GET", "/api/peers")["peers"]}


def who(node_id: str, known: dict[str, str]) -> str:
    return known.get(node_id, short(node_id))


@channel.command("list")
@click.option("--phase", "phases", multiple=True, type=click.Choice(PHASES),
              help="Only channels in this phase (repeat for several); "
                   "awaiting-acceptance: proposals waiting for you.")
@click.option("--peer", "peer_ref", default=None,
              help="Only channels with this peer (node id, id prefix or name).")
@data_dir_option
@json_option
@precise_option
def list_(phases: tuple[str, ...], peer_ref: str | None, data_dir: Path | None, as_json: bool,
          precise: bool) -> None:
    """List channels (closed and settled ones too) and proposals waiting for acceptance; peer
    and arbiter by name.

    \b
    Example:
      meterline channel list
      meterline channel list --phase open --peer carrier
    """
    admin = Admin(data_dir)
    data = admin.call("GET", "/api/channels")
    known = names(admin)
    if peer_ref is not None:
        ref = peer_ref.lower()
        ids = {i for i, n in known.items() if i.startswith(ref) or n == peer_ref}
        if not ids and not (len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)):
            raise CliError(f"no peer {peer_ref!r}: `meterline peer list` shows the known ones",
                           code="UNKNOWN_PEER", exit_code=USAGE)
        ids = ids or {ref}
        data["channels"] = [c for c in data["channels"] if c["peer"] in ids]
        data["proposals"] = [p for p in data["proposals"] if p["peer"] in ids]
    if phases:
        data["channels"] = [c for c in data["channels"] if c["phase"] in phases]
        data["proposals"] = [p for p in data["proposals"] if p["phase"] in phases]
    rows = [(short(c["id"]), c["phase"], who(c["peer"], known), who(c["arbiter"], known),
             c["role"], amount(c["sent"], precise=precise),
             amount(c["received"], precise=precise), amount(c["balance"], precise=precise))
            for c in data["channels"]]
    rows += [(short(p["id"]), p["phase"], who(p["peer"], known), "", "peer", "", "", "")
             for p in data["proposals"]]
    filtered = bool(phases or peer_ref)
    human = table(["CHANNEL", "PHASE", "PEER", "ARBITER", "ROLE", "SENT", "RECEIVED",
                   "BALANCE"], rows) if rows else (
        "no channels match" if filtered
        else "no channels yet: open one with `meterline channel open`")
    if data["proposals"]:
        human += ("\n\nwaiting for you (`meterline channel show ID` for the full terms, then "
                  "`accept ID` or `reject ID`):\n") + "\n".join(
            f"  {short(p['id'])}  from {who(p['peer'], known)}, asks us to deposit "
            f"{amount(p['deposit']['ours'])}: {p['reason']}" for p in data["proposals"])
    emit(data, as_json, human)


def describe_proposal(p: dict[str, Any], known: dict[str, str]) -> str:
    """A held proposal's full terms: what `channel accept` would sign."""
    window_h = p["dispute_window_ms"] / 3_600_000
    accounts = p["accounts"]
    return "\n".join([
        f"proposal  {p['id']}",
        "phase     awaiting-acceptance: nothing is signed until `meterline channel accept`",
        f"why       {p['reason']}",
        f"peer      {who(p['peer'], known)} ({p['peer']})",
        f"arbiter   {who(p['arbiter'], known)} ({p['arbiter']})",
        f"deposit   ours {amount(p['deposit']['ours'])}, peer {amount(p['deposit']['peer'])}",
        "tariff    " + tariff_text(p["tariff"], p["currency"]),
        f"dispute   window {window_h:g} h (a unilateral close stays open this long)",
        f"accounts  ours {accounts['ours']['identification']} ({accounts['ours']['name']}), "
        f"peer {accounts['peer']['identification']} ({accounts['peer']['name']}), "
        f"escrow {accounts['escrow']['identification']} ({accounts['escrow']['name']})",
    ])


def tariff_text(tariff: list[dict[str, Any]], currency: str) -> str:
    return ", ".join(
        f"{t['unit']}=" + ",".join(
            t2["price"] + (f":{t2['up_to']}" if t2["up_to"] else "") for t2 in t["tiers"])
        for t in tariff) + f" {currency} per unit"


@channel.command("show")
@channel_id_argument
@data_dir_option
@json_option
@precise_option
def show(channel_id: str, data_dir: Path | None, as_json: bool, precise: bool) -> None:
    """Everything about one channel: balances, nonces, units, transfers — or, for a proposal
    waiting for you, its full terms (deposits, tariff, dispute window) before you accept.

    \b
    Example:
      meterline channel show 3f9a --precise
    """
    admin = Admin(data_dir)
    try:
        data = admin.call("GET", f"/api/channels/{channel_id}")
    except CliError as exc:
        if exc.code != "UNKNOWN_CHANNEL":
            raise
        try:
            proposal = admin.call("GET", f"/api/proposals/{channel_id}")
        except CliError:
            raise exc from None
        emit(proposal, as_json, describe_proposal(proposal, names(admin)))
        return
    emit(data, as_json, describe(data, precise))


@channel.command("wait")
@channel_id_argument
@click.option("--phase", default="open", show_default=True,
              type=click.Choice(PHASES[:-1]), help="The phase to wait for.")
@click.option("--timeout", "timeout_s", default=300, show_default=True,
              type=click.IntRange(1, 86_400), help="Give up after this many seconds (exit 5).")
@data_dir_option
@json_option
def wait(channel_id: str, phase: str, timeout_s: int, data_dir: Path | None,
         as_json: bool) -> None:
    """Wait until the channel is in PHASE (e.g. open: the arbiter saw the deposits).

    \b
    Example:
      meterline channel wait 3f9a --phase open
    """
    admin = Admin(data_dir)
    data: dict[str, Any] = {}

    def reached() -> tuple[bool, str]:
        nonlocal data
        data = admin.call("GET", f"/api/channels/{channel_id}")
        return data["phase"] == phase, f"it is {data['phase']}"
    wait_until(f"waiting for {phase}:", reached, timeout_s=timeout_s)
    emit(data, as_json, f"channel {data['id']} is {data['phase']}")


@channel.command("accept")
@channel_id_argument
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
@channel_id_argument
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
@channel_id_argument
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


from node.cli.payout_account import payout_account  # noqa: E402 - registered on the group

channel.add_command(payout_account)
register(channel)
