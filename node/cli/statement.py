"""`meterline statement`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, data_dir_option
from node.cli.render import amount, balance, table

CSV_FIELDS = ["direction", "unit", "reference", "quantity", "unit_price", "updates", "amount",
              "currency"]


def as_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for item in data["items"]:
        writer.writerow([item["direction"], item["unit"], item["reference"], item["quantity"],
                         item["unit_price"], item["updates"], item["amount"]["precise"],
                         item["amount"]["currency"]])
    return out.getvalue()


def as_table(data: dict[str, Any]) -> str:
    rows = [(i["direction"], i["unit"], i["reference"] or "-", i["quantity"], i["unit_price"],
             i["updates"], amount(i["amount"])) for i in data["items"]]
    parts = [f"statement for channel {data['channel']} ({data['phase']})", "",
             table(["DIRECTION", "UNIT", "REFERENCE", "QUANTITY", "UNIT PRICE", "UPDATES",
                    "AMOUNT"], rows) if rows else "no usage yet", ""]
    parts += [f"subtotal {s['direction']:<8} {s['unit']:<16} {amount(s['amount']):>16}"
              for s in data["subtotals"]]
    parts += ["", f"sent {amount(data['sent'])}; received {amount(data['received'])}; "
              f"net {amount(data['net'])}; balance {balance(data['balance'])}"]
    if data["transfers"]:
        parts += ["", table(["TRANSFER", "PARTY", "AMOUNT", "BANK REFERENCE", "STATUS"],
                            [(t["purpose"], t["party"], amount(t.get("amount")),
                              t["reference"], t["status"]) for t in data["transfers"]])]
    return "\n".join(parts)


@click.command()
@click.argument("channel_id")
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
