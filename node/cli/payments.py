"""`meterline payments ID`: what was paid when, per usage reference and hour."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option
from node.cli.render import amount, table


@click.command()
@channel_id_argument
@click.option("--ref", "reference", default=None, help="Only this usage reference.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500),
              help="Rows per page.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0, 10**9),
              help="Skip this many rows (the previous page's `next`).")
@data_dir_option
@json_option
def payments(channel_id: str, reference: str | None, limit: int, offset: int,
             data_dir: Path | None, as_json: bool) -> None:
    """What was paid when on a channel: per hour (UTC), direction, unit and usage reference,
    newest first, from the usage totals the node keeps (not one row per update).

    \b
    Example:
      meterline payments 3f9a
      meterline payments 3f9a --ref SHIPMENT-4711 --json
      meterline payments 3f9a --offset 50
    """
    query = {"limit": str(limit), "offset": str(offset)}
    if reference is not None:
        query["reference"] = reference
    data = Admin(data_dir).call(
        "GET", f"/api/channels/{channel_id}/payments?{urllib.parse.urlencode(query)}")
    rows = [(i["bucket"].replace("+00:00", "Z"), i["direction"], i["unit"], i["reference"],
             i["quantity"] if i["quantity"] is not None else "", amount(i["amount"]),
             i["updates"]) for i in data["items"]]
    if not rows:
        human = "no payments yet" if not data["total"] else (
            f"no rows past {offset} (there are {data['total']})")
    else:
        human = table(["HOUR (UTC)", "DIRECTION", "UNIT", "REFERENCE", "QUANTITY", "AMOUNT",
                       "UPDATES"], rows)
        human += (f"\nrows {offset + 1}–{offset + len(rows)} of {data['total']}"
                  + ("" if data["next_offset"] is None else
                     f"; next page: meterline payments {channel_id} --offset "
                     f"{data['next_offset']}" + (f" --limit {limit}" if limit != 50 else "")))
    emit(data, as_json, human)
