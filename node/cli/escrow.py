"""`meterline escrow list | show ID | refund CREDIT-ID` (role arbiter)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option
from node.cli.group import Group
from node.cli.render import amount, short, table, wait_until


@click.group(cls=Group)
def escrow() -> None:
    """The arbiter's escrows, their payouts, and credits no channel took (arbiter only).

    \b
    Example:
      meterline escrow list
      meterline escrow show 3f9a
      meterline escrow refund 2026-12-02-000017 --wait
    """


def _account(account: dict[str, str] | None) -> str:
    if not account:
        return "-"
    return f"{account['identification']} ({account['name']})"


def _refund(credit: dict[str, Any]) -> str:
    refund = credit["refund"]
    if refund is None:
        return "-"
    text = f"{refund['reference']} to {_account(refund['account'])}"
    if refund.get("attempt"):  # the bank rejected the earlier ones (ADR 0322)
        text += f" (attempt {refund['attempt'] + 1} of 16)"
    bank = refund["bank"]
    if bank is None:
        return text + ", not yet at the bank"
    return text + f", bank {bank['status']}" + (f" {bank['reason']}" if bank["reason"] else "")


def _credits(rows: list[dict[str, Any]]) -> str:
    return table(["CREDIT", "AMOUNT", "KIND", "STATUS", "REFERENCE", "FROM", "REFUND"],
                 [(c["entry_id"], amount(c["amount"]), c["kind"], c["status"],
                   c["reference"] or "-", _account(c["sender"]) if c["sender"] else c["debtor"],
                   _refund(c)) for c in rows])


@escrow.command("list")
@data_dir_option
@json_option
def list_(data_dir: Path | None, as_json: bool) -> None:
    """List the escrows held and the credits no channel took.

    A credit is unmatched (its reference names no channel), late (its channel was already
    decided) or early; each stays listed until refunded (`meterline escrow refund`).

    \b
    Example:
      meterline escrow list --json
    """
    data = Admin(data_dir).call("GET", "/api/escrows")
    escrows = table(["CHANNEL", "PHASE", "DEPOSITED", "PAYOUTS"], [
        (short(e["id"]), e["phase"],
         " + ".join(amount(v) for v in e["deposited"].values()),
         "-" if e["payouts"] is None else " / ".join(amount(v) for v in e["payouts"].values()))
        for e in data["escrows"]]) if data["escrows"] else "no escrows"
    credits = (_credits(data["unapplied_credits"]) if data["unapplied_credits"]
               else "no unapplied credits")
    emit(data, as_json, f"{escrows}\n\nUnapplied credits\n{credits}")


@escrow.command("show")
@channel_id_argument
@data_dir_option
@json_option
def show(channel_id: str, data_dir: Path | None, as_json: bool) -> None:
    """One escrow: deposits, payouts, every payout attempt with the bank's answer.

    A payout the bank rejected or returned shows its reason code (AC04, AM04, R03…); the
    attempt after it went to the account the payee corrected.

    \b
    Example:
      meterline escrow show 3f9a
    """
    data = Admin(data_dir).call("GET", f"/api/escrows/{_quoted(channel_id)}")
    lines = [f"escrow {data['id']}  {data['phase']}",
             "deposited " + " + ".join(amount(v) for v in data["deposited"].values())]
    if data["payouts"] is not None:
        lines.append("payouts   " + " / ".join(
            f"{k} {amount(v)}" for k, v in data["payouts"].items()))
    if data["payout_attempts"]:
        lines += ["", table(["CHECKPOINT", "PARTY", "ATTEMPT", "AMOUNT", "TO", "STATUS",
                             "REASON", "REFERENCE"],
                            [(a["checkpoint"] or "close", a["party"], a["attempt"],
                              amount(a["amount"]), _account(a["account"]), a["status"],
                              a["reason"] or "-", a["reference"])
                             for a in data["payout_attempts"]])]
    if data["credits"]:
        lines += ["", "Held credits", _credits(data["credits"])]
    emit(data, as_json, "\n".join(lines))


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@escrow.command("refund")
@click.argument("credit_id")
@click.option("--account", "identification", default=None,
              help="Refund to this account instead of the sender (IBAN, sort code + number, "
                   "or routing:account).")
@click.option("--scheme", default=None,
              help="The account's scheme with --account [default: the escrow account's].")
@click.option("--name", default=None, help="The account holder's name with --account.")
@click.option("--wait", is_flag=True, help="Wait until the bank has booked the refund.")
@data_dir_option
@json_option
def refund(credit_id: str, identification: str | None, scheme: str | None, name: str | None,
           wait: bool, data_dir: Path | None, as_json: bool) -> None:
    """Refund an unapplied credit to the account it came from (or to --account).

    One refund per credit: its idempotency key derives from the bank entry id, so asking
    again — or after a restart — pays nothing twice.

    \b
    Example:
      meterline escrow refund 2026-12-02-000017 --wait
      meterline escrow refund E-88 --account GB33BUKB20201555555555 --scheme IBAN \\
        --name "Carrier Ltd"
    """
    admin = Admin(data_dir)
    body: dict[str, str] = {}
    if identification is not None:
        if not name:
            raise click.UsageError("--account needs --name (the account holder)")
        body = {"scheme": scheme or admin.config.bank.scheme, "identification": identification,
                "name": name}
    elif scheme is not None or name is not None:
        raise click.UsageError("--scheme and --name go with --account")
    path = f"/api/credits/{_quoted(credit_id)}"
    data = admin.call("POST", f"{path}/refund", body)
    if wait:
        def refunded() -> tuple[bool, str]:
            nonlocal data
            data = admin.call("GET", path)
            return data["status"] == "refunded", data["status"]

        wait_until("refunding:", refunded, timeout_s=300)
    emit(data, as_json, f"credit {data['entry_id']}: {data['status']}, "
                        f"{amount(data['amount'])} — {_refund(data)}")
