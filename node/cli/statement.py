"""`meterline statement`."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option
from node.cli.render import amount, balance, table
from node.cli.settle import checkpoint_label, outcome

CSV_FIELDS = ["channel", "counterparty", "period_from", "period_to", "row", "direction",
              "unit", "reference", "quantity", "unit_price", "updates", "amount",
              "precise_amount", "currency", "party", "bank_reference", "status"]
"""One row per line item, subtotal, total, the net, each settlement transfer (ADR 0152), each
payout at a checkpoint (row `checkpoint`, its number under `reference`; ADR 0260) and each payout
the bank returned (`returned`, no amount: it moved nothing; ADR 0272).
`amount` is signed (received +, sent −; a party's deposit −, its payout +) with exactly the
currency's exponent in decimals; the item amounts add up to each subtotal, and all of them to
the net, exactly (largest remainder). `precise_amount` is the exact value at the channel's
scale, every decimal written; transfers move whole minor units, so theirs is the amount."""

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """A CSV cell a spreadsheet cannot run (OWASP CSV injection): text beginning with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``. A plain signed
    decimal (``-0.15``, only digits, one point, a leading minus) is a number and stays one."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _fixed(decimal: str, places: int) -> str:
    """``_fixed("-0.15375", 6) == "-0.153750"``: every decimal written."""
    whole, _, frac = decimal.partition(".")
    return f"{whole}.{frac.ljust(places, '0')}" if places else whole


def as_csv(data: dict[str, Any]) -> str:
    scale, currency = data["scale"], data["currency"]
    party = data["counterparty"]
    period = data["period"] or {"from": "", "to": ""}
    common = [data["channel"], party["name"] or party["id"], period["from"], period["to"]]

    def exact(direction: str, value: dict[str, str]) -> str:
        sign = "-" if direction == "sent" and value["precise"].strip("0.") else ""
        return _fixed(sign + value["precise"].removeprefix("-"), scale)

    rows: list[list[object]] = []
    for i in data["items"]:
        rows.append(["item", i["direction"], i["unit"], i["reference"], i["quantity"],
                     i["unit_price"], i["updates"], i["allocated"],
                     exact(i["direction"], i["amount"]), currency, "", "", ""])
    for sub in data["subtotals"]:
        rows.append(["subtotal", sub["direction"], sub["unit"], "", "", "", "",
                     sub["allocated"], exact(sub["direction"], sub["amount"]), currency,
                     "", "", ""])
    for direction in ("sent", "received"):
        rows.append(["total", direction, "", "", "", "", "", data["allocated"][direction],
                     exact(direction, data[direction]), currency, "", "", ""])
    rows.append(["net", "", "", "", "", "", "", data["allocated"]["net"],
                 _fixed(data["net"]["precise"], scale), currency, "", "", ""])
    for t in data["transfers"]:
        value = t.get("amount")
        moved = "" if value is None else (
            ("-" if t["purpose"] in ("deposit", "topup") else "") + value["amount"])
        rows.append(["transfer", "", "", "", "", "", "", moved,
                     "" if value is None else _fixed(moved, scale), currency, t["party"],
                     t["reference"], t["status"]])
    for r in data.get("returned_payouts") or []:  # moved nothing: no amount, the reason
        rows.append(["returned", "", "", "", "", "", "", "", "", currency, r["party"],
                     r["reference"], f"returned {r['reason']}"])
    for s in data.get("settlements", []):  # paid out of escrow at a checkpoint (+, a payout)
        if not s["checkpoint"]:
            continue  # the final close's payout: a transfer row above already moves it
        rows.append(["checkpoint", "", "", str(s["checkpoint"]), "", "", "",
                     s["amount"]["amount"], _fixed(s["amount"]["amount"], scale), currency,
                     s["party"], s["reference"], outcome(s)])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([cell(c) for c in [*common, *row]])
    return out.getvalue()


def as_table(data: dict[str, Any]) -> str:
    """For people: the allocated amounts (they add up), signed as in the CSV."""
    cur = data["currency"]
    rows = [(i["direction"], i["unit"], i["reference"] or "-", i["quantity"], i["unit_price"],
             i["updates"], f"{i['allocated']} {cur}") for i in data["items"]]
    parts = [f"statement for channel {data['channel']} ({data['phase']}) with "
             f"{data['counterparty']['name'] or data['counterparty']['id'][:16]}", "",
             table(["DIRECTION", "UNIT", "REFERENCE", "QUANTITY", "UNIT PRICE", "UPDATES",
                    "AMOUNT"], rows) if rows else "no usage yet", ""]
    parts += [f"subtotal {s['direction']:<8} {s['unit']:<16} {s['allocated'] + ' ' + cur:>16}"
              for s in data["subtotals"]]
    allocated = data["allocated"]
    parts += ["", f"sent {allocated['sent']} {cur}; received {allocated['received']} {cur}; "
              f"net {allocated['net']} {cur} (exactly {data['net']['precise']} {cur}); "
              f"balance {balance(data['balance'])}"]
    if data["transfers"]:
        parts += ["", table(["TRANSFER", "PARTY", "AMOUNT", "BANK REFERENCE", "STATUS"],
                            [(t["purpose"], t["party"], amount(t.get("amount")),
                              t["reference"], t["status"]) for t in data["transfers"]])]
    if data.get("returned_payouts"):
        parts += ["", table(["RETURNED PAYOUT", "AMOUNT", "BANK REFERENCE", "REASON"],
                            [(r["party"], amount(r["amount"]), r["reference"], r["reason"])
                             for r in data["returned_payouts"]])]
    if data.get("settlements"):
        parts += ["", table(["CHECKPOINT", "PARTY", "PAYOUT", "BANK REFERENCE", "STATUS"],
                            [(checkpoint_label(s), s["party"], amount(s["amount"]),
                              s["reference"], outcome(s)) for s in data["settlements"]])]
    return "\n".join(parts)


@click.command()
@channel_id_argument
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="table for people, csv for spreadsheets, json for systems.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@data_dir_option
def statement(channel_id: str, fmt: str, as_json: bool, data_dir: Path | None) -> None:
    """Line items per unit and usage reference, subtotals, the net and the bank transfers.

    \b
    Example:
      meterline statement 3f9a --format csv > channel.csv
    """
    data = Admin(data_dir).call("GET", f"/api/channels/{channel_id}/statement")
    chosen = "json" if as_json else fmt
    if chosen == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif chosen == "csv":
        click.echo(as_csv(data), nl=False)
    else:
        click.echo(as_table(data))
